"""Diminishing returns, the confusion matrix and the mistake browser's data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resnet.analysis import (
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    confusion_frame,
    confusion_matrix,
    diminishing_returns,
    filter_predictions,
    per_class_accuracy,
    prediction_frame,
    returns_verdict,
)

SEED_EPOCHS = [10, 60, 100, 200]
SEED_ACCURACY = [0.8732, 0.9004, 0.9037, 0.9066]
# docs/benchmarks.md 3d: ResNet-50, one-cycle over 10 epochs, test accuracy on 10,000 images.
TEN_EPOCHS = [0.824, 0.774, 0.859, 0.856, 0.8813, 0.8512, 0.8923, 0.897, 0.901, 0.9019]
LIMIT = DEFAULT_THRESHOLD * DEFAULT_WINDOW  # 0.2 points per 10 epochs


def saturating(epochs, tau, a=0.905, b=0.15):
    return a - b * np.exp(-np.asarray(epochs, dtype=float) / tau)


def saturation_epoch(tau, b=0.15, window=DEFAULT_WINDOW, threshold=DEFAULT_THRESHOLD):
    """The true point of ``saturating``: the first epoch whose next window gains less than the threshold."""
    # b * exp(-e / tau) * (1 - exp(-window / tau)) < threshold * window
    return math.floor(tau * math.log(b * (1 - math.exp(-window / tau)) / (threshold * window))) + 1


def one_cycle(total):
    """A one-cycle run that is still annealing at its end: fast rise, a dip at the peak rate, a climb."""
    epochs = np.arange(1, total + 1)
    t = epochs / total
    rise = 0.80 + 0.07 * (1 - np.exp(-epochs / (0.06 * total)))
    dip = -0.02 * np.exp(-(((t - 0.3) / 0.08) ** 2))
    return epochs, rise + dip + 0.04 * np.clip((t - 0.3) / 0.7, 0, 1) ** 1.5


def one_cycle_saturating(total):
    """The same, with the climb after the dip levelling off well before the end."""
    epochs = np.arange(1, total + 1)
    t = epochs / total
    rise = 0.80 + 0.07 * (1 - np.exp(-epochs / 3))
    dip = -0.02 * np.exp(-(((t - 0.3) / 0.08) ** 2))
    return epochs, rise + dip + 0.04 * (1 - np.exp(-np.clip(t - 0.3, 0, None) / 0.12))


def warm_restart(first, extra):
    """Trained to a plateau for ``first`` epochs, then extended: the rate jumps back up, accuracy dips
    by 3.5 points and recovers to 1 point above the old plateau. The true point is 10 epochs after."""
    epochs = np.arange(1, first + extra + 1)
    since = epochs - first
    extended = 0.91 - 0.01 * np.exp(-since / 5) - 0.035 * np.exp(-since / 2.5)
    return epochs, np.where(since > 0, extended, 0.90 - 0.10 * np.exp(-epochs / 5))


def assert_honest(verdict):
    """A point's next window gained less than the threshold; 'not yet' quotes a gain of at least it."""
    limit = verdict.threshold * verdict.window
    if verdict.status == "point":
        assert verdict.point.next_gain < limit
        assert f"After epoch {verdict.point.epoch}, " in verdict.sentence()
        assert "below the threshold" in verdict.sentence()
    else:
        assert verdict.point is None
        if verdict.status == "not_yet" and verdict.below_after is None:
            assert verdict.last_gain >= limit
            assert verdict.sentence().startswith(f"Not yet: the last {verdict.window} epochs still added ")


# The seed's table and the project's 10-epoch curve.


def test_seed_table_point_is_epoch_60():
    verdict = returns_verdict(SEED_EPOCHS, SEED_ACCURACY, [100, 600, 1000, 2000])
    result = verdict.point
    assert verdict.status == "point" and result.epoch == 60  # within 60-110; points are recorded epochs
    assert result.next_gain == pytest.approx(0.0033 / 4)  # 60 -> 100 interpolated: 0.08 points per 10 epochs
    assert result.rest_epochs == 140 and result.rest_gain == pytest.approx(0.0062)
    assert result.next_seconds == pytest.approx(100.0)
    assert result.sentence() == (
        "After epoch 60, 10 more epochs added 0.08 points of test accuracy for 100 s more training, below the "
        "threshold of 0.20 points per 10 epochs; all 140 epochs up to epoch 200 added 0.62 points, no 10 of them "
        "more than 0.20."
    )
    assert diminishing_returns(SEED_EPOCHS, SEED_ACCURACY).epoch == 60


