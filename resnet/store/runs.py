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
- ``tensorboard/``: the run as TensorBoard event files, written after each commit from the records above
  and never read by the store (``resnet/store/event_files.py``), and the Projector's files when exported;
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

How a folder is read, checked and cleaned is ``resnet/store/run_folder.py`` (``Run``, ``parse_run``);
this module is the store over them. Everything read from a run folder is validated in one place per kind
of file: JSON records with bounded
size and depth (``resnet/records.py``), ``state.json`` and ``history.csv`` field by field
(``resnet/store/run_state.py``), the NumPy files' shapes, types and values against the run
(``resnet/store/run_arrays.py``). A run that fails is listed as ``damaged`` with the reason and never breaks the
listing; a derived cache that fails (the features bank, the map computed for an old run) is ignored and
computed again. Parsed runs are cached by their files' modification times, so listing many runs on every
page rerun costs little.

Nothing is followed out of the cache: a run folder that is a symbolic link is no run, no file of a run
is read through a link, and ``delete`` removes only a real folder of the cache whose every entry is a
file a run writes, or its ``tensorboard/`` folder.

The cache folder is ``$RESNET_CACHE_DIR`` or ``cache/`` at the project root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from resnet.config import TrainConfig
from resnet.files import (
    atomic_write,
    default_cache_dir,
    lock_held,
    path_mtime,
    save_npz,
    try_lock,
    write_json,
)
from resnet.store import artefacts, run_arrays
from resnet.store.run_folder import (
    MISSING_EPOCH_FILE,
    EpochFiles,
    Run,
    file_stamps,
    is_regular,
    lock_file_problem,
    not_a_run,
    parse_run,
    remove_superseded_files,
    remove_uncommitted_files,
    valid_run_id,
    write_history,
)
from resnet.store.run_state import (
    FORMAT_VERSION,
    HISTORY_COLUMNS,
    DamagedRun,
    RunError,
    RunState,
    RunStatus,
    checkpoint_name,
    map_name,
    predictions_name,
)

__all__ = [
    "FORMAT_VERSION",
    "HISTORY_COLUMNS",
    "DamagedRun",
    "EpochFiles",
    "Run",
    "RunError",
    "RunState",
    "RunStatus",
    "RunStore",
]

log = logging.getLogger(__name__)


