"""Diminishing returns, the confusion matrix and the mistake browser's data."""

from __future__ import annotations

import numpy as np
import pytest

from resnet.analysis import (
    confusion_frame,
    confusion_matrix,
    diminishing_returns,
    filter_predictions,
    per_class_accuracy,
    prediction_frame,
)

SEED_EPOCHS = [10, 60, 100, 200]
SEED_ACCURACY = [0.8732, 0.9004, 0.9037, 0.9066]


def test_seed_table_point_lies_between_60_and_110():
    result = diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, [100, 600, 1000, 2000])
    assert 60 <= result.epoch <= 110
    assert result.next_measured and result.next_gain < 0.002
    assert result.next_seconds == pytest.approx(100.0)
    assert result.sentence().startswith(f"After epoch {result.epoch}, 10 more epochs added 0.")


@pytest.mark.parametrize("threshold", [0.0001, 0.0002, 0.0003])
def test_seed_table_is_robust_to_the_threshold(threshold):
    assert 60 <= diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=threshold).epoch <= 110


def test_a_lower_threshold_moves_the_point_later():
    strict = diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=0.0001).epoch
    loose = diminishing_returns(SEED_EPOCHS, SEED_ACCURACY, threshold=0.0003).epoch
    assert loose < strict


def test_saturating_exponential_curve():
    epochs = np.arange(1, 101)
    accuracy = 0.9 - 0.1 * np.exp(-epochs / 10)
    # Gain per epoch is 0.01 * exp(-e/10): it crosses 0.0002 near e = 10 * ln(50) = 39, and the
    # backward-looking 10-epoch window reports it about half a window later.
    assert 39 <= diminishing_returns(epochs, accuracy).epoch <= 50


def test_noisy_curve_still_finds_the_plateau():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 81)
    accuracy = 0.9 - 0.1 * np.exp(-epochs / 8) + rng.normal(0, 0.001, len(epochs))
    assert 25 <= diminishing_returns(epochs, accuracy).epoch <= 50


def test_a_curve_still_climbing_has_no_point():
    epochs = np.arange(1, 41)
    assert diminishing_returns(epochs, 0.5 + 0.005 * epochs) is None


def test_too_short_curves_have_no_point():
    assert diminishing_returns([1], [0.8]) is None
    assert diminishing_returns([1, 2], [0.8, 0.8]) is None
    assert diminishing_returns([1, 2, 3, 4, 5], [0.8, 0.85, 0.86, 0.86, 0.86]) is None  # under MIN_EPOCHS
    assert diminishing_returns([1, 2, 3, 4, 5, 6], [0.8, 0.85, 0.86, 0.86, 0.86, 0.86]).epoch == 5


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
