"""The seed's study from one run: a trunk in its stable phase, and a cooldown branch at every budget.

    python -m resnet budget-curve --budgets 10,20,60,100,200 [training flags]

The independent seed study trains one one-cycle run per budget (10 + 20 + 60 + 100 + 200 = 390 epochs),
because a one-cycle schedule depends on its length. A warmup-stable-decay schedule does not, until its
cooldown (``resnet/core/schedule.py``, after Hägele et al. 2024): one *trunk* trains warm-up and stable
phase (``epochs_mode`` trunk), and when it reaches budget B a *branch* starts from its state at epoch B
(``resnet.store.branch``) and cools down over ``cooldown_for(B)`` epochs (20% of B by default), while the
trunk goes on. For the seed's budgets that is 200 + 0.2 * 390 = 278 epochs. Each branch is an ordinary
run: shown, compared, explained and deleted like any other.

The record is a sweep (``Sweep.branches``): its grid is the budgets, its trials the branches, and it
names the trunk (``trunk_run_id``). For each budget in turn ``run_budget_curve`` trains the trunk up to
B, creates the branch (if it has none yet) from the trunk's checkpoint at B before the trunk trains on,
then trains the branch's cooldown. A stop, a kill or a failure keeps every committed epoch; running the
same curve again skips finished branches, finishes a branch's cooldown, and continues the trunk.
Here the branches and the trunk take turns; on Ray (``--ray``, ``resnet/sweeps/budget_on_ray.py``) every
stretch of the trunk and every cooldown is a task, and a branch's cooldown trains while the trunk goes on.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pandas as pd

from resnet.store.branch import branch_run
from resnet.store.runs import Run, RunError, RunStore
from resnet.sweeps.grid import trunk_config
from resnet.sweeps.local import follow_job, run_trial_here
from resnet.sweeps.record import Sweep, SweepStore
from resnet.sweeps.trials import Report, SweepEvent, TrialOutcome, TrialResult
from resnet.training.jobs import JobManager


def run_budget_curve(
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
    """Train the curve's trunk and branches here (see the module docstring); one result per branch."""
    cancel = cancel or threading.Event()
    report = report or (lambda event: None)
    sweeps = SweepStore(store.root)
    if not sweeps.exists(sweep.name):
        sweep = sweeps.save(sweep)
    results = []
    for index, budget in enumerate(sweep.budgets):
        if cancel.is_set():
            results.append(
                TrialResult(index, sweep.trials[index].run_id, TrialOutcome.NOT_RUN, "the curve was stopped")
            )
            continue
        job = manager or JobManager(store, dataset_dir=dataset_dir, isolated=isolated)
        follow = dict(cancel=cancel, report=report, poll=poll_seconds)

        def train_trunk(sweep, index, budget, job=job, follow=follow):
            return _train_trunk(job, store, sweeps, sweep, index, budget, **follow)

        sweep, problem = branch_at(store, sweeps, sweep, index, budget, train_trunk=train_trunk, report=report)
        if problem is not None:
            results.append(problem)
            report(SweepEvent("end", index, len(sweep.trials), problem.run_id, problem.message, result=problem))
            break  # later branches need the trunk past this budget
        job = manager or JobManager(store, dataset_dir=dataset_dir, isolated=isolated)
        result, sweep = run_trial_here(job, store, sweeps, sweep, index, **follow)
        results.append(result)
        report(SweepEvent("end", index, len(sweep.trials), result.run_id, result.message, result=result))
    return results


def branch_at(store, sweeps, sweep, index, budget, *, train_trunk, report):
    """Make sure branch ``index`` exists: train the trunk to ``budget`` and branch off it.

    ``train_trunk(sweep, index, budget)`` trains the trunk there (here, or as a Ray task) and returns
    (trunk, None) or (trunk, why not). Returns (sweep, None), or (sweep, the result that says why the
    curve cannot go on).
    """
    trial = sweep.trials[index]
    branch = store.find(trial.run_id) if trial.run_id else None
    if branch is not None and branch.epochs_done >= budget:
        return sweep, None  # branched before: its cooldown may still be unfinished
    trunk = store.find(sweep.trunk_run_id) if sweep.trunk_run_id else None
    if trunk is None or trunk.epochs_done < budget:
        trunk, result = train_trunk(sweep, index, budget)
        sweep = sweeps.load(sweep.name)
        if result is not None:
            return sweep, result
    if trunk.epochs_done != budget:
        message = (
            f"the trunk {trunk.run_id} is at epoch {trunk.epochs_done}, past budget {budget}, and its checkpoint at "
            f"{budget} is gone: start a new budget curve (another name) for this budget"
        )
        return sweep, TrialResult(index, trial.run_id, TrialOutcome.REFUSED, message)
    branch = branch_run(store, trunk, trial.config, budget=budget, into=branch)
    if trial.run_id != branch.run_id:
        sweep = sweeps.save(sweep.with_run_id(index, branch.run_id))
    report(SweepEvent("start", index, len(sweep.trials), branch.run_id, f"branched off the trunk at epoch {budget}"))
    return sweep, None


