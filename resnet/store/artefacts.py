"""The explanation files beside a run's checkpoint, and the checkpoint loaded as a model.

- ``map-NNNN.npz``: the evaluation images' penultimate features after epoch NNNN projected to 2-D, with
  their predicted class and confidence; the trainer writes one for every epoch (``write_feature_map``,
  from ``RunStore.write_epoch_files``), a run trained before maps existed gets one for its checkpoint's
  epoch when first asked (``ensure_feature_map``);
- ``features-NNNN.npz``: the nearest-neighbour bank of the checkpoint of epoch NNNN: unit-length float16
  penultimate features of ``BANK_SIZE`` class-balanced training images among those the run trained on,
  computed the first time a mistake is explained, then reused (``feature_bank``).

Both are derived from the checkpoint: one that is missing, unreadable or stale is computed again, and
one that cannot be written (a folder in its place, a read-only run folder) is used from memory. They are
checked when read (``resnet.store.run_arrays``). What computes them (``resnet.core.explain``) is handed
in by the caller as a function, so reading a stored map or bank needs no TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.fashion_mnist import load_fashion_mnist
from data.subsets import stratified_subset
from resnet.core.explain import normalise_rows
from resnet.files import atomic_write, save_npz
from resnet.store import run_arrays
from resnet.store.run_state import DamagedRun, RunError, epoch_files, features_name, map_name

# The nearest-neighbour bank: a class-balanced subset of the run's training images, the same for every epoch.
BANK_SIZE = 6000
BANK_SEED = 0


@dataclass(frozen=True)
class FeatureBank:
    """Penultimate features of training images for nearest-neighbour look-ups, for one checkpoint."""

    epoch: int  # the checkpoint's epoch
    indices: np.ndarray  # int32 indices into the 60,000 training images
    labels: np.ndarray  # uint8 their classes
    features: np.ndarray  # float16 (n, d), rows of unit length (read-only)
    unsaved: str = ""  # why the bank could not be written to its file (then it lives in memory only)


# --- feature maps ----------------------------------------------------------------------------------------
def write_feature_map(run, epoch: int, arrays: dict) -> dict:
    """Check and write the map of ``epoch`` (``coords``, ``explained``, ``indices``, ``predicted``,
    ``confidence``); returns the arrays as stored."""
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    try:
        checked = run_arrays.check_feature_map(
            {**arrays, "epoch": np.int32(epoch)}, map_name(epoch), epoch=epoch, evaluated=None
        )
    except KeyError as error:
        raise DamagedRun(f"run {run.run_id}: the map of epoch {epoch} lacks {error}") from None
    atomic_write(run.path / map_name(epoch), lambda temporary: save_npz(temporary, **checked))
    return checked


def feature_map_epochs(run) -> list[int]:
    """The committed epochs (1 ... epochs_done) that have a map file, in order."""
    return sorted(
        epoch
        for path, epoch, kind in epoch_files(run.path)
        if kind == "map" and 1 <= epoch <= run.epochs_done and not path.is_symlink() and path.is_file()
    )


def load_feature_map(store, run, epoch: int) -> dict[str, np.ndarray]:
    """The map of ``epoch``: ``coords`` (n, 2) float32, ``explained`` (2,) float32, ``indices`` int32
    (test images the run evaluates), ``predicted`` uint8, ``confidence`` float16 and ``epoch`` (checked:
    ``resnet.store.run_arrays.check_feature_map``). RunError if there is none, DamagedRun if it is
    unreadable or does not fit the run."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not 1 <= epoch <= run.epochs_done:
        raise RunError(f"run {run.run_id} has no epoch {epoch!r} (epochs 1-{run.epochs_done} are committed)")
    path = run.path / map_name(int(epoch))
    if path.is_symlink() or not path.is_file():
        raise RunError(f"run {run.run_id} has no feature map for epoch {epoch}")
    evaluated = store.load_predictions(run)["indices"]
    try:
        return run_arrays.read_feature_map(path, epoch=int(epoch), evaluated=evaluated)
    except DamagedRun as error:
        raise DamagedRun(f"run {run.run_id}: {error}") from error


