"""Find, read and validate the Fashion-MNIST IDX files.

Where the files come from, in order:
1. an explicit folder (the ``folder`` argument, or the ``FASHION_MNIST_DIR`` environment variable);
2. the Keras dataset cache (``$KERAS_HOME/datasets/fashion-mnist``, by default ``~/.keras/...``);
3. Keras' standard download (``keras.datasets.fashion_mnist``), which fills that cache.

An explicit folder is never silently replaced by another source: if it lacks a file, that is an error.
Every problem raises :class:`DatasetError` whose message names the file, what is wrong and how to fix it.

    python -c "from data.fashion_mnist import load_fashion_mnist; print(load_fashion_mnist())"
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "FASHION_MNIST_DIR"

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IMAGE_SIZE = 28
NUM_CLASSES = len(CLASS_NAMES)
TRAIN_SIZE = 60_000
TEST_SIZE = 10_000

# (file name, IDX magic number, expected item count) for each part, as Keras names them.
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", 2051, TRAIN_SIZE),
    "train_labels": ("train-labels-idx1-ubyte.gz", 2049, TRAIN_SIZE),
    "test_images": ("t10k-images-idx3-ubyte.gz", 2051, TEST_SIZE),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 2049, TEST_SIZE),
}
FILE_NAMES = tuple(name for name, _, _ in FILES.values())

HOW_TO_FIX = (
    f"Put the four Fashion-MNIST files ({', '.join(FILE_NAMES)}) in one folder and set "
    f"{ENV_VAR}=/path/to/that/folder, or delete the damaged file so it can be downloaded again "
    "(Keras keeps downloads in ~/.keras/datasets/fashion-mnist)."
)


class DatasetError(RuntimeError):
    """The dataset could not be found or a file is damaged; the message says how to fix it."""


@dataclass(frozen=True)
class FashionMNIST:
    """The whole dataset as uint8 arrays, kept in memory (about 55 MB)."""

    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8, 0-9
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8, 0-9
    source: Path  # the folder the files were read from

    def __repr__(self) -> str:
        return f"FashionMNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, source='{self.source}')"


def keras_cache_dir() -> Path:
    """The folder where ``keras.datasets.fashion_mnist`` keeps its downloads."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "datasets" / "fashion-mnist"


def _has_all_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILE_NAMES)


def resolve_dataset_dir(folder: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the folder holding the four files, downloading them through Keras if needed."""
    explicit = folder if folder is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DatasetError(
                f"The Fashion-MNIST folder '{path}' does not exist "
                f"(given {'as an argument' if folder is not None else 'by ' + ENV_VAR}). " + HOW_TO_FIX
            )
        missing = [name for name in FILE_NAMES if not (path / name).is_file()]
        if missing:
            raise DatasetError(f"The Fashion-MNIST folder '{path}' lacks {', '.join(missing)}. " + HOW_TO_FIX)
        return path

    cached = keras_cache_dir()
    if _has_all_files(cached):
        return cached
    if not download:
        raise DatasetError(f"Fashion-MNIST is not in the Keras cache '{cached}'. " + HOW_TO_FIX)
    return _download_with_keras()


def _download_with_keras() -> Path:
    """Let Keras download the files into its cache, and return that folder."""
    import keras  # imported here: reading local files must not pay for TensorFlow

    try:
        keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # network errors come in many types (URLError, OSError, ...)
        raise DatasetError(
            f"Could not download Fashion-MNIST with Keras ({type(error).__name__}: {error}). "
            "Without internet: " + HOW_TO_FIX
        ) from error
    cached = keras_cache_dir()
    if not _has_all_files(cached):
        # Keras falls back to /tmp/.keras when the home folder is not writable.
        fallback = Path("/tmp/.keras/datasets/fashion-mnist")
        if _has_all_files(fallback):
            return fallback
        raise DatasetError(f"Keras reported a download, but the files are not in '{cached}'. " + HOW_TO_FIX)
    return cached


def read_idx(path: str | os.PathLike, *, magic: int, count: int) -> np.ndarray:
    """Read one gzipped IDX file and check its header, its size and (for labels) its values."""
    path = Path(path)
    label = f"'{path}'"
    if not path.is_file():
        raise DatasetError(f"{label} is missing. " + HOW_TO_FIX)
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except gzip.BadGzipFile as error:
        raise DatasetError(f"{label} is not a gzip file ({error}). " + HOW_TO_FIX) from error
    except (EOFError, zlib.error) as error:
        raise DatasetError(f"{label} is truncated or corrupt ({error}). " + HOW_TO_FIX) from error
    except OSError as error:
        raise DatasetError(f"{label} could not be read ({error}). " + HOW_TO_FIX) from error

    ndim = 3 if magic == 2051 else 1
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(f"{label} is too short to hold an IDX header ({len(raw)} bytes). " + HOW_TO_FIX)
    found_magic = struct.unpack(">i", raw[:4])[0]
    if found_magic != magic:
        raise DatasetError(
            f"{label} has the wrong IDX magic number {found_magic} (expected {magic}: "
            f"{'images' if magic == 2051 else 'labels'}); is it the right file? " + HOW_TO_FIX
        )
    dims = struct.unpack(f">{ndim}i", raw[4:header_size])
    expected_dims = (count, IMAGE_SIZE, IMAGE_SIZE) if ndim == 3 else (count,)
    if dims != expected_dims:
        raise DatasetError(f"{label} holds shape {dims}, expected {expected_dims}. " + HOW_TO_FIX)
    expected_bytes = header_size + int(np.prod(expected_dims))
    if len(raw) != expected_bytes:
        raise DatasetError(
            f"{label} holds {len(raw)} bytes after decompression, expected {expected_bytes}: "
            "it is truncated or has extra data. " + HOW_TO_FIX
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(expected_dims)
    if ndim == 1 and array.max(initial=0) >= NUM_CLASSES:
        bad = int(np.count_nonzero(array >= NUM_CLASSES))
        raise DatasetError(
            f"{label} has {bad} labels outside 0-{NUM_CLASSES - 1} (largest {int(array.max())}). " + HOW_TO_FIX
        )
    return array


def load_from_folder(folder: Path) -> FashionMNIST:
    """Read and validate the four files of one folder."""
    arrays = {part: read_idx(folder / name, magic=magic, count=count) for part, (name, magic, count) in FILES.items()}
    return FashionMNIST(**arrays, source=folder)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, signature: tuple) -> FashionMNIST:
    return load_from_folder(folder)


def load_fashion_mnist(folder: str | os.PathLike | None = None, *, download: bool = True) -> FashionMNIST:
    """Find and load Fashion-MNIST (see the module docstring for where it looks).

    The result is kept in memory per folder and file modification time, so repeated calls are free.
    """
    path = resolve_dataset_dir(folder, download=download).resolve()
    signature = tuple((path / name).stat().st_mtime_ns for name in FILE_NAMES)
    return _load_cached(path, signature)
