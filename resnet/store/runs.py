"""The run store: one folder per training run under the cache folder, written so that nothing is lost.

A run folder holds:

- ``config.json``: the TrainConfig fields, nothing else (readable by any tool);
- ``history.csv``: one row per completed epoch, columns ``HISTORY_COLUMNS``;
- ``checkpoint-NNNN.keras``: model and optimizer state after epoch NNNN;
- ``predictions-NNNN.npz``: class probabilities on the evaluation images after epoch NNNN;
- ``map-NNNN.npz``: the evaluation images' penultimate features after epoch NNNN projected to 2-D, with
  the predicted class and confidence (``resnet/core/explain.py``); kept for every epoch;
- ``features-NNNN.npz``: the nearest-neighbour bank (penultimate features of ``BANK_SIZE`` training
  images) for the checkpoint of epoch NNNN, written on first use (``resnet.store.artefacts``);
- ``state.json``: the commit record (``resnet.store.run_state.RunState``): status, epochs done, which
  checkpoint and predictions belong to them, the learning-rate segments, and where and how the run
  was trained;
- ``.lock``: held (``flock``) by the process training the run: a run is ``running`` only while some
  process holds it (``lock_held``), so a pid reused by another process after a crash never keeps a run
  "running".

Every file is written to a temporary name and renamed into place (``atomic_write``), and an epoch is
committed by writing ``state.json`` last: files of an epoch that was not committed are ignored and
cleaned up, so a crash at any instant leaves the last complete epoch readable and consistent. The
previous epoch's checkpoint, predictions and features are removed right after the commit (a finished run
holds one checkpoint); a reader that read the state just before a commit and finds its file gone reads
the state once more. The maps of every committed epoch stay.

Everything read from a run folder is validated in one place per kind of file: JSON records with bounded
size and depth (``resnet/records.py``), ``state.json`` and ``history.csv`` field by field
(``resnet/store/run_state.py``), the NumPy files' shapes, types and values against the run
(``resnet/store/run_arrays.py``). A run that fails is listed as ``damaged`` with the reason and never breaks the
listing; a derived cache that fails (the features bank, the map computed for an old run) is ignored and
computed again. Parsed runs are cached by their files' modification times, so listing many runs on every
page rerun costs little.

Nothing is followed out of the cache: a run folder that is a symbolic link is no run, no file of a run
is read through a link, and ``delete`` removes only a real folder of the cache whose every entry is a
file a run writes.

The cache folder is ``$RESNET_CACHE_DIR`` or ``cache/`` at the project root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import stat
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resnet.config import ConfigError, TrainConfig
from resnet.files import (
    atomic_write,
    default_cache_dir,
    file_signature,
    lock_held,
    path_mtime,
    save_npz,
    try_lock,
    write_json,
)
from resnet.records import RecordError, read_json
from resnet.store import artefacts, run_arrays
from resnet.store.run_state import (
    FORMAT_VERSION,
    HISTORY_COLUMNS,
    DamagedRun,
    RunError,
    RunState,
    RunStatus,
    checkpoint_name,
    epoch_file,
    epoch_files,
    map_name,
    predictions_name,
    read_history,
)

__all__ = [
    "FORMAT_VERSION",
    "HISTORY_COLUMNS",
    "DamagedRun",
    "Run",
    "RunError",
    "RunState",
    "RunStatus",
    "RunStore",
]

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # used with fullmatch
RUN_RECORDS = ("config.json", "state.json", "history.csv")
MISSING_EPOCH_FILE = "the committed"  # how a missing file of the committed epoch is reported (read again once)
RUN_FILE_NAMES = frozenset({*RUN_RECORDS, ".lock"})  # with the epoch files and .tmp-* files being written


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
        }


@dataclass(frozen=True)
class EpochFiles:
    """The checkpoint and predictions of one epoch, written but not yet committed."""

    epoch: int
    checkpoint: str
    predictions: str
    feature_map: str | None = None  # map-NNNN.npz, when the trainer gave one


class RunStore:
    """Create, list, read, update and delete runs under one cache folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self._parsed: dict[str, tuple] = {}  # run id -> (file stamps, config, state, history, problem)
        self._parsed_lock = threading.Lock()

    # --- paths -------------------------------------------------------------------------------------
    def path_for(self, run_id: str) -> Path:
        """The folder of ``run_id``; rejects ids that could reach outside the cache folder, and a folder
        that is a symbolic link (to another run, or out of the cache): it is no run of this cache."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
            raise RunError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
        if os.path.islink(self.root / run_id):
            raise RunError(f"{run_id} in {self.root} is a symbolic link, not a run folder: it is left alone")
        path = (self.root / run_id).resolve()
        if path.parent != self.root.resolve():
            raise RunError(f"invalid run id {run_id!r}: it points outside the cache folder")
        return path

    # --- creating and committing ------------------------------------------------------------------
    def create(self, config: TrainConfig, *, precision: str, device: str, train_images: int, eval_images: int) -> Run:
        config.validate()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run cache folder {self.root}: {error}") from error
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-resnet{config.depth}-{config.fingerprint()[:6]}"
        run_id, suffix = base, 1
        while True:  # mkdir is the atomic claim: two processes never get the same folder
            path = self.path_for(run_id)
            try:
                path.mkdir()
                break
            except FileExistsError:
                suffix += 1
                run_id = f"{base}-{suffix}"
            except OSError as error:
                raise RunError(f"cannot create a run folder in {self.root}: {error}") from error
        now = time.time()
        state = RunState(
            run_id=run_id,
            status=RunStatus.STOPPED,
            epochs_done=0,
            target_epochs=config.epochs,
            fingerprint=config.fingerprint(),
            created=now,
            updated=now,
            precision=precision,
            device=device,
            train_images=train_images,
            eval_images=eval_images,
            message="created, no epoch trained yet",
        )
        write_json(path / "config.json", config.to_dict())
        write_history(path / "history.csv", [])
        write_json(path / "state.json", state.to_json())
        return self.load(run_id)

    def update_state(self, run: Run, **changes) -> None:
        """Write a new state.json with ``changes`` (the commit point of every change)."""
        self.write_state(run, **changes)

    def write_state(self, run: Run, **changes) -> None:
        """``update_state`` itself; an epoch's commit writes through here (a subclass that relays state
        changes elsewhere, ``resnet.sweeps.ray_task.RelayingRunStore``, sends the epoch instead)."""
        if "status" in changes:
            changes["status"] = RunStatus(changes["status"])
        state = run.state.replace(**changes, updated=time.time())
        write_json(run.path / "state.json", state.to_json())
        run.state = state
        run.status = state.status

    def write_epoch_files(
        self,
        run: Run,
        epoch: int,
        *,
        save_checkpoint,
        probabilities,
        eval_indices,
        eval_labels,
        feature_map: dict | None = None,
    ) -> EpochFiles:
        """Write the checkpoint, predictions and feature map of ``epoch`` (not yet committed: see ``record_epoch``).

        ``save_checkpoint(path)`` writes the model to ``path`` (a ``.keras`` file). ``feature_map`` holds
        ``coords``, ``explained``, ``predicted`` and ``confidence`` (``resnet.core.explain.feature_map_arrays``);
        its ``indices`` default to ``eval_indices``.
        """
        if epoch != run.epochs_done + 1:
            raise RunError(f"run {run.run_id}: epoch {epoch} does not follow epoch {run.epochs_done}")
        files = EpochFiles(epoch, checkpoint_name(epoch), predictions_name(epoch))
        atomic_write(run.path / files.checkpoint, save_checkpoint)
        arrays = {
            "probabilities": np.asarray(probabilities).astype(np.float32),
            "indices": np.asarray(eval_indices).astype(np.int32),
            "labels": np.asarray(eval_labels).astype(np.uint8),
            "epoch": np.int32(epoch),
        }
        atomic_write(run.path / files.predictions, lambda temporary: save_npz(temporary, **arrays))
        if feature_map is not None:
            files = dataclasses.replace(files, feature_map=map_name(epoch))
            artefacts.write_feature_map(run, epoch, {"indices": eval_indices, **feature_map})
        return files

    def record_epoch(self, run: Run, row: dict, files: EpochFiles) -> None:
        """Commit an epoch whose files are written: history, then state (the commit point)."""
        if int(row["epoch"]) != files.epoch or files.epoch != run.epochs_done + 1:
            raise RunError(f"run {run.run_id}: epoch {row['epoch']} does not follow epoch {run.epochs_done}")
        history = [] if run.history is None else run.history.to_dict("records")
        history = history[: run.epochs_done] + [row]
        write_history(run.path / "history.csv", history)
        self.write_state(run, epochs_done=files.epoch, checkpoint=files.checkpoint, predictions=files.predictions)
        run.history = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
        self.remove_superseded_files(run)

    def remove_superseded_files(self, run: Run) -> None:
        """Delete the checkpoints, predictions and features of epochs before the committed one, right after
        its commit: a finished run keeps one checkpoint. A reader that read the state before the commit and
        finds its file gone reads the state once more (``load``, ``load_predictions``,
        ``artefacts.load_model``). Feature maps are kept for every epoch."""
        for path, epoch, kind in epoch_files(run.path):
            if epoch < run.epochs_done and kind != "map":
                with contextlib.suppress(OSError):
                    path.unlink()

    def remove_uncommitted_files(self, run: Run) -> None:
        """Delete checkpoints, predictions, maps and features of epochs after the committed one, and
        temporary files."""
        for path, epoch, _ in epoch_files(run.path):
            if epoch > run.epochs_done:
                with contextlib.suppress(OSError):
                    path.unlink()
        for path in run.path.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                path.unlink()

    @contextlib.contextmanager
    def locked(self, run: Run):
        """Hold the run's lock (one trainer per run, across processes); RunError if another holds it, or
        if its lock file is a link or a folder (never followed; the message says to remove it)."""
        try:
            lock = self._try_lock(run.path)
        except OSError as error:
            raise RunError(
                f"run {run.run_id} cannot be locked for training: {_lock_file_problem(run.path / '.lock', error)}"
            ) from error
        if lock is None:
            raise RunError(f"run {run.run_id} is being trained by another process")
        try:
            yield
        finally:
            lock.close()  # releases the flock

    @staticmethod
    def _try_lock(folder: Path):
        return try_lock(folder / ".lock")

    # --- reading ------------------------------------------------------------------------------------
    def load(self, run_id: str) -> Run:
        """Read a run's config, state and history; a damaged run comes back with status 'damaged'."""
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        with self._parsed_lock:
            cached = self._parsed.get(run_id)
        if cached is None or cached[0] != _file_stamps(path, cached[2]):
            stamps = _file_stamps(path, None)  # before reading: a change while parsing shows next time
            config, state, history, problem = _parse_run(path, run_id)
            if problem is not None and problem.startswith(MISSING_EPOCH_FILE):  # a commit may have just
                stamps = _file_stamps(path, None)  # superseded the files the state read first named: once more
                config, state, history, problem = _parse_run(path, run_id)
            cached = (stamps + _file_stamps(path, state)[len(stamps) :], config, state, history, problem)
            with self._parsed_lock:
                self._parsed[run_id] = cached
        _, config, state, history, problem = cached
        # The history frame is shared with the cache: treat it as read-only (a commit replaces it).
        run = Run(run_id=run_id, path=path, config=config, state=state, history=history, problem=problem)
        if problem is not None:
            run.status = RunStatus.DAMAGED
        elif state.status is RunStatus.RUNNING and not lock_held(path / ".lock"):  # its trainer is gone
            run.status = RunStatus.INTERRUPTED
        else:
            run.status = state.status
        return run

    def list_runs(self) -> list[Run]:
        """Every run folder, most recently updated first; damaged ones included with their reason."""
        if not self.root.is_dir():
            return []
        runs = []
        for path in self.root.iterdir():
            if path.is_dir() and RUN_ID_PATTERN.fullmatch(path.name) and not path.name.startswith("."):
                try:
                    runs.append(self.load(path.name))
                except RunError:  # deleted meanwhile, or a symbolic link out of the cache: not a run
                    continue
        with self._parsed_lock:  # forget runs that were deleted
            for run_id in set(self._parsed) - {run.run_id for run in runs}:
                self._parsed.pop(run_id, None)
        return sorted(
            runs, key=lambda run: (run.state.updated if run.state else 0.0) or path_mtime(run.path), reverse=True
        )

    def find(self, run_id: str | None) -> Run | None:
        """The run ``run_id`` as committed now, or None if there is no such run (or no id)."""
        if not run_id:
            return None
        try:
            return self.load(run_id)
        except RunError:
            return None

    def latest_with_fingerprint(self, fingerprint: str, runs: list[Run] | None = None) -> Run | None:
        """The newest undamaged run of the same configuration (all but epochs), if any."""
        for run in self.list_runs() if runs is None else runs:
            if not run.damaged and run.state.fingerprint == fingerprint:
                return run
        return None

    def load_predictions(self, run: Run) -> dict[str, np.ndarray]:
        """The committed predictions, checked (``resnet.store.run_arrays.check_predictions``): probabilities
        (n, 10) float32, indices int32 into the test set, labels uint8, epoch. RunError if there are none,
        DamagedRun (naming the file and what is wrong) if they are unreadable or do not fit the run."""
        path = run.predictions_path
        if path is not None and not path.exists():  # superseded by a commit since ``run`` was read: once more
            run = self.find(run.run_id) or run
            path = run.predictions_path
        if path is None or path.is_symlink() or not path.is_file():
            raise RunError(f"run {run.run_id} has no predictions yet")
        try:
            return run_arrays.read_predictions(path, epoch=run.epochs_done, eval_images=run.state.eval_images)
        except DamagedRun as error:
            raise DamagedRun(f"run {run.run_id}: {error}") from error

    def evaluated_indices(self, run: Run) -> np.ndarray:
        """The test-set indices the run evaluates (those of its committed predictions)."""
        return self.load_predictions(run)["indices"]

    def checkpoint_bytes(self, run: Run) -> bytes:
        """The committed checkpoint file's contents (for a download)."""
        path = run.checkpoint_path
        if path is not None and not path.exists():  # superseded by a commit since ``run`` was read: once more
            run = self.find(run.run_id) or run
            path = run.checkpoint_path
        if path is None or not path.is_file():
            raise RunError(f"run {run.run_id} has no checkpoint yet")
        return path.read_bytes()

    def delete(self, run_id: str) -> None:
        """Delete a run folder; refused while a process (this one or another) trains the run, and for
        anything that is not a run: a bad id, a symbolic link (``path_for``), or a folder holding an entry
        no run writes (a folder, or a file of another name), which the message names."""
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        problem = _not_a_run(path)
        if problem:
            raise RunError(f"{run_id} in {self.root} {problem}: nothing was deleted")
        run = self.load(run_id)
        if run.status is RunStatus.RUNNING:
            raise RunError(f"run {run_id} is being trained (pid {run.state.pid}): stop it before deleting it")
        if os.path.lexists(path / ".lock") and not _is_regular(path / ".lock"):
            lock = contextlib.nullcontext()  # a link, a pipe...: not a lock any trainer could hold
        else:
            try:
                lock = self._try_lock(path)
            except OSError as error:
                raise RunError(f"cannot delete run {run_id}: {error}") from error
        if lock is None:
            raise RunError(f"run {run_id} is being trained by another process: stop it before deleting it")
        with lock:
            # Rename first so a half-deleted folder never looks like a run.
            trash = path.with_name(f".deleting-{run_id}-{os.getpid()}")
            os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with self._parsed_lock:
            self._parsed.pop(run_id, None)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _lock_file_problem(path: Path, error: OSError) -> str:
    """What is wrong with a lock file that cannot be opened, and what to do."""
    if os.path.islink(path):
        return f"its lock file {path.name} is a symbolic link (never followed); remove the link"
    if os.path.lexists(path) and not _is_regular(path):
        return f"its lock file {path.name} is not a regular file (a folder or a pipe); remove it"
    return f"its lock file {path.name} cannot be opened ({error.strerror or error})"


