"""The NumPy files of a run folder, read with bounded sizes and checked against the run, in one place.

- ``predictions-NNNN.npz``: ``probabilities`` (n, 10), rows of 0-1 summing to 1; ``indices`` (n,), distinct
  test-set indices (0-9,999); ``labels`` (n,) 0-9; ``epoch``, the state's last epoch; n is the run's
  number of evaluated images (``check_predictions``);
- ``map-NNNN.npz``: ``coords`` (n, 2) finite, ``explained`` (2,) 0-1, ``indices`` (n,) distinct, all among
  the evaluated images (the predictions' indices), ``predicted`` (n,) 0-9, ``confidence`` (n,) 0-1,
  ``epoch`` (``check_feature_map``);
- ``features-NNNN.npz``: the nearest-neighbour bank, a derived cache (``read_bank``: anything that does not
  match is ignored, and the caller computes and rewrites it).

``read_npz`` reads only the members asked for. The file must be a regular file (a link is not followed)
of at most ``MAX_FILE_BYTES``; each member's ``.npy`` header is read first and its shape and dtype checked
against the spec before any data is read, so a small or sparse file cannot make NumPy allocate a huge
array, and no object arrays (pickles) are ever read. Every check is linear in the array's size (or
n log n, for the distinct indices). What fails raises ``DamagedRun`` naming the file and the reason.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from data.fashion_mnist import TEST_SIZE
from resnet.store.run_state import DamagedRun

CLASSES = 10
MAX_FILE_BYTES = 256 * 2**20  # the largest real file, a ResNet-50 bank of 6,000 x 2,048 float16, is 25 MB
MAX_FEATURES = 4096  # penultimate features per image (ResNet-50: 2,048)
PROBABILITY_TOLERANCE = 1e-2  # how far a row of probabilities may sum from 1 (float32 or float16 softmax)
FLOATS, INTEGERS = "f", "iu"
MAP_SPEC = {
    "coords": ((None, 2), FLOATS),
    "explained": ((2,), FLOATS),
    "indices": ((None,), INTEGERS),
    "predicted": ((None,), INTEGERS),
    "confidence": ((None,), FLOATS),
    "epoch": ((), INTEGERS),
}
PREDICTIONS_SPEC = {
    "probabilities": ((None, CLASSES), FLOATS),
    "indices": ((None,), INTEGERS),
    "labels": ((None,), INTEGERS),
    "epoch": ((), INTEGERS),
}
BANK_SPEC = {
    "epoch": ((), INTEGERS),
    "indices": ((None,), INTEGERS),
    "labels": ((None,), INTEGERS),
    "features": ((None, None), "f"),
}


def predictions_arrays(probabilities, indices, labels, epoch: int) -> dict[str, np.ndarray]:
    """The members of ``predictions-NNNN.npz`` as they are written (float32 probabilities, int32 test-set
    indices, uint8 labels, the epoch)."""
    return {
        "probabilities": np.asarray(probabilities).astype(np.float32),
        "indices": np.asarray(indices).astype(np.int32),
        "labels": np.asarray(labels).astype(np.uint8),
        "epoch": np.int32(epoch),
    }


def read_npz(path: Path, spec: dict[str, tuple], *, max_rows: int) -> dict[str, np.ndarray]:
    """The members of ``spec`` (name -> (shape with None for any length, dtype kinds)) of the ``.npz`` at
    ``path``, each at most ``max_rows`` long in every free dimension; DamagedRun says what is wrong."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DamagedRun(f"{path.name} is missing") from None
    except OSError as error:
        raise DamagedRun(f"{path.name} is a link or unreadable ({error.strerror})") from error
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a folder
        os.close(descriptor)
        raise DamagedRun(f"{path.name} is not a regular file")
    with os.fdopen(descriptor, "rb") as stream:
        if info.st_size > MAX_FILE_BYTES:
            raise DamagedRun(f"{path.name} is {info.st_size:,} bytes, more than a run's arrays take")
        try:
            with zipfile.ZipFile(stream) as archive:
                return {name: _read_member(archive, name, *kind, max_rows) for name, kind in spec.items()}
        except DamagedRun as error:
            raise DamagedRun(f"{path.name} {error}") from error
        except Exception as error:  # a damaged zip or .npy raises many types (EOFError, NotImplementedError...)
            reason = str(error) or type(error).__name__  # EOFError says nothing
            raise DamagedRun(f"{path.name} is unreadable ({reason})") from error