def ensure_feature_map(store, run, compute_map) -> dict[str, np.ndarray]:
    """The map of the checkpoint's epoch (``run.epochs_done``), computed once if there is none.

    For runs trained before maps were recorded (or whose map is damaged): ``compute_map(indices)``
    returns ``coords``, ``explained``, ``predicted``, ``confidence`` and ``indices`` of those evaluated
    test images from the checkpoint (``resnet.core.explain.feature_map_of``), and the map is written
    atomically for later views. RunError if it cannot be written (a folder in the way of the file, a
    read-only run folder).
    """
    epoch = run.epochs_done
    if not epoch:
        raise RunError(f"run {run.run_id} has no checkpoint yet")
    try:
        return load_feature_map(store, run, epoch)
    except RunError:  # missing or damaged: (re)compute it
        pass
    computed = dict(compute_map(store.load_predictions(run)["indices"]))
    try:
        return write_feature_map(run, epoch, computed)
    except OSError as error:
        raise RunError(f"run {run.run_id}: the map of epoch {epoch} cannot be written ({error})") from error


# --- the nearest-neighbour bank --------------------------------------------------------------------------
def bank_indices(run, train_labels: np.ndarray) -> np.ndarray:
    """The training images of the run's nearest-neighbour bank: ``BANK_SIZE`` (or all, if fewer) of the
    images it trained on, class-balanced, chosen with a fixed seed (int32, sorted)."""
    train_labels = np.asarray(train_labels)
    trained = stratified_subset(train_labels, run.config.train_subset, seed=run.config.seed)
    chosen = stratified_subset(train_labels[trained], min(BANK_SIZE, len(trained)), seed=BANK_SEED)
    return trained[chosen].astype(np.int32)


def feature_bank(run, compute, *, train_labels: np.ndarray | None = None) -> FeatureBank:
    """The nearest-neighbour bank of the run's checkpoint, from ``features-NNNN.npz`` or computed once.

    ``compute(train_indices)`` returns the penultimate features (n, d) of those training images with
    the checkpoint's model (``resnet.core.explain.penultimate_features``). ``train_labels`` are the
    60,000 training labels (default: read with ``data.fashion_mnist.load_fashion_mnist``). A missing,
    unreadable or stale file is (re)computed and written atomically (``run_arrays.read_bank``); if it
    cannot be written the bank is used unsaved and ``FeatureBank.unsaved`` says why. The file of an
    older epoch than the checkpoint's is removed.
    """
    epoch = run.epochs_done
    if not epoch or run.config is None:
        raise RunError(f"run {run.run_id} has no checkpoint yet")
    if train_labels is None:
        train_labels = load_fashion_mnist().train_labels
    indices = bank_indices(run, train_labels)
    labels = np.asarray(train_labels)[indices].astype(np.uint8)
    path = run.path / features_name(epoch)
    stored = run_arrays.read_bank(path, epoch=epoch, indices=indices, labels=labels)
    if stored is not None:
        bank = FeatureBank(epoch, indices, labels, read_only(stored))
    else:
        bank = _computed_bank(run, path, compute, indices, labels)
    for old, old_epoch, kind in epoch_files(run.path):
        if kind == "features" and old_epoch < epoch:
            with contextlib.suppress(OSError):
                old.unlink()
    return bank


def _computed_bank(run, path: Path, compute, indices: np.ndarray, labels: np.ndarray) -> FeatureBank:
    features = np.asarray(compute(indices), dtype=np.float32)
    if features.ndim != 2 or len(features) != len(indices) or not np.isfinite(features).all():
        raise RunError(f"run {run.run_id}: the bank's features have shape {features.shape} or are not finite")
    bank = FeatureBank(run.epochs_done, indices, labels, read_only(normalise_rows(features).astype(np.float16)))
    arrays = {"epoch": np.int32(bank.epoch), "indices": indices, "labels": labels, "features": bank.features}
    try:
        atomic_write(path, lambda temporary: save_npz(temporary, **arrays))
    except OSError as error:  # a derived cache: used unsaved, computed again next time
        return dataclasses.replace(bank, unsaved=f"{path.name} cannot be written ({error.strerror or error})")
    return bank


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared by every view of the run (and cached as float32 by explain)
    return array


# --- the checkpoint as a model ---------------------------------------------------------------------------
def load_model(store, run):
    """The committed checkpoint as a compiled Keras model (``safe_mode=True``: no code runs)."""
    import keras  # here: a process that only lists or shows runs never imports Keras for it

    path = store.committed_checkpoint(run)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file
        raise DamagedRun(f"run {run.run_id}: {path.name} is not a loadable Keras model ({error})") from error
