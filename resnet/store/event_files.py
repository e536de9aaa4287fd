"""A run's TensorBoard event files, ``RUN/tensorboard/``: a view of its records, rewritten from them.

The layout is the one Keras' ``TensorBoard`` callback writes, one folder per split under the run, with the
HParams session above them (``tensorboard --logdir CACHE`` names them ``RUN/tensorboard/train`` ...)::

    tensorboard/events.out.tfevents.0000.hparams          the run's settings (an HParams session) and the
                                                          experiment's metrics
    tensorboard/train/events.out.tfevents.NNNN.scalars    epoch_accuracy, epoch_loss (the optimised loss),
                                                          epoch_cross_entropy, epoch_learning_rate,
                                                          epoch_seconds, cumulative_seconds, images_per_second
    tensorboard/test/events.out.tfevents.NNNN.scalars     epoch_accuracy, epoch_cross_entropy, best_accuracy
    tensorboard/test/events.out.tfevents.NNNN.confusion   the confusion matrix after epoch NNNN, as an image
    tensorboard/validation/events.out.tfevents.NNNN.scalars   an auto run's held-out images: epoch_accuracy,
                                                          epoch_cross_entropy
    tensorboard/projector/                                the Projector's files (``resnet/store/projector.py``)

Each epoch gets its own files, written whole under a temporary name and renamed, the image before the
scalars (TensorBoard's Python loader reads a folder's files in name order and skips one that appears before
the last it read; its Rust loader reads them all), so a live TensorBoard sees each epoch as it commits. The
scalars and HParams files are a function of ``config.json``, ``state.json`` and ``history.csv`` alone (wall
time = the run's creation + its cumulative seconds), so ``sync`` compares every file with what it would
write and rewrites one that differs, is missing, is a link or is no file; a confusion image needs the
epoch's predictions, which only the committed epoch keeps, so an earlier epoch's image is kept while it
reads back as event records and removed when it does not. A commit writes its own epoch's files
(``RunStore.record_epoch``; the first commit of a run in a process checks them all), ``python -m resnet
export-tensorboard`` and the Runs tab's button check every file (runs trained before event files existed,
damaged folders). A check never removes files of epochs committed after the run was read, nor, while a
trainer holds the run's lock, any file of a later epoch than those it sees. The files are never part of a
run's truth: the run store never reads them, a failure to write them is logged and the run goes on, and
Delete removes them with the run.

Written with TensorBoard's own protocol buffers and record writer: no TensorFlow is imported. TensorBoard's
modules take 0.1 s to import: the run store imports this module only when it commits an epoch.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import summary_v2 as hparams
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

from data.fashion_mnist import CLASS_NAMES
from resnet.analysis import confusion_matrix
from resnet.config import TrainConfig, param_specs
from resnet.files import atomic_write, lock_held
from resnet.records import RecordError, read_bounded
from resnet.store.run_state import DamagedRun, RunError

FOLDER = "tensorboard"
SPLITS = ("train", "test", "validation")
HPARAMS_FILE = "events.out.tfevents.0000.hparams"
EPOCH_FILE = re.compile(r"events\.out\.tfevents\.(\d{4,})\.(scalars|confusion)")
MAX_EVENT_FILE = 1 << 20  # ours are a few kilobytes: a larger file is no file of ours
STALE_TEMPORARY_SECONDS = 600
TEMPORARY_SUFFIX = ".events"  # a temporary name without "tfevents", so TensorBoard never reads a half-written file
# The scalars of each split: TensorBoard tag -> history.csv column (best_accuracy is the running maximum).
SCALARS = {
    "train": {
        "epoch_accuracy": "train_accuracy",
        "epoch_loss": "train_loss",
        "epoch_cross_entropy": "train_cross_entropy",
        "epoch_learning_rate": "learning_rate",
        "epoch_seconds": "epoch_seconds",
        "cumulative_seconds": "cumulative_seconds",
        "images_per_second": "images_per_second",
    },
    "test": {"epoch_accuracy": "test_accuracy", "epoch_cross_entropy": "test_loss", "best_accuracy": None},
    "validation": {"epoch_accuracy": "val_accuracy", "epoch_cross_entropy": "val_loss"},
}
# The HParams view's metric columns: (tag, split, name shown).
METRICS = (
    ("epoch_accuracy", "test", "final test accuracy"),
    ("best_accuracy", "test", "best test accuracy"),
    ("cumulative_seconds", "train", "total seconds"),
    ("epoch_accuracy", "validation", "final validation accuracy"),
)
CONFUSION_TAG = "confusion_matrix"
CELL = 34  # pixels per cell of the confusion image
LABELS = 96  # pixels left of the matrix for the true classes' names


@dataclass
class Synced:
    """What ``sync`` did to one run's event files."""

    written: list[str] = field(default_factory=list)  # paths relative to the run's tensorboard folder
    removed: list[str] = field(default_factory=list)
    kept: int = 0

    def text(self) -> str:
        if not self.written and not self.removed:
            return f"up to date ({self.kept} files)"
        parts = [f"{len(self.written)} written"] + ([f"{len(self.removed)} removed"] if self.removed else [])
        return ", ".join(parts) + f", {self.kept} kept"