def _read_member(archive: zipfile.ZipFile, name: str, shape_spec: tuple, kinds: str, max_rows: int) -> np.ndarray:
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise DamagedRun(f"lacks {name}") from None
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(member)
        else:
            raise DamagedRun(f"has {name} in an unknown .npy version {version}")
        if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize > 8:
            raise DamagedRun(f"has {name} of type {dtype}, expected {_kinds_text(kinds)}")
        if len(shape) != len(shape_spec) or not all(
            size <= max_rows if wanted is None else size == wanted
            for size, wanted in zip(shape, shape_spec, strict=False)
        ):
            raise DamagedRun(f"has {name} of shape {shape}, expected {_shape_text(shape_spec, max_rows)}")
        size = math.prod(shape) * dtype.itemsize
        data = member.read(size + 1)
    if len(data) != size:
        raise DamagedRun(f"has {name} of {len(data):,} bytes where its shape {shape} takes {size:,}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _kinds_text(kinds: str) -> str:
    return "floats" if kinds == FLOATS else "integers"


def _shape_text(shape_spec: tuple, max_rows: int) -> str:
    return "(" + ", ".join(f"n <= {max_rows:,}" if size is None else str(size) for size in shape_spec) + ")"


def _epoch(arrays: dict, name: str, epoch: int) -> None:
    if int(arrays["epoch"]) != epoch:
        raise DamagedRun(f"{name} belongs to epoch {int(arrays['epoch'])}, not {epoch}")


def _distinct_test_indices(indices: np.ndarray, name: str) -> np.ndarray:
    """``indices`` as int32 if they are distinct indices of the test set."""
    if len(indices) and (indices.min() < 0 or indices.max() >= TEST_SIZE):
        raise DamagedRun(f"{name} has test-set indices outside 0-{TEST_SIZE - 1}")
    if len(np.unique(indices)) != len(indices):
        raise DamagedRun(f"{name} lists a test image more than once")
    return indices.astype(np.int32)


def _within(values: np.ndarray, low: float, high: float) -> bool:
    return bool(np.all((values >= low) & (values <= high)))  # NaN fails both comparisons


def check_predictions(arrays: dict, name: str, *, epoch: int, eval_images: int | None) -> dict[str, np.ndarray]:
    """The predictions in their stored types, checked against the run's last ``epoch`` and its number of
    evaluated images (None: not recorded, for old runs); DamagedRun says what is wrong."""
    probabilities = arrays["probabilities"]
    count = len(probabilities)
    if eval_images is not None and count != eval_images:
        raise DamagedRun(f"{name} has {count:,} predictions, but the run evaluates {eval_images:,} images")
    if not count or len(arrays["indices"]) != count or len(arrays["labels"]) != count:
        shapes = {key: arrays[key].shape for key in ("probabilities", "indices", "labels")}
        raise DamagedRun(f"{name} has arrays of mismatched or empty shapes {shapes}")
    _epoch(arrays, name, epoch)
    probabilities = probabilities.astype(np.float32)
    if not _within(probabilities, 0.0, 1.0) or not _within(probabilities.sum(axis=1), 0.99, 1.01):
        raise DamagedRun(f"{name} has probabilities that are not rows of 0-1 summing to 1")
    if not _within(arrays["labels"], 0, CLASSES - 1):
        raise DamagedRun(f"{name} has labels outside 0-{CLASSES - 1}")
    return {
        "probabilities": probabilities,
        "indices": _distinct_test_indices(arrays["indices"], name),
        "labels": arrays["labels"].astype(np.uint8),
        "epoch": np.int32(arrays["epoch"]),
    }


def read_predictions(path: Path, *, epoch: int, eval_images: int | None) -> dict[str, np.ndarray]:
    """The checked predictions file of the run's last epoch (``check_predictions``)."""
    arrays = read_npz(path, PREDICTIONS_SPEC, max_rows=TEST_SIZE)
    return check_predictions(arrays, path.name, epoch=epoch, eval_images=eval_images)


def check_feature_map(arrays: dict, name: str, *, epoch: int, evaluated: np.ndarray | None) -> dict[str, np.ndarray]:
    """A map's arrays in their stored types, checked against its ``epoch`` and the run's ``evaluated``
    test-set indices (None: only checked to be in the test set); DamagedRun says what is wrong."""
    count = len(arrays["coords"])
    for key in ("indices", "predicted", "confidence"):
        if arrays[key].shape != (count,):
            raise DamagedRun(f"{name} has {key} of shape {arrays[key].shape}, expected ({count},)")
    _epoch(arrays, name, epoch)
    coords, explained = arrays["coords"].astype(np.float32), arrays["explained"].astype(np.float32)
    if not np.isfinite(coords).all() or not _within(explained, 0.0, 1.0):
        raise DamagedRun(f"{name} has coordinates that are not finite or a share of variance outside 0-1")
    if not _within(arrays["predicted"], 0, CLASSES - 1):
        raise DamagedRun(f"{name} has predicted classes outside 0-{CLASSES - 1}")
    if not _within(arrays["confidence"], 0.0, 1.0):
        raise DamagedRun(f"{name} has confidences outside 0-1")
    indices = _distinct_test_indices(arrays["indices"], name)
    if evaluated is not None and not np.isin(indices, evaluated).all():
        raise DamagedRun(f"{name} places test images the run did not evaluate")
    return {
        "coords": coords,
        "explained": explained,
        "indices": indices,
        "predicted": arrays["predicted"].astype(np.uint8),
        "confidence": arrays["confidence"].astype(np.float16),
        "epoch": np.int32(arrays["epoch"]),
    }


def read_feature_map(path: Path, *, epoch: int, evaluated: np.ndarray | None) -> dict[str, np.ndarray]:
    """The checked map file of ``epoch`` (``check_feature_map``)."""
    arrays = read_npz(path, MAP_SPEC, max_rows=TEST_SIZE)
    return check_feature_map(arrays, path.name, epoch=epoch, evaluated=evaluated)


def read_bank(path: Path, *, epoch: int, indices: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """The bank's features (float16 (n, d), unit rows, read-only) stored at ``path`` if the file is of
    exactly these training images and epoch; None if it is missing, damaged or stale (then recomputed)."""
    try:
        arrays = read_npz(path, BANK_SPEC, max_rows=max(len(indices), MAX_FEATURES))
    except DamagedRun:
        return None
    features = arrays["features"]
    if (
        int(arrays["epoch"]) != epoch
        or not np.array_equal(arrays["indices"], indices)
        or not np.array_equal(arrays["labels"], labels)
        or features.dtype != np.float16
        or features.shape[0] != len(indices)
        or not 1 <= features.shape[1] <= MAX_FEATURES
        or not np.isfinite(features).all()
    ):
        return None
    return features
