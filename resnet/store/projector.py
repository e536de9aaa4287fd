"""The feature map in TensorBoard's Projector: one epoch's penultimate features of the evaluated test images.

``export`` writes, in the run's TensorBoard folder (``resnet/store/event_files.py``)::

    tensorboard/projector/epoch-NNNN/features.tsv   one row per evaluated test image: its penultimate
                                                    features after epoch NNNN (4 significant digits)
    tensorboard/projector/epoch-NNNN/metadata.tsv   a header, then per image: true class, predicted class,
                                                    right or wrong, confidence, its index in the test set
    tensorboard/projector/epoch-NNNN/sprite.png     the 28x28 images in the same order, row by row
    tensorboard/projector_config.pbtxt              one embedding per exported epoch

The predicted class and confidence of epoch NNNN come from its feature map (``map-NNNN.npz``, kept for
every epoch), the features from the checkpoint, computed by the caller's ``compute(run, indices)`` (``run`` as read here)
(``resnet.core.explain.penultimate_features``) only when the epoch's features are not already on disk. A
run keeps only its last checkpoint, so an earlier epoch can be exported only if it was while it was the last.
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from data.fashion_mnist import CLASS_NAMES
from resnet.files import atomic_write
from resnet.store import artefacts, event_files
from resnet.store.run_state import RunError

FOLDER = "projector"
CONFIG_FILE = "projector_config.pbtxt"
IMAGE_SIDE = 28
METADATA_COLUMNS = ("label", "predicted", "correct", "confidence", "test_index")


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the epoch, its folder, how many images and features, whether they were computed."""

    epoch: int
    folder: Path
    images: int
    dimensions: int
    computed: bool


def epoch_folder(run, epoch: int) -> Path:
    return event_files.folder_of(run) / FOLDER / f"epoch-{epoch:04d}"


def export(store, run, epoch: int | None, *, compute, test_images: np.ndarray, test_labels: np.ndarray) -> Exported:
    """Write the Projector files of ``epoch`` (default: the last committed) and the config naming every
    exported epoch. RunError if the run has no such epoch, no map for it, no features for it on disk and
    no checkpoint of it, or if a file cannot be written."""
    try:
        run = store.load(run.run_id)  # as it is now: ``run`` may have been read before a trainer's last commits
    except OSError as error:  # a file that went while it was read
        raise RunError(f"run {run.run_id} cannot be read ({error.strerror or error})") from error
    if run.damaged:
        raise RunError(f"run {run.run_id} is damaged ({run.problem}): nothing to export")
    if not run.epochs_done:
        raise RunError(f"run {run.run_id} has no committed epoch yet: no features to show in the Projector")
    epoch = run.epochs_done if epoch is None else epoch
    feature_map = artefacts.load_feature_map(store, run, epoch)  # RunError / DamagedRun name what is wrong
    indices = feature_map["indices"]
    folder = epoch_folder(run, epoch)
    features_path = folder / "features.tsv"
    try:
        for path in (folder.parent.parent, folder.parent, folder):  # real folders first: no link is followed
            event_files.real_folder(path)
            event_files.remove_stale_temporaries(path)  # what a killed export left
        dimensions = _stored_dimensions(features_path, len(indices))
        computed = dimensions is None
        if computed and epoch != run.epochs_done:
            raise RunError(
                f"run {run.run_id}: epoch {epoch}'s features are not on disk and its checkpoint is gone (a run "
                f"keeps only its last checkpoint, epoch {run.epochs_done}): export epoch {run.epochs_done}"
            )
        if computed:
            features = _computed(run, compute, indices)
            if features.ndim != 2 or len(features) != len(indices) or not np.isfinite(features).all():
                raise RunError(f"run {run.run_id}: features of shape {features.shape} or not finite")
            if store.load(run.run_id).epochs_done != epoch:  # the checkpoint computed from may be a later one
                raise RunError(
                    f"run {run.run_id} committed another epoch while its features were computed: export again"
                )
            dimensions = features.shape[1]
            atomic_write(features_path, lambda temporary: _write_features(temporary, features))
        labels = np.asarray(test_labels)[indices]
        atomic_write(folder / "metadata.tsv", lambda temporary: temporary.write_text(_metadata(labels, feature_map)))
        sprite = _sprite(np.asarray(test_images)[indices])
        atomic_write(folder / "sprite.png", lambda temporary: temporary.write_bytes(sprite))
        config = _config(run)
        atomic_write(event_files.folder_of(run) / CONFIG_FILE, lambda temporary: temporary.write_text(config))
    except OSError as error:
        raise RunError(
            f"run {run.run_id}: the Projector files cannot be written ({error.strerror or error})"
        ) from error
    return Exported(epoch, folder, len(indices), dimensions, computed)


