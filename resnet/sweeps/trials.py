"""What a trial trains and how it ended: adopting an existing run, the plan, the trial's start and result.

What a trial trains is ``resnet.store.plan.plan_training``'s answer. Runs that differ only in epochs
share a fingerprint, so a trial never resumes "the newest run of these settings": the first time it
adopts a run trained with exactly its settings and its epoch budget in one learning-rate cycle (reused
if complete, continued if partial), or else starts a new run (``resume=False``); from then on the record
names that run and a rerun continues it. Both executors (``local``, ``on_ray``) start trials here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from resnet.core.schedule import Segment
from resnet.store.plan import PlanKind, TrainingPlan, plan_training
from resnet.store.runs import Run, RunStore
from resnet.sweeps.record import Sweep, SweepStore, Trial
from resnet.wording import TextEnum


# --- what a trial trains -------------------------------------------------------------------------------
def adoptable_run(trial: Trial, runs: Iterable[Run], taken: set[str]) -> Run | None:
    """A run trained with exactly the trial's settings and budget in one cycle, not another trial's."""
    config = trial.config
    one_cycle = ((), (Segment(1, config.epochs),))
    for run in runs:
        if run.damaged or run.run_id in taken or run.state.fingerprint != config.fingerprint():
            continue
        if run.state.target_epochs == config.epochs and run.state.segments in one_cycle:
            return run
    return None


def plan_trial(store: RunStore, sweep: Sweep, index: int, runs: list[Run] | None = None) -> TrainingPlan:
    """What training trial ``index`` does now: its recorded run continued, an adopted run, or a new run."""
    trial = sweep.trials[index]
    runs = store.list_runs() if runs is None else runs
    known = {run.run_id for run in runs}
    if trial.run_id is not None and trial.run_id in known:
        return plan_training(store, trial.config, run_id=trial.run_id, runs=runs)
    taken = {other.run_id for other in sweep.trials if other.run_id is not None}
    adopted = adoptable_run(trial, runs, taken)
    if adopted is not None:
        return plan_training(store, trial.config, run_id=adopted.run_id, runs=runs)
    return plan_training(store, trial.config, resume=False, runs=runs)


def trial_end(trial: Trial, run: Run) -> int:
    """The epochs a trial's run has when it is done: its epochs, or where an auto run decided to end."""
    stop = run.state.stop if run.state is not None else None
    return stop.cooldown_end if stop is not None else trial.config.epochs


def sweep_progress(sweep: Sweep, runs: Iterable[Run]) -> tuple[int, int]:
    """(trials whose run has all its epochs, trials)."""
    by_id = {run.run_id: run for run in runs}
    done = 0
    for trial in sweep.trials:
        run = by_id.get(trial.run_id)
        if run is not None and not run.damaged and run.epochs_done >= trial_end(trial, run):
            done += 1
    return done, len(sweep.trials)


# --- running it ----------------------------------------------------------------------------------------
class TrialOutcome(TextEnum):
    """How a trial ended this time."""

    TRAINED = "trained"  # reached its epochs now
    DONE = "done"  # had them already: nothing trained
    STOPPED = "stopped"  # stopped by the user (completed epochs kept)
    FAILED = "failed"  # an error (completed epochs kept)
    REFUSED = "refused"  # could not start (busy elsewhere, damaged...)
    NOT_RUN = "not run"  # the sweep was stopped before its turn


@dataclass(frozen=True)
class TrialResult:
    index: int
    run_id: str | None
    outcome: str
    message: str = ""
    seconds: float = 0.0  # wall time of this trial here (preparing, training, waiting for a worker)
    epochs_done: int = 0
    target_epochs: int = 0
    worker: str = ""  # where it trained (Ray: "pid N on HOST")


@dataclass(frozen=True)
class SweepEvent:
    """What a running sweep reports: a trial ``start``s, makes ``progress``, commits an ``epoch``, ``end``s."""

    kind: str
    index: int
    total: int
    run_id: str | None = None
    text: str = ""
    epoch: int = 0
    target_epochs: int = 0
    phase: str = ""
    fraction: float = 0.0  # of the current epoch's training pass
    row: dict | None = None  # ``epoch``: the committed history row
    pid: int | None = None  # the process training the trial, when known
    result: TrialResult | None = None  # ``end``


Report = Callable[[SweepEvent], None]


@dataclass
class TrialStart:
    """A trial ready to train (the sweep record names its run), or the result of one with nothing to train."""

    index: int
    sweep: Sweep
    plan: TrainingPlan
    result: TrialResult | None = None  # set when nothing is to be trained
    run_id: str | None = None


def start_trial(
    store: RunStore, sweeps: SweepStore, sweep: Sweep, index: int, *, prepare: Callable[[TrainingPlan], str]
) -> TrialStart:
    """Plan trial ``index``; if it trains, ``prepare(plan)`` creates or picks the run and returns its id,
    which the sweep record then names (saved at once). Shared by every executor."""
    trial = sweep.trials[index]
    plan = plan_trial(store, sweep, index)
    if plan.kind in (PlanKind.UP_TO_DATE, PlanKind.STOPPED_ITSELF):  # an auto run that ended itself is done
        sweep = _record_run(sweeps, sweep, index, plan.run.run_id)
        result = TrialResult(
            index, plan.run.run_id, TrialOutcome.DONE, "already trained", 0.0, plan.epochs_done, plan.target_epochs
        )
        return TrialStart(index, sweep, plan, result, run_id=plan.run.run_id)
    if not plan.trains:
        run_id = plan.run.run_id if plan.run else trial.run_id
        result = TrialResult(
            index, run_id, TrialOutcome.REFUSED, str(plan.error()), 0.0, plan.epochs_done, plan.target_epochs
        )
        return TrialStart(index, sweep, plan, result, run_id=run_id)
    run_id = prepare(plan)
    sweep = _record_run(sweeps, sweep, index, run_id)
    return TrialStart(index, sweep, plan, run_id=run_id)


def _record_run(sweeps: SweepStore, sweep: Sweep, index: int, run_id: str) -> Sweep:
    if sweep.trials[index].run_id == run_id:
        return sweep
    return sweeps.save(sweep.with_run_id(index, run_id))


def first_failure(results: list[TrialResult]) -> TrialResult | None:
    return next((result for result in results if result.outcome in (TrialOutcome.FAILED, TrialOutcome.REFUSED)), None)
