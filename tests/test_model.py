"""The ResNet builder: the seed's ResNet-50 and the basic-block ResNet-18/34."""

from __future__ import annotations

import numpy as np
import pytest

from resnet.model import ARCHITECTURES, build_resnet, stage_output_names


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


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras_batch_norm(dtype):
    """Same outputs and gradients as keras.layers.BatchNormalization; moving statistics move alike."""
    import keras
    import tensorflow as tf

    from resnet.model import BN_EPSILON, FusedBatchNormalization

    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(2.0, 3.0, (16, 5, 5, 8)), tf.float32)
    tolerance = 1e-3 if dtype == "float32" else 3e-2
    fused = FusedBatchNormalization(epsilon=BN_EPSILON, momentum=0.9, dtype=dtype)
    plain = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, dtype=dtype)
    fused.build(images.shape), plain.build(images.shape)
    gamma = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    for layer in (fused, plain):
        layer.gamma.assign(gamma)
        layer.beta.assign(np.linspace(-1, 1, 8).astype(np.float32))

    weights = tf.constant(rng.normal(0.0, 1.0, images.shape), tf.float32)  # a loss with real gradients
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
        gradients = tape.gradient(loss, [images, layer.gamma, layer.beta])
        results.append((outputs, *gradients, layer.moving_mean, layer.moving_variance, layer(images, training=False)))
    assert results[0][0].dtype.name == results[1][0].dtype.name == ("float32" if dtype == "float32" else "bfloat16")
    for mine, theirs in zip(results[0][:4], results[1][:4], strict=True):
        np.testing.assert_allclose(np.float32(mine), np.float32(theirs), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(results[0][4], results[1][4], rtol=1e-5)  # moving mean
    # The fused kernel's moving variance uses the unbiased batch variance: n/(n-1) of Keras' one.
    n = 16 * 5 * 5
    batch_variance = (np.asarray(results[1][5]) - 0.9) / 0.1
    np.testing.assert_allclose(results[0][5], 0.9 + 0.1 * batch_variance * n / (n - 1), rtol=1e-4)
    # Inference uses the moving statistics (which differ by that factor only).
    np.testing.assert_allclose(np.float32(results[0][6]), np.float32(results[1][6]), rtol=tolerance, atol=tolerance)


def test_a_saved_model_loads_back_with_its_fused_batch_norm(tmp_path):
    import keras

    model = build_resnet(18)
    images = np.random.default_rng(1).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("conv1_bn")).__name__ == "FusedBatchNormalization"
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
