"""A run's typed state and history, parsed and validated in one place.

``state.json`` is the commit record of a run (see ``resnet/store/runs.py``). It is read into a ``RunState``
by ``RunState.from_json``, which checks the type and range of every field it uses; anything else raises
``DamagedRun`` with the reason, so a copied, truncated or hand-edited cache can mark one run as damaged
but never break a listing. ``RunState.to_json`` writes the same JSON back (fields this version does not
know are kept), so caches written before this module existed still load.

``read_history`` does the same for ``history.csv``: its size, the columns, their numeric types, finite
values and consecutive epochs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pandas as pd

from resnet.config import LIMITS
from resnet.core.schedule import Segment
from resnet.core.stopper import StopDecision

FORMAT_VERSION = 1

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "cumulative_seconds",
    "learning_rate",
    "images_per_second",
    "train_cross_entropy",
    "val_loss",
    "val_accuracy",
)
# Columns added after the first runs were cached, in the order they were added: a history that ends before
# some of them is read with those empty (NaN). The validation columns are empty for runs without a split.
OPTIONAL_HISTORY_COLUMNS = ("train_cross_entropy", "val_loss", "val_accuracy")
MAX_HISTORY_BYTES = 4_000_000  # a generous bound: 500 epochs of ten columns are about 100 KB


class RunError(RuntimeError):
    """A run cannot be found, read or written; the message says which and why."""


class DamagedRun(RunError):
    """A run folder exists but its files are missing, unreadable or inconsistent."""


class RunStatus(str, Enum):  # noqa: UP042 (StrEnum needs Python 3.11; the README promises 3.10)
    """What a run is doing or how it ended. ``running`` is only reported while its process is alive;
    a run whose process died mid-training reads as ``interrupted``."""

    RUNNING = "running"
    COMPLETE = "complete"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DAMAGED = "damaged"

    def __str__(self) -> str:
        return self.value


# Every file of an epoch is "<kind>-NNNN.<suffix>": its checkpoint and predictions (named by the state),
# its feature map (kept for every epoch) and the nearest-neighbour bank of a checkpoint (written on first use).
EPOCH_FILE_SUFFIX = {"checkpoint": "keras", "predictions": "npz", "map": "npz", "features": "npz"}
EPOCH_FILE = re.compile(r"(checkpoint|predictions|map|features)-(\d{4})\.(keras|npz)")
# The only file names a state may point to: a name from a copied or edited state.json is never joined
# to the run folder unless it fully matches (no "../", no absolute path, no other file).
CHECKPOINT_NAME = re.compile(r"checkpoint-\d{4}\.keras")
PREDICTIONS_NAME = re.compile(r"predictions-\d{4}\.npz")


def epoch_file_name(kind: str, epoch: int) -> str:
    return f"{kind}-{epoch:04d}.{EPOCH_FILE_SUFFIX[kind]}"


def checkpoint_name(epoch: int) -> str:
    return epoch_file_name("checkpoint", epoch)


def predictions_name(epoch: int) -> str:
    return epoch_file_name("predictions", epoch)


def map_name(epoch: int) -> str:
    return epoch_file_name("map", epoch)


def features_name(epoch: int) -> str:
    return epoch_file_name("features", epoch)


def epoch_file(name: str) -> tuple[str, int] | None:
    """(kind, epoch) of an epoch file's name, or None for any other name."""
    match = EPOCH_FILE.fullmatch(name)
    if match and EPOCH_FILE_SUFFIX[match.group(1)] == match.group(3):
        return match.group(1), int(match.group(2))
    return None


def epoch_files(folder: Path):
    """(path, epoch, kind) of every checkpoint, predictions, map and features file in ``folder``."""
    for path in folder.iterdir():
        found = epoch_file(path.name)
        if found is not None:
            yield path, found[1], found[0]


LATER_FIELDS = ("validation_images", "stop", "branch_of")  # state fields added with auto runs and budget curves