def folder_of(run) -> Path:
    return run.path / FOLDER


def sync(store, run, *, only_last: bool = False) -> Synced:
    """Make ``run``'s event files match its records (see the module's docstring); idempotent. With
    ``only_last``, the HParams and the committed epoch's files alone (what a commit adds: the run store
    checks every file at a run's first commit in a process).

    RunError if the run is damaged or the files cannot be written (the message says which)."""
    # A trainer of the run (another process, or this one) may commit epochs after ``run`` is read: files of
    # epochs after it are then the trainer's, never removed (probed first: a trainer may commit and exit).
    trained = only_last or lock_held(run.path / ".lock")
    synced = Synced()
    try:
        if not only_last:  # ``run`` may have been read before a trainer's last commits (a page's runs)
            run = store.load(run.run_id)
        if run.damaged or run.config is None or run.state is None or run.history is None:
            raise RunError(f"run {run.run_id} is damaged ({run.problem}): it has no event files to write")
        root = real_folder(folder_of(run), synced, "")
        _put(root / HPARAMS_FILE, _hparams_bytes(run), synced, HPARAMS_FILE)
        if not only_last:
            remove_stale_temporaries(root, synced, "")
        rows = run.history.to_dict("records")
        best = np.maximum.accumulate([row["test_accuracy"] for row in rows]) if rows else []
        for split in SPLITS:
            if split == "validation" and not _has_validation(rows):
                _clear(root / split, synced, split, keep_after=run.epochs_done if trained else None)
                continue
            folder = real_folder(root / split, synced, split)
            # The image before the scalars: it sorts first, and TensorBoard's Python loader reads a folder's
            # files in name order, skipping one that appears before the last it read.
            wanted = _sync_confusion(store, run, folder, synced, only_last) if split == "test" else set()
            for row, best_so_far in (
                list(zip(rows, best, strict=True))[-1:] if only_last else zip(rows, best, strict=True)
            ):
                name = f"events.out.tfevents.{int(row['epoch']):04d}.scalars"
                wanted.add(name)
                _put(folder / name, _scalars_bytes(run, split, row, float(best_so_far)), synced, f"{split}/{name}")
            if not only_last:
                _remove_others(folder, wanted, split, synced, keep_after=run.epochs_done if trained else None)
    except OSError as error:
        raise RunError(
            f"run {run.run_id}: its TensorBoard files cannot be written in {folder_of(run)} ({error.strerror or error})"
        ) from error
    return synced


def _has_validation(rows: list[dict]) -> bool:
    return any(np.isfinite(row.get("val_accuracy", np.nan)) for row in rows)


def _sync_confusion(store, run, folder: Path, synced: Synced, only_last: bool) -> set[str]:
    """The committed epoch's image, written from its predictions; earlier epochs' images kept if sound."""
    kept = set()
    for name in [] if only_last else os.listdir(folder):
        match = EPOCH_FILE.fullmatch(name)
        # The committed epoch's too: a commit since ``run`` was read may have superseded its predictions.
        if match and match[2] == "confusion" and 1 <= int(match[1]) <= run.epochs_done:
            if _read_events(folder / name, CONFUSION_TAG, int(match[1])):
                kept.add(name)
                synced.kept += 1
    if run.epochs_done:
        name = f"events.out.tfevents.{run.epochs_done:04d}.confusion"
        try:
            predictions = store.load_predictions(run)
        except (RunError, DamagedRun):  # the run store reports those; no image without them
            return kept
        if int(predictions["epoch"]) != run.epochs_done:  # a later commit superseded them since ``run`` was read
            return kept
        counts = confusion_matrix(predictions["labels"], predictions["probabilities"].argmax(axis=1))
        _put(folder / name, _confusion_bytes(run, counts), synced, f"test/{name}")
        kept.add(name)
    return kept


