"""What a training child and the process that started it say to each other (no TensorFlow here).

One JSON object per line. The parent writes the request first (``request_line``), then at any time the
line ``stop`` (stop after the current batch); closing the child's input means the same. The child writes
``progress`` lines while it trains, then exactly one ``finished`` or ``failed`` line; everything else it
or TensorFlow prints goes to stderr, so nothing can corrupt this stream. A line the parent cannot read
(not JSON, an unknown phase, a field too many) is ignored (``parse_line``).

The trainer reports with ``EpochProgress`` in every process, so the app's live view, the CLI and the
sweep runners read one type, importable without Keras.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from resnet.wording import TextEnum

STOP = "stop"


class Phase(TextEnum):
    BUILDING = "building"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SAVING = "saving"


class Event(TextEnum):
    PROGRESS = "progress"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass
class EpochProgress:
    """What the trainer reports while it works (the job manager keeps the latest one)."""

    phase: Phase
    epoch: int
    target_epochs: int
    batch: int = 0
    batches_per_epoch: int = 0
    images_per_second: float = 0.0
    epoch_elapsed: float = 0.0

    def __post_init__(self):
        self.phase = Phase(self.phase)


PROGRESS_FIELDS = frozenset(field.name for field in dataclasses.fields(EpochProgress))
PROGRESS_REQUIRED = frozenset({"phase", "epoch", "target_epochs"})


def request_line(*, store, run_id: str, config: dict, dataset_dir, environment: dict[str, str]) -> str:
    """The parent's request: which run of which store to train, with which settings and environment."""
    request = {
        "store": str(store),
        "run_id": run_id,
        "config": config,
        "dataset_dir": None if dataset_dir is None else str(dataset_dir),
        "environment": environment,
    }
    return json.dumps(request) + "\n"


def parse_request(line: str) -> dict:
    """The request on ``line`` as a dict; ValueError if it is not one."""
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError(f"expected a JSON object, got {type(request).__name__}")
    return request


def progress_line(progress: EpochProgress) -> str:
    return json.dumps({"event": Event.PROGRESS.value, **dataclasses.asdict(progress)}) + "\n"


def finished_line(status: str, message: str) -> str:
    return json.dumps({"event": Event.FINISHED.value, "status": status, "message": message}) + "\n"


def failed_line(error: str, message: str) -> str:
    return json.dumps({"event": Event.FAILED.value, "error": error, "message": message}) + "\n"


def parse_line(line: str) -> tuple[Event | None, dict]:
    """One line of the child as (event, fields); (None, {}) for anything else."""
    try:
        message = json.loads(line)
    except ValueError:
        return None, {}
    if not isinstance(message, dict):
        return None, {}
    try:
        event = Event(message.pop("event", None))
    except ValueError:
        return None, {}
    if event is Event.PROGRESS:
        if not PROGRESS_FIELDS.issuperset(message) or not PROGRESS_REQUIRED <= message.keys():
            return None, {}
        if message["phase"] not in {phase.value for phase in Phase}:
            return None, {}
    return event, message
