"""ResNet-18/34/50 for 28x28x1 Fashion-MNIST, built as Keras' own ``applications/resnet.py`` does it.

A residual block is a function from tensor to tensor, a stack is a few blocks, and each named model is
a table of stages. Layers are named by position (``conv3_block2_2_conv``), so summaries read well.

The seed's architecture (depth 50): Conv 7x7/2 (64) -> BN -> ReLU -> MaxPool 3x3/2 -> bottleneck
stages of 3-4-6-3 blocks with 64/128/256/512 filters (x4 expansion, projection shortcut on each stage's
first block, stride 2 at stages 2-4) -> global average pooling -> Dense(10) -> softmax.
ResNet-18/34 use basic blocks (two 3x3 convolutions) in stages of 2-2-2-2 and 3-4-6-3.
The last batch norm of each residual branch starts at zero (see ``RESIDUAL_GAMMA_INIT``); the layers
and parameters are the seed's.

``build_compiled_model`` is the model a run trains: built from a ``TrainConfig`` and compiled with its
optimizer and loss (the trainer and the precision measurement both use it).

    python -c "from resnet.core.model import build_resnet; build_resnet(50).summary()"
"""

from __future__ import annotations

import keras
from keras import layers

from data.fashion_mnist import IMAGE_SIZE, NUM_CLASSES
from resnet.config import MIXED_FLOAT16, PRECISIONS

# Pixel statistics of the training set (pixel/255), used by the normalising first layer.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530

BN_EPSILON = 1.001e-5
# PyTorch's default (Keras uses 0.99): moving statistics settle within tens of steps, so short runs on
# small subsets evaluate sensibly instead of predicting one class.
BN_MOMENTUM = 0.9
# The last batch norm of every residual branch starts with gamma = 0 ("zero-init residual", Goyal et al.
# 2017), so each new block starts as the identity and the deep network trains like a shallow one at
# first. It added 2.2-2.4 points of test accuracy after 3 epochs, on 6,000 images and on all 60,000
# (0.885 -> 0.909; docs/benchmarks.md 3e, 3f).
RESIDUAL_GAMMA_INIT = "zeros"


def batch_norm(name: str, dtype=None, *, residual_end: bool = False) -> layers.BatchNormalization:
    """The model's batch norm; ``residual_end`` marks the last one of a residual branch (gamma starts at 0)."""
    return layers.BatchNormalization(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        gamma_initializer=RESIDUAL_GAMMA_INIT if residual_end else "ones",
        name=name,
        dtype=dtype,
    )