@dataclass(frozen=True)
class RunState:
    """The contents of ``state.json``."""

    run_id: str
    status: RunStatus
    epochs_done: int
    target_epochs: int
    segments: tuple[Segment, ...] = ()
    checkpoint: str | None = None  # file name of the committed checkpoint (epoch ``epochs_done``)
    predictions: str | None = None  # file name of the committed predictions
    fingerprint: str | None = None  # TrainConfig.fingerprint() of the run
    created: float = 0.0  # seconds since the epoch
    updated: float = 0.0
    precision: str | None = None  # the concrete precision the run trains in
    device: str | None = None  # where it was trained, e.g. "CPU: AMD EPYC ..."
    train_images: int | None = None
    eval_images: int | None = None
    message: str = ""  # how the last training ended, in words
    pid: int | None = None  # the process training it while status is running
    host: str | None = None
    validation_images: int | None = None  # training images held out for an auto run's stopper
    stop: StopDecision | None = None  # an auto run's decision to stop adding epochs, once made
    branch_of: str | None = None  # a budget-curve branch: "<trunk run id>@<epoch>" it started from
    extra: dict = field(default_factory=dict)  # fields of a newer version, written back unchanged

    def replace(self, **changes) -> RunState:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        values = {
            "format_version": FORMAT_VERSION,
            **{spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self) if spec.name != "extra"},
        }
        values["status"] = self.status.value
        values["segments"] = [segment.to_dict() for segment in self.segments]
        values["stop"] = None if self.stop is None else self.stop.to_dict()
        for name in LATER_FIELDS:  # written only when set: a state from before them reads back the same
            if values[name] is None:
                del values[name]
        return {**self.extra, **values}

    @classmethod
    def from_json(cls, values: dict, *, run_id: str) -> RunState:
        """Parse and validate ``state.json``; DamagedRun names the first bad field."""
        if values.get("format_version") != FORMAT_VERSION:
            raise DamagedRun(
                f"state.json has format version {values.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        missing = [key for key in ("status", "epochs_done", "target_epochs", "segments") if key not in values]
        if missing:
            raise DamagedRun(f"state.json lacks {', '.join(missing)}")
        known = {spec.name for spec in dataclasses.fields(cls)} | {"format_version"}
        epochs_done = _count(values, "epochs_done", high=LIMITS["epochs"][1])
        state = cls(
            run_id=run_id,
            status=_status(values["status"]),
            epochs_done=epochs_done,
            target_epochs=_count(values, "target_epochs", high=LIMITS["epochs"][1]),
            segments=_segments(values["segments"]),
            checkpoint=_file_name(values, "checkpoint", CHECKPOINT_NAME, checkpoint_name(epochs_done)),
            predictions=_file_name(values, "predictions", PREDICTIONS_NAME, predictions_name(epochs_done)),
            fingerprint=_optional(values, "fingerprint", str),
            created=_time(values, "created"),
            updated=_time(values, "updated"),
            precision=_optional(values, "precision", str),
            device=_optional(values, "device", str),
            train_images=_optional_count(values, "train_images"),
            eval_images=_optional_count(values, "eval_images"),
            message=_optional(values, "message", str) or "",
            pid=_optional_count(values, "pid"),
            host=_optional(values, "host", str),
            validation_images=_optional_count(values, "validation_images"),
            stop=_stop(values.get("stop")),
            branch_of=_optional(values, "branch_of", str),
            extra={key: value for key, value in values.items() if key not in known},
        )
        if epochs_done and (state.checkpoint is None or state.predictions is None):
            raise DamagedRun(f"state.json names no checkpoint or predictions for epoch {epochs_done}")
        return state


def _status(value) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        raise DamagedRun(f"state.json has an unknown status {value!r}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(values: dict, key: str, *, high: int) -> int:
    value = values[key]
    if not _is_int(value) or not 0 <= value <= high:
        raise DamagedRun(f"state.json has an invalid {key} {value!r} (a whole number from 0 to {high})")
    return value


def _optional_count(values: dict, key: str) -> int | None:
    value = values.get(key)
    if value is not None and (not _is_int(value) or not 0 <= value < 2**63):
        raise DamagedRun(f"state.json has an invalid {key} {value!r}")
    return value


def _optional(values: dict, key: str, kind: type):
    value = values.get(key)
    if value is not None and not isinstance(value, kind):
        raise DamagedRun(f"state.json has an invalid {key} {value!r} (expected {kind.__name__})")
    return value


def _time(values: dict, key: str) -> float:
    value = values.get(key, 0.0)
    # Compared, not converted: float() of a huge JSON integer (10**400) raises OverflowError; NaN fails too.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= sys.float_info.max:
        raise DamagedRun(f"state.json has an invalid {key} time {value!r}")
    return float(value)


def _file_name(values: dict, key: str, pattern: re.Pattern, expected: str) -> str | None:
    name = values.get(key)
    if name is None:
        return None
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise DamagedRun(f"state.json names an invalid {key} file {name!r}")
    if name != expected:
        raise DamagedRun(f"state.json's {key} {name!r} does not belong to its last epoch ({expected})")
    return name


def _stop(value) -> StopDecision | None:
    if value is None:
        return None
    try:
        return StopDecision.from_dict(value)
    except ValueError as error:
        raise DamagedRun(f"state.json has an invalid stop decision ({error})") from None


def _segments(value) -> tuple[Segment, ...]:
    if not isinstance(value, list):
        raise DamagedRun(f"state.json has invalid segments {value!r}")
    segments = []
    for item in value:
        if not isinstance(item, dict) or not {"start_epoch", "end_epoch"} <= set(item) <= SEGMENT_KEYS:
            raise DamagedRun(f"state.json has an invalid segment {item!r}")
        start, end, cooldown = item["start_epoch"], item["end_epoch"], item.get("cooldown_epochs", 0)
        if not (_is_int(start) and _is_int(end) and 1 <= start <= end <= LIMITS["epochs"][1] + 1):
            raise DamagedRun(f"state.json has an invalid segment {item!r}")
        if not _is_int(cooldown) or not 0 <= cooldown <= end - start + 1:
            raise DamagedRun(f"state.json has an invalid segment {item!r} (its cooldown is longer than it)")
        segments.append(Segment(start, end, cooldown))
    return tuple(segments)


SEGMENT_KEYS = {"start_epoch", "end_epoch", "cooldown_epochs"}


def read_history(path: Path, epochs_done: int) -> pd.DataFrame:
    """The committed rows of ``history.csv`` (rows past ``epochs_done`` belong to an unfinished epoch).

    At most ``MAX_HISTORY_BYTES``: 500 epochs take about 100 KB, and pandas would read any size whole.
    """
    if not path.is_file():
        raise DamagedRun("history.csv is missing")
    size = path.stat().st_size
    if size > MAX_HISTORY_BYTES:
        raise DamagedRun(f"history.csv is {size:,} bytes, more than {LIMITS['epochs'][1]} epochs take")
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise DamagedRun(f"history.csv is unreadable ({error})") from error
    columns = list(history.columns)
    written_before = len(HISTORY_COLUMNS) - len(OPTIONAL_HISTORY_COLUMNS)
    if written_before <= len(columns) < len(HISTORY_COLUMNS) and columns == list(HISTORY_COLUMNS[: len(columns)]):
        for column in HISTORY_COLUMNS[len(columns) :]:  # written before these columns existed
            history[column] = float("nan")
    if list(history.columns) != list(HISTORY_COLUMNS):
        raise DamagedRun(f"history.csv has columns {list(history.columns)}, expected {list(HISTORY_COLUMNS)}")
    if len(history) < epochs_done:
        raise DamagedRun(f"history.csv has {len(history)} epochs, state.json says {epochs_done}")
    history = history.iloc[:epochs_done].copy()
    try:
        history = history.astype(float)
    except (ValueError, TypeError, OverflowError) as error:  # OverflowError: an integer too large for a float
        raise DamagedRun(f"history.csv has a value that is not a number ({error})") from error
    required = [column for column in HISTORY_COLUMNS if column not in OPTIONAL_HISTORY_COLUMNS]
    finite = history[required].apply(lambda column: column.map(math.isfinite)).all().all()
    if not finite or list(history["epoch"]) != list(range(1, epochs_done + 1)):
        raise DamagedRun("history.csv has missing values or epochs out of order")
    history["epoch"] = history["epoch"].astype(int)
    return history
