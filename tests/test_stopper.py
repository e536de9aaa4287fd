"""Train until returns diminish: the stopper's decision (simulated), the wsd schedule, and what is refused.

The simulation: validation curves a(t) = 0.93 - b * exp(-t / tau) with tau from 3 to 40 epochs, 600 or
5,000 validation images, and noise larger in the high-learning-rate stable phase than the binomial noise
of the evaluation alone (1.5 to 4 times it early on, decaying to it), the stopper asked after every epoch
up to epoch 83 (the forced cooldown start of a 100-epoch maximum). A stop is *early* when the true curve
still gains more than twice the threshold over the next 10 epochs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import commit_epoch
from test_runs import _write_zip

from resnet.analysis import DEFAULT_WINDOW, returns_verdict
from resnet.config import AUTO_MIN_MAX_EPOCHS, DEFAULT_MAX_EPOCHS, ConfigError, TrainConfig
from resnet.core.schedule import (
    WSD_WARMUP_EPOCHS,
    Segment,
    SegmentSchedule,
    cooldown_for,
    new_segment,
    plan_segments,
    stable_epochs_within,
)
from resnet.core.stopper import StopDecision, StopReason, check_returns, threshold_per_epoch
from resnet.store.run_state import HISTORY_COLUMNS
from resnet.sweeps.grid import branch_config, check_budgets, parse_budgets, trunk_config

THRESHOLD_POINTS = 0.2
LAST_ASKED = stable_epochs_within(DEFAULT_MAX_EPOCHS)


def simulated_curves(count: int, seed: int):
    """(epochs, noisy validation accuracy, true accuracy) of ``count`` simulated stable phases."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, 201)
    for _ in range(count):
        tau, b = rng.choice([3, 6, 12, 25, 40]), rng.uniform(0.1, 0.3)
        images, early = rng.choice([600, 5000]), rng.choice([1.5, 2.5, 4.0])
        true = 0.93 - b * np.exp(-epochs / tau)
        sigma = np.sqrt(true * (1 - true) / images) * (1 + (early - 1) * np.exp(-epochs / 15))
        yield epochs, true + rng.normal(0, sigma), true


def early_stops(decide, *, count: int, seed: int) -> tuple[int, list[int]]:
    """(early stops, stop epochs) of ``decide(epochs, accuracy) -> bool`` over the simulated curves."""
    limit = threshold_per_epoch(THRESHOLD_POINTS) * DEFAULT_WINDOW
    early, stops = 0, []
    for epochs, observed, true in simulated_curves(count, seed):
        for epoch in range(6, LAST_ASKED + 1):
            if decide(epochs[:epoch], observed[:epoch]):
                early += true[epoch - 1 + DEFAULT_WINDOW] - true[epoch - 1] > 2 * limit
                stops.append(epoch)
                break
    return early, stops


def test_the_stopper_rarely_stops_while_the_curve_still_gains_twice_the_threshold():
    def stopper(epochs, accuracy):
        return check_returns(epochs, accuracy, points_per_window=THRESHOLD_POINTS).stop

    def verdict_alone(epochs, accuracy):
        return returns_verdict(epochs, accuracy, threshold=threshold_per_epoch(THRESHOLD_POINTS)).status == "point"

    count = 400
    early, stops = early_stops(stopper, count=count, seed=1)
    assert early / count <= 0.02, f"{early} of {count} runs stopped early"
    assert len(stops) > count / 2  # it does stop: most curves flatten before the forced cooldown
    # The guard is what makes the difference: the app's verdict alone stops early more often.
    early_alone, _ = early_stops(verdict_alone, count=count, seed=1)
    assert early_alone > early and early_alone / count > 0.02


def test_the_minimum_maximum_is_the_warmup_one_window_and_a_cooldown_epoch():
    assert AUTO_MIN_MAX_EPOCHS == WSD_WARMUP_EPOCHS + DEFAULT_WINDOW + 1


def test_cooldowns_are_a_fraction_of_the_epochs_before_them_and_end_by_the_maximum():
    assert [cooldown_for(epochs) for epochs in (1, 2, 3, 10, 34, 83, 200)] == [1, 1, 1, 2, 7, 17, 40]
    assert cooldown_for(10, 0.5) == 5
    assert stable_epochs_within(100) == 83 and 83 + cooldown_for(83) == 100
    assert stable_epochs_within(12) == 10
    assert all(
        stable + cooldown_for(stable) <= total for total in range(2, 300) for stable in [stable_epochs_within(total)]
    )


