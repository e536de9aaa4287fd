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
