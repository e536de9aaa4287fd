"""One run folder as files: which entries a run writes, how its records are read and checked, and the
``Run`` they make.

``parse_run`` reads ``config.json``, ``state.json`` and ``history.csv`` (``resnet/records.py`` bounds the
JSON, ``resnet/store/run_state.py`` checks each field) and checks the committed epoch's checkpoint and
predictions (``resnet/store/run_arrays.py``); ``file_stamps`` is what changes whenever they do (the store
caches parsed runs by it). ``not_a_run`` says why a folder is no run Delete may remove (a run's entries are
its files and its ``tensorboard/`` folder, which nothing here reads). The epoch files
before the committed one are removed right after a commit (``remove_superseded_files``), those after it
when a trainer takes the run (``remove_uncommitted_files``). ``valid_run_id`` is the one rule for a run id
and a sweep name: letters, digits, ``.``, ``_`` and ``-``, never ``..``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resnet.config import ConfigError, TrainConfig
from resnet.files import atomic_write, file_signature
from resnet.records import RecordError, read_json
from resnet.store import run_arrays
from resnet.store.run_state import (
    HISTORY_COLUMNS,
    DamagedRun,
    RunState,
    RunStatus,
    epoch_file,
    epoch_files,
    read_history,
)

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # used with fullmatch
RUN_RECORDS = ("config.json", "state.json", "history.csv")
MISSING_EPOCH_FILE = "the committed"  # how a missing file of the committed epoch is reported (read again once)
RUN_FILE_NAMES = frozenset({*RUN_RECORDS, ".lock"})  # with the epoch files and .tmp-* files being written
RUN_FOLDERS = frozenset({"tensorboard"})  # the TensorBoard view of its records (resnet/store/event_files.py)


def valid_run_id(name) -> bool:
    """Whether ``name`` may name a run folder (or a sweep): it cannot reach outside the cache folder."""
    return isinstance(name, str) and RUN_ID_PATTERN.fullmatch(name) is not None and ".." not in name


def write_history(path: Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False, float_format="%.6g"))


@dataclass
class Run:
    """Everything known about one run folder (files are read on demand: checkpoints are large).

    ``state`` is None only for a damaged run whose state.json could not be read; ``problem`` says why.
    """

    run_id: str
    path: Path
    config: TrainConfig | None = None
    state: RunState | None = None
    history: pd.DataFrame | None = None
    status: RunStatus = RunStatus.DAMAGED
    problem: str | None = None  # why the run is damaged

    @property
    def damaged(self) -> bool:
        return self.status is RunStatus.DAMAGED

    @property
    def epochs_done(self) -> int:
        return self.state.epochs_done if self.state else 0

    @property
    def target_epochs(self) -> int:
        if self.state:
            return self.state.target_epochs
        return self.config.epochs if self.config else 0

    @property
    def message(self) -> str:
        return self.state.message if self.state else ""

    @property
    def best_test_accuracy(self) -> float | None:
        if self.history is None or self.history.empty:
            return None
        return float(self.history["test_accuracy"].to_numpy().max())

    @property
    def total_seconds(self) -> float:
        if self.history is None or self.history.empty:
            return 0.0
        return float(self.history["cumulative_seconds"].to_numpy()[-1])

    @property
    def checkpoint_path(self) -> Path | None:
        return self.path / self.state.checkpoint if self.state and self.state.checkpoint else None

    @property
    def predictions_path(self) -> Path | None:
        return self.path / self.state.predictions if self.state and self.state.predictions else None

    def length_text(self) -> str:
        """How the run's length is decided, in words (the Runs table's "length", ``show``)."""
        config, state = self.config, self.state
        if config is None or state is None:
            return "unknown"
        if state.branch_of:
            trunk, _, epoch = state.branch_of.rpartition("@")
            return f"budget-curve branch of {trunk} at epoch {epoch}, then its cooldown to epoch {self.target_epochs}"
        if config.epochs_mode == "trunk":
            return "budget-curve trunk: warm-up and stable phase, cooled down by its branches"
        if config.epochs_mode != "auto":
            return f"fixed: {self.target_epochs} epochs"
        if state.stop is not None:
            return "auto: " + state.stop.sentence(done=self.epochs_done)
        return (
            f"auto: until 10 epochs gain under {config.returns_threshold:g} points of validation accuracy "
            f"({state.validation_images or config.validation_count:,} held-out images), at most {config.epochs} epochs"
        )

    def summary(self) -> dict:
        """One row of the runs table."""
        config = vars(self.config) if self.config else {}  # vars(): asdict() deep-copies, slowly
        state = self.state
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "epochs_done": self.epochs_done,
            "target_epochs": self.target_epochs,
            "best_test_accuracy": self.best_test_accuracy,
            "total_seconds": self.total_seconds,
            "depth": config.get("depth"),
            "batch_size": config.get("batch_size"),
            "train_subset": config.get("train_subset"),
            "eval_subset": config.get("eval_subset"),
            "precision": state.precision if state else None,
            "device": state.device if state else None,
            "updated": state.updated if state else None,
            "problem": self.problem or self.message,
            "length": config.get("epochs_mode", "fixed") if not (state and state.branch_of) else "branch",
        }


@dataclass(frozen=True)
class EpochFiles:
    """The checkpoint and predictions of one epoch, written but not yet committed."""

    epoch: int
    checkpoint: str
    predictions: str
    feature_map: str | None = None  # map-NNNN.npz, when the trainer gave one


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def lock_file_problem(path: Path, error: OSError) -> str:
    """What is wrong with a lock file that cannot be opened, and what to do."""
    if os.path.islink(path):
        return f"its lock file {path.name} is a symbolic link (never followed); remove the link"
    if os.path.lexists(path) and not is_regular(path):
        return f"its lock file {path.name} is not a regular file (a folder or a pipe); remove it"
    return f"its lock file {path.name} cannot be opened ({error.strerror or error})"


def is_run_entry(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a file a run writes (a record, its lock, an epoch file, a temporary) or
    its folder of TensorBoard files (Delete removes it whatever it holds)."""
    if entry.name in RUN_FOLDERS:
        return True
    if entry.is_dir(follow_symlinks=False):
        return False
    return entry.name in RUN_FILE_NAMES or epoch_file(entry.name) is not None or entry.name.startswith(".tmp-")