def test_wsd_warms_up_one_epoch_holds_then_cools_down_to_zero_with_a_one_minus_sqrt_shape():
    schedule = SegmentSchedule("wsd", peak=0.01, segments=(Segment(1, 6, 2),), steps_per_epoch=10)
    rates = np.array([schedule.learning_rate(epoch, batch) for epoch in range(1, 7) for batch in range(10)])
    assert rates[0] == pytest.approx(0.001) and rates[9] == pytest.approx(0.01)  # warm-up: one epoch
    assert np.all(rates[10:40] == 0.01)  # stable
    cooldown = rates[40:]
    assert np.all(np.diff(cooldown) < 0) and cooldown[-1] < 0.01 * 0.03
    assert cooldown[4] == pytest.approx(0.01 * (1 - np.sqrt(5 / 21)))
    # A branch's epochs before its cooldown are exactly its trunk's.
    trunk = SegmentSchedule("wsd", peak=0.01, segments=(Segment(1, 9),), steps_per_epoch=10)
    assert [trunk.learning_rate(epoch, 3) for epoch in range(1, 5)] == [
        schedule.learning_rate(epoch, 3) for epoch in range(1, 5)
    ]


def test_wsd_segments_keep_a_begun_cooldown_and_a_trunk_always_stretches():
    assert new_segment("wsd", 1, 100) == Segment(1, 100, 17)
    assert new_segment("one_cycle", 1, 100) == Segment(1, 100)
    # Resumed in its stable phase with another maximum: the forced cooldown moves with it.
    assert plan_segments([Segment(1, 100, 17)], epochs_done=40, target_epochs=60, schedule="wsd") == [
        Segment(1, 60, 10)
    ]
    # A cooldown that has begun runs to its end.
    assert plan_segments([Segment(1, 41, 7)], epochs_done=36, target_epochs=100, schedule="wsd") == [Segment(1, 41, 7)]
    # A trunk at a budget goes on in the same stable phase (no warm restart).
    assert plan_segments([Segment(1, 10)], epochs_done=10, target_epochs=20, schedule="wsd", stable_only=True) == [
        Segment(1, 20)
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schedule": "one_cycle"}, "cannot follow schedule one_cycle"),
        ({"epochs": 11}, "maximum (max epochs) must be at least 12"),
        ({"train_subset": 300, "batch_size": 290}, "leaves 270 of the 300 training images, fewer than one batch"),
        ({"validation_images": 5}, "at least 10 (one per class)"),
    ],
)
def test_bad_auto_settings_are_refused_with_what_is_wrong(changes, message):
    auto = {"epochs_mode": "auto", "schedule": "wsd", "epochs": 100}
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**(auto | changes)).validate()


def test_the_validation_split_is_ten_percent_at_most_five_thousand():
    auto = TrainConfig(epochs_mode="auto", schedule="wsd", epochs=100)
    assert auto.validation_count == 5000
    assert auto.replace(train_subset=6000).validation_count == 600
    assert auto.replace(validation_images=1000).validation_count == 1000
    assert TrainConfig().validation_count == 0
    # The fields added for it leave the fingerprints (and run ids) of older runs as they were.
    assert TrainConfig().fingerprint() == "0a7a7a24ee"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10,5", "must increase"),
        ("10,10", "must increase"),
        ("10,2.5", "whole numbers"),
        ("1,10", "more than the 1-epoch"),
    ],
)
def test_budgets_that_are_not_increasing_whole_numbers_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_budgets(text)


def test_a_budget_curves_trunk_and_branches():
    assert parse_budgets("10, 20,60") == (10, 20, 60)
    assert check_budgets((5, 10, 20)) == (5, 10, 20)
    base = TrainConfig(depth=18)
    assert trunk_config(base, 200).epochs_mode == "trunk" and trunk_config(base, 200).schedule == "wsd"
    branches = [branch_config(base, budget) for budget in (10, 20, 60, 100, 200)]
    assert [branch.epochs for branch in branches] == [12, 24, 72, 120, 240]
    assert (
        200 + sum(branch.epochs - budget for branch, budget in zip(branches, (10, 20, 60, 100, 200), strict=True))
        == 278
    )


