"""Sweeps on a local Ray instance: the trials land in the driver's run cache as ordinary runs (same
configurations, epochs, history columns as trained here); a trial whose worker is killed with SIGKILL
mid-epoch keeps the epochs the driver committed, a stop ends it with them too, and a rerun continues
from them.

Ray is the optional cluster extra; these tests skip only when it is not installed.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional cluster extra: pip install -r requirements-cluster.txt")

from support import measurement_values  # noqa: E402

from resnet.__main__ import main  # noqa: E402
from resnet.config import TrainConfig  # noqa: E402
from resnet.core.hardware import detect_hardware  # noqa: E402
from resnet.core.precision_record import (  # noqa: E402
    Measurement,
    candidates_for,
    read_record,
    record_key,
    record_path,
    remember,
)
from resnet.store import artefacts  # noqa: E402
from resnet.store.runs import HISTORY_COLUMNS, RunStore  # noqa: E402
from resnet.sweeps.on_ray import run_sweep_on_ray  # noqa: E402
from resnet.sweeps.record import SweepStore, requested_sweep  # noqa: E402
from resnet.sweeps.trials import TrialOutcome  # noqa: E402

pytestmark = pytest.mark.slow  # a real Ray

GRID = {"epochs": "1,2", "batch_size": "64,32", "depth": "18", "train_subset": "256", "eval_subset": "200"}
MIXED_WON = measurement_values(  # a measurement in which mixed_bfloat16 won, for ResNet-18 at batch 64
    precision="mixed_bfloat16", speeds={"float32": 400.0, "mixed_bfloat16": 500.0}, depth=18, batch_size=64
)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_sweep_on_ray_lands_in_the_cache_and_a_killed_or_stopped_trial_continues(
    cache_dir, dataset_dir, local_ray, capsys, request
):
    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)
    sweep = requested_sweep(sweeps, "cluster", GRID)
    hardware = detect_hardware()
    claims = len(candidates_for(hardware)) > 1
    if claims:  # the driver's measurement for batch 64 (mixed_bfloat16 won) travels to the tasks
        key = record_key(hardware, depth=18, batch_size=64, candidates=candidates_for(hardware))
        remember(record_path(cache_dir), key, Measurement.from_dict(MIXED_WON))
        # Made up: it must not reach the session's record (conftest's cache_dir merges it after the test).
        request.addfinalizer(lambda: record_path(cache_dir).unlink(missing_ok=True))
    pids, killed, events = {}, [], []

    def kill_trial_4_after_its_first_commit(event):
        events.append(event)
        if event.kind == "start":
            pids[event.index] = event.pid
        if event.kind == "epoch" and event.index == 3 and event.epoch == 1:
            os.kill(pids[3], signal.SIGKILL)  # mid-epoch 2: the worker is training it now
            killed.append(pids[3])

    results = run_sweep_on_ray(sweep, store, cpus_per_trial=1, report=kill_trial_4_after_its_first_commit)
    assert killed, "trial 4 never committed its first epoch"
    assert [result.outcome for result in results] == [TrialOutcome.TRAINED] * 3 + [TrialOutcome.FAILED]
    assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()  # each trial in its own worker
    record = sweeps.load("cluster")
    runs = [store.load(trial.run_id) for trial in record.trials]
    assert [run.config for run in runs] == [trial.config for trial in record.trials]
    assert [run.epochs_done for run in runs] == [1, 1, 2, 1]
    assert [run.status for run in runs] == ["complete"] * 3 + ["failed"]
    assert "the Ray worker died" in runs[3].message and "epochs 1-1 kept" in runs[3].message
    for run in runs:  # committed by the driver exactly as the trainer commits here
        assert run.history.columns.tolist() == list(HISTORY_COLUMNS)
        assert run.history["epoch"].tolist() == list(range(1, run.epochs_done + 1))
        assert run.checkpoint_path.is_file() and store.load_predictions(run)["probabilities"].shape == (200, 10)
        assert artefacts.feature_map_epochs(run) == list(range(1, run.epochs_done + 1))  # every epoch's map relayed
        assert run.state.device and run.state.pid == os.getpid()
        assert run.state.precision in candidates_for(hardware)  # what the worker resolved
    if claims:  # batch 64 from the driver's measurement; batch 32 too short a run to measure: float32
        assert [run.state.precision for run in runs] == ["mixed_bfloat16", "float32"] * 2, runs
    stamps = [(run.path / "history.csv").stat().st_mtime_ns for run in runs[:3]]
    first_row = runs[3].history.iloc[0]

    # Rerun, stopped while trial 4 trains its epoch 2: the driver ends the worker and says so.
    cancel = threading.Event()

    def stop_in_epoch_2(event):
        if event.kind == "progress" and event.index == 3 and event.phase == "training":
            cancel.set()

    results = run_sweep_on_ray(sweep, store, cpus_per_trial=1, cancel=cancel, report=stop_in_epoch_2)
    assert [result.outcome for result in results] == [TrialOutcome.DONE] * 3 + [TrialOutcome.STOPPED]
    stopped = store.load(runs[3].run_id)
    assert (stopped.status, stopped.epochs_done) == ("stopped", 1)
    assert stopped.message == "stopped during epoch 2: epochs 1-1 kept, the partial epoch 2 was discarded"

    # And again through the command line (it uses the Ray this process already runs).
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "cluster", "--ray"]) == 0
    out = capsys.readouterr()
    runs = [store.load(trial.run_id) for trial in record.trials]
    assert [run.epochs_done for run in runs] == [1, 1, 2, 2] and all(run.status == "complete" for run in runs)
    assert [(run.path / "history.csv").stat().st_mtime_ns for run in runs[:3]] == stamps  # not retrained
    assert runs[3].history.iloc[0].equals(first_row)  # continued from the epoch the driver had
    assert artefacts.feature_map_epochs(runs[3]) == [1, 2]  # the maps of both epochs, from both workers
    assert out.err.count("already trained") == 3 and "Continuing run" in out.err
    assert runs[3].run_id in out.out and "Pareto front" in out.out


def test_the_driver_keeps_the_measurements_its_tasks_send(tmp_path):
    """A task that measured auto precision sends it back; the driver remembers valid entries it lacks and
    keeps its own (``on_ray._remember_measurements``, with what the task's reply carries)."""
    from resnet.sweeps.on_ray import _measurements, _remember_measurements

    path = record_path(tmp_path)
    remember(path, "known", Measurement.from_dict(MIXED_WON))
    other = dict(MIXED_WON, precision="float32", speeds={"float32": 400.0, "mixed_bfloat16": 410.0})
    _remember_measurements(tmp_path, {"known": other, "new": other, "broken": {"precision": 3}, "odd": "text"})
    record = read_record(path)
    assert set(record) == {"known", "new"} and record["known"].precision == "mixed_bfloat16"
    assert record["new"].precision == "float32" and set(_measurements(tmp_path)) == {"known", "new"}


def test_a_budget_curve_on_ray_cools_each_branch_down_while_the_trunk_goes_on(cache_dir, dataset_dir, local_ray):
    from resnet.sweeps.budget_on_ray import TRUNK_INDEX, run_budget_curve_on_ray

    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)
    tiny = "--depth 18 --subset 256 --eval-subset 200 --batch-size 64 --precision float32".split()
    base = TrainConfig(depth=18, train_subset=256, eval_subset=200, batch_size=64, precision="float32")
    sweep = requested_sweep(sweeps, "curve", {"epochs": "2,3"}, base=base, branches=True)
    events = []
    results = run_budget_curve_on_ray(sweep, store, cpus_per_trial=1, report=events.append, dataset_dir=dataset_dir)
    assert [result.outcome for result in results] == [TrialOutcome.TRAINED] * 2, results
    record = sweeps.load("curve")
    trunk = store.load(record.trunk_run_id)
    assert trunk.epochs_done == 3 and trunk.config.epochs_mode == "trunk" and trunk.state.pid == os.getpid()
    for budget, trial in zip((2, 3), record.trials, strict=True):
        branch = store.load(trial.run_id)
        assert (branch.status, branch.epochs_done, branch.state.branch_of) == (
            "complete",
            budget + 1,
            f"{trunk.run_id}@{budget}",
        )
        assert branch.history["test_accuracy"].iloc[:budget].equals(trunk.history["test_accuracy"].iloc[:budget])
    # The first branch's cooldown task was under way before the trunk's stretch to budget 3 committed it.
    order = [(event.kind, event.index, event.epoch, event.pid is not None) for event in events]
    assert order.index(("start", 0, 0, True)) < order.index(("epoch", TRUNK_INDEX, 3, False)), order
    # Continued through the command line: everything is done, nothing trains again.
    assert (
        main(["--cache-dir", str(cache_dir), "budget-curve", "--budgets", "2,3", "--name", "curve", "--ray", *tiny])
        == 0
    )
    assert store.load(record.trunk_run_id).epochs_done == 3
