"""The run store: one folder per training run under the cache folder, written so that nothing is lost.

A run folder holds:

- ``config.json``: the TrainConfig fields, nothing else (readable by any tool);
- ``history.csv``: one row per completed epoch, columns ``HISTORY_COLUMNS``;
- ``checkpoint-NNNN.keras``: model and optimizer state after epoch NNNN;
- ``predictions-NNNN.npz``: class probabilities on the evaluation images after epoch NNNN;
- ``state.json``: the commit record: status, epochs done, which checkpoint and predictions belong to
  them, the learning-rate segments, and where and how the run was trained.

Every file is written to a temporary name and renamed into place (``atomic_write``), and an epoch is
committed by writing ``state.json`` last: files of an epoch that was not committed are ignored and
cleaned up, so a crash at any instant leaves the last complete epoch readable and consistent.

The cache folder is ``$RESNET_CACHE_DIR`` or ``cache/`` at the project root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from resnet.config import ConfigError, TrainConfig

ENV_VAR = "RESNET_CACHE_DIR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
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
)
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # used with fullmatch

# Statuses a run can have. "running" is only reported while its process is alive; a run whose process
# died mid-training is "interrupted".
STATUSES = ("running", "complete", "stopped", "interrupted", "failed", "damaged")


class RunError(RuntimeError):
    """A run cannot be found, read or written; the message says which and why."""


class DamagedRun(RunError):
    """A run folder exists but its files are missing, unreadable or inconsistent."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or PROJECT_ROOT / "cache")


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through ``write(temporary_path)``, then rename it into place.

    The temporary file sits beside the target (same filesystem), is flushed to disk, and is removed if
    writing fails, so ``path`` is always either the old complete file or the new complete file.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    os.close(descriptor)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_json(path: Path, values: dict) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n"))


def write_history(path: Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False, float_format="%.6g"))


# Runs this process is training right now. A 'running' state written by this very process is only
# true while its id is here (a restarted server can get the same pid, e.g. pid 1 in a container).
ACTIVE_RUNS: set[str] = set()


def pid_alive(pid: int | None, host: str | None, run_id: str | None = None) -> bool:
    """Whether the process that wrote a 'running' state is still alive and training (on this host)."""
    if not pid or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return run_id in ACTIVE_RUNS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    """Everything known about one run folder (files are read on demand: checkpoints are large)."""

    run_id: str
    path: Path
    config: TrainConfig | None = None
    state: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    status: str = "damaged"
    problem: str | None = None  # why the run is damaged

    @property
    def epochs_done(self) -> int:
        return int(self.state.get("epochs_done", 0))

    @property
    def target_epochs(self) -> int:
        return int(self.state.get("target_epochs", self.config.epochs if self.config else 0))

    @property
    def best_test_accuracy(self) -> float | None:
        if self.history is None or self.history.empty:
            return None
        return float(self.history["test_accuracy"].max())

    @property
    def total_seconds(self) -> float:
        if self.history is None or self.history.empty:
            return 0.0
        return float(self.history["cumulative_seconds"].iloc[-1])

    @property
    def checkpoint_path(self) -> Path | None:
        name = self.state.get("checkpoint")
        return self.path / name if name else None

    @property
    def predictions_path(self) -> Path | None:
        name = self.state.get("predictions")
        return self.path / name if name else None

    def summary(self) -> dict:
        """One row of the runs table."""
        config = self.config.to_dict() if self.config else {}
        return {
            "run_id": self.run_id,
            "status": self.status,
            "epochs_done": self.epochs_done,
            "target_epochs": self.target_epochs,
            "best_test_accuracy": self.best_test_accuracy,
            "total_seconds": self.total_seconds,
            "depth": config.get("depth"),
            "batch_size": config.get("batch_size"),
            "train_subset": config.get("train_subset"),
            "eval_subset": config.get("eval_subset"),
            "precision": self.state.get("precision"),
            "device": self.state.get("device"),
            "updated": self.state.get("updated"),
            "problem": self.problem or self.state.get("message"),
        }


