"""The process-wide training job: at most one training at a time, in the background.

The app keeps one ``JobManager`` per server process (``st.cache_resource``), so every browser tab and
every rerun sees the same job; the CLI uses one too. A background thread follows the training and
writes its progress into the manager under a lock; readers take an immutable ``JobSnapshot``.

Where the training itself runs:

- ``isolated=True`` (the default, used by the app): in a child process, ``python -m resnet.training.worker``.
  TensorFlow keeps about one run's weights alive in a process after each training, so a server that
  trained in its own process would grow by hundreds of MB per run; the child gives it all back when it
  exits. If the server dies, the child sees its input close and stops after the current batch.
- ``isolated=False`` (the one-shot CLI): in a thread of this process, which exits after one run anyway.

    manager = JobManager()
    run_id = manager.start(TrainConfig(epochs=2, train_subset=1000))   # raises JobAlreadyRunning
    manager.snapshot().state        # "running", later "complete" / "stopped" / "failed"
    manager.stop()                  # stops at the next batch; completed epochs are kept
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet.config import TrainConfig
from resnet.store.plan import TrainingPlan, plan_training
from resnet.store.runs import Run, RunError, RunStatus, RunStore
from resnet.training.trainer import EpochProgress, Phase, PreparedTraining, prepare_training, train_prepared
from resnet.wording import TextEnum, failed_message

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class JobState(TextEnum):
    IDLE = "idle"
    STARTING = "starting"  # preparing: loading the dataset, planning, creating the run folder
    RUNNING = "running"
    STOPPING = "stopping"  # Stop was pressed; the current batch finishes
    COMPLETE = "complete"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_STATES = (JobState.STARTING, JobState.RUNNING, JobState.STOPPING)
FINAL_STATES = (JobState.COMPLETE, JobState.STOPPED, JobState.FAILED)


class JobAlreadyRunning(RuntimeError):
    """A training is already running in this process; only one runs at a time."""


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of the job's state, safe to read from any thread."""

    state: JobState = JobState.IDLE
    run_id: str | None = None
    config: TrainConfig | None = None
    phase: Phase | None = None
    epoch: int = 0  # the epoch in progress (1-based)
    first_epoch: int = 0  # the first epoch this job trains (1 for a new run)
    target_epochs: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    images_per_second: float = 0.0
    epoch_elapsed: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    message: str = ""
    error: str | None = None
    plan: TrainingPlan | None = None  # what this job trains

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def epoch_fraction(self) -> float:
        return self.batch / self.batches_per_epoch if self.batches_per_epoch else 0.0

    @property
    def epoch_eta_seconds(self) -> float | None:
        """Seconds left in the current epoch's training pass, from its measured speed so far."""
        if not self.batch or not self.batches_per_epoch:
            return None
        return self.epoch_elapsed * (self.batches_per_epoch - self.batch) / self.batch


def _parse_line(line: str) -> tuple[str | None, dict]:
    """One protocol line of the training child as (event, fields); (None, {}) for anything else."""
    try:
        message = json.loads(line)
    except ValueError:
        return None, {}
    if not isinstance(message, dict):
        return None, {}
    event = message.pop("event", None)
    if event == "progress":
        names = {field.name for field in dataclasses.fields(EpochProgress)}
        if not names.issuperset(message) or not {"phase", "epoch", "target_epochs"} <= message.keys():
            return None, {}
        if message["phase"] not in {phase.value for phase in Phase}:
            return None, {}
    return event, message


# What a training child reads while it starts (TensorFlow's and the linker's settings, Python's paths, the
# verbosity of its start-up output): a spare started under other values is not used. Everything else of the
# environment travels with the request and is applied when the job arrives (resnet/training/worker.py).
IMPORT_TIME_VARIABLES = tuple("TF_ XLA_ CUDA NVIDIA LD_ PYTHON KERAS OMP_ MKL KMP_ RESNET_VERBOSE".split())