def _computed(run, compute, indices: np.ndarray) -> np.ndarray:
    """``compute(run, indices)``: the features from ``run``'s checkpoint; any failure of it as a RunError."""
    try:
        return np.asarray(compute(run, indices), dtype=np.float32)
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001 (Keras and TensorFlow raise many types: out of memory, a bad file)
        raise RunError(
            f"run {run.run_id}: the features could not be computed ({type(error).__name__}: {error})"
        ) from error


def _write_features(path: Path, features: np.ndarray) -> None:
    with open(path, "w") as stream:
        np.savetxt(stream, features, fmt="%.4g", delimiter="\t")


def _stored_dimensions(path: Path, rows: int) -> int | None:
    """The features' width if ``path`` is a regular file of ``rows`` rows, each of as many numbers; else None."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never a link, never blocking
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # before fdopen, which refuses a folder
        os.close(descriptor)
        return None
    try:
        with os.fdopen(descriptor, "rb") as stream:
            first = stream.readline()
            lines = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
            stream.seek(-1, os.SEEK_END)
            whole = stream.read(1) == b"\n"
        width = len(first.split(b"\t"))
        [float(value) for value in first.split(b"\t")]
    except (OSError, ValueError):
        return None
    return width if whole and lines == rows and width > 0 else None


def _metadata(labels: np.ndarray, feature_map: dict) -> str:
    predicted, confidence, indices = feature_map["predicted"], feature_map["confidence"], feature_map["indices"]
    lines = ["\t".join(METADATA_COLUMNS)]
    for label, guess, sure, index in zip(labels, predicted, confidence, indices, strict=True):
        correct = "right" if label == guess else "wrong"
        lines.append(f"{CLASS_NAMES[label]}\t{CLASS_NAMES[guess]}\t{correct}\t{float(sure):.3f}\t{int(index)}")
    return "\n".join(lines) + "\n"


def _sprite(images: np.ndarray) -> bytes:
    """The images as one PNG, row by row on a square grid (the Projector's sprite)."""
    side = max(1, math.ceil(math.sqrt(len(images))))
    grid = np.zeros((side * IMAGE_SIDE, side * IMAGE_SIDE), dtype=np.uint8)
    for position, image in enumerate(images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)):
        row, column = divmod(position, side)
        grid[row * IMAGE_SIDE : (row + 1) * IMAGE_SIDE, column * IMAGE_SIDE : (column + 1) * IMAGE_SIDE] = image
    stream = io.BytesIO()
    Image.fromarray(grid, mode="L").save(stream, format="PNG")
    return stream.getvalue()


def exported_epochs(run) -> list[int]:
    """The epochs whose Projector files are on disk, in order."""
    base = event_files.folder_of(run) / FOLDER
    epochs = []
    for name in sorted(os.listdir(base)) if base.is_dir() and not base.is_symlink() else []:
        folder = base / name
        if name.startswith("epoch-") and name[6:].isdigit() and not folder.is_symlink() and folder.is_dir():
            files = [folder / file for file in ("features.tsv", "metadata.tsv", "sprite.png")]
            if all(file.is_file() and not file.is_symlink() for file in files):
                epochs.append(int(name[6:]))
    return epochs


def _config(run) -> str:
    config = ProjectorConfig()
    for epoch in exported_epochs(run):
        folder = f"{FOLDER}/epoch-{epoch:04d}"
        embedding = config.embeddings.add()
        embedding.tensor_name = f"epoch {epoch}: penultimate features of the evaluated test images"
        embedding.tensor_path = f"{folder}/features.tsv"
        embedding.metadata_path = f"{folder}/metadata.tsv"
        embedding.sprite.image_path = f"{folder}/sprite.png"
        embedding.sprite.single_image_dim.extend([IMAGE_SIDE, IMAGE_SIDE])
    return text_format.MessageToString(config)