@pytest.mark.parametrize("threshold", [0.0001, 0.0002, 0.0003])
def test_seed_table_is_robust_to_the_threshold(threshold):
    assert 60 <= diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=threshold).epoch <= 110


def test_a_lower_threshold_moves_the_point_later():
    strict = diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=0.00005).epoch  # 0.05 points per 10
    loose = diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=0.0003).epoch
    assert (loose, strict) == (60, 100)


def test_the_ten_epoch_curve_is_not_yet_done():
    # The old method answered epoch 6: "After epoch 6, 3 more epochs added 5 points ... (gain fell below
    # 0.06 points per 3 epochs)". The last epochs still pay far more than the threshold.
    verdict = returns_verdict(range(1, 11), TEN_EPOCHS)
    assert verdict.status == "not_yet" and verdict.point is None and verdict.window == 3
    assert verdict.last_gain > 0.0096  # at least the 0.96 points the best accuracy rose over epochs 7-10
    assert verdict.sentence().startswith("Not yet: the last 3 epochs still added ")
    assert "more than the threshold of 0.06 points per 3 epochs" in verdict.sentence()
    assert diminishing_returns(range(1, 11), TEN_EPOCHS) is None
    assert_honest(verdict)


# Known shapes.


def test_saturating_curve_without_noise_lands_on_the_true_point():
    epochs = np.arange(1, 101)
    for tau in (8, 10, 15):
        assert diminishing_returns(epochs, saturating(epochs, tau)).epoch == saturation_epoch(tau)


@pytest.mark.parametrize("total", [20, 30, 60])
def test_one_cycle_run_still_climbing_at_its_end_is_not_yet(total):
    epochs, accuracy = one_cycle(total)
    verdict = returns_verdict(epochs, accuracy)
    assert verdict.status == "not_yet", verdict.sentence()  # the old method answered epoch 16 for 60
    assert verdict.last_gain > 0.01
    assert_honest(verdict)


@pytest.mark.parametrize("total", [60, 100])
def test_one_cycle_dip_does_not_end_the_search(total):
    epochs, accuracy = one_cycle_saturating(total)
    point = diminishing_returns(epochs, accuracy)
    best = np.maximum.accumulate(accuracy)
    after_climb = int(epochs[np.flatnonzero(best[DEFAULT_WINDOW:] - best[:-DEFAULT_WINDOW] >= LIMIT)[-1]]) + 1
    assert point.epoch == pytest.approx(after_climb, abs=2)  # the old method: epochs 15 and 19, before the dip
    assert point.epoch > 0.3 * total + 5
    assert point.next_gain < LIMIT


def test_warm_restart_after_extend_moves_the_point_past_the_recovery():
    epochs, accuracy = warm_restart(40, 40)
    point = diminishing_returns(epochs, accuracy)
    assert point.epoch == 50  # the old method: epoch 30, on the first plateau
    assert point.next_gain < LIMIT and point.rest_gain < 3 * LIMIT
    assert diminishing_returns(*warm_restart(40, 20)).epoch == 50


def test_warm_restart_still_recovering_is_not_yet():
    verdict = returns_verdict(*warm_restart(40, 10))
    assert verdict.status == "not_yet" and verdict.last_gain > 0.01  # 1 point in the 10 epochs since the dip
    assert_honest(verdict)


def test_one_lucky_epoch_does_not_move_the_point():
    epochs = np.arange(1, 101)
    accuracy = saturating(epochs, 15)
    lucky = accuracy.copy()
    lucky[24] += 0.03  # epoch 25, three points above the curve
    assert diminishing_returns(epochs, lucky).epoch == diminishing_returns(epochs, accuracy).epoch == 54


def test_a_curve_still_climbing_is_not_yet():
    epochs = np.arange(1, 41)
    verdict = returns_verdict(epochs, 0.5 + 0.005 * epochs)
    assert verdict.status == "not_yet" and verdict.last_gain == pytest.approx(0.05)
    assert verdict.sentence() == (
        "Not yet: the last 10 epochs still added 5.00 points of test accuracy, more than the threshold of "
        "0.20 points per 10 epochs."
    )
    assert diminishing_returns(epochs, 0.5 + 0.005 * epochs) is None


