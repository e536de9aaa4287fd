"""The process-wide training job: at most one training at a time, in the background.

The app keeps one ``JobManager`` per server process (``st.cache_resource``), so every browser tab and
every rerun sees the same job; the CLI uses one too. A background thread follows the training and
writes its progress into the manager under a lock; readers take an immutable ``JobSnapshot``.

Where the training itself runs:

- ``isolated=True`` (the default, used by the app): in a child process, ``python -m resnet.worker``.
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
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from resnet.config import TrainConfig
from resnet.runs import RunStore
from resnet.trainer import EpochProgress, PreparedTraining, kept_epochs_text, prepare_training, train_prepared

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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
    return event, message


class JobManager:
    """Starts, stops and reports the single background training of this process."""

    def __init__(self, store: RunStore | None = None, dataset_dir=None, *, isolated: bool = True):
        self.store = store or RunStore()
        self.dataset_dir = dataset_dir
        self.isolated = isolated
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
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
            self._process = None
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

    def _spawn(self, prepared: PreparedTraining) -> subprocess.Popen:
        """Start ``python -m resnet.worker`` for the prepared run and send it the request."""
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            path for path in (str(PROJECT_ROOT), environment.get("PYTHONPATH")) if path
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "resnet.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=environment,
            text=True,
        )
        request = {
            "store": str(prepared.store.root),
            "run_id": prepared.run.run_id,
            "config": prepared.config.replace(epochs=prepared.target_epochs).to_dict(),
            "dataset_dir": None if self.dataset_dir is None else str(self.dataset_dir),
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
                    self._report(EpochProgress(**message))
                elif event == "finished" and isinstance(message.get("status"), str):
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
        if outcome is None:
            outcome = ("failed", {"error": f"the training process ended unexpectedly (exit code {code})"})
            self._record_crash(prepared.run.run_id, outcome[1]["error"])
        event, message = outcome
        if event == "finished":
            self._update(state=message["status"], message=message.get("message", ""), finished_at=time.time())
        else:
            self._update(
                state="failed", error=message["error"], message=message.get("message", ""), finished_at=time.time()
            )

    def _record_crash(self, run_id: str, error: str) -> None:
        """The child died without a word (killed, out of memory): mark its run failed, epochs kept."""
        try:
            run = self.store.load(run_id)  # re-read: the child committed epochs since we last looked
            if run.state.get("status") == "running":
                self.store.update_state(
                    run,
                    status="failed",
                    message=f"failed during epoch {run.epochs_done + 1}: {error}; " + kept_epochs_text(run.epochs_done),
                )
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

    def stop(self) -> bool:
        """Ask the running training to stop after the current batch; False if nothing runs."""
        with self._lock:
            if not self._snapshot.active:
                return False
            self._cancel.set()
            if self._process is not None:
                self._send_stop(self._process)
            self._snapshot = dataclasses.replace(
                self._snapshot, state="stopping", message="stopping after the current batch"
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