def test_a_recorded_decision_reads_back_and_says_why():
    decision = StopDecision(StopReason.RETURNS, 34, 41, 10, 0.0012, 0.2)
    assert StopDecision.from_dict(decision.to_dict()) == decision
    assert decision.sentence(0.912) == (
        "Stopped adding epochs after epoch 34: the 10 epochs before it gained 0.12 points of validation accuracy, "
        "below the threshold of 0.20; cooled down over epochs 35-41; test accuracy 91.2%."
    )
    assert "cooling down over epochs 35-41 (2 done)" in decision.sentence(done=36)
    forced = StopDecision(StopReason.MAXIMUM, 83, 100, 10, 0.004, 0.2)
    assert forced.sentence().startswith(
        "Reached the maximum: the cooldown had to start after epoch 83 to end by epoch 100; returns had not "
        "diminished yet (the last 10 gained 0.40 points)"
    )
    for broken in (
        {**decision.to_dict(), "stable_end": 41},
        {**decision.to_dict(), "reason": "bored"},
        {"reason": "returns"},
    ):
        with pytest.raises(ValueError):
            StopDecision.from_dict(broken)


# --- the decision and the plan of an auto run, on a real run store (no training) ---------------------------
def auto_run(store, accuracies, *, maximum=12):
    """An auto run with one committed epoch per validation accuracy (a small zip stands in for the model)."""
    from support import commit_epoch
    from test_runs import _write_zip

    from resnet.core.schedule import new_segment
    from resnet.store.run_state import HISTORY_COLUMNS

    config = TrainConfig(
        epochs_mode="auto", schedule="wsd", epochs=maximum, returns_threshold=50.0, cooldown_fraction=0.5,
        train_subset=300, batch_size=32,
    )  # fmt: skip
    run = store.create(config, precision="float32", device="CPU: test", train_images=270, eval_images=100)
    store.update_state(run, segments=(new_segment("wsd", 1, maximum, cooldown_fraction=0.5),))
    for epoch, accuracy in enumerate(accuracies, start=1):
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "val_accuracy": accuracy}
        commit_epoch(
            store, run, row, save_checkpoint=_write_zip, probabilities=np.full((100, 10), 0.1),
            eval_indices=np.arange(100), eval_labels=np.zeros(100),
        )  # fmt: skip
    store.update_state(run, status="stopped")
    return store.load(run.run_id)


def test_a_decision_not_written_before_a_kill_is_made_from_the_committed_epochs(cache_dir):
    from resnet.store.runs import RunStore
    from resnet.training.until_returns import decide_after_epoch

    store = RunStore(cache_dir)
    flat = auto_run(store, [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7])  # flat for 4 epochs: returns diminished
    cooldown = cooldown_for(7, 0.5)
    assert decide_after_epoch(store, flat, flat.config, flat.epochs_done) == (Segment(1, 7 + cooldown, cooldown),)
    again = store.load(flat.run_id)
    assert again.state.stop.reason is StopReason.RETURNS and again.state.stop.stable_end == 7
    assert decide_after_epoch(store, again, again.config, 7) is None  # decided once
    # Killed right after the epoch at which the cooldown must start to end by the maximum: still that start.
    rising = auto_run(store, [0.1 * epoch for epoch in range(1, 9)])  # maximum 12: 8 stable + 4 cooldown
    assert decide_after_epoch(store, rising, rising.config, 8) == (Segment(1, 12, 4),)
    stop = store.load(rising.run_id).state.stop
    assert (stop.reason, stop.stable_end, stop.cooldown_end) == (StopReason.MAXIMUM, 8, 12)