def not_a_run(folder: Path) -> str:
    """Why ``folder`` is not a run folder that Delete may remove ("" if it is): the entries no run
    writes, a few of them named. One pass over the folder."""
    foreign, count, records = [], 0, False
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_run_entry(entry):
                records = records or entry.name in RUN_RECORDS
                continue
            count += 1
            if len(foreign) < 3:
                foreign.append(f"folder {entry.name!r}" if entry.is_dir(follow_symlinks=False) else repr(entry.name))
    if not count:
        return ""
    found = ", ".join(foreign) + (f" and {count - len(foreign)} more" if count > len(foreign) else "")
    if not records:
        return f"is not a run: it holds none of a run's files ({', '.join(RUN_RECORDS)}) but {found}"
    return f"holds {found}, which no run writes (move them out first)"


def file_stamps(folder: Path, state: RunState | None) -> tuple:
    """What changes whenever a run's files do: the signatures of the folder, its records and (with
    ``state``) the checkpoint and predictions that state names."""
    names = ["state.json", "config.json", "history.csv"]
    if state is not None:
        names += [name for name in (state.checkpoint, state.predictions) if name]
    base = str(folder)
    return tuple(file_signature(path) for path in [base, *(os.path.join(base, name) for name in names)])


def read_record(path: Path) -> dict:
    """A run's JSON record (``resnet.records.read_json``: bounded size and depth, no link followed)."""
    try:
        values = read_json(path)
    except RecordError as error:
        raise DamagedRun(str(error)) from error
    if not isinstance(values, dict):
        raise DamagedRun(f"{path.name} does not hold a JSON object")
    return values


def parse_run(path: Path, run_id: str):
    """(config, state, history, problem) of a run folder; problem is None unless it is damaged."""
    config = state = history = None
    try:
        try:
            config = TrainConfig.from_dict(read_record(path / "config.json"))
        except (ConfigError, TypeError) as error:
            raise DamagedRun(f"config.json is invalid: {error}") from error
        state = RunState.from_json(read_record(path / "state.json"), run_id=run_id)
        if state.fingerprint is not None and state.fingerprint != config.fingerprint():
            raise DamagedRun("state.json belongs to another configuration than config.json")
        if path.joinpath("history.csv").is_symlink():
            raise DamagedRun("history.csv is a link, not a file of the run")
        history = read_history(path / "history.csv", state.epochs_done)
        if state.epochs_done:
            check_epoch_files(path, state)
    except DamagedRun as error:
        return config, state, history, str(error)
    return config, state, history, None


def check_epoch_files(path: Path, state: RunState) -> None:
    """The committed checkpoint is a zip (Keras loads it only when asked) and the predictions fit the run."""
    for key, name in (("checkpoint", state.checkpoint), ("predictions", state.predictions)):
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise DamagedRun(f"{MISSING_EPOCH_FILE} {key} file of epoch {state.epochs_done} ({name}) is missing")
    if not zipfile.is_zipfile(path / state.checkpoint):
        raise DamagedRun(f"{state.checkpoint} is not a valid Keras file")
    run_arrays.read_predictions(path / state.predictions, epoch=state.epochs_done, eval_images=state.eval_images)


def remove_superseded_files(folder: Path, epochs_done: int) -> None:
    """Delete the checkpoints, predictions and features of epochs before the committed one, right after
    its commit: a finished run keeps one checkpoint. A reader that read the state before the commit and
    finds its file gone reads the state once more (``RunStore.load``, ``RunStore.load_predictions``,
    ``artefacts.load_model``). Feature maps are kept for every epoch."""
    for path, epoch, kind in epoch_files(folder):
        if epoch < epochs_done and kind != "map":
            with contextlib.suppress(OSError):
                path.unlink()


def remove_uncommitted_files(folder: Path, epochs_done: int) -> None:
    """Delete checkpoints, predictions, maps and features of epochs after the committed one, and
    temporary files."""
    for path, epoch, _ in epoch_files(folder):
        if epoch > epochs_done:
            with contextlib.suppress(OSError):
                path.unlink()
    for path in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            path.unlink()
