"""The server's one sweep runner: a sweep's trials trained in a background thread, one at a time.

Every trial is a job of the server's one ``JobManager`` (``app.services.get_manager``), so the single-job
rule holds across tabs: while a trial trains, every tab shows it as the live job, the sidebar's Start is
refused and its Stop stops the trial (and with it the sweep). ``get_sweep_runner()`` is the process-wide
runner (``st.cache_resource``, keyed on the run-cache folder like the manager); the Sweep tab draws
its ``SweepSnapshot``. The thread never calls ``st.*``: it writes into the runner under a lock and
watches a ``threading.Event`` for Stop.

    runner = SweepRunner(manager)
    runner.start(sweep)          # SweepBusy if a sweep or any training is running
    runner.snapshot().trial      # the trial in progress (1-based), .done of .total, .message
    runner.stop()                # the current trial stops after its batch, the rest are not run
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import streamlit as st

from resnet.sweeps.budget_curve import run_budget_curve
from resnet.sweeps.local import run_sweep
from resnet.sweeps.record import Sweep, SweepStore
from resnet.sweeps.trials import SweepEvent, TrialOutcome, first_failure
from resnet.training.jobs import JobAlreadyRunning, JobManager, LockedSnapshot
from resnet.wording import TextEnum


class SweepBusy(RuntimeError):
    """A sweep or a training is already running on this server; nothing was started."""


class SweepState(TextEnum):
    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"  # Stop was pressed: the current trial ends after its batch
    FINISHED = "finished"  # every trial ran (some may have failed: see ``failed``)
    STOPPED = "stopped"
    FAILED = "failed"  # the sweep itself could not go on (an error outside a trial)


@dataclass(frozen=True)
class SweepSnapshot:
    """An immutable copy of the runner's state, safe to read from any thread."""

    state: SweepState = SweepState.IDLE
    name: str | None = None
    trial: int = 0  # the trial in progress or last run, 1-based (0: none yet)
    total: int = 0
    done: int = 0  # trials that have all their epochs (trained now or before)
    failed: int = 0  # trials that failed or could not start
    run_id: str | None = None  # the current trial's run
    message: str = ""

    @property
    def active(self) -> bool:
        return self.state in (SweepState.RUNNING, SweepState.STOPPING)


class SweepRunner(LockedSnapshot):
    """Runs at most one sweep at a time, every trial through ``manager``."""

    def __init__(self, manager: JobManager):
        self.manager = manager
        self.sweeps = SweepStore(manager.store.root)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot = SweepSnapshot()

    def start(self, sweep: Sweep) -> None:
        """Train ``sweep``'s unfinished trials in the background; SweepBusy says why not."""
        with self._lock:
            if self._snapshot.active:
                raise SweepBusy(f"sweep {self._snapshot.name} is running; stop it or wait for it to finish")
            if self.manager.snapshot().active:
                run_id = self.manager.snapshot().run_id or "(being prepared)"
                raise SweepBusy(f"a training is running (run {run_id}); stop it or wait for it to finish")
            if self.sweeps.is_running(sweep.name):
                raise SweepBusy(f"sweep {sweep.name} is being run by another process")
            self._cancel.clear()
            self._snapshot = SweepSnapshot(
                SweepState.RUNNING, sweep.name, total=len(sweep.trials), message="starting the first trial"
            )
            self._thread = threading.Thread(target=self._work, args=(sweep,), name="resnet-sweep", daemon=True)
            self._thread.start()

    def stop(self) -> bool:
        """Stop the current trial after its batch and leave the rest; False if no sweep runs."""
        with self._lock:
            if not self._snapshot.active:
                return False
            self._cancel.set()
            self._snapshot = dataclasses.replace(
                self._snapshot, state=SweepState.STOPPING, message="stopping the current trial after its batch"
            )
        return True

    # --- the thread ---------------------------------------------------------------------------------
    def _work(self, sweep: Sweep) -> None:
        """Run the sweep; always leaves a final state."""
        try:
            with self.sweeps.locked(sweep.name):
                run = run_budget_curve if sweep.branches else run_sweep
                results = run(sweep, self.manager.store, manager=self.manager, cancel=self._cancel, report=self._report)
        except JobAlreadyRunning as error:  # a Start elsewhere took the slot between two trials
            self._cancel.set()
            self._finish(
                SweepState.STOPPED, f"the next trial could not start: {error}. Start the sweep again to continue."
            )
            return
        except BaseException as error:  # noqa: BLE001 - the thread must end in a final state
            self._finish(SweepState.FAILED, f"the sweep failed: {type(error).__name__}: {error}")
            return
        snapshot = self.snapshot()
        if self._cancel.is_set():
            self._finish(
                SweepState.STOPPED,
                f"{snapshot.message} Completed epochs are kept; start sweep {sweep.name} again to continue.",
            )
            return
        failure = first_failure(results)
        text = f"All {len(results)} trials have their epochs."
        if failure is not None:
            text = f"trial {failure.index + 1} {failure.outcome}: {failure.message}"
        self._finish(SweepState.FINISHED, text)

    def _finish(self, state: SweepState, message: str) -> None:
        self._update(state=state, message=message.strip())

    def _report(self, event: SweepEvent) -> None:
        if event.kind == "start":
            self._update(trial=event.index + 1, run_id=event.run_id, message=event.text)
        elif event.kind == "end":
            self._trial_ended(event)

    def _trial_ended(self, event: SweepEvent) -> None:
        result, number = event.result, event.index + 1
        with self._lock:
            snapshot = self._snapshot
            changes = {"trial": number, "run_id": result.run_id}
            if result.outcome in (TrialOutcome.TRAINED, TrialOutcome.DONE):
                changes |= {"done": snapshot.done + 1, "message": f"trial {number}: {result.message}"}
            elif result.outcome in (TrialOutcome.FAILED, TrialOutcome.REFUSED):
                changes |= {
                    "failed": snapshot.failed + 1,
                    "message": f"trial {number} {result.outcome}: {result.message}",
                }
            elif result.outcome == TrialOutcome.STOPPED:
                if not self._cancel.is_set():  # stopped by the sidebar's Stop (any tab): the sweep stops too
                    self._cancel.set()
                    changes["state"] = SweepState.STOPPING
                changes["message"] = f"Trial {number} was stopped (run {result.run_id}); the rest were not run."
            self._snapshot = dataclasses.replace(snapshot, **changes)


@st.cache_resource(show_spinner=False)
def _runner_for(cache_dir: str, _manager: JobManager) -> SweepRunner:
    return SweepRunner(_manager)


def get_sweep_runner(manager: JobManager) -> SweepRunner:
    """The sweep runner of this server process for ``manager`` (``app.services.get_manager()``)."""
    return _runner_for(str(manager.store.root.resolve()), manager)
