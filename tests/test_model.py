"""The ResNet builder: the seed's ResNet-50 and the basic-block ResNet-18/34."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnet.core.model import ARCHITECTURES, build_resnet, stage_output_names


def expected_parameters(depth: int) -> int:
    """Parameters counted from the architecture's definition, independently of Keras."""

    def conv(k, cin, cout):
        return k * k * cin * cout

    def bn(c):
        return 4 * c  # gamma, beta, moving mean, moving variance

    total = conv(7, 1, 64) + bn(64)
    channels = 64
    bottleneck = depth == 50
    for stage, blocks in enumerate(ARCHITECTURES[depth][1]):
        filters = 64 * 2**stage
        out = 4 * filters if bottleneck else filters
        for block in range(blocks):
            if block == 0 and (bottleneck or stage > 0):
                total += conv(1, channels, out) + bn(out)
            if bottleneck:
                total += conv(1, channels, filters) + bn(filters) + conv(3, filters, filters) + bn(filters)
                total += conv(1, filters, out) + bn(out)
            else:
                total += conv(3, channels, filters) + bn(filters) + conv(3, filters, filters) + bn(filters)
            channels = out
    return total + channels * 10 + 10


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_count(depth):
    model = build_resnet(depth)
    assert model.count_params() == expected_parameters(depth)


def test_resnet50_has_about_23_5_million_parameters():
    assert build_resnet(50).count_params() == 23_575_370


def test_output_is_a_probability_per_class():
    model = build_resnet(50)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    probabilities = model.predict(np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)), verbose=0)
    assert probabilities.shape == (3, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("depth", "blocks"), [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3]), (50, [3, 4, 6, 3])])
def test_blocks_per_stage(depth, blocks):
    names = [layer.name for layer in build_resnet(depth).layers]
    for stage, count in enumerate(blocks, start=2):
        found = {name.split("_")[1] for name in names if name.startswith(f"conv{stage}_block")}
        assert found == {f"block{index}" for index in range(1, count + 1)}


@pytest.mark.parametrize(("depth", "channels"), [(50, [256, 512, 1024, 2048]), (18, [64, 128, 256, 512])])
def test_stage_output_channels_and_strides(depth, channels):
    model = build_resnet(depth)
    shapes = [model.get_layer(name).output.shape for name in stage_output_names(depth)]
    assert [shape[-1] for shape in shapes] == channels
    assert [shape[1] for shape in shapes] == [7, 4, 2, 1]  # 28 -> conv/2 -> pool/2 -> stride 2 at stages 2-4


def test_mixed_precision_computes_in_bfloat16_and_outputs_float32():
    model = build_resnet(18, precision="mixed_bfloat16")
    assert model.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"


def test_invalid_arguments_say_what_was_received():
    with pytest.raises(ValueError, match="depth must be one of \\[18, 34, 50\\], got 101"):
        build_resnet(101)
    with pytest.raises(ValueError, match="precision must be .* got 'float8'"):
        build_resnet(50, precision="float8")


@pytest.mark.parametrize("depth", [18, 50])
def test_a_new_residual_block_starts_as_the_identity(depth):
    # The last batch norm of every residual branch starts with gamma = 0 (Goyal et al. 2017), so a freshly
    # built block without a projection passes its (post-ReLU) input through unchanged.
    model = build_resnet(depth)
    probe = keras.Model(
        model.input, [model.get_layer("conv3_block1_out").output, model.get_layer("conv3_block2_out").output]
    )
    before, after = probe.predict(np.random.default_rng(1).uniform(0, 255, (4, 28, 28, 1)), verbose=0)
    assert before.std() > 0
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
