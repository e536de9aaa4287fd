"""What a run's numbers mean: the diminishing-returns point, confusion matrix, per-class accuracy, mistakes.

Diminishing returns (``diminishing_returns``):

1. The test-accuracy curve is put on every whole epoch, linearly interpolating between recorded
   epochs (so a sparse table such as the seed's 10/60/100/200 works as well as a per-epoch history).
2. It is smoothed with a centred running mean over ``window // 2`` epochs, to damp epoch-to-epoch noise.
3. The gain per epoch at epoch e is the smoothed rise over the preceding ``window`` epochs, divided by
   ``window``: what recent epochs actually paid.
4. The point is the first epoch at which that gain falls below ``threshold`` (a fraction of accuracy
   per epoch: 0.0002 = 0.02 points per epoch = 0.2 points per 10 epochs).

Runs shorter than ``2 * window`` epochs use a window of a third of their length (at least 2); runs
of fewer than ``MIN_EPOCHS`` epochs are too short to tell a trend from noise and get no point.
Everything here is plain NumPy/pandas: no TensorFlow, so the app can call it freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.fashion_mnist import CLASS_NAMES, NUM_CLASSES

DEFAULT_THRESHOLD = 0.0002  # accuracy per epoch (0.2 points per 10 epochs)
DEFAULT_WINDOW = 10  # epochs
MIN_EPOCHS = 6  # shorter curves get no point


@dataclass(frozen=True)
class DiminishingReturns:
    epoch: int  # the diminishing-returns point
    accuracy: float  # smoothed test accuracy there
    window: int  # epochs the gain was measured over
    threshold: float  # accuracy per epoch
    gain_per_epoch: float  # measured at ``epoch``
    next_gain: float  # what the ``window`` epochs after the point add (measured if trained, else estimated)
    next_seconds: float | None  # what those epochs cost, from the measured time per epoch
    next_measured: bool  # True if ``next_gain`` comes from epochs that were actually trained
    final_epoch: int
    final_accuracy: float

    def sentence(self) -> str:
        points = 100 * self.next_gain
        cost = f" for {format_duration(self.next_seconds)} more training" if self.next_seconds else ""
        verb = "added" if self.next_measured else "would add about"
        return (
            f"After epoch {self.epoch}, {self.window} more epochs {verb} {points:.2f} points of test accuracy{cost} "
            f"(gain fell below {100 * self.threshold * self.window:.2f} points per {self.window} epochs)."
        )


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def diminishing_returns(
    epochs,
    test_accuracy,
    cumulative_seconds=None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    window: int = DEFAULT_WINDOW,
) -> DiminishingReturns | None:
    """The diminishing-returns point of a test-accuracy curve, or None if gains never fell below."""
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    order = np.argsort(np.asarray(epochs, dtype=float))
    epochs = np.asarray(epochs, dtype=float)[order]
    accuracy = np.asarray(test_accuracy, dtype=float)[order]
    if len(epochs) < 2:
        return None
    grid = np.arange(int(epochs[0]), int(epochs[-1]) + 1)
    if len(grid) < MIN_EPOCHS:
        return None
    window = min(window, max(2, len(grid) // 3)) if len(grid) < 2 * window else window
    dense = np.interp(grid, epochs, accuracy)
    smoothed = pd.Series(dense).rolling(max(1, window // 2), center=True, min_periods=1).mean().to_numpy()
    gains = (smoothed[window:] - smoothed[:-window]) / window  # gains[i] belongs to epoch grid[i + window]
    below = np.flatnonzero(gains < threshold)
    if len(below) == 0:
        return None
    index = int(below[0]) + window
    point = int(grid[index])

    seconds_per_epoch = None
    if cumulative_seconds is not None:
        seconds = np.asarray(cumulative_seconds, dtype=float)[order]
        seconds_per_epoch = (seconds[-1] - seconds[0]) / max(1.0, epochs[-1] - epochs[0]) if len(seconds) > 1 else None
        if seconds_per_epoch is None and seconds[0] > 0:
            seconds_per_epoch = seconds[0] / epochs[0]
    measured = index + window < len(grid)
    next_gain = smoothed[index + window] - smoothed[index] if measured else gains[index - window] * window
    return DiminishingReturns(
        epoch=point,
        accuracy=float(smoothed[index]),
        window=window,
        threshold=threshold,
        gain_per_epoch=float(gains[index - window]),
        next_gain=float(next_gain),
        next_seconds=float(seconds_per_epoch * window) if seconds_per_epoch else None,
        next_measured=bool(measured),
        final_epoch=int(grid[-1]),
        final_accuracy=float(accuracy[-1]),
    )


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, *, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return counts


def confusion_frame(counts: np.ndarray, class_names=CLASS_NAMES) -> pd.DataFrame:
    """Long form for a heatmap: true, predicted, count, and the row-normalised share of the true class."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    rows = [
        {
            "true": class_names[t],
            "predicted": class_names[p],
            "count": int(counts[t, p]),
            "share": float(shares[t, p]),
            "true_index": t,
            "predicted_index": p,
        }
        for t in range(counts.shape[0])
        for p in range(counts.shape[1])
    ]
    return pd.DataFrame(rows)


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray, class_names=CLASS_NAMES) -> pd.DataFrame:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    rows = []
    for index, name in enumerate(class_names):
        members = labels == index
        count = int(members.sum())
        rows.append(
            {
                "class": name,
                "class_index": index,
                "images": count,
                "accuracy": float((predicted[members] == index).mean()) if count else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def prediction_frame(
    probabilities: np.ndarray, labels: np.ndarray, indices: np.ndarray, class_names=CLASS_NAMES
) -> pd.DataFrame:
    """One row per evaluated test image: its index in the test set, true and predicted class, confidence."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels, dtype=int)
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(labels))
    names = np.asarray(class_names)
    return pd.DataFrame(
        {
            "test_index": np.asarray(indices, dtype=int),
            "true_index": labels,
            "predicted_index": predicted,
            "true": names[labels],
            "predicted": names[predicted],
            "confidence": probabilities[rows, predicted],
            "true_probability": probabilities[rows, labels],
            "correct": predicted == labels,
        }
    )


def filter_predictions(
    frame: pd.DataFrame,
    *,
    mistakes_only: bool = False,
    true_class: int | None = None,
    predicted_class: int | None = None,
    most_confident_first: bool = True,
) -> pd.DataFrame:
    """Rows matching the filters, sorted by confidence (most confident first, or least)."""
    mask = np.ones(len(frame), dtype=bool)
    if mistakes_only:
        mask &= ~frame["correct"].to_numpy()
    if true_class is not None:
        mask &= frame["true_index"].to_numpy() == true_class
    if predicted_class is not None:
        mask &= frame["predicted_index"].to_numpy() == predicted_class
    return frame[mask].sort_values("confidence", ascending=not most_confident_first, kind="stable")
