"""Train until returns diminish, and the budget curve, on real tiny runs: in process, and through the CLI
with kill -9 during a cooldown (an auto run's, a branch's) and a rerun that finishes it.

The tiny auto run holds out 100 of its 300 training images and stops at a returns threshold of 50 points
per 10 epochs (so it stops within a few epochs), cooling down over half the epochs before it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resnet.config import TrainConfig
from resnet.core.schedule import SegmentSchedule, cooldown_for
from resnet.core.stopper import StopReason
from resnet.store.plan import PlanKind, plan_training
from resnet.store.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
TINY = {"depth": 18, "train_subset": 300, "eval_subset": 200, "batch_size": 32, "precision": "float32"}
AUTO = TrainConfig(
    epochs_mode="auto",
    schedule="wsd",
    epochs=12,
    returns_threshold=50.0,
    cooldown_fraction=0.5,
    validation_images=100,
    **TINY,
)
AUTO_FLAGS = ["--epochs", "auto", "--max-epochs", "12", "--returns-threshold", "50", "--cooldown-fraction", "0.5"]
AUTO_FLAGS += ["--validation-images", "100", "--depth", "18", "--subset", "300", "--eval-subset", "200"]
AUTO_FLAGS += ["--batch-size", "32", "--precision", "float32"]


def expected_rates(run) -> list[float]:
    """The learning rate of each epoch's last batch, as one uninterrupted run with the run's segments trains it."""
    steps = -(-run.state.train_images // run.config.batch_size)
    schedule = SegmentSchedule("wsd", peak=run.config.learning_rate, segments=run.state.segments, steps_per_epoch=steps)
    return [schedule.learning_rate(epoch, steps - 1) for epoch in range(1, run.epochs_done + 1)]


def test_an_auto_run_stops_itself_cools_down_and_says_why(trained, cache_dir):
    run = trained(AUTO)
    stop = run.state.stop
    assert stop is not None and stop.reason is StopReason.RETURNS
    assert 6 <= stop.stable_end < 12 and stop.cooldown_end == stop.stable_end + cooldown_for(stop.stable_end, 0.5)
    assert run.epochs_done == stop.cooldown_end <= 12 and run.status == "complete"
    assert run.state.validation_images == 100 and run.state.train_images == 200  # never trained on
    history = run.history
    assert np.isfinite(history["val_accuracy"]).all() and np.isfinite(history["val_loss"]).all()
    rates = history["learning_rate"].to_numpy()
    assert np.allclose(rates[: stop.stable_end], AUTO.learning_rate)  # one warm-up epoch ends at the peak
    assert np.all(np.diff(rates[stop.stable_end - 1 :]) < 0) and rates[-1] < 0.05 * AUTO.learning_rate
    assert np.allclose(rates, expected_rates(run))
    assert run.message.startswith(f"Stopped adding epochs after epoch {stop.stable_end}: the ")
    assert f"cooled down over epochs {stop.stable_end + 1}-{stop.cooldown_end}; test accuracy " in run.message
    assert run.summary()["length"] == "auto" and run.length_text().startswith("auto: Stopped adding epochs")
    # Extending it (more epochs, or a higher maximum) is refused, saying why and what to do instead.
    plan = plan_training(RunStore(run.path.parent), AUTO.replace(epochs=40), run_id=run.run_id)
    assert plan.kind is PlanKind.STOPPED_ITSELF and "Extend does not apply" in str(plan.error())


@pytest.mark.slow  # trains the tiny auto run twice more, in process
def test_a_crash_between_an_epoch_and_its_decision_decides_on_resume(cache_dir, dataset_dir, trained, monkeypatch):
    import resnet.training.trainer as trainer

    reference = trained(AUTO)  # uninterrupted
    stop = reference.state.stop
    decide = trainer.decide_after_epoch

    def crash_before_deciding(store, run, config, epoch):
        if epoch == stop.stable_end and run.state.stop is None:
            raise RuntimeError("killed between the epoch's commit and its decision")
        return decide(store, run, config, epoch)

    store = RunStore(cache_dir)
    monkeypatch.setattr(trainer, "decide_after_epoch", crash_before_deciding)
    with pytest.raises(RuntimeError, match="killed between"):
        trainer.train_prepared(trainer.prepare_training(AUTO, store=store, resume=False, dataset_dir=dataset_dir))
    crashed = store.list_runs()[0]
    assert (crashed.status, crashed.epochs_done, crashed.state.stop) == ("failed", stop.stable_end, None)
    monkeypatch.setattr(trainer, "decide_after_epoch", decide)
    run = trainer.train_prepared(
        trainer.prepare_training(AUTO, store=store, run_id=crashed.run_id, dataset_dir=dataset_dir)
    )
    assert run.state.stop == stop and run.epochs_done == stop.cooldown_end and run.status == "complete"
    assert np.allclose(run.history["learning_rate"], reference.history["learning_rate"])


def cli(cache: Path, *argv, quiet: bool = False) -> subprocess.Popen:
    """``python -m resnet --cache-dir CACHE ARGV...`` started; ``quiet``: its output discarded (one to be killed)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "resnet", "--cache-dir", str(cache), *argv]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: kill_when kills it with every child it started
    )


