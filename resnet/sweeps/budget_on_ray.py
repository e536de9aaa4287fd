"""A budget curve on a Ray cluster: the trunk's stretches and the branches' cooldowns as Ray tasks.

    python -m resnet budget-curve --budgets 10,20,60,100,200 --ray [ADDRESS] [training flags]

The same curve as ``resnet/sweeps/budget_curve.py``, with the same record and the same rules, trained by
the tasks of ``resnet/sweeps/on_ray.py`` (every epoch committed in the driver's run store). For each budget
in turn the driver submits the trunk's stretch up to it and waits for that task alone (its checkpoint at
the budget must be here before a branch can copy it), creates the branch, and submits the branch's
cooldown; it then goes straight on with the trunk's next stretch, so each cooldown trains on the cluster
while the trunk goes on. A stop ends every task (partial epochs lost, completed ones kept); running the
curve again continues whatever is unfinished.
"""

from __future__ import annotations

import threading
import time

from resnet.store.runs import RunError, RunStore
from resnet.sweeps.budget_curve import branch_at, with_trunk
from resnet.sweeps.grid import trunk_config
from resnet.sweeps.on_ray import RayDriver, connected_ray
from resnet.sweeps.record import Sweep, SweepStore
from resnet.sweeps.trials import Report, TrialOutcome, TrialResult

TRUNK_INDEX = -1  # the trunk's tasks report under this index; the branches under their budget's


def run_budget_curve_on_ray(
    sweep: Sweep,
    store: RunStore,
    *,
    cpus_per_trial: int = 1,
    gpus_per_trial: float | None = None,
    cancel: threading.Event | None = None,
    report: Report | None = None,
    dataset_dir=None,
    poll_seconds: float = 0.2,
) -> list[TrialResult]:
    """Train the curve's trunk and branches as Ray tasks (Ray must be connected); one result per branch."""
    ray = connected_ray()
    driver = RayDriver(ray, store, cpus_per_trial, gpus_per_trial, report, dataset_dir)
    cancel = cancel or threading.Event()
    sweeps = SweepStore(store.root)
    if not sweeps.exists(sweep.name):
        sweep = sweeps.save(sweep)

    def train_trunk(sweep, index, budget):
        return _trunk_task(driver, store, sweeps, sweep, index, budget, cancel=cancel, poll=poll_seconds)

    try:
        for index, budget in enumerate(sweep.budgets):
            if cancel.is_set():
                break
            sweep, problem = branch_at(
                store, sweeps, sweep, index, budget, train_trunk=train_trunk, report=driver.report
            )
            if problem is not None:
                driver.results[index] = problem
                break  # later branches need the trunk past this budget
            sweep = driver.submit(sweeps, sweep, index)  # its cooldown trains while the trunk goes on
        driver.follow(cancel, poll_seconds)
    finally:
        driver.close()
    return driver.results_for(sweep, "the curve was stopped before this branch began")


def _trunk_task(driver, store, sweeps, sweep, index, budget, *, cancel, poll):
    """The trunk's stretch up to ``budget`` as a task, followed until it ends: (trunk, None) or (trunk, why not)."""
    from resnet.training.trainer import prepare_training  # Keras: only once a task is submitted

    config = trunk_config(sweep.base, budget)
    driver.total = len(sweep.trials)
    try:
        prepared = prepare_training(
            config, store=store, run_id=sweep.trunk_run_id, resume=False, dataset_dir=driver.dataset_dir, measure=False
        )
        if sweep.trunk_run_id != prepared.run.run_id:
            sweeps.save(with_trunk(sweep, prepared.run.run_id))
        ref = driver.launch(TRUNK_INDEX, config, prepared, time.perf_counter())
    except RunError as error:
        return None, TrialResult(index, sweep.trunk_run_id, TrialOutcome.REFUSED, f"the trunk: {error}")
    driver.follow(cancel, poll, until=ref)
    trunk = store.load(prepared.run.run_id)
    if trunk.epochs_done >= budget:
        return trunk, None
    ended = driver.results.get(TRUNK_INDEX)
    message = ended.message if ended is not None else trunk.message
    outcome = ended.outcome if ended is not None else TrialOutcome.FAILED
    return trunk, TrialResult(index, trunk.run_id, outcome, f"the trunk: {message}", 0.0, trunk.epochs_done, budget)