def test_an_auto_runs_plan_keeps_its_decision_and_refuses_a_maximum_that_leaves_no_cooldown(cache_dir):
    from resnet.store.plan import PlanKind, plan_training
    from resnet.store.runs import RunStore
    from resnet.training.until_returns import decide_after_epoch

    store = RunStore(cache_dir)
    undecided = auto_run(store, [0.1, 0.2, 0.3, 0.4, 0.5], maximum=40)
    plan = plan_training(store, undecided.config.replace(epochs=30), run_id=undecided.run_id)
    assert plan.kind is PlanKind.CONTINUE and plan.segments == (Segment(1, 30, 30 - stable_epochs_within(30, 0.5)),)
    # 5 stable epochs and their 2-epoch cooldown still fit in a maximum of 12; 9 and their 4 do not.
    assert plan_training(store, undecided.config.replace(epochs=12), run_id=undecided.run_id).kind is PlanKind.CONTINUE
    longer = auto_run(store, [0.1 * epoch for epoch in range(1, 10)], maximum=40)
    refused = plan_training(store, longer.config.replace(epochs=12), run_id=longer.run_id)
    assert refused.kind is PlanKind.MAXIMUM_TOO_LOW
    assert "its maximum must be at least 13; got 12" in str(refused.error())
    flat = auto_run(store, [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7])
    decide_after_epoch(store, flat, flat.config, 7)
    decided = store.load(flat.run_id)
    plan = plan_training(store, decided.config.replace(epochs=40), run_id=decided.run_id)
    assert plan.kind is PlanKind.CONTINUE and plan.last_epoch == decided.state.stop.cooldown_end  # its own end


def test_settings_an_auto_run_alone_uses_do_not_tell_fixed_runs_apart():
    fixed = TrainConfig()
    assert fixed.replace(returns_threshold=1.0, validation_images=500).fingerprint() == fixed.fingerprint()
    assert fixed.replace(cooldown_fraction=0.3).fingerprint() == fixed.fingerprint()  # one_cycle: no cooldown
    wsd = fixed.replace(schedule="wsd")
    assert wsd.replace(cooldown_fraction=0.3).fingerprint() != wsd.fingerprint()
    auto = wsd.replace(epochs_mode="auto", epochs=100)
    assert auto.replace(returns_threshold=1.0).fingerprint() != auto.fingerprint()


def test_a_one_epoch_wsd_segment_is_all_cooldown():
    assert new_segment("wsd", 11, 11) == Segment(11, 11, 1)
    schedule = SegmentSchedule("wsd", peak=0.01, segments=(Segment(1, 10, 2), Segment(11, 11, 1)), steps_per_epoch=10)
    rates = [schedule.learning_rate(11, batch) for batch in range(10)]
    assert rates[0] > 0.0069 and all(later < earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert rates[-1] < 0.01 * 0.05


def test_sweeps_of_auto_trials_count_a_run_that_ended_itself_as_done(cache_dir):
    from resnet.store.runs import RunStore
    from resnet.sweeps.record import SweepStore, new_sweep
    from resnet.sweeps.trials import TrialOutcome, start_trial, sweep_progress
    from resnet.training.until_returns import decide_after_epoch

    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)
    run = auto_run(store, [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7])
    decide_after_epoch(store, run, run.config, 7)
    end = store.load(run.run_id).state.stop.cooldown_end
    sweep = sweeps.save(new_sweep("auto", {"seed": (42,)}, run.config).with_run_id(0, run.run_id))
    assert sweep_progress(sweep, store.list_runs()) == (0, 1)  # in its cooldown
    run = store.load(run.run_id)
    for epoch in range(8, end + 1):  # the cooldown's epochs, committed
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "val_accuracy": 0.7}
        commit_epoch(store, run, row, save_checkpoint=_write_zip, probabilities=np.full((100, 10), 0.1),
                     eval_indices=np.arange(100), eval_labels=np.zeros(100))  # fmt: skip
    store.update_state(run, status="complete")
    assert sweep_progress(sweep, store.list_runs()) == (1, 1)  # done at its own end, not at the maximum
    start = start_trial(store, sweeps, sweep, 0, prepare=lambda plan: pytest.fail("nothing is to be trained"))
    assert start.result.outcome is TrialOutcome.DONE