def kill_when(process: subprocess.Popen, condition, timeout: float = 240) -> None:
    """kill -9 ``process`` and its children as soon as ``condition()`` holds (checked every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "it ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill it never came"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def in_cooldown(store: RunStore, run_id_of) -> bool:
    """Whether the run ``run_id_of()`` names has committed a cooldown epoch but not its last."""
    run_id = run_id_of()
    run = store.find(run_id) if run_id else None
    segments = run.state.segments if run is not None and not run.damaged else ()
    return bool(segments) and segments[-1].cooldown_start <= run.epochs_done < segments[-1].end_epoch


def only_run(store: RunStore):
    runs = store.list_runs()
    return runs[0].run_id if runs else None


@pytest.mark.slow
def test_cli_auto_run_killed_in_its_cooldown_resumes_the_same_cooldown(cache_dir, dataset_dir):
    store = RunStore(cache_dir)
    process = cli(cache_dir, "train", *AUTO_FLAGS, "--dataset-dir", str(dataset_dir), quiet=True)
    kill_when(process, lambda: in_cooldown(store, lambda: only_run(store)))
    killed = store.load(only_run(store))
    assert killed.status == "interrupted" and killed.state.stop is not None
    decided = killed.state.stop
    rerun = cli(cache_dir, "train", *AUTO_FLAGS, "--dataset-dir", str(dataset_dir))
    output, _ = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, output
    assert "its cooldown goes on to epoch" in output or "Continuing run" in output
    run = store.load(killed.run_id)
    assert run.status == "complete" and run.state.stop == decided and run.epochs_done == decided.cooldown_end
    assert np.allclose(run.history["learning_rate"], expected_rates(run))  # as if never interrupted
    assert len(store.list_runs()) == 1
    shown = subprocess.run(
        [sys.executable, "-m", "resnet", "--cache-dir", str(cache_dir), "show", run.run_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "epochs=auto (at most 12)" in shown.stdout and "val acc" in shown.stdout
    assert (
        f"Stopped adding epochs after epoch {decided.stable_end}" in shown.stdout
        or "Reached the maximum" in shown.stdout
    )


@pytest.mark.slow
def test_cli_budget_curve_branch_killed_mid_cooldown_is_finished_by_a_rerun(cache_dir, dataset_dir):
    from resnet.sweeps.record import SweepStore

    flags = ["--budgets", "3,4", "--name", "curve", "--cooldown-fraction", "0.5", "--depth", "18", "--subset", "300"]
    flags += ["--eval-subset", "200", "--batch-size", "32", "--precision", "float32", "--dataset-dir", str(dataset_dir)]
    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)

    def first_branch():
        return sweeps.load("curve").trials[0].run_id if sweeps.exists("curve") else None

    process = cli(cache_dir, "budget-curve", *flags, quiet=True)
    kill_when(process, lambda: in_cooldown(store, first_branch))
    sweep = sweeps.load("curve")
    trunk = store.load(sweep.trunk_run_id)
    assert trunk.epochs_done == 3 and (trunk.path / "checkpoint-0003.keras").is_file()  # kept for the branch
    rerun = cli(cache_dir, "budget-curve", *flags)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    sweep, trunk = sweeps.load("curve"), store.load(sweeps.load("curve").trunk_run_id)
    assert trunk.epochs_done == 4 and trunk.config.epochs_mode == "trunk"
    assert not (trunk.path / "checkpoint-0003.keras").exists()  # its branch has it: superseded as usual
    for budget, trial in zip((3, 4), sweep.trials, strict=True):
        branch = store.load(trial.run_id)
        assert branch.status == "complete" and branch.epochs_done == budget + 2
        assert branch.state.branch_of == f"{trunk.run_id}@{budget}"
        shared = ["train_accuracy", "test_accuracy", "learning_rate"]
        assert branch.history[shared].iloc[:budget].equals(trunk.history[shared].iloc[:budget])
        assert np.allclose(branch.history["learning_rate"], expected_rates(branch))
    assert "budget  cooldown  test acc" in output and "8 epochs in all, against 7 for independent runs" in output