class RunStore:
    """Create, list, read, update and delete runs under one cache folder."""

    writes_event_files = True  # each commit brings the run's TensorBoard files up to date

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self._parsed: dict[str, tuple] = {}  # run id -> (file stamps, config, state, history, problem)
        self._parsed_lock = threading.Lock()
        self._events_checked: set[str] = set()  # runs whose every event file a commit here has checked

    # --- paths -------------------------------------------------------------------------------------
    def path_for(self, run_id: str) -> Path:
        """The folder of ``run_id``; rejects ids that could reach outside the cache folder, and a folder
        that is a symbolic link (to another run, or out of the cache): it is no run of this cache."""
        if not valid_run_id(run_id):
            raise RunError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
        if os.path.islink(self.root / run_id):
            raise RunError(f"{run_id} in {self.root} is a symbolic link, not a run folder: it is left alone")
        path = (self.root / run_id).resolve()
        if path.parent != self.root.resolve():
            raise RunError(f"invalid run id {run_id!r}: it points outside the cache folder")
        return path

    # --- creating and committing ------------------------------------------------------------------
    def create(self, config: TrainConfig, **facts) -> Run:
        """A new run of ``config`` with no epoch yet; ``facts`` are its state's ``precision``, ``device``,
        ``train_images``, ``eval_images`` and, where they apply, ``validation_images`` and ``branch_of``."""
        config.validate()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run cache folder {self.root}: {error}") from error
        run_id, path = _claim_folder(
            self, f"{time.strftime('%Y%m%d-%H%M%S')}-resnet{config.depth}-{config.fingerprint()[:6]}"
        )
        now = time.time()
        facts["validation_images"] = facts.get("validation_images") or None  # none held out: not recorded
        state = RunState(
            run_id=run_id,
            status=RunStatus.STOPPED,
            epochs_done=0,
            target_epochs=config.epochs,
            fingerprint=config.fingerprint(),
            created=now,
            updated=now,
            message="created, no epoch trained yet",
            **facts,
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
        arrays = run_arrays.predictions_arrays(probabilities, eval_indices, eval_labels, epoch)
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
        remove_superseded_files(run.path, run.epochs_done)
        if self.writes_event_files and write_event_files(self, run, whole=run.run_id not in self._events_checked):
            self._events_checked.add(run.run_id)  # every epoch's files checked at its first commit here: now its own

    def remove_uncommitted_files(self, run: Run) -> None:
        """Delete the files of epochs after the committed one, and temporary files (``run_folder``)."""
        remove_uncommitted_files(run.path, run.epochs_done)

    @contextlib.contextmanager
    def locked(self, run: Run):
        """Hold the run's lock (one trainer per run, across processes); RunError if another holds it, or
        if its lock file is a link or a folder (never followed; the message says to remove it)."""
        try:
            lock = try_lock(run.path / ".lock")
        except OSError as error:
            raise RunError(
                f"run {run.run_id} cannot be locked for training: {lock_file_problem(run.path / '.lock', error)}"
            ) from error
        if lock is None:
            raise RunError(f"run {run.run_id} is being trained by another process")
        try:
            yield
        finally:
            lock.close()  # releases the flock

    # --- reading ------------------------------------------------------------------------------------
    def load(self, run_id: str) -> Run:
        """Read a run's config, state and history; a damaged run comes back with status 'damaged'."""
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        with self._parsed_lock:
            cached = self._parsed.get(run_id)
        if cached is None or cached[0] != file_stamps(path, cached[2]):
            stamps = file_stamps(path, None)  # before reading: a change while parsing shows next time
            config, state, history, problem = parse_run(path, run_id)
            if problem is not None and problem.startswith(MISSING_EPOCH_FILE):  # a commit may have just
                stamps = file_stamps(path, None)  # superseded the files the state read first named: once more
                config, state, history, problem = parse_run(path, run_id)
            cached = (stamps + file_stamps(path, state)[len(stamps) :], config, state, history, problem)
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
            if path.is_dir() and valid_run_id(path.name) and not path.name.startswith("."):
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
        """The newest undamaged run of the same configuration (all but epochs) that a Start may resume."""
        return next((run for run in (self.list_runs() if runs is None else runs) if _resumable(run, fingerprint)), None)

    def load_predictions(self, run: Run) -> dict[str, np.ndarray]:
        """The committed predictions, checked (``resnet.store.run_arrays.check_predictions``): probabilities
        (n, 10) float32, indices int32 into the test set, labels uint8, epoch. RunError if there are none,
        DamagedRun (naming the file and what is wrong) if they are unreadable or do not fit the run."""
        run, path = self._current(run, "predictions_path")
        if path is None or path.is_symlink() or not path.is_file():
            raise RunError(f"run {run.run_id} has no predictions yet")
        try:
            return run_arrays.read_predictions(path, epoch=run.epochs_done, eval_images=run.state.eval_images)
        except DamagedRun as error:
            raise DamagedRun(f"run {run.run_id}: {error}") from error

    def committed_checkpoint(self, run: Run) -> Path:
        """The committed checkpoint file; RunError if the run has none yet."""
        run, path = self._current(run, "checkpoint_path")
        if path is None or not path.is_file():
            raise RunError(f"run {run.run_id} has no checkpoint yet")
        return path

    def checkpoint_bytes(self, run: Run) -> bytes:
        """The committed checkpoint file's contents (for a download)."""
        return self.committed_checkpoint(run).read_bytes()

    def _current(self, run: Run, attribute: str) -> tuple[Run, Path | None]:
        """``run`` and its committed file (``checkpoint_path`` or ``predictions_path``); if a commit superseded
        that file since ``run`` was read (``remove_superseded_files``), the run as read once more."""
        path = getattr(run, attribute)
        if path is not None and not path.exists():
            run = self.find(run.run_id) or run
            path = getattr(run, attribute)
        return run, path

    def delete(self, run_id: str) -> None:
        """Delete a run folder; refused while a process (this one or another) trains the run, and for
        anything that is not a run: a bad id, a symbolic link (``path_for``), or a folder holding an entry
        no run writes (a folder, or a file of another name), which the message names."""
        path = self.path_for(run_id)
        if not path.is_dir():
            raise RunError(f"no run {run_id!r} in {self.root}")
        problem = not_a_run(path)
        if problem:
            raise RunError(f"{run_id} in {self.root} {problem}: nothing was deleted")
        run = self.load(run_id)
        if run.status is RunStatus.RUNNING:
            raise RunError(f"run {run_id} is being trained (pid {run.state.pid}): stop it before deleting it")
        if os.path.lexists(path / ".lock") and not is_regular(path / ".lock"):
            lock = contextlib.nullcontext()  # a link, a pipe...: not a lock any trainer could hold
        else:
            try:
                lock = try_lock(path / ".lock")
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


def write_event_files(store: RunStore, run: Run, *, whole: bool) -> bool:
    """The run's TensorBoard files up to its commit (``resnet.store.event_files.sync``): all of them checked
    (``whole``), or the committed epoch's alone; whether they were written. They are no part of the run's
    truth: a failure (even a broken ``tensorboard`` install) is logged, the commit stands, training goes on."""
    try:
        import resnet.store.event_files as event_files  # tensorboard's protobufs: only in a process that commits

        event_files.sync(store, run, only_last=not whole)
    except Exception as error:  # noqa: BLE001 (any failure of a derived view)
        log.warning("run %s: TensorBoard files not written: %s", run.run_id, error)
        return False
    return True


def _resumable(run: Run, fingerprint: str) -> bool:
    """Whether a Start of ``fingerprint``'s settings may continue ``run``: a budget curve's trunk and
    branches are the curve's own (``resnet/sweeps/budget_curve.py``), never resumed by a plain Start."""
    if run.damaged or run.state.fingerprint != fingerprint or run.state.branch_of:
        return False
    return run.config is None or run.config.epochs_mode != "trunk"


def _claim_folder(store: RunStore, base: str) -> tuple[str, Path]:
    """A new run folder named ``base`` (or ``base-2``, ``base-3``...): mkdir is the atomic claim, so two
    processes never get the same folder."""
    run_id, suffix = base, 1
    while True:
        path = store.path_for(run_id)
        try:
            path.mkdir()
            return run_id, path
        except FileExistsError:
            suffix += 1
            run_id = f"{base}-{suffix}"
        except OSError as error:
            raise RunError(f"cannot create a run folder in {store.root}: {error}") from error
