"""The run store: one folder per training run under the cache folder, written so that nothing is lost.

A run folder holds:

- ``config.json``: the TrainConfig fields, nothing else (readable by any tool);
- ``history.csv``: one row per completed epoch, columns ``HISTORY_COLUMNS``;
- ``checkpoint-NNNN.keras``: model and optimizer state after epoch NNNN;
- ``predictions-NNNN.npz``: class probabilities on the evaluation images after epoch NNNN;
- ``map-NNNN.npz``: the evaluation images' penultimate features after epoch NNNN projected to 2-D, with
  the predicted class and confidence (``resnet/core/explain.py``); kept for every epoch;
- ``features-NNNN.npz``: the nearest-neighbour bank (penultimate features of ``BANK_SIZE`` training
  images) for the checkpoint of epoch NNNN, written on first use (``RunStore.feature_bank``);
- ``state.json``: the commit record (``resnet.store.run_state.RunState``): status, epochs done, which
  checkpoint and predictions belong to them, the learning-rate segments, and where and how the run
  was trained;
- ``.lock``: held (``flock``) by the process training the run: a run is ``running`` only while some
  process holds it (``lock_held``), so a pid reused by another process after a crash never keeps a run
  "running".

Every file is written to a temporary name and renamed into place (``atomic_write``), and an epoch is
committed by writing ``state.json`` last: files of an epoch that was not committed are ignored and
cleaned up, so a crash at any instant leaves the last complete epoch readable and consistent. The
previous epoch's checkpoint and predictions (and features) are kept until the next commit, so a reader
that read the state just before a commit still finds its files; the maps of every committed epoch stay.

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
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resnet.config import ConfigError, TrainConfig
from resnet.records import RecordError, read_json
from resnet.store import run_arrays
from resnet.store.run_state import (
    FORMAT_VERSION,
    HISTORY_COLUMNS,
    DamagedRun,
    RunError,
    RunState,
    RunStatus,
    checkpoint_name,
    features_name,
    map_name,
    predictions_name,
    read_history,
)

__all__ = [
    "BANK_SIZE",
    "FORMAT_VERSION",
    "HISTORY_COLUMNS",
    "DamagedRun",
    "FeatureBank",
    "Run",
    "RunError",
    "RunState",
    "RunStatus",
    "RunStore",
    "atomic_write",
]

ENV_VAR = "RESNET_CACHE_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # used with fullmatch
EPOCH_FILE = re.compile(r"(checkpoint|predictions|map|features)-(\d{4})\.(keras|npz)")
EPOCH_FILE_SUFFIX = {"checkpoint": "keras", "predictions": "npz", "map": "npz", "features": "npz"}
RUN_RECORDS = ("config.json", "state.json", "history.csv")
RUN_FILE_NAMES = frozenset({*RUN_RECORDS, ".lock"})  # with the epoch files and .tmp-* files being written
LOCK_ATTEMPTS, LOCK_RETRY_SECONDS = 5, 0.01  # a listing's liveness probe holds a run's lock for microseconds
# The nearest-neighbour bank: a class-balanced subset of the run's training images, the same for every epoch.
BANK_SIZE = 6000
BANK_SEED = 0


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (os.umask can only be read by setting it, which is not thread-safe later on).
UMASK = _current_umask()


def default_cache_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or PROJECT_ROOT / "cache")


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through ``write(temporary_path)``, then rename it into place.

    The temporary file sits beside the target (same filesystem), is flushed to disk, and is removed if
    writing fails, so ``path`` is always either the old complete file or the new complete file. It gets
    the permissions of any new file (0666 less the umask), not mkstemp's private 0600, so another user
    sharing the cache folder can read it.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    os.close(descriptor)
    try:
        os.chmod(temporary, 0o666 & ~UMASK)
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


# Runs this process is training right now (it holds their locks): answered without probing the lock.
ACTIVE_RUNS: set[str] = set()


def lock_held(path: Path) -> bool:
    """Whether some process holds an exclusive ``flock`` on the lock file ``path`` (a trainer of the run,
    or a sweep's runner); probed without waiting and without creating the file.

    The probe asks for a shared lock, so two listings probing at once never see each other. A missing
    lock file, a link or anything but a regular file is held by no one (trainers never follow links).
    Unlike a pid, a lock dies with its process: a state left ``running`` by a killed trainer whose pid
    now belongs to another process reads as interrupted.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)  # releases the probe's shared lock
    return False


