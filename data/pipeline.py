"""tf.data input pipelines for Fashion-MNIST.

The images stay uint8 in memory; each batch is cast to float32 (0-255) and, for training, augmented on
the fly with vectorised ops (one op per batch, not per image). Normalisation lives in the model's first
layer, so a saved model takes raw pixel values and describes itself.

Augmentation (training only): random shift by padding 2 pixels and cropping back to 28x28, horizontal
flip, and random erasing of one rectangle in half of the images.

tf.data's autotuner is off, with fixed parallelism and prefetching (``_fixed``): stopping its thread
when an iterator is destroyed, at the end of every ``fit`` and ``predict``, took 0.3-1 s here (issue 24),
and these pipelines need no tuning to keep ahead of the model.

Everything random in a training epoch (its order and its augmentation) is drawn by stateless ops from
``epoch_seed(seed, epoch)``, never from TensorFlow's global seed: the same (seed, epoch) gives the same
batches in any process, so a resumed run trains exactly as an uninterrupted one, and the trainer never
has to reset TensorFlow's global seed between epochs (which would throw away its compiled functions,
``resnet/training/trainer.py``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.fashion_mnist import IMAGE_SIZE, NUM_CLASSES

PARALLEL_BATCHES = 2  # batches cast (and augmented) at once: each takes milliseconds, a training step far more
PREFETCH_BATCHES = 2  # batches ready before the model asks for them
SHIFT_PADDING = 2  # pixels of zero padding before the random crop
ERASE_PROBABILITY = 0.5
ERASE_MAX_SIDE = 14  # largest side of the erased rectangle, in pixels


def _to_float_batch(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    images = tf.cast(images, tf.float32)[..., tf.newaxis]
    return images, tf.one_hot(tf.cast(labels, tf.int32), NUM_CLASSES)


def _random_shift(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Pad by SHIFT_PADDING and crop a random 28x28 window, independently per image."""
    batch = tf.shape(images)[0]
    pad = SHIFT_PADDING
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([2, batch], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    window = tf.range(IMAGE_SIZE)
    rows = offsets[0][:, tf.newaxis] + window  # (batch, 28)
    cols = offsets[1][:, tf.newaxis] + window
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def _random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _random_erase(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Set one random rectangle to zero in about half of the images."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    apply = tf.random.stateless_uniform([batch], seed=seeds[0]) < ERASE_PROBABILITY
    sides = tf.random.stateless_uniform([2, batch], seed=seeds[1], minval=4, maxval=ERASE_MAX_SIDE + 1, dtype=tf.int32)
    corners = tf.random.stateless_uniform([2, batch], seed=seeds[2], minval=0, maxval=1.0)
    starts = tf.cast(corners * tf.cast(IMAGE_SIZE - sides + 1, tf.float32), tf.int32)
    grid = tf.range(IMAGE_SIZE)
    in_rows = (grid >= starts[0][:, None]) & (grid < (starts[0] + sides[0])[:, None])  # (batch, 28)
    in_cols = (grid >= starts[1][:, None]) & (grid < (starts[1] + sides[1])[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    return tf.where(mask[..., tf.newaxis], tf.zeros_like(images), images)


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Shift, flip and erase a float batch (batch, 28, 28, 1); deterministic for a given seed."""
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    images = _random_shift(images, seeds[0])
    images = _random_flip(images, seeds[1])
    return _random_erase(images, seeds[2])


def epoch_seed(seed, epoch):
    """The seed of everything random in ``epoch`` of a run seeded with ``seed`` (the same when it is resumed).

    ``epoch`` may be a Python int or an int64 tensor (inside a ``tf.data`` function); so may the result.
    """
    return (seed * 1_000_003 + epoch) % 2**32


def _epoch_batches(images: tf.Tensor, labels: tf.Tensor, *, batch_size: int, augment: bool, seed: int, epoch):
    """One epoch's batches: a permutation and per-batch augmentation seeds drawn from (seed, epoch) alone."""
    key = tf.cast(epoch_seed(seed, epoch), tf.int64)
    order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(labels)[0]), seed=tf.stack([key, 0]))
    dataset = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    dataset = dataset.map(
        lambda batch: _to_float_batch(tf.gather(images, batch), tf.gather(labels, batch)),
        num_parallel_calls=PARALLEL_BATCHES,
    )
    if augment:  # batch i of the epoch is augmented with the stateless seed (key, i + 1)
        dataset = dataset.enumerate().map(
            lambda index, batch: (augment_batch(batch[0], tf.stack([key, index + 1])), batch[1]),
            num_parallel_calls=PARALLEL_BATCHES,
        )
    return dataset


def _fixed(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` prefetched, with tf.data's autotuner off (see the module docstring)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    augment: bool,
    seed: int,
    epoch: int = 0,
) -> tf.data.Dataset:
    """Shuffled, batched (and optionally augmented) training batches of (float images, one-hot labels).

    ``epoch`` varies the shuffle order and the augmentation between epochs while keeping a run
    reproducible from its seed, also when it is resumed from a checkpoint.
    """
    images, labels = tf.constant(images), tf.constant(labels)
    return _fixed(_epoch_batches(images, labels, batch_size=batch_size, augment=augment, seed=seed, epoch=epoch))


def eval_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int) -> tf.data.Dataset:
    """Unaugmented, unshuffled batches of (float images, one-hot labels) for evaluation."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return _fixed(dataset.map(_to_float_batch, num_parallel_calls=PARALLEL_BATCHES))