def test_too_short_runs_say_so():
    for epochs in ([], [1], [1, 2], [1, 2, 3, 4, 5]):
        verdict = returns_verdict(epochs, [0.8] * len(epochs))
        assert verdict.status == "too_short" and verdict.point is None
        assert verdict.sentence().startswith("The diminishing-returns point needs at least 6 epochs; this run has")
    assert diminishing_returns([1, 2, 3, 4, 5], [0.8, 0.85, 0.86, 0.86, 0.86]) is None
    assert diminishing_returns([1, 2, 3, 4, 5, 6], [0.8, 0.85, 0.86, 0.86, 0.86, 0.86]).epoch == 3


def test_a_short_noisy_run_is_too_noisy_to_tell():
    rng = np.random.default_rng(7)
    verdict = returns_verdict(range(1, 21), rng.binomial(1000, 0.9, 20) / 1000)  # flat, 1,000 test images
    assert verdict.status == "too_noisy" and verdict.point is None
    assert verdict.needed_epochs > 20 and 0.005 < verdict.noise < 0.02
    assert verdict.sentence().startswith("Too noisy to tell yet: test accuracy scatters by about ±")


def test_a_sparse_table_ending_between_records_is_not_yet():
    epochs = [*range(1, 11), 25, 30]
    accuracy = [0.80 + 0.01 * i for i in range(10)] + [0.894, 0.894]
    verdict = returns_verdict(epochs, accuracy)
    assert verdict.status == "not_yet" and verdict.below_after == 18
    assert verdict.sentence().startswith("Not yet: gains fell below 0.20 points per 10 epochs only from epoch 18 on")


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        returns_verdict(SEED_EPOCHS, SEED_ACCURACY, threshold=0)
    with pytest.raises(ValueError):
        returns_verdict(SEED_EPOCHS, SEED_ACCURACY, window=0)


# Noisy saturating curves: 200 evaluations of a known curve with binomial noise for n test images.

SEEDS = 200


@pytest.mark.parametrize(
    ("tau", "total", "images", "min_rate"),
    [
        (15, 150, 1_000, 0.85),
        (15, 150, 10_000, 0.93),
        (8, 100, 1_000, 0.60),
        (8, 100, 10_000, 0.88),
        (25, 200, 1_000, 0.88),
        (25, 200, 10_000, 0.90),
        (10, 300, 1_000, 0.73),
    ],
)
def test_noisy_curves_land_near_the_true_point(tau, total, images, min_rate):
    """Within tau * ln 2 epochs of the true point, the true gain of the next window is within a factor 2
    of the threshold's. Also: few points more than that early, and every sentence honest."""
    epochs = np.arange(1, total + 1)
    truth, tolerance = saturation_epoch(tau), math.floor(tau * math.log(2))
    rng = np.random.default_rng(2026)
    found = []
    for _ in range(SEEDS):
        verdict = returns_verdict(epochs, rng.binomial(images, saturating(epochs, tau)) / images)
        assert_honest(verdict)
        found.append(verdict.point.epoch if verdict.point else np.nan)
    offset = np.asarray(found) - truth
    rate = float(np.mean(np.abs(offset) <= tolerance))
    early = float(np.mean(offset < -tolerance))
    print(
        f"\ntau={tau} epochs={total} test images={images}: true point {truth}, within ±{tolerance} epochs "
        f"{rate:.1%}, earlier {early:.1%}, later {np.mean(offset > tolerance):.1%}, "
        f"no point {np.mean(np.isnan(offset)):.1%} (median offset {np.nanmedian(offset):+.1f} epochs)"
    )
    assert rate >= min_rate
    assert early <= 0.06


def test_confusion_matrix_counts_and_row_shares():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    counts = confusion_matrix(labels, predicted, num_classes=3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    frame = confusion_frame(counts, class_names=("a", "b", "c"))
    assert frame.query("true == 'a' and predicted == 'b'")["share"].item() == pytest.approx(1 / 3)
    accuracy = per_class_accuracy(labels, predicted, class_names=("a", "b", "c"))
    assert accuracy["accuracy"].tolist() == pytest.approx([2 / 3, 1.0, 0.0])


def test_mistakes_are_filtered_and_sorted_by_confidence():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    frame = prediction_frame(
        probabilities, labels=np.array([0, 0, 0, 1]), indices=np.array([5, 6, 7, 8]), class_names=("a", "b")
    )
    mistakes = filter_predictions(frame, mistakes_only=True)
    assert mistakes["test_index"].tolist() == [6, 8, 7]  # confidence 0.8, 0.7, 0.6
    assert filter_predictions(frame, mistakes_only=True, true_class=0, predicted_class=1)["test_index"].tolist() == [
        6,
        7,
    ]
    assert filter_predictions(frame, most_confident_first=False)["test_index"].tolist()[0] == 7