def trained_now(run_id: str, folder: Path, state: RunState) -> bool:
    """Whether a run whose state says ``running`` is being trained now: by this process, or by whatever
    process holds its lock (here, or on another machine sharing the cache over a locking filesystem)."""
    if state.pid == os.getpid() and run_id in ACTIVE_RUNS:
        return True
    return lock_held(folder / ".lock")


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


@dataclass(frozen=True)
class FeatureBank:
    """Penultimate features of training images for nearest-neighbour look-ups, for one checkpoint."""

    epoch: int  # the checkpoint's epoch
    indices: np.ndarray  # int32 indices into the 60,000 training images
    labels: np.ndarray  # uint8 their classes
    features: np.ndarray  # float16 (n, d), rows of unit length (read-only)
    unsaved: str = ""  # why the bank could not be written to its file (then it lives in memory only)


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
        atomic_write(run.path / files.predictions, lambda temporary: _save_npz(temporary, **arrays))
        if feature_map is not None:
            files = dataclasses.replace(files, feature_map=map_name(epoch))
            self._write_feature_map(run, epoch, {"indices": eval_indices, **feature_map})
        return files

    def record_epoch(self, run: Run, row: dict, files: EpochFiles) -> None:
        """Commit an epoch whose files are written: history, then state (the commit point)."""
        if int(row["epoch"]) != files.epoch or files.epoch != run.epochs_done + 1:
            raise RunError(f"run {run.run_id}: epoch {row['epoch']} does not follow epoch {run.epochs_done}")
        history = [] if run.history is None else run.history.to_dict("records")
        history = history[: run.epochs_done] + [row]
        write_history(run.path / "history.csv", history)
        self.update_state(run, epochs_done=files.epoch, checkpoint=files.checkpoint, predictions=files.predictions)
        run.history = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
        self.remove_superseded_files(run)

    def commit_epoch(
        self,
        run: Run,
        row: dict,
        *,
        save_checkpoint,
        probabilities,
        eval_indices,
        eval_labels,
        feature_map: dict | None = None,
    ) -> None:
        """Durably record one completed epoch: checkpoint, predictions, feature map, history, then state."""
        files = self.write_epoch_files(
            run,
            int(row["epoch"]),
            save_checkpoint=save_checkpoint,
            probabilities=probabilities,
            eval_indices=eval_indices,
            eval_labels=eval_labels,
            feature_map=feature_map,
        )
        self.record_epoch(run, row, files)

    def remove_superseded_files(self, run: Run) -> None:
        """Delete epoch files older than the previous epoch's (those stay for readers of the last state);
        feature maps are kept for every epoch."""
        for path, epoch, kind in _epoch_files(run.path):
            if epoch < run.epochs_done - 1 and kind != "map":
                with contextlib.suppress(OSError):
                    path.unlink()

    def remove_uncommitted_files(self, run: Run) -> None:
        """Delete checkpoints, predictions, maps and features of epochs after the committed one, and
        temporary files."""
        for path, epoch, _ in _epoch_files(run.path):
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
            cached = (stamps + _file_stamps(path, state)[len(stamps) :], config, state, history, problem)
            with self._parsed_lock:
                self._parsed[run_id] = cached
        _, config, state, history, problem = cached
        # The history frame is shared with the cache: treat it as read-only (a commit replaces it).
        run = Run(run_id=run_id, path=path, config=config, state=state, history=history, problem=problem)
        if problem is not None:
            run.status = RunStatus.DAMAGED
        elif state.status is RunStatus.RUNNING and not trained_now(run_id, path, state):
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
        if path is None or path.is_symlink() or not path.is_file():
            raise RunError(f"run {run.run_id} has no predictions yet")
        try:
            return run_arrays.read_predictions(path, epoch=run.epochs_done, eval_images=run.state.eval_images)
        except DamagedRun as error:
            raise DamagedRun(f"run {run.run_id}: {error}") from error

    def evaluated_indices(self, run: Run) -> np.ndarray:
        """The test-set indices the run evaluates (those of its committed predictions)."""
        return self.load_predictions(run)["indices"]

    # --- explanations: feature maps and the nearest-neighbour bank -------------------------------------
    def _write_feature_map(self, run: Run, epoch: int, arrays: dict) -> dict:
        arrays = {key: np.asarray(value) for key, value in arrays.items()}
        try:
            checked = run_arrays.check_feature_map(
                {**arrays, "epoch": np.int32(epoch)}, map_name(epoch), epoch=epoch, evaluated=None
            )
        except KeyError as error:
            raise DamagedRun(f"run {run.run_id}: the map of epoch {epoch} lacks {error}") from None
        atomic_write(run.path / map_name(epoch), lambda temporary: _save_npz(temporary, **checked))
        return checked

    def feature_map_epochs(self, run: Run) -> list[int]:
        """The committed epochs (1 ... epochs_done) that have a map file, in order."""
        return sorted(
            epoch
            for path, epoch, kind in _epoch_files(run.path)
            if kind == "map" and 1 <= epoch <= run.epochs_done and not path.is_symlink() and path.is_file()
        )

    def load_feature_map(self, run: Run, epoch: int) -> dict[str, np.ndarray]:
        """The map of ``epoch``: ``coords`` (n, 2) float32, ``explained`` (2,) float32, ``indices`` int32
        (test images the run evaluates), ``predicted`` uint8, ``confidence`` float16 and ``epoch``
        (checked: ``resnet.store.run_arrays.check_feature_map``). RunError if there is none, DamagedRun if it
        is unreadable or does not fit the run."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or not 1 <= epoch <= run.epochs_done:
            raise RunError(f"run {run.run_id} has no epoch {epoch!r} (epochs 1-{run.epochs_done} are committed)")
        path = run.path / map_name(int(epoch))
        if path.is_symlink() or not path.is_file():
            raise RunError(f"run {run.run_id} has no feature map for epoch {epoch}")
        evaluated = self.evaluated_indices(run)
        try:
            return run_arrays.read_feature_map(path, epoch=int(epoch), evaluated=evaluated)
        except DamagedRun as error:
            raise DamagedRun(f"run {run.run_id}: {error}") from error

    def ensure_feature_map(self, run: Run, compute_map) -> dict[str, np.ndarray]:
        """The map of the checkpoint's epoch (``run.epochs_done``), computed once if there is none.

        For runs trained before maps were recorded (or whose map is damaged): ``compute_map()`` returns
        ``coords``, ``explained``, ``predicted``, ``confidence`` and ``indices`` from the checkpoint
        (``resnet.core.explain.feature_map_of``), and the map is written atomically for later views. RunError
        if it cannot be written (a folder in the way of the file, a read-only run folder).
        """
        epoch = run.epochs_done
        if not epoch:
            raise RunError(f"run {run.run_id} has no checkpoint yet")
        try:
            return self.load_feature_map(run, epoch)
        except RunError:  # missing or damaged: (re)compute it
            pass
        try:
            return self._write_feature_map(run, epoch, dict(compute_map()))
        except OSError as error:
            raise RunError(f"run {run.run_id}: the map of epoch {epoch} cannot be written ({error})") from error

    def bank_indices(self, run: Run, train_labels: np.ndarray) -> np.ndarray:
        """The training images of the run's nearest-neighbour bank: ``BANK_SIZE`` (or all, if fewer) of the
        images it trained on, class-balanced, chosen with a fixed seed (int32, sorted)."""
        from data.pipeline import stratified_subset

        train_labels = np.asarray(train_labels)
        trained = stratified_subset(train_labels, run.config.train_subset, seed=run.config.seed)
        chosen = stratified_subset(train_labels[trained], min(BANK_SIZE, len(trained)), seed=BANK_SEED)
        return trained[chosen].astype(np.int32)

    def feature_bank(self, run: Run, compute, *, train_labels: np.ndarray | None = None) -> FeatureBank:
        """The nearest-neighbour bank of the run's checkpoint, from ``features-NNNN.npz`` or computed once.

        ``compute(train_indices)`` returns the penultimate features (n, d) of those training images with
        the checkpoint's model (``resnet.core.explain.penultimate_features``). ``train_labels`` are the 60,000
        training labels (default: read with ``data.fashion_mnist.load_fashion_mnist``). A missing,
        unreadable or stale file is (re)computed and written atomically (``resnet.store.run_arrays.read_bank``);
        if it cannot be written (a folder in its place, a read-only run folder) the bank is used unsaved
        and ``FeatureBank.unsaved`` says why. The file of an older epoch than the previous one is removed.
        """
        epoch = run.epochs_done
        if not epoch or run.config is None:
            raise RunError(f"run {run.run_id} has no checkpoint yet")
        if train_labels is None:
            from data.fashion_mnist import load_fashion_mnist

            train_labels = load_fashion_mnist().train_labels
        indices = self.bank_indices(run, train_labels)
        labels = np.asarray(train_labels)[indices].astype(np.uint8)
        path = run.path / features_name(epoch)
        stored = run_arrays.read_bank(path, epoch=epoch, indices=indices, labels=labels)
        if stored is not None:
            bank = FeatureBank(epoch, indices, labels, _read_only(stored))
        else:
            bank = self._computed_bank(run, path, compute, indices, labels)
        for old, old_epoch, kind in _epoch_files(run.path):
            if kind == "features" and old_epoch < epoch - 1:
                with contextlib.suppress(OSError):
                    old.unlink()
        return bank

    def _computed_bank(self, run: Run, path: Path, compute, indices: np.ndarray, labels: np.ndarray) -> FeatureBank:
        features = np.asarray(compute(indices), dtype=np.float32)
        if features.ndim != 2 or len(features) != len(indices) or not np.isfinite(features).all():
            raise RunError(f"run {run.run_id}: the bank's features have shape {features.shape} or are not finite")
        from resnet.core.explain import normalise_rows

        bank = FeatureBank(run.epochs_done, indices, labels, _read_only(normalise_rows(features).astype(np.float16)))
        arrays = {"epoch": np.int32(bank.epoch), "indices": indices, "labels": labels, "features": bank.features}
        try:
            atomic_write(path, lambda temporary: _save_npz(temporary, **arrays))
        except OSError as error:  # a derived cache: used unsaved, computed again next time
            return dataclasses.replace(bank, unsaved=f"{path.name} cannot be written ({error.strerror or error})")
        return bank

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

    def checkpoint_bytes(self, run: Run) -> bytes:
        """The committed checkpoint file's contents (for a download)."""
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


