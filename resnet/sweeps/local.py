"""Sweeps trained here, one trial after another, each as a job of a ``JobManager``.

Each trial trains in a child process through ``resnet.training.jobs`` (TensorFlow's memory goes back
after every trial); a stop ends the current trial after its batch (completed epochs kept) and the rest
of the queue; running the sweep again continues it.
"""

from __future__ import annotations

import threading
import time

from resnet.store.plan import TrainingPlan
from resnet.store.runs import RunError, RunStore
from resnet.sweeps.record import Sweep, SweepError, SweepStore
from resnet.sweeps.trials import Report, SweepEvent, TrialOutcome, TrialResult, start_trial
from resnet.training.jobs import JobManager


def run_sweep(
    sweep: Sweep,
    store: RunStore,
    *,
    cancel: threading.Event | None = None,
    report: Report | None = None,
    dataset_dir=None,
    isolated: bool = True,
    poll_seconds: float = 0.2,
    manager=None,
) -> list[TrialResult]:
    """Train the sweep's trials here, one after another; returns one result per trial, in order.

    Each trial is a ``resnet.training.jobs.JobManager`` job (``prepare_training`` + ``train_prepared``; in a
    child process with ``isolated``). With ``manager`` (the app's one JobManager), every trial is a job
    of that manager instead, so it is the server's one training (``dataset_dir`` and ``isolated`` are
    then the manager's); a trial it cannot start because another job runs raises JobAlreadyRunning.
    Setting ``cancel`` stops the current trial after its batch and leaves the rest; finished trials are
    skipped and a partial one continues when it runs again.
    The record is saved (with its run ids) as trials start; the caller holds ``SweepStore.locked``.
    """
    if sweep.branches:
        raise SweepError(
            f"sweep {sweep.name} is a budget curve (one trunk, cooldown branches): continue it with "
            f"python -m resnet budget-curve --name {sweep.name} --budgets {','.join(map(str, sweep.budgets))}"
        )
    cancel = cancel or threading.Event()
    report = report or (lambda event: None)
    sweeps = SweepStore(store.root)
    if not sweeps.exists(sweep.name):
        sweep = sweeps.save(sweep)
    results = []
    for index in range(len(sweep.trials)):
        if cancel.is_set():
            results.append(
                TrialResult(index, sweep.trials[index].run_id, TrialOutcome.NOT_RUN, "the sweep was stopped")
            )
            continue
        trial_manager = manager or JobManager(store, dataset_dir=dataset_dir, isolated=isolated)
        result, sweep = run_trial_here(
            trial_manager, store, sweeps, sweep, index, cancel=cancel, report=report, poll=poll_seconds
        )
        results.append(result)
        report(SweepEvent("end", index, len(sweep.trials), result.run_id, result.message, result=result))
    return results


def run_trial_here(manager, store, sweeps, sweep, index, *, cancel, report, poll) -> tuple[TrialResult, Sweep]:
    total, trial, started = len(sweep.trials), sweep.trials[index], time.perf_counter()

    def prepare(plan: TrainingPlan) -> str:
        return manager.start(trial.config, run_id=plan.run.run_id if plan.run else None, resume=False)

    try:
        start = start_trial(store, sweeps, sweep, index, prepare=prepare)
    except RunError as error:  # this trial's run (locked meanwhile...); a missing dataset stops the sweep
        return TrialResult(index, trial.run_id, TrialOutcome.REFUSED, str(error)), sweep
    if start.result is not None:
        return start.result, start.sweep
    run_id = start.run_id
    report(
        SweepEvent(
            "start", index, total, run_id, start.plan.started_text(run_id), target_epochs=start.plan.target_epochs
        )
    )
    outcome, message, run = follow_job(manager, store, run_id, index, total, cancel=cancel, report=report, poll=poll)
    seconds = time.perf_counter() - started
    return TrialResult(index, run_id, outcome, message, seconds, run.epochs_done, trial.config.epochs), start.sweep


def follow_job(manager, store, run_id, index, total, *, cancel, report, poll):
    """Wait for ``manager``'s job on ``run_id``, reporting its progress and commits as trial ``index``;
    a ``cancel`` stops it. Returns (outcome, message, run as it ended)."""
    committed = store.load(run_id).epochs_done
    while not manager.wait(timeout=poll):
        if cancel.is_set():
            manager.stop()
        committed = _report_commits(store, run_id, committed, index, total, report)
        snapshot = manager.snapshot()
        phase = str(snapshot.phase or "")
        report(
            SweepEvent(
                "progress",
                index,
                total,
                run_id,
                phase=phase,
                epoch=snapshot.epoch,
                target_epochs=snapshot.target_epochs,
                fraction=snapshot.epoch_fraction,
            )
        )
    _report_commits(store, run_id, committed, index, total, report)
    snapshot, run = manager.snapshot(), store.load(run_id)
    outcome = {"complete": TrialOutcome.TRAINED, "stopped": TrialOutcome.STOPPED}.get(
        str(snapshot.state), TrialOutcome.FAILED
    )
    return outcome, snapshot.message + (f" ({snapshot.error})" if snapshot.error else ""), run


def _report_commits(store: RunStore, run_id: str, committed: int, index: int, total: int, report: Report) -> int:
    """Report the epochs committed since ``committed``; returns the epochs done now."""
    try:
        run = store.load(run_id)
    except RunError:
        return committed
    for row in run.history.to_dict("records")[committed:] if run.history is not None else []:
        report(
            SweepEvent("epoch", index, total, run_id, epoch=int(row["epoch"]), target_epochs=run.target_epochs, row=row)
        )
    return max(committed, run.epochs_done)
