"""The process-wide training job: at most one training at a time, in a background thread.

The app keeps one ``JobManager`` per server process (``st.cache_resource``), so every browser tab and
every rerun sees the same job; the CLI uses one too. The worker thread never touches Streamlit: it
writes progress into the manager under a lock, and readers take an immutable ``JobSnapshot``.

    manager = JobManager()
    run_id = manager.start(TrainConfig(epochs=2, train_subset=1000))   # raises JobAlreadyRunning
    manager.snapshot().state        # "running", later "complete" / "stopped" / "failed"
    manager.stop()                  # stops at the next batch; completed epochs are kept
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from resnet.config import TrainConfig
from resnet.runs import RunStore
from resnet.trainer import EpochProgress, prepare_training, train_prepared

ACTIVE_STATES = ("starting", "running", "stopping")


class JobAlreadyRunning(RuntimeError):
    """A training is already running in this process; only one runs at a time."""


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of the job's state, safe to read from any thread."""

    state: str = "idle"  # idle | starting | running | stopping | complete | stopped | failed
    run_id: str | None = None
    config: TrainConfig | None = None
    phase: str = ""  # building | training | evaluating | saving
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


class JobManager:
    """Starts, stops and reports the single background training of this process."""

    def __init__(self, store: RunStore | None = None, dataset_dir=None):
        self.store = store or RunStore()
        self.dataset_dir = dataset_dir
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot = JobSnapshot()

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._snapshot

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = dataclasses.replace(self._snapshot, **changes)

    def start(self, config: TrainConfig, *, run_id: str | None = None, resume: bool = True) -> str:
        """Validate and start training in the background; returns the run id.

        Raises JobAlreadyRunning if a training is active, and ConfigError, DatasetError or RunError
        (from ``prepare_training``) before anything starts.
        """
        with self._lock:
            if self._snapshot.active:
                raise JobAlreadyRunning(
                    f"a training is already running (run {self._snapshot.run_id}, epoch {self._snapshot.epoch} "
                    f"of {self._snapshot.target_epochs}); stop it or wait for it to finish"
                )
            # Claim the slot before the slow preparation so a second start in the meantime is refused.
            self._snapshot = JobSnapshot(
                state="starting", run_id=run_id, config=config, started_at=time.time(), message="preparing"
            )
            self._cancel.clear()
        try:
            prepared = prepare_training(
                config, store=self.store, run_id=run_id, resume=resume, dataset_dir=self.dataset_dir
            )
            with self._lock:  # under the lock: a stop() pressed meanwhile must not be overwritten
                self._snapshot = dataclasses.replace(
                    self._snapshot,
                    state="stopping" if self._cancel.is_set() else "running",
                    run_id=prepared.run.run_id,
                    config=prepared.config.replace(epochs=prepared.target_epochs),
                    phase="building",
                    epoch=prepared.run.epochs_done + 1,
                    first_epoch=prepared.run.epochs_done + 1,
                    target_epochs=prepared.target_epochs,
                    message=f"training run {prepared.run.run_id}",
                )
            thread = threading.Thread(target=self._work, args=(prepared,), name="resnet-training", daemon=True)
            self._thread = thread
            thread.start()
        except BaseException as error:  # nothing runs: free the slot again
            self._update(state="idle", message="", error=f"{error}")
            raise
        return prepared.run.run_id

    def _report(self, progress: EpochProgress) -> None:
        changes = dataclasses.asdict(progress)
        changes.pop("target_epochs")
        if progress.phase != "training":
            changes = {key: value for key, value in changes.items() if key in ("phase", "epoch")}
        with self._lock:
            state = "stopping" if self._snapshot.state == "stopping" else "running"
            self._snapshot = dataclasses.replace(self._snapshot, state=state, **changes)

    def _work(self, prepared) -> None:
        try:
            run = train_prepared(prepared, cancel=self._cancel, report=self._report)
            self._update(state=run.state["status"], message=run.state.get("message", ""), finished_at=time.time())
        except BaseException as error:  # the thread must always leave a final state
            self._update(
                state="failed",
                error=f"{type(error).__name__}: {error}",
                message=prepared.run.state.get("message", ""),
                finished_at=time.time(),
            )

    def stop(self) -> bool:
        """Ask the running training to stop after the current batch; False if nothing runs."""
        with self._lock:
            if not self._snapshot.active:
                return False
            self._cancel.set()
            self._snapshot = dataclasses.replace(
                self._snapshot, state="stopping", message="stopping after the current batch"
            )
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end; True if it has (or none was started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()
