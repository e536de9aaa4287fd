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

import dataclasses
import subprocess
import threading
import time
from dataclasses import dataclass

from resnet.config import TrainConfig
from resnet.store.plan import TrainingPlan
from resnet.store.runs import RunError, RunStatus, RunStore
from resnet.training import protocol
from resnet.training.protocol import EpochProgress, Event, Phase
from resnet.training.spare import SPARE_WORKER, SpareWorker
from resnet.wording import TextEnum, failed_message


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


class LockedSnapshot:
    """An immutable snapshot behind ``self._lock``: readers take it whole, the worker replaces fields.

    Subclasses set ``self._lock``, ``self._snapshot`` (a frozen dataclass) and ``self._thread`` (the
    background thread, None before the first start) in ``__init__``.
    """

    def snapshot(self):
        with self._lock:
            return self._snapshot

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = dataclasses.replace(self._snapshot, **changes)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to end; True if it has (or none was started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()


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
            # Imported here: the trainer brings Keras, which a process that only shows runs never needs.
            from resnet.training.trainer import prepare_training

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
                    target_epochs=prepared.last_epoch,  # an auto run's maximum, or its end once decided
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

    def delete(self, run_id: str) -> None:
        """Delete a run; RunError while this job or another process trains it."""
        snapshot = self.snapshot()
        if snapshot.active and snapshot.run_id == run_id:
            raise RunError(f"run {run_id} is training: stop it before deleting it")
        self.store.delete(run_id)

    def _report(self, progress: EpochProgress) -> None:
        changes = dataclasses.asdict(progress)  # target_epochs too: an auto run's end moves when it decides
        if progress.phase is not Phase.TRAINING:
            changes = {key: value for key, value in changes.items() if key in ("phase", "epoch", "target_epochs")}
        with self._lock:
            state = JobState.STOPPING if self._snapshot.state is JobState.STOPPING else JobState.RUNNING
            self._snapshot = dataclasses.replace(self._snapshot, state=state, **changes)

    def _work(self, prepared) -> None:
        from resnet.training.trainer import train_prepared  # in this process: the one-shot CLI (isolated=False)

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

    def _spawn(self, prepared) -> subprocess.Popen:
        """Hand the prepared run to a training child (the spare, when one is ready) and send it the request."""
        process, environment = self._spares.take()
        process.stdin.write(
            protocol.request_line(
                store=prepared.store.root,
                run_id=prepared.run.run_id,
                config=prepared.config.to_dict(),
                dataset_dir=self.dataset_dir,
                environment=environment,  # this process's, now: the spare may have been started before a change
            )
        )
        process.stdin.flush()
        return process

    def _follow(self, prepared) -> None:
        """Turn the child's progress lines into snapshots until it ends; always leaves a final state."""
        process = self._process
        outcome = None
        try:
            for line in process.stdout:
                event, message = protocol.parse_line(line)
                if event is Event.PROGRESS:
                    progress = EpochProgress(**message)
                    if progress.phase is Phase.EVALUATING and progress.epoch == progress.target_epochs:
                        self._spares.prepare()  # its last evaluation: the next child imports while this one ends
                    self._report(progress)
                elif event is Event.FINISHED and message.get("status") in FINAL_STATES:
                    outcome = (event, message)
                elif event is Event.FAILED:
                    outcome = (event, {**message, "error": str(message.get("error", "unknown error"))})
        except Exception as error:  # a fault here must not leave the job 'running' forever: stop the child
            outcome = (Event.FAILED, {"error": f"lost track of the training process ({type(error).__name__}: {error})"})
            self._send_stop(process)
            for _ in process.stdout:  # drain, so the child can finish its batch and exit
                pass
        finally:
            code = process.wait()
            self._close_input(process)
            self._spares.prepare()  # for the next job: it imports now, not beside this one's training
        if outcome is None:
            outcome = (Event.FAILED, {"error": f"the training process ended unexpectedly (exit code {code})"})
            self._record_crash(prepared.run.run_id, outcome[1]["error"])
        event, message = outcome
        if event is Event.FINISHED:
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
                process.stdin.write(protocol.STOP + "\n")
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