def bottleneck_block(x, filters: int, *, stride: int = 1, conv_shortcut: bool = False, name: str, dtype=None):
    """1x1 reduce -> 3x3 -> 1x1 expand to 4*filters, each followed by BatchNorm (ReLU after the add)."""
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv", dtype=dtype)(x)
        shortcut = batch_norm(f"{name}_0_bn", dtype)(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_1_conv", dtype=dtype)(x)
    x = batch_norm(f"{name}_1_bn", dtype)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu", dtype=dtype)(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv", dtype=dtype)(x)
    x = batch_norm(f"{name}_2_bn", dtype)(x)
    x = layers.Activation("relu", name=f"{name}_2_relu", dtype=dtype)(x)
    x = layers.Conv2D(4 * filters, 1, use_bias=False, name=f"{name}_3_conv", dtype=dtype)(x)
    x = batch_norm(f"{name}_3_bn", dtype, residual_end=True)(x)
    x = layers.Add(name=f"{name}_add", dtype=dtype)([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out", dtype=dtype)(x)


def basic_block(x, filters: int, *, stride: int = 1, conv_shortcut: bool = False, name: str, dtype=None):
    """3x3 -> 3x3 with BatchNorm after each (ReLU after the first and after the add)."""
    if conv_shortcut:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv", dtype=dtype)(x)
        shortcut = batch_norm(f"{name}_0_bn", dtype)(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv", dtype=dtype)(x)
    x = batch_norm(f"{name}_1_bn", dtype)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu", dtype=dtype)(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv", dtype=dtype)(x)
    x = batch_norm(f"{name}_2_bn", dtype, residual_end=True)(x)
    x = layers.Add(name=f"{name}_add", dtype=dtype)([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out", dtype=dtype)(x)


def stack(x, block, filters: int, blocks: int, *, stride: int, name: str, dtype=None):
    """One stage: a first block with a projection shortcut (and ``stride``), then ``blocks - 1`` more."""
    # A basic block keeps its width, so stage 1 of ResNet-18/34 needs no projection (64 -> 64).
    needs_projection = block is bottleneck_block or stride != 1
    x = block(x, filters, stride=stride, conv_shortcut=needs_projection, name=block_name(name, 1), dtype=dtype)
    for index in range(2, blocks + 1):
        x = block(x, filters, name=block_name(name, index), dtype=dtype)
    return x


def block_name(stage: str, index: int) -> str:
    """``conv3_block2``: the prefix of every layer of block ``index`` of ``stage``; its output is ``_out``."""
    return f"{stage}_block{index}"


# depth -> (block function, blocks per stage). Filters are 64/128/256/512 for every depth.
ARCHITECTURES = {
    18: (basic_block, (2, 2, 2, 2)),
    34: (basic_block, (3, 4, 6, 3)),
    50: (bottleneck_block, (3, 4, 6, 3)),
}
STAGE_FILTERS = (64, 128, 256, 512)


def build_resnet(depth: int = 50, *, num_classes: int = NUM_CLASSES, precision: str = "float32") -> keras.Model:
    """Build ResNet-``depth`` for 28x28x1 inputs holding raw pixel values 0-255.

    ``precision`` is a Keras dtype policy name (``float32``, ``mixed_bfloat16``, ``mixed_float16``);
    the softmax output is always float32.
    """
    if depth not in ARCHITECTURES:
        raise ValueError(f"depth must be one of {sorted(ARCHITECTURES)}, got {depth!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dtype = keras.DTypePolicy(precision)
    block, blocks_per_stage = ARCHITECTURES[depth]

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="pixels")
    x = layers.Rescaling(
        scale=1.0 / (255.0 * PIXEL_STD), offset=-PIXEL_MEAN / PIXEL_STD, name="normalize", dtype=dtype
    )(inputs)
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1_conv", dtype=dtype)(x)
    x = batch_norm("conv1_bn", dtype)(x)
    x = layers.Activation("relu", name="conv1_relu", dtype=dtype)(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool", dtype=dtype)(x)

    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, blocks_per_stage, strict=True), start=2):
        x = stack(x, block, filters, blocks, stride=1 if stage == 2 else 2, name=f"conv{stage}", dtype=dtype)

    x = layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)(x)
    x = layers.Dense(num_classes, name="logits", dtype=dtype)(x)
    outputs = layers.Activation("softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def stage_outputs(depth: int) -> dict[str, str]:
    """Each of the four stages (``conv2`` ... ``conv5``) -> its last layer, the last block's ``_out``."""
    _, blocks_per_stage = ARCHITECTURES[depth]
    return {
        f"conv{stage}": f"{block_name(f'conv{stage}', blocks)}_out" for stage, blocks in enumerate(blocks_per_stage, 2)
    }


def stage_output_names(depth: int) -> list[str]:
    """Names of the last layer of each of the four stages (conv2 ... conv5)."""
    return list(stage_outputs(depth).values())


def depth_of(model) -> int:
    """The depth of a model ``build_resnet`` built (its name, ``resnet50``, survives a checkpoint)."""
    depth = model.name.removeprefix("resnet")
    if not depth.isdigit() or int(depth) not in ARCHITECTURES:
        raise ValueError(f"{model.name!r} is not a ResNet of this project (resnet18, resnet34 or resnet50)")
    return int(depth)


def _optimizer(config):
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate)
    return keras.optimizers.SGD(
        learning_rate=config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )


def build_compiled_model(config, precision: str):
    """A fresh model for ``config`` compiled for training (weights from the config's seed): its optimizer,
    the label-smoothed loss, and plain cross-entropy beside accuracy as metrics."""
    keras.utils.set_random_seed(config.seed)
    model = build_resnet(config.depth, precision=precision)
    optimizer = _optimizer(config)
    if precision == MIXED_FLOAT16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.CategoricalCrossentropy(name="cross_entropy"),
        ],
    )
    return model