def _train_trunk(
    manager, store, sweeps, sweep, index, budget, *, cancel, report, poll
) -> tuple[Run, TrialResult | None]:
    """Train the trunk up to ``budget``; (trunk, None) when it got there, else (trunk, why not)."""
    config = trunk_config(sweep.base, budget)
    started = time.perf_counter()
    try:
        run_id = manager.start(config, run_id=sweep.trunk_run_id, resume=False)
    except RunError as error:
        return None, TrialResult(index, sweep.trunk_run_id, TrialOutcome.REFUSED, f"the trunk: {error}")
    if sweep.trunk_run_id != run_id:
        sweeps.save(with_trunk(sweep, run_id))
    total = len(sweep.trials)
    report(SweepEvent("start", index, total, run_id, f"trunk {run_id}: up to epoch {budget} (stable phase)"))
    outcome, message, trunk = follow_job(manager, store, run_id, index, total, cancel=cancel, report=report, poll=poll)
    if trunk.epochs_done >= budget:
        return trunk, None
    seconds = time.perf_counter() - started
    return trunk, TrialResult(index, run_id, outcome, f"the trunk: {message}", seconds, trunk.epochs_done, budget)


def with_trunk(sweep: Sweep, run_id: str) -> Sweep:
    return dataclasses.replace(sweep, trunk_run_id=run_id)


def curve_name(base, budgets) -> str:
    """The record name a ``budget-curve`` command gets unless it names one: its budgets and settings."""
    return f"budgets-{'-'.join(map(str, budgets))}-{base.fingerprint()[:6]}"


def format_budget_table(table: pd.DataFrame) -> str:
    """The curve as the CLI prints it: one line per budget."""
    lines = [f"{'budget':>6}  {'cooldown':>8}  {'test acc':>8}  {'seconds':>8}  run"]
    for row in table.itertuples():
        accuracy = (
            f"{row.test_accuracy:.4f}"
            if row.test_accuracy is not None and row.test_accuracy == row.test_accuracy
            else "-"
        )
        seconds = f"{row.seconds:.0f}" if accuracy != "-" else "-"
        lines.append(f"{row.budget:>6}  {row.cooldown_epochs:>8}  {accuracy:>8}  {seconds:>8}  {row.run_id or '-'}")
    return "\n".join(lines)


def curve_report(sweep: Sweep, runs: list[Run]) -> str:
    """The curve's table and what it cost, as ``python -m resnet budget-curve`` prints them at the end."""
    table = budget_table(sweep, runs)
    return format_budget_table(table) + "\n" + compute_text(sweep, table, trunk_of(sweep, runs))


def trunk_of(sweep: Sweep, runs) -> Run | None:
    """The curve's trunk among ``runs`` (None before it was created, or if it is gone)."""
    return next((run for run in runs if run.run_id == sweep.trunk_run_id), None)


def budget_table(sweep: Sweep, runs) -> pd.DataFrame:
    """Per budget: the branch, its test accuracy after the cooldown, its epochs and what they cost."""
    by_id = {run.run_id: run for run in runs}
    rows = []
    for budget, trial in zip(sweep.budgets, sweep.trials, strict=True):
        run = by_id.get(trial.run_id)
        history = run.history if run is not None and not run.damaged else None
        done = run is not None and history is not None and run.epochs_done >= trial.config.epochs
        rows.append(
            {
                "budget": budget,
                "run_id": trial.run_id,
                "epochs": trial.config.epochs,
                "cooldown_epochs": trial.config.epochs - budget,
                "epochs_done": run.epochs_done if run is not None else 0,
                "test_accuracy": float(history["test_accuracy"].iloc[-1]) if done else None,
                "seconds": float(history["cumulative_seconds"].iloc[-1]) if done else None,
                "cooldown_seconds": float(history["epoch_seconds"].iloc[budget:].sum()) if done else None,
            }
        )
    return pd.DataFrame(rows)


def compute_text(sweep: Sweep, table: pd.DataFrame, trunk: Run | None) -> str:
    """What the curve cost against independent runs of the same budgets."""
    budgets = sweep.budgets
    planned = budgets[-1] + int(table["cooldown_epochs"].sum())
    text = (
        f"One trunk of {budgets[-1]} epochs and cooldowns of {int(table['cooldown_epochs'].sum())}: {planned} epochs "
        f"in all, against {sum(budgets)} for independent runs of {', '.join(map(str, budgets))} epochs."
    )
    if trunk is not None and trunk.history is not None and not trunk.history.empty:
        spent = trunk.total_seconds + float(table["cooldown_seconds"].fillna(0).sum())
        text += f" Trained so far: trunk {trunk.epochs_done} epochs, {spent:,.0f} s with the cooldowns done."
    return text