def worker_environment() -> dict[str, str]:
    """The environment of a training child: this process's, with the project on its Python path."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(PROJECT_ROOT), environment.get("PYTHONPATH")) if path
    )
    return environment


def _import_settings(environment: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith(IMPORT_TIME_VARIABLES)}


class SpareWorker:
    """One training child started ahead of need, shared by every JobManager of this process.

    Without it, every Start waits for a fresh ``python -m resnet.training.worker`` to import TensorFlow before its
    first batch. The spare has imported it (and read the dataset if it is on disk) and waits for its
    request. It holds no GPU (TensorFlow initialises devices only once a job asks) and no lock (it knows no
    run yet), and it exits when its input closes: when this process ends, or when it is given up because
    the settings it started under changed (``IMPORT_TIME_VARIABLES``). ``take`` hands it out, or starts a
    child at once if there is none; the job manager asks for the next spare (``prepare``) when its job
    evaluates its last epoch (so a sweep's next trial finds it ready) and when the job's child exits.
    Not earlier: a spare importing TensorFlow beside a job that builds its model and traces its first
    step slowed that job's first batch from 4.6 to 7.5 s on two cores (docs/benchmarks.md, section 4),
    more than the spare saves.
    """

    def __init__(self, *, keep_spare: bool = True):
        self.keep_spare = keep_spare  # False: every job starts its own child (as before spares; benchmarks compare)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._settings: dict[str, str] | None = None
        self._closing_registered = False

    def take(self) -> tuple[subprocess.Popen, dict[str, str]]:
        """A training child waiting for its request, and the environment to send with it."""
        environment = worker_environment()
        with self._lock:
            process, settings = self._process, self._settings
            self._process = self._settings = None
        if process is not None and process.poll() is None and settings == _import_settings(environment):
            return process, environment
        if process is not None:
            _give_up(process)
        return self._start(environment), environment

    def prepare(self) -> None:
        """Start a spare unless a live one under the current settings is waiting."""
        if not self.keep_spare:
            return
        environment = worker_environment()
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None and self._settings == _import_settings(environment):
                return
            self._process, self._settings = None, None
        if process is not None:
            _give_up(process)
        spare = self._start(environment)
        with self._lock:
            if self._process is None:
                self._process, self._settings = spare, _import_settings(environment)
                return
        _give_up(spare)  # another thread prepared one meanwhile

    def close(self) -> None:
        """End the spare (at exit; it would also end on its own once this process is gone)."""
        with self._lock:
            process, self._process, self._settings = self._process, None, None
        if process is not None:
            _give_up(process)

    def _start(self, environment: dict[str, str]) -> subprocess.Popen:
        if not self._closing_registered:
            self._closing_registered = True
            atexit.register(self.close)
        return subprocess.Popen(
            [sys.executable, "-m", "resnet.training.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=environment,
            text=True,
        )


def _give_up(process: subprocess.Popen) -> None:
    """End a child that has no job yet: it holds nothing (no run, no lock, no device), so a kill loses nothing."""
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass


SPARE_WORKER = SpareWorker()  # this process's spare training child


class LockedSnapshot:
    """An immutable snapshot behind ``self._lock``: readers take it whole, the worker replaces fields.

    Subclasses set ``self._lock`` and ``self._snapshot`` (a frozen dataclass) in ``__init__``.
    """

    def snapshot(self):
        with self._lock:
            return self._snapshot

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = dataclasses.replace(self._snapshot, **changes)


class JobManager(LockedSnapshot):
    """Starts, stops and reports the single background training of this process."""

    def __init__(
        self,
        store: RunStore | None = None,
        dataset_dir=None,
        *,
        isolated: bool = True,
        spares: SpareWorker | None = None,
    ):
        self.store = store or RunStore()
        self.dataset_dir = dataset_dir
        self.isolated = isolated
        self._spares = spares or SPARE_WORKER
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._snapshot = JobSnapshot()

    def start(self, config: TrainConfig, *, run_id: str | None = None, resume: bool = True) -> str:
        """Validate and start training in the background; returns the run id.

        Raises JobAlreadyRunning if a training is active, and ConfigError, DatasetError or RunError
        (from ``prepare_training``) before anything starts.
        """
        with self._lock:
            if self._snapshot.active:
                raise JobAlreadyRunning(self._busy_text())
            # Claim the slot before the slow preparation so a second start in the meantime is refused.
            self._snapshot = JobSnapshot(
                state=JobState.STARTING, run_id=run_id, config=config, started_at=time.time(), message="preparing"
            )
            self._cancel.clear()
            self._process = None
        try:
            # Isolated, the child trains the run, and it measures auto precision if that is still to be
            # done (resnet/core/precision.py): this process (the app's server) builds no model.
            prepared = prepare_training(
                config,
                store=self.store,
                run_id=run_id,
                resume=resume,
                dataset_dir=self.dataset_dir,
                measure=not self.isolated,
            )
            with self._lock:  # under the lock: a stop() pressed meanwhile must not be overwritten
                self._snapshot = dataclasses.replace(
                    self._snapshot,
                    state=JobState.STOPPING if self._cancel.is_set() else JobState.RUNNING,
                    run_id=prepared.run.run_id,
                    config=prepared.config,
                    plan=prepared.plan,
                    phase=Phase.BUILDING,
                    epoch=prepared.run.epochs_done + 1,
                    first_epoch=prepared.run.epochs_done + 1,
                    target_epochs=prepared.target_epochs,
                    message=f"training run {prepared.run.run_id}",
                )
            if self.isolated:
                process = self._spawn(prepared)
                with self._lock:
                    self._process = process
                    cancelled = self._cancel.is_set()
                if cancelled:  # Stop was pressed while the run was being prepared
                    self._send_stop(process)
                work = self._follow
            else:
                work = self._work
            thread = threading.Thread(target=work, args=(prepared,), name="resnet-training", daemon=True)
            self._thread = thread
            thread.start()
        except BaseException as error:  # nothing runs: free the slot again
            self._update(state=JobState.IDLE, message="", error=f"{error}")
            raise
        return prepared.run.run_id

    def _busy_text(self) -> str:
        snapshot = self._snapshot
        if snapshot.state is JobState.STARTING:  # no run or epoch to name yet
            what = "a training is already running (it is being prepared)"
        else:
            what = (
                f"a training is already running (run {snapshot.run_id}, epoch {snapshot.epoch} "
                f"of {snapshot.target_epochs})"
            )
        return f"{what}; stop it or wait for it to finish"

    # --- what the app needs of the run store (the page never touches files itself) --------------------
    @property
    def cache_root(self) -> Path:
        return self.store.root

    def runs(self) -> list[Run]:
        """Every cached run, most recently updated first (parsed runs are cached by file times)."""
        return self.store.list_runs()

    def run(self, run_id: str | None) -> Run | None:
        """One run as committed now, or None if there is no such run."""
        if not run_id:
            return None
        try:
            return self.store.load(run_id)
        except RunError:
            return None

    def plan(
        self, config: TrainConfig, *, run_id: str | None = None, resume: bool = True, runs: list[Run] | None = None
    ) -> TrainingPlan:
        """What ``start`` would train (resnet.store.plan.plan_training); RunError if ``run_id`` names no run."""
        return plan_training(self.store, config, run_id=run_id, resume=resume, runs=runs)

    def predictions(self, run: Run) -> dict:
        return self.store.load_predictions(run)

    def checkpoint_bytes(self, run: Run) -> bytes:
        return self.store.checkpoint_bytes(run)

    # --- explanations (resnet/core/explain.py over the run's checkpoint and its recorded feature maps) -------
    def load_model(self, run: Run):
        """The committed checkpoint as a Keras model (RunError/DamagedRun if there is none to load)."""
        return self.store.load_model(run)

    def feature_map_epochs(self, run: Run) -> list[int]:
        return self.store.feature_map_epochs(run)

    def feature_map(self, run: Run, epoch: int) -> dict:
        return self.store.load_feature_map(run, epoch)

    def ensure_feature_map(self, run: Run, model, test_images) -> dict:
        """The map of the checkpoint's epoch, computed from ``model`` once for runs that recorded none."""
        from resnet.core.explain import feature_map_of

        def compute() -> dict:
            indices = self.store.load_predictions(run)["indices"]
            return feature_map_of(model, np.asarray(test_images)[indices], indices)

        return self.store.ensure_feature_map(run, compute)

    def feature_bank(self, run: Run, model, train_images, train_labels=None):
        """The nearest-neighbour bank of the checkpoint (``RunStore.feature_bank``), computed with ``model``."""
        from resnet.core.explain import penultimate_features

        images = np.asarray(train_images)
        return self.store.feature_bank(
            run, lambda indices: penultimate_features(model, images[indices]), train_labels=train_labels
        )

    def delete(self, run_id: str) -> None:
        """Delete a run; RunError while this job or another process trains it."""
        snapshot = self.snapshot()
        if snapshot.active and snapshot.run_id == run_id:
            raise RunError(f"run {run_id} is training: stop it before deleting it")
        self.store.delete(run_id)

    def _report(self, progress: EpochProgress) -> None:
        changes = dataclasses.asdict(progress)
        changes.pop("target_epochs")
        if progress.phase is not Phase.TRAINING:
            changes = {key: value for key, value in changes.items() if key in ("phase", "epoch")}
        with self._lock:
            state = JobState.STOPPING if self._snapshot.state is JobState.STOPPING else JobState.RUNNING
            self._snapshot = dataclasses.replace(self._snapshot, state=state, **changes)

    def _work(self, prepared) -> None:
        try:
            run = train_prepared(prepared, cancel=self._cancel, report=self._report)
            self._update(state=JobState(run.status.value), message=run.message, finished_at=time.time())
        except BaseException as error:  # the thread must always leave a final state
            self._update(
                state=JobState.FAILED,
                error=f"{type(error).__name__}: {error}",
                message=prepared.run.message,
                finished_at=time.time(),
            )

    def _spawn(self, prepared: PreparedTraining) -> subprocess.Popen:
        """Hand the prepared run to a training child (the spare, when one is ready) and send it the request."""
        process, environment = self._spares.take()
        request = {
            "store": str(prepared.store.root),
            "run_id": prepared.run.run_id,
            "config": prepared.config.to_dict(),
            "dataset_dir": None if self.dataset_dir is None else str(self.dataset_dir),
            "environment": environment,  # this process's, now: the spare may have been started before a change
        }
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        return process

    def _follow(self, prepared: PreparedTraining) -> None:
        """Turn the child's progress lines into snapshots until it ends; always leaves a final state."""
        process = self._process
        outcome = None
        try:
            for line in process.stdout:
                event, message = _parse_line(line)
                if event == "progress":
                    progress = EpochProgress(**message)
                    if progress.phase is Phase.EVALUATING and progress.epoch == progress.target_epochs:
                        self._spares.prepare()  # its last evaluation: the next child imports while this one ends
                    self._report(progress)
                elif event == "finished" and message.get("status") in FINAL_STATES:
                    outcome = (event, message)
                elif event == "failed":
                    outcome = (event, {**message, "error": str(message.get("error", "unknown error"))})
        except Exception as error:  # a fault here must not leave the job 'running' forever: stop the child
            outcome = ("failed", {"error": f"lost track of the training process ({type(error).__name__}: {error})"})
            self._send_stop(process)
            for _ in process.stdout:  # drain, so the child can finish its batch and exit
                pass
        finally:
            code = process.wait()
            self._close_input(process)
            self._spares.prepare()  # for the next job: it imports now, not beside this one's training
        if outcome is None:
            outcome = ("failed", {"error": f"the training process ended unexpectedly (exit code {code})"})
            self._record_crash(prepared.run.run_id, outcome[1]["error"])
        event, message = outcome
        if event == "finished":
            self._update(state=JobState(message["status"]), message=message.get("message", ""), finished_at=time.time())
        else:
            self._update(
                state=JobState.FAILED,
                error=message["error"],
                message=message.get("message", ""),
                finished_at=time.time(),
            )

    def _record_crash(self, run_id: str, error: str) -> None:
        """The child died without a word (killed, out of memory): mark its run failed, epochs kept."""
        try:
            run = self.store.load(run_id)  # re-read: the child committed epochs since we last looked
            if run.state is not None and run.state.status is RunStatus.RUNNING:
                self.store.update_state(run, status=RunStatus.FAILED, message=failed_message(run.epochs_done, error))
        except Exception:  # a damaged or deleted run is reported by the store itself
            pass

    @staticmethod
    def _send_stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            try:
                process.stdin.write("stop\n")
                process.stdin.flush()
            except (OSError, ValueError):  # already gone: the follower thread records how it ended
                pass

    @staticmethod
    def _close_input(process: subprocess.Popen) -> None:
        try:
            process.stdin.close()
        except OSError:
            pass

    def prepare_spare(self) -> None:
        """Start the spare training child now (the app's server does at start-up), if this manager uses children."""
        if self.isolated:
            self._spares.prepare()

    def stop(self) -> bool:
        """Ask the running training to stop after the current batch; False if nothing runs."""
        with self._lock:
            if not self._snapshot.active:
                return False
            self._cancel.set()
            if self._process is not None:
                self._send_stop(self._process)
            self._snapshot = dataclasses.replace(
                self._snapshot, state=JobState.STOPPING, message="stopping after the current batch"
            )
            return True

    @property
    def worker_pid(self) -> int | None:
        """The process id of the training child while one is alive (isolated mode), else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end; True if it has (or none was started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