def try_lock(path: Path):
    """An exclusive flock on ``path`` (created if missing) as an open file, or None if another holds it.

    O_NOFOLLOW: a lock file that is a link (a copied or edited cache) is never followed out of its folder
    (OSError). A lock taken for an instant by a listing's probe (``lock_held``) is waited out: a few
    tries over ``LOCK_ATTEMPTS * LOCK_RETRY_SECONDS``.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # O_NONBLOCK: a named pipe must not block the open
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    lock = os.fdopen(descriptor, "a")
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if attempt + 1 < LOCK_ATTEMPTS:
                time.sleep(LOCK_RETRY_SECONDS)
        except BaseException:
            lock.close()
            raise
    lock.close()
    return None


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
    match = EPOCH_FILE.fullmatch(entry.name)
    epoch_file = bool(match) and EPOCH_FILE_SUFFIX[match.group(1)] == match.group(3)
    return entry.name in RUN_FILE_NAMES or epoch_file or entry.name.startswith(".tmp-")


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


def path_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _epoch_files(folder: Path):
    """(path, epoch, kind) of every checkpoint, predictions, map and features file in ``folder``."""
    for path in folder.iterdir():
        match = EPOCH_FILE.fullmatch(path.name)
        if match and EPOCH_FILE_SUFFIX[match.group(1)] == match.group(3):
            yield path, int(match.group(2)), match.group(1)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # shared by every view of the run (and cached as float32 by explain)
    return array


def _file_stamps(folder: Path, state: RunState | None) -> tuple:
    """What changes whenever a run's files do: modification times, sizes and inodes of the folder, its
    records and (with ``state``) the checkpoint and predictions that state names."""
    names = ["state.json", "config.json", "history.csv"]
    if state is not None:
        names += [name for name in (state.checkpoint, state.predictions) if name]
    base = str(folder)
    stamps = []
    for path in [base, *(os.path.join(base, name) for name in names)]:  # plain strings: this runs per rerun
        try:
            info = os.stat(path)
            stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


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
            raise DamagedRun(f"the {key} file of epoch {state.epochs_done} ({name}) is missing")
    if not zipfile.is_zipfile(path / state.checkpoint):
        raise DamagedRun(f"{state.checkpoint} is not a valid Keras file")
    run_arrays.read_predictions(path / state.predictions, epoch=state.epochs_done, eval_images=state.eval_images)