def real_folder(path: Path, synced: Synced | None = None, name: str = "") -> Path:
    """``path`` as a real folder: a link (never followed) or a file in its place is removed first."""
    if _unlinked_if_no_folder(path) and synced is not None:
        synced.removed.append(name or FOLDER)
    path.mkdir(exist_ok=True)
    return path


def _unlinked_if_no_folder(path: Path) -> bool:
    """Remove a link, file or pipe where a folder of ours belongs; whether there was one."""
    if os.path.islink(path) or (os.path.lexists(path) and not path.is_dir()):
        path.unlink()
        return True
    return False


def _put(path: Path, content: bytes, synced: Synced, name: str) -> None:
    """Write ``content`` to ``path`` unless the file already holds it."""
    if _read_bounded(path) == content:
        synced.kept += 1
        return
    if os.path.lexists(path) and (os.path.islink(path) or not path.is_file()):
        _remove(path)
    atomic_write(path, lambda temporary: temporary.write_bytes(content), suffix=TEMPORARY_SUFFIX)
    synced.written.append(name)


def _remove_others(folder: Path, wanted: set[str], split: str, synced: Synced, *, keep_after: int | None) -> None:
    """Remove this module's files that no record asks for (epochs not committed, unsound images) but those
    of epochs after ``keep_after`` (a trainer's, committed since), and temporaries left by a killed writer;
    anything else in the folder is not ours and is left alone."""
    for name in os.listdir(folder):
        match = EPOCH_FILE.fullmatch(name)
        if name in wanted or not match or (keep_after is not None and int(match[1]) > keep_after):
            continue
        _remove(folder / name)
        synced.removed.append(f"{split}/{name}")
    remove_stale_temporaries(folder, synced, split)


def remove_stale_temporaries(folder: Path, synced: Synced | None = None, where: str = "") -> None:
    """Remove the temporary files a killed writer left in ``folder`` (none another may still be writing)."""
    for name in os.listdir(folder):
        if _stale_temporary(folder / name):
            _remove(folder / name)
            if synced is not None:
                synced.removed.append(f"{where}/{name}" if where else name)


def _clear(path: Path, synced: Synced, split: str, *, keep_after: int | None) -> None:
    """No event files of ``split`` (a run without held-out images; but a trainer's later epochs': see
    ``_remove_others``): a link or file in the folder's place goes, as do our files in it."""
    if _unlinked_if_no_folder(path):
        synced.removed.append(split)
    elif path.is_dir():
        _remove_others(path, set(), split, synced, keep_after=keep_after)


def _stale_temporary(path: Path) -> bool:
    """A temporary file of ours no writer can still be writing (another process may be syncing now)."""
    if not path.name.startswith(".tmp-"):
        return False
    try:
        return time.time() - path.lstat().st_mtime > STALE_TEMPORARY_SECONDS
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Remove a file, link or folder; one another sync removed first is gone all the same."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _read_bounded(path: Path) -> bytes | None:
    """A regular file's bytes (``resnet.records.read_bounded``: no link followed, no pipe waited on), or None."""
    try:
        return read_bounded(path, max_bytes=MAX_EVENT_FILE)
    except RecordError:
        return None


# --- the events ----------------------------------------------------------------------------------------------
def _records(events: list) -> bytes:
    """Events as a TFRecord file's bytes, after the file-version event every event file starts with."""
    stream = io.BytesIO()
    writer = RecordWriter(stream)
    for event in [Event(wall_time=events[0].wall_time, file_version="brain.Event:2"), *events]:
        writer.write(event.SerializeToString(deterministic=True))  # map fields (HParams) in key order
    return stream.getvalue()


def _stored(value) -> float:
    """``value`` as history.csv stores it (6 significant digits): a commit's events and those written later
    from the file are the same bytes."""
    return float(f"{float(value):.6g}")


def _event(run, step: int, seconds: float, summary):
    """An event at the run's creation + ``seconds`` (to the millisecond: the same from memory as from the file)."""
    return Event(wall_time=round(run.state.created + _stored(seconds), 3), step=step, summary=summary)


def _scalars_bytes(run, split: str, row: dict, best: float) -> bytes:
    values = []
    for tag, column in SCALARS[split].items():
        value = _stored(best if column is None else row.get(column, np.nan))
        if np.isfinite(value):  # a run trained before a column existed, a run without validation images
            values.extend(scalar.scalar_pb(tag, value).value)
    summary = Summary(value=values)
    return _records([_event(run, int(row["epoch"]), float(row["cumulative_seconds"]), summary)])