def _is_run_entry(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a file a run writes (a record, its lock, an epoch file, a temporary)."""
    if entry.is_dir(follow_symlinks=False):
        return False
    return entry.name in RUN_FILE_NAMES or epoch_file(entry.name) is not None or entry.name.startswith(".tmp-")


def _not_a_run(folder: Path) -> str:
    """Why ``folder`` is not a run folder that Delete may remove ("" if it is): the entries no run
    writes, a few of them named. One pass over the folder."""
    foreign, count, records = [], 0, False
    with os.scandir(folder) as entries:
        for entry in entries:
            if _is_run_entry(entry):
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


def _file_stamps(folder: Path, state: RunState | None) -> tuple:
    """What changes whenever a run's files do: the signatures of the folder, its records and (with
    ``state``) the checkpoint and predictions that state names."""
    names = ["state.json", "config.json", "history.csv"]
    if state is not None:
        names += [name for name in (state.checkpoint, state.predictions) if name]
    base = str(folder)
    return tuple(file_signature(path) for path in [base, *(os.path.join(base, name) for name in names)])


def _read_json(path: Path) -> dict:
    """A run's JSON record (``resnet.records.read_json``: bounded size and depth, no link followed)."""
    try:
        values = read_json(path)
    except RecordError as error:
        raise DamagedRun(str(error)) from error
    if not isinstance(values, dict):
        raise DamagedRun(f"{path.name} does not hold a JSON object")
    return values


