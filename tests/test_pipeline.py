"""Subsets and tf.data pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from data.pipeline import augment_batch, eval_dataset, train_dataset
from data.subsets import stratified_subset


def test_stratified_subset_keeps_class_balance(dataset):
    indices = stratified_subset(dataset.train_labels, 1_005, seed=3)
    assert len(indices) == len(set(indices.tolist())) == 1_005
    counts = np.bincount(dataset.train_labels[indices], minlength=10)
    assert counts.tolist() == [101] * 5 + [100] * 5


def test_stratified_subset_is_fixed_by_its_seed(dataset):
    first = stratified_subset(dataset.train_labels, 500, seed=1)
    assert np.array_equal(first, stratified_subset(dataset.train_labels, 500, seed=1))
    assert not np.array_equal(first, stratified_subset(dataset.train_labels, 500, seed=2))


def test_stratified_subset_rejects_impossible_sizes(dataset):
    with pytest.raises(ValueError, match="between 1 and 10000"):
        stratified_subset(dataset.test_labels, 10_001, seed=0)


def test_training_batches_are_float_one_hot_and_cover_the_subset(dataset):
    images, labels = dataset.train_images[:300], dataset.train_labels[:300]
    batches = list(train_dataset(images, labels, batch_size=128, augment=False, seed=0))
    assert [len(x) for x, _ in batches] == [128, 128, 44]
    x, y = batches[0]
    assert x.shape == (128, 28, 28, 1) and x.dtype.name == "float32" and y.shape == (128, 10)
    seen = np.concatenate([x.numpy() for x, _ in batches])
    # Same images, shuffled: the multiset of pixel sums is unchanged.
    assert sorted(seen.reshape(300, -1).sum(axis=1)) == sorted(images.reshape(300, -1).sum(axis=1).astype(np.float32))


def test_shuffle_order_differs_between_epochs_but_repeats_for_the_same_epoch(dataset):
    images, labels = dataset.train_images[:256], dataset.train_labels[:256]

    def first_labels(epoch):
        _, y = next(iter(train_dataset(images, labels, batch_size=64, augment=False, seed=5, epoch=epoch)))
        return y.numpy().argmax(axis=1)

    assert np.array_equal(first_labels(1), first_labels(1))
    assert not np.array_equal(first_labels(1), first_labels(2))


def test_training_batches_depend_on_seed_and_epoch_alone_not_on_tensorflows_global_seed(dataset):
    """The trainer sets TensorFlow's global seed once per run (issue 24), so the batches must not depend on it."""
    import tensorflow as tf

    images, labels = dataset.train_images[:200], dataset.train_labels[:200]

    def batches(global_seed):
        tf.random.set_seed(global_seed)
        return [x.numpy() for x, _ in train_dataset(images, labels, batch_size=64, augment=True, seed=3, epoch=2)]

    first, second = batches(1), batches(2)
    assert len(first) == len(second) == 4
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_augmentation_changes_images_but_not_shape_or_range(dataset):
    import tensorflow as tf

    batch = tf.constant(dataset.train_images[:64, :, :, None].astype(np.float32))
    augmented = augment_batch(batch, tf.constant([1, 2], dtype=tf.int64)).numpy()
    assert augmented.shape == (64, 28, 28, 1)
    assert augmented.min() >= 0 and augmented.max() <= 255
    changed = np.any(augmented != batch.numpy(), axis=(1, 2, 3))
    assert changed.mean() > 0.8  # shift, flip and erasing leave few images untouched
    again = augment_batch(batch, tf.constant([1, 2], dtype=tf.int64)).numpy()
    assert np.array_equal(augmented, again)  # deterministic for a seed


def test_evaluation_batches_are_unaugmented_and_in_order(dataset):
    images, labels = dataset.test_images[:100], dataset.test_labels[:100]
    x = np.concatenate([x.numpy() for x, _ in eval_dataset(images, labels, batch_size=32)])
    assert np.array_equal(x[..., 0], images.astype(np.float32))