def test_a_budget_curves_runs_are_never_resumed_by_a_plain_start_and_its_base_is_the_branches(cache_dir):
    from resnet.store.plan import PlanKind, plan_training
    from resnet.store.runs import RunStore
    from resnet.sweeps.record import SweepStore, requested_sweep

    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)
    config = TrainConfig(schedule="wsd", epochs=12, train_subset=300, batch_size=32)
    store.create(config, precision="float32", device="CPU", train_images=300, eval_images=100, branch_of="trunk@10")
    assert plan_training(store, config).kind is PlanKind.NEW
    # Started from an auto sidebar (a maximum, a threshold): the branches share the fixed wsd settings alone.
    sidebar = config.replace(epochs_mode="auto", epochs=100, returns_threshold=3.0, validation_images=50)
    sweep = sweeps.save(requested_sweep(sweeps, "curve", {"epochs": "5,10"}, base=sidebar, branches=True))
    assert sweeps.load("curve") == sweep and sweep.base.epochs_mode == "fixed" and sweep.base.schedule == "wsd"
    assert [trial.config.epochs for trial in sweep.trials] == [6, 12]


def test_the_cli_refuses_auto_for_a_fixed_run_and_trunk_runs_outside_a_budget_curve(cache_dir, capsys):
    from test_runs import make_run

    from resnet.__main__ import main
    from resnet.store.runs import RunStore

    fixed = make_run(RunStore(cache_dir))
    assert main(["--cache-dir", str(cache_dir), "train", "--run-id", fixed.run_id, "--epochs", "auto"]) == 2
    assert (
        f"run {fixed.run_id} trains a fixed number of epochs; --epochs auto starts a new run" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["--cache-dir", str(cache_dir), "train", "--epochs-mode", "trunk"])
    assert (
        main(["--cache-dir", str(cache_dir), "sweep", "--name", "s", "--epochs-mode", "trunk", "--schedule", "wsd"])
        == 2
    )
    assert "epochs_mode trunk is a budget curve's own run" in capsys.readouterr().err
    assert main(["--cache-dir", str(cache_dir), "budget-curve", "--budgets", "20,10"]) == 2
    assert "budgets must increase" in capsys.readouterr().err


def test_a_ray_task_relays_the_decision_to_the_driver(cache_dir):
    from resnet.sweeps.ray_task import RelayingRunStore

    sent = []
    store = RelayingRunStore(cache_dir, send=lambda *message: sent.append(message))
    run = auto_run(store, [0.5, 0.6])
    decision = StopDecision(StopReason.RETURNS, 2, 3, 2, 0.0, 50.0)
    sent.clear()
    store.update_state(run, stop=decision)
    assert sent == [("state", {"stop": decision})]


def test_plans_of_an_ended_or_cooling_auto_run_follow_what_it_decided(cache_dir):
    from resnet.store.plan import PlanKind, plan_training
    from resnet.store.runs import RunStore
    from resnet.training.until_returns import decide_after_epoch

    store = RunStore(cache_dir)
    # Left undecided inside its planned cooldown (epochs 9-12 of a maximum of 12): continued, not refused.
    cooling = auto_run(store, [0.1 * epoch for epoch in range(1, 11)])
    assert plan_training(store, cooling.config, run_id=cooling.run_id).kind is PlanKind.CONTINUE
    # A run that rose for 10 epochs, then stayed flat, decided as the trainer asks after each epoch.
    run = auto_run(store, [0.09 * epoch for epoch in range(1, 11)] + [0.9] * 12, maximum=60)
    decided = next(
        epoch for epoch in range(1, 23) if decide_after_epoch(store, store.load(run.run_id), run.config, epoch)
    )
    stop = store.load(run.run_id).state.stop
    assert stop.stable_end == decided and stop.cooldown_end > 12
    run = store.load(run.run_id)  # commit its cooldown epochs: it has ended itself
    for epoch in range(run.epochs_done + 1, stop.cooldown_end + 1):
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "val_accuracy": 0.9}
        commit_epoch(store, run, row, save_checkpoint=_write_zip, probabilities=np.full((100, 10), 0.1),
                     eval_indices=np.arange(100), eval_labels=np.zeros(100))  # fmt: skip
    store.update_state(run, status="complete")
    assert plan_training(store, run.config).kind is PlanKind.STOPPED_ITSELF  # the same maximum stops there again
    shorter = plan_training(store, run.config.replace(epochs=stop.cooldown_end - 1))
    assert shorter.kind is PlanKind.NEW  # a maximum too small for where it ended makes another run