def _parse_run(path: Path, run_id: str):
    """(config, state, history, problem) of a run folder; problem is None unless it is damaged."""
    config = state = history = None
    try:
        try:
            config = TrainConfig.from_dict(_read_json(path / "config.json"))
        except (ConfigError, TypeError) as error:
            raise DamagedRun(f"config.json is invalid: {error}") from error
        state = RunState.from_json(_read_json(path / "state.json"), run_id=run_id)
        if state.fingerprint is not None and state.fingerprint != config.fingerprint():
            raise DamagedRun("state.json belongs to another configuration than config.json")
        if path.joinpath("history.csv").is_symlink():
            raise DamagedRun("history.csv is a link, not a file of the run")
        history = read_history(path / "history.csv", state.epochs_done)
        if state.epochs_done:
            _check_epoch_files(path, state)
    except DamagedRun as error:
        return config, state, history, str(error)
    return config, state, history, None


def _check_epoch_files(path: Path, state: RunState) -> None:
    """The committed checkpoint is a zip (Keras loads it only when asked) and the predictions fit the run."""
    for key, name in (("checkpoint", state.checkpoint), ("predictions", state.predictions)):
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise DamagedRun(f"{MISSING_EPOCH_FILE} {key} file of epoch {state.epochs_done} ({name}) is missing")
    if not zipfile.is_zipfile(path / state.checkpoint):
        raise DamagedRun(f"{state.checkpoint} is not a valid Keras file")
    run_arrays.read_predictions(path / state.predictions, epoch=state.epochs_done, eval_images=state.eval_images)
