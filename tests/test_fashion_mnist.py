"""The loader on the real files, and on broken copies of them made in tmp_path."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

from data.fashion_mnist import (
    CLASS_NAMES,
    FILE_NAMES,
    DatasetError,
    load_fashion_mnist,
    load_from_folder,
    resolve_dataset_dir,
)


def test_shapes_dtypes_and_class_balance(dataset):
    assert dataset.train_images.shape == (60_000, 28, 28)
    assert dataset.test_images.shape == (10_000, 28, 28)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.uint8
    assert np.bincount(dataset.train_labels).tolist() == [6_000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1_000] * 10
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot"


def test_pixel_statistics_match_the_published_ones(dataset):
    pixels = dataset.train_images.astype(np.float64) / 255.0
    assert pixels.mean() == pytest.approx(0.2860, abs=5e-5)
    assert pixels.std() == pytest.approx(0.3530, abs=5e-5)


def test_loading_twice_is_served_from_memory(dataset):
    assert load_fashion_mnist() is dataset


@pytest.fixture
def copy_of_dataset(tmp_path, dataset_dir):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in FILE_NAMES:
        shutil.copyfile(dataset_dir / name, folder / name)  # copyfile: writable even if the source is read-only
    return folder


def rewrite(path, data: bytes, *, compress: bool = True) -> None:
    path.write_bytes(gzip.compress(data) if compress else data)


def test_missing_file_names_the_file_and_the_fix(copy_of_dataset):
    (copy_of_dataset / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="lacks t10k-labels-idx1-ubyte.gz.*FASHION_MNIST_DIR"):
        resolve_dataset_dir(copy_of_dataset)


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset_dir(tmp_path / "nowhere")


def test_environment_variable_is_used(copy_of_dataset, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(copy_of_dataset))
    assert resolve_dataset_dir() == copy_of_dataset


def test_truncated_gzip(copy_of_dataset):
    path = copy_of_dataset / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz' is truncated or corrupt"):
        load_from_folder(copy_of_dataset)


def test_not_a_gzip_file(copy_of_dataset):
    path = copy_of_dataset / "t10k-images-idx3-ubyte.gz"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz' is not a gzip file"):
        load_from_folder(copy_of_dataset)


def test_wrong_magic_number(copy_of_dataset):
    # A labels file where the images should be.
    images = copy_of_dataset / "t10k-images-idx3-ubyte.gz"
    shutil.copy(copy_of_dataset / "t10k-labels-idx1-ubyte.gz", images)
    with pytest.raises(DatasetError, match="wrong IDX magic number 2049 \\(expected 2051"):
        load_from_folder(copy_of_dataset)


def test_wrong_count(copy_of_dataset):
    path = copy_of_dataset / "t10k-labels-idx1-ubyte.gz"
    rewrite(path, struct.pack(">ii", 2049, 9_999) + bytes(9_999))
    with pytest.raises(DatasetError, match="holds shape \\(9999,\\), expected \\(10000,\\)"):
        load_from_folder(copy_of_dataset)


def test_payload_shorter_than_header_says(copy_of_dataset):
    path = copy_of_dataset / "t10k-labels-idx1-ubyte.gz"
    rewrite(path, struct.pack(">ii", 2049, 10_000) + bytes(9_000))
    with pytest.raises(DatasetError, match="holds 9008 bytes after decompression, expected 10008"):
        load_from_folder(copy_of_dataset)


def test_labels_out_of_range(copy_of_dataset):
    path = copy_of_dataset / "t10k-labels-idx1-ubyte.gz"
    labels = bytearray(10_000)
    labels[17] = 12
    rewrite(path, struct.pack(">ii", 2049, 10_000) + bytes(labels))
    with pytest.raises(DatasetError, match="1 labels outside 0-9 \\(largest 12\\)"):
        load_from_folder(copy_of_dataset)


def test_keras_cache_is_used_without_an_explicit_folder(copy_of_dataset, tmp_path, monkeypatch):
    keras_home = tmp_path / "keras-home"
    shutil.copytree(copy_of_dataset, keras_home / "datasets" / "fashion-mnist")
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    assert resolve_dataset_dir() == keras_home / "datasets" / "fashion-mnist"


def test_no_folder_no_cache_and_no_download_explains(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    with pytest.raises(DatasetError, match="not in the Keras cache.*FASHION_MNIST_DIR"):
        resolve_dataset_dir(download=False)