def hparams_of(run) -> dict[str, bool | int | float | str]:
    """The HParams of a run: every config field (each an int, float, bool or str: ``param_specs``), and the
    precision it trained in."""
    return {**run.config.to_dict(), "trained_precision": run.state.precision or ""}


def _declared(spec):
    """A config field as an HParam, with the domain and help the config declares (the HParams view's filters)."""
    if spec.type is bool:
        domain = hparams.Discrete([False, True])
    elif spec.choices is not None:
        domain = hparams.Discrete(list(spec.choices))
    else:
        domain = (hparams.IntInterval if spec.type is int else hparams.RealInterval)(*spec.limits)
    return hparams.HParam(spec.name, domain, description=spec.help)


def _hparams_bytes(run) -> bytes:
    values = hparams_of(run)
    session = hparams.hparams_pb(values, trial_id=run.run_id, start_time_secs=int(run.state.created))
    experiment = hparams.hparams_config_pb(
        hparams=[*(_declared(spec) for spec in param_specs(TrainConfig)), hparams.HParam("trained_precision")],
        metrics=[hparams.Metric(tag, group=split, display_name=shown) for tag, split, shown in METRICS],
        time_created_secs=int(run.state.created),
    )
    values = [*experiment.value, *session.value]
    for value in values:  # their plugin data is a serialized message too, with a map: in key order, always
        content = HParamsPluginData.FromString(value.metadata.plugin_data.content)
        value.metadata.plugin_data.content = content.SerializeToString(deterministic=True)
    return _records([_event(run, 0, 0.0, Summary(value=values))])


def _confusion_bytes(run, counts: np.ndarray) -> bytes:
    png, width, height = confusion_png(counts)
    metadata = image_metadata.create_summary_metadata(
        display_name="confusion matrix",
        description="rows: true class, columns: predicted class (0-9 in the order of the rows); "
        "shade: the share of the row, number: the count",
    )
    tensor = tensor_util.make_tensor_proto([str(width).encode(), str(height).encode(), png])
    value = Summary.Value(tag=CONFUSION_TAG, metadata=metadata, tensor=tensor)
    seconds = float(run.history["cumulative_seconds"].iloc[run.epochs_done - 1])
    return _records([_event(run, run.epochs_done, seconds, Summary(value=[value]))])


def confusion_png(counts: np.ndarray) -> tuple[bytes, int, int]:
    """The confusion matrix as a PNG: (bytes, width, height). Same counts, same bytes."""
    counts = np.asarray(counts, dtype=np.int64)
    classes = len(counts)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    width, height = LABELS + classes * CELL, 18 + classes * CELL
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    draw.text((2, 3), "true \\ predicted", fill="gray", font=font)
    for column in range(classes):
        draw.text((LABELS + column * CELL + CELL // 2 - 3, 3), str(column), fill="black", font=font)
    for row in range(classes):
        top = 18 + row * CELL
        draw.text((2, top + CELL // 2 - 6), f"{row} {CLASS_NAMES[row]}"[:14], fill="black", font=font)
        for column in range(classes):
            shade = int(255 - 200 * share[row, column])
            left = LABELS + column * CELL
            draw.rectangle([left, top, left + CELL - 1, top + CELL - 1], fill=(shade, shade, 255), outline="white")
            text = str(counts[row, column])
            draw.text((left + 3, top + CELL // 2 - 6), text, fill="white" if shade < 140 else "black", font=font)
    stream = io.BytesIO()
    image.save(stream, format="PNG", optimize=False)
    return stream.getvalue(), width, height


def _read_events(path: Path, tag: str, step: int) -> bool:
    """Whether ``path`` reads back as event records (each length and payload checksummed) and holds ``tag``
    at ``step``: the check of a file that cannot be written again."""
    data = _read_bounded(path)
    if data is None:
        return False
    position, found = 0, False
    while position < len(data):
        if position + 12 > len(data):
            return False
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        end = position + 12 + length + 4
        if struct.unpack("<I", data[position + 8 : position + 12])[0] != masked_crc32c(header) or end > len(data):
            return False
        payload = data[position + 12 : end - 4]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc32c(payload):
            return False
        event = Event()
        try:
            event.ParseFromString(payload)
        except Exception:  # noqa: BLE001 (protobuf's DecodeError, or a RuntimeWarning-turned error)
            return False
        found = found or (event.step == step and any(value.tag == tag for value in event.summary.value))
        position = end
    return found