class RunStore:
    """Create, list, read, update and delete runs under one cache folder."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    # --- paths -------------------------------------------------------------------------------------
    def path_for(self, run_id: str) -> Path:
        """The folder of ``run_id``; rejects ids that could reach outside the cache folder."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
            raise RunError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
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
        state = {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "fingerprint": config.fingerprint(),
            "created": now,
            "updated": now,
            "status": "stopped",
            "epochs_done": 0,
            "target_epochs": config.epochs,
            "segments": [],
            "checkpoint": None,
            "predictions": None,
            "precision": precision,
            "device": device,
            "train_images": train_images,
            "eval_images": eval_images,
            "message": "created, no epoch trained yet",
        }
        write_json(path / "config.json", config.to_dict())
        write_history(path / "history.csv", [])
        write_json(path / "state.json", state)
        return self.load(run_id)

    def update_state(self, run: Run, **changes) -> None:
        """Write a new state.json with ``changes`` (the commit point of every change)."""
        state = {**run.state, **changes, "updated": time.time()}
        write_json(run.path / "state.json", state)
        run.state = state
        if state["status"] in STATUSES:
            run.status = state["status"]

    def commit_epoch(
        self,
        run: Run,
        row: dict,
        *,
        save_checkpoint,
        probabilities: np.ndarray,
        eval_indices: np.ndarray,
        eval_labels: np.ndarray,
    ) -> None:
        """Durably record one completed epoch: checkpoint, predictions, history, then state.

        ``save_checkpoint(path)`` writes the model to ``path`` (a ``.keras`` file).
        """
        epoch = int(row["epoch"])
        if epoch != run.epochs_done + 1:
            raise RunError(f"run {run.run_id}: epoch {epoch} does not follow epoch {run.epochs_done}")
        checkpoint = f"checkpoint-{epoch:04d}.keras"
        predictions = f"predictions-{epoch:04d}.npz"
        atomic_write(run.path / checkpoint, save_checkpoint)
        atomic_write(
            run.path / predictions,
            lambda temporary: _save_npz(
                temporary,
                probabilities=probabilities.astype(np.float16),
                indices=eval_indices.astype(np.int32),
                labels=eval_labels.astype(np.uint8),
                epoch=np.int32(epoch),
            ),
        )
        history = [] if run.history is None else run.history.to_dict("records")
        history = history[: run.epochs_done] + [row]
        write_history(run.path / "history.csv", history)
        old_files = [run.state.get("checkpoint"), run.state.get("predictions")]
        self.update_state(run, epochs_done=epoch, checkpoint=checkpoint, predictions=predictions)
        run.history = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
        for name in old_files:  # only after the commit: until then they are the last good epoch
            if name:
                with contextlib.suppress(OSError):
                    (run.path / name).unlink()

    def remove_uncommitted_files(self, run: Run) -> None:
        """Delete checkpoints, predictions and temporary files that state.json does not point to."""
        keep = {run.state.get("checkpoint"), run.state.get("predictions")}
        for path in run.path.iterdir():
            uncommitted = (
                re.match(r"(checkpoint-\d+\.keras|predictions-\d+\.npz)$", path.name) and path.name not in keep
            )
            if uncommitted or path.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    path.unlink()

    # --- reading ------------------------------------------------------------------------------------
    def load(self, run_id: str) -> Run:
        """Read a run's config, state and history; a damaged run comes back with status 'damaged'."""
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        run = Run(run_id=run_id, path=path)
        try:
            _read_run(run)
        except DamagedRun as error:
            run.status, run.problem = "damaged", str(error)
        return run

    def list_runs(self) -> list[Run]:
        """Every run folder, newest first; damaged ones included with their reason."""
        if not self.root.is_dir():
            return []
        runs = []
        for path in self.root.iterdir():
            if path.is_dir() and RUN_ID_PATTERN.fullmatch(path.name) and not path.name.startswith("."):
                try:
                    runs.append(self.load(path.name))
                except RunError:  # deleted meanwhile, or a symbolic link out of the cache: not a run
                    continue
        return sorted(runs, key=lambda run: run.state.get("updated") or path_mtime(run.path), reverse=True)

    def latest_with_fingerprint(self, fingerprint: str) -> Run | None:
        """The newest undamaged run of the same configuration (all but epochs), if any."""
        for run in self.list_runs():
            if run.status != "damaged" and run.state.get("fingerprint") == fingerprint:
                return run
        return None

    def load_predictions(self, run: Run) -> dict[str, np.ndarray]:
        """The committed predictions: probabilities (n, 10), indices into the test set, labels, epoch."""
        path = run.predictions_path
        if path is None or not path.is_file():
            raise RunError(f"run {run.run_id} has no predictions yet")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DamagedRun(f"run {run.run_id}: {path.name} is unreadable ({error})") from error

    def load_model(self, run: Run):
        """The committed checkpoint as a compiled Keras model (``safe_mode=True``: no code runs)."""
        import keras

        path = run.checkpoint_path
        if path is None or not path.is_file():
            raise RunError(f"run {run.run_id} has no checkpoint yet")
        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as error:  # Keras raises many types for a bad file
            raise DamagedRun(f"run {run.run_id}: {path.name} is not a loadable Keras model ({error})") from error

    def delete(self, run_id: str) -> None:
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        # Rename first so a half-deleted folder never looks like a run.
        trash = path.with_name(f".deleting-{run_id}-{os.getpid()}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def path_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DamagedRun(f"{path.name} is missing")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedRun(f"{path.name} is unreadable ({error})") from error
    if not isinstance(values, dict):
        raise DamagedRun(f"{path.name} does not hold a JSON object")
    return values


def _read_run(run: Run) -> None:
    """Fill ``run`` from its files, raising DamagedRun on the first inconsistency."""
    try:
        run.config = TrainConfig.from_dict(_read_json(run.path / "config.json"))
    except (ConfigError, TypeError) as error:
        raise DamagedRun(f"config.json is invalid: {error}") from error
    state = _read_json(run.path / "state.json")
    run.state = state
    if state.get("format_version") != FORMAT_VERSION:
        raise DamagedRun(f"state.json has format version {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    missing = [key for key in ("status", "epochs_done", "target_epochs", "segments") if key not in state]
    if missing:
        raise DamagedRun(f"state.json lacks {', '.join(missing)}")
    epochs_done = state["epochs_done"]
    if not isinstance(epochs_done, int) or epochs_done < 0:
        raise DamagedRun(f"state.json has an invalid epochs_done {epochs_done!r}")

    history_path = run.path / "history.csv"
    if not history_path.is_file():
        raise DamagedRun("history.csv is missing")
    try:
        history = pd.read_csv(history_path)
    except (OSError, ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise DamagedRun(f"history.csv is unreadable ({error})") from error
    if list(history.columns) != list(HISTORY_COLUMNS):
        raise DamagedRun(f"history.csv has columns {list(history.columns)}, expected {list(HISTORY_COLUMNS)}")
    if len(history) < epochs_done:
        raise DamagedRun(f"history.csv has {len(history)} epochs, state.json says {epochs_done}")
    history = history.iloc[:epochs_done].copy()  # rows past the commit belong to an unfinished epoch
    if history.isna().any().any() or list(history["epoch"]) != list(range(1, epochs_done + 1)):
        raise DamagedRun("history.csv has missing values or epochs out of order")
    run.history = history

    if epochs_done:
        for key in ("checkpoint", "predictions"):
            name = state.get(key)
            if not name or not (run.path / name).is_file():
                raise DamagedRun(f"the {key} file of epoch {epochs_done} ({name}) is missing")
            if not zipfile.is_zipfile(run.path / name):
                raise DamagedRun(f"{name} is not a valid {'Keras' if key == 'checkpoint' else 'NumPy'} file")

    status = state["status"]
    if status == "running" and not pid_alive(state.get("pid"), state.get("host"), run.run_id):
        status = "interrupted"
    if status not in STATUSES:
        raise DamagedRun(f"state.json has an unknown status {status!r}")
    run.status = status
