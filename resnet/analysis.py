"""What a run's numbers mean: the diminishing-returns point, confusion matrix, per-class accuracy, mistakes.

Diminishing returns (``returns_verdict``; ``diminishing_returns`` returns only its point)
-------------------------------------------------------------------------------------------

The threshold is a gain of test accuracy per epoch: ``DEFAULT_THRESHOLD`` = 0.0002, i.e. 0.2 points per
``DEFAULT_WINDOW`` = 10 epochs. Runs shorter than ``2 * window`` epochs use a window of a third of their
length (at least 2 epochs). "Points" are percentage points of test accuracy.

1. Grid: the recorded test accuracy is put on every whole epoch of the run, interpolating linearly
   between recorded epochs (a sparse table such as the seed's 10/60/100/200 works as well as a
   per-epoch history).
2. Noise: sigma, the epoch-to-epoch scatter of the recorded accuracy, is estimated from the second
   differences of equally spaced recorded epochs in the later half of the run (at least 3 of them):
   median |second difference| / (0.6745 * sqrt(6)). A sparse table such as the seed's has none, so
   sigma = 0. (One evaluation of n test images alone scatters by sqrt(p(1 - p) / n): about 1 point
   for 1,000 images at p = 0.9, 0.3 points for 10,000.)
3. Trend: the accuracy at every epoch is replaced by a straight line fitted to the accuracies within
   ``h`` epochs either side (one-sided at the ends of the run); ``h`` is the smallest that makes the
   standard error of a window's gain in the middle of the run, computed from sigma and the fit's
   weights, at most the threshold's gain / ``SMOOTHING_TARGET`` (so h = 0, no smoothing, when
   sigma = 0). The trend is then made non-decreasing by isotonic regression (the closest
   non-decreasing curve in least squares): a dip followed by a recovery to the earlier level gains
   nothing, a recovery above it gains the difference.
4. Window gains: G(a) = trend(a + window) - trend(a), each with a noise allowance of
   ``NOISE_ALLOWANCE`` standard errors of that gain (0 when sigma = 0).
5. The verdict (``Verdict.status``), in this order:
   - ``too_short``: the run spans fewer than ``MIN_EPOCHS`` epochs;
   - ``not_yet``: the last window still gained more than threshold + allowance, measured on the
     recorded accuracy made non-decreasing (h = 0) or on the trend ("the last 10 epochs still added
     X points");
   - ``too_noisy``: the run spans fewer epochs than the trend's fit needs (2h + 1);
   - ``point``: the earliest recorded epoch e with at least ``window`` epochs after it whose next
     window gained less than the threshold (G(e) < threshold * window), and after which no window
     gained more than threshold + allowance;
   - ``not_yet`` otherwise: the last window gained at least the threshold (within the noise), or, on
     a sparse table, gains fell below it only between recorded epochs near the end.

So a point's sentence never quotes a next gain at or above the threshold, a dip (one-cycle schedules,
the warm restart of an extended run, a noisy evaluation) cannot end the search early, one lucky epoch
cannot create a plateau, and noise too large for the run's length gives ``too_noisy`` rather than an
invented point. On a curve a - b * exp(-epoch / tau) with binomial evaluation noise, the point lands
within tau * ln(2) epochs of the true one (the first epoch whose next window gains less than the
threshold; within tau * ln(2) epochs the true gain is within a factor of 2 of the threshold's) in 90%
of runs for 1,000 test images and 97% for 10,000 (tau = 15, 150 epochs; more cases in
docs/benchmarks.md, measured by tests/test_analysis.py).
Everything here is plain NumPy/pandas: no TensorFlow, so the app can call it freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from resnet.wording import format_duration

DEFAULT_THRESHOLD = 0.0002  # accuracy per epoch (0.2 points per 10 epochs)
DEFAULT_WINDOW = 10  # epochs
MIN_EPOCHS = 6  # shorter runs are too short to tell
SMOOTHING_TARGET = 1.5  # the trend's window gains have a standard error <= threshold gain / 1.5
NOISE_ALLOWANCE = 2.0  # standard errors a window must beat the threshold by to count as still paying


def points_text(accuracy: float, *, below: float | None = None) -> str:
    """Accuracy as points with 2 decimals; more where 2 would round a gain up to the limit it is ``below``."""
    for decimals in (2, 3, 4, 5, 6):
        text = f"{100 * accuracy:.{decimals}f}"
        if below is None or float(text) < round(100 * below, decimals):
            break
    return text


@dataclass(frozen=True)
class DiminishingReturns:
    epoch: int  # the diminishing-returns point (a recorded epoch)
    accuracy: float  # trend of test accuracy there
    window: int  # epochs a gain is measured over
    threshold: float  # accuracy per epoch
    next_gain: float  # trend gain over the ``window`` epochs after the point: below threshold * window
    next_seconds: float | None  # what those epochs cost, from the measured time per epoch
    rest_epochs: int  # epochs recorded after the point, up to ``final_epoch``
    rest_gain: float  # trend gain over all of them
    largest_later_gain: float  # the largest gain of any window after the point
    allowance: float  # noise allowance of a window's gain (accuracy; 0 without noise)
    smoothing: int  # epochs in the trend's straight-line fit (1 = the recorded accuracy itself)
    final_epoch: int
    final_accuracy: float  # recorded

    @property
    def gain_per_epoch(self) -> float:
        return self.next_gain / self.window

    def sentence(self) -> str:
        limit = self.threshold * self.window
        cost = f" for {format_duration(self.next_seconds)} more training" if self.next_seconds else ""
        text = (
            f"After epoch {self.epoch}, {self.window} more epochs added {points_text(self.next_gain, below=limit)} points of test "
            f"accuracy{cost}, below the threshold of {points_text(limit)} points per {self.window} epochs"
        )
        if self.rest_epochs > self.window:
            text += (
                f"; all {self.rest_epochs} epochs up to epoch {self.final_epoch} added {points_text(self.rest_gain)} "
                f"points, no {self.window} of them "
            )
            if self.largest_later_gain < limit:
                text += f"more than {points_text(limit)}"
            else:
                text += (
                    f"clearly more (at most {points_text(self.largest_later_gain)}, within the "
                    f"\u00b1{points_text(self.allowance)}-point noise)"
                )
        text += "."
        if self.smoothing > 1:
            text += f" Gains are read from the trend of test accuracy over {self.smoothing} epochs."
        return text


@dataclass(frozen=True)
class Verdict:
    """What the curve says about more epochs: a point, not yet, too noisy or too short, with a sentence."""

    status: Literal["point", "not_yet", "too_noisy", "too_short"]
    point: DiminishingReturns | None
    epochs: int  # whole epochs the run spans (first to last recorded)
    window: int
    threshold: float
    last_gain: float | None = None  # ``not_yet`` and ``point``: what the last ``window`` epochs added (trend)
    noise: float = 0.0  # sigma: epoch-to-epoch scatter of the recorded accuracy
    smoothing: int = 1  # epochs in the trend's fit behind ``last_gain`` (1 = recorded accuracy)
    needed_epochs: int | None = None  # ``too_short`` / ``too_noisy``: epochs it takes to tell
    below_after: int | None = None  # ``not_yet`` on a sparse table: gains fell below only from this epoch

    def sentence(self) -> str:
        limit = f"{points_text(self.threshold * self.window)} points per {self.window} epochs"
        if self.status == "point":
            return self.point.sentence()
        if self.status == "too_short":
            return (
                f"The diminishing-returns point needs at least {self.needed_epochs} epochs; "
                f"this run has {self.epochs}, too few to tell."
            )
        if self.status == "too_noisy":
            return (
                f"Too noisy to tell yet: test accuracy scatters by about \u00b1{points_text(self.noise)} points from "
                f"epoch to epoch, and telling a gain of {limit} through that takes about "
                f"{self.needed_epochs} epochs; this run has {self.epochs}."
            )
        if self.below_after is not None:
            return (
                f"Not yet: gains fell below {limit} only from epoch {self.below_after} on, between recorded "
                f"epochs; record one there and {self.window} more epochs after it to confirm."
            )
        trend = f" (trend over {self.smoothing} epochs)" if self.smoothing > 1 else ""
        return (
            f"Not yet: the last {self.window} epochs still added {points_text(self.last_gain)} points of test "
            f"accuracy{trend}, more than the threshold of {limit}."
        )


def diminishing_returns(
    epochs,
    test_accuracy,
    cumulative_seconds=None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    window: int = DEFAULT_WINDOW,
) -> DiminishingReturns | None:
    """The diminishing-returns point of a test-accuracy curve, or None (``returns_verdict`` says why)."""
    return returns_verdict(epochs, test_accuracy, cumulative_seconds, threshold=threshold, window=window).point


def returns_verdict(
    epochs,
    test_accuracy,
    cumulative_seconds=None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    window: int = DEFAULT_WINDOW,
) -> Verdict:
    """When more epochs stop paying (see the module docstring): a point, not yet, too noisy or too short."""
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    epochs, accuracy, seconds = _recorded(epochs, test_accuracy, cumulative_seconds)
    span = int(epochs[-1] - epochs[0]) + 1 if len(epochs) else 0
    if span < MIN_EPOCHS:
        return Verdict("too_short", None, span, window, threshold, needed_epochs=MIN_EPOCHS)
    window = min(window, max(2, span // 3)) if span < 2 * window else window
    limit = threshold * window
    grid = np.arange(int(epochs[0]), int(epochs[-1]) + 1)
    interpolation = _interpolation(epochs, grid)
    dense = np.interp(grid, epochs, accuracy)
    recorded = np.isin(grid, epochs)
    sigma = _noise(epochs, accuracy)
    verdict = dict(epochs=span, window=window, threshold=threshold, noise=sigma)
    last = len(grid) - 1 - window  # start of the last window

    needed, half = _smoothing(interpolation, sigma, window, limit / SMOOTHING_TARGET)
    smoothing = 2 * half + 1
    _, raw_gains, raw_allowances = _gains(dense, interpolation, 0, sigma, window)
    trend, gains, allowances = _gains(dense, interpolation, half, sigma, window)
    if raw_gains[last] > limit + raw_allowances[last]:
        return Verdict("not_yet", None, last_gain=float(raw_gains[last]), **verdict)
    if gains[last] > limit + allowances[last]:
        return Verdict("not_yet", None, last_gain=float(gains[last]), smoothing=smoothing, **verdict)
    if needed > half:
        return Verdict("too_noisy", None, smoothing=smoothing, needed_epochs=2 * needed + 1, **verdict)

    clearly_paying = np.flatnonzero(gains > limit + allowances)
    start = int(clearly_paying[-1]) + 1 if len(clearly_paying) else 0
    below = gains < limit
    candidates = np.flatnonzero(below[start:] & recorded[start : last + 1]) + start
    if len(candidates) == 0:
        if below[last]:
            return Verdict("not_yet", None, below_after=int(grid[start + np.argmax(below[start:])]), **verdict)
        return Verdict("not_yet", None, last_gain=float(gains[last]), smoothing=smoothing, **verdict)
    index = int(candidates[0])
    per_epoch = _seconds_per_epoch(epochs, seconds)
    point = _point_at(index, grid, trend, gains, allowances, accuracy, per_epoch, dict(verdict, smoothing=smoothing))
    return Verdict("point", point, smoothing=smoothing, last_gain=float(gains[last]), **verdict)


def _point_at(index, grid, trend, gains, allowances, accuracy, seconds_per_epoch, verdict) -> DiminishingReturns:
    """The diminishing-returns point at ``grid[index]``, with what the rest of the run measured after it."""
    window = verdict["window"]
    later = gains[index + 1 :]
    return DiminishingReturns(
        epoch=int(grid[index]),
        accuracy=float(trend[index]),
        window=window,
        threshold=verdict["threshold"],
        next_gain=float(gains[index]),
        next_seconds=float(seconds_per_epoch * window) if seconds_per_epoch else None,
        rest_epochs=int(len(grid) - 1 - index),
        rest_gain=float(trend[-1] - trend[index]),
        largest_later_gain=float(later.max()) if len(later) else float(gains[index]),
        allowance=float(allowances[index:].max()),
        smoothing=verdict["smoothing"],
        final_epoch=int(grid[-1]),
        final_accuracy=float(accuracy[-1]),
    )


def _recorded(epochs, test_accuracy, cumulative_seconds):
    """Recorded epochs in order, without missing accuracies; a repeated epoch keeps its last record."""
    epochs = np.asarray(epochs, dtype=float)
    accuracy = np.asarray(test_accuracy, dtype=float)
    seconds = None if cumulative_seconds is None else np.asarray(cumulative_seconds, dtype=float)
    keep = np.isfinite(epochs) & np.isfinite(accuracy)
    epochs, accuracy = epochs[keep], accuracy[keep]
    seconds = None if seconds is None else seconds[keep]
    order = np.argsort(epochs, kind="stable")
    epochs, accuracy = epochs[order], accuracy[order]
    seconds = None if seconds is None else seconds[order]
    last = np.append(epochs[1:] != epochs[:-1], True) if len(epochs) else np.zeros(0, dtype=bool)
    epochs, accuracy = epochs[last], accuracy[last]
    seconds = None if seconds is None else seconds[last]
    return np.round(epochs).astype(int), accuracy, seconds


def _seconds_per_epoch(epochs: np.ndarray, seconds: np.ndarray | None) -> float | None:
    if seconds is None or not np.all(np.isfinite(seconds)):
        return None
    if len(seconds) > 1:
        return float((seconds[-1] - seconds[0]) / max(1.0, epochs[-1] - epochs[0]))
    return float(seconds[0] / epochs[0]) if seconds[0] > 0 and epochs[0] > 0 else None


def _noise(epochs: np.ndarray, accuracy: np.ndarray) -> float:
    """Epoch-to-epoch scatter from second differences of equally spaced records, later half of the run."""
    steps = np.diff(epochs)
    equal = np.flatnonzero(steps[:-1] == steps[1:])
    if len(equal) < 3:
        return 0.0
    second = accuracy[equal] - 2 * accuracy[equal + 1] + accuracy[equal + 2]
    second = second[-max(3, len(second) // 2) :]
    return float(np.median(np.abs(second)) / (0.6745 * np.sqrt(6)))


def _interpolation(epochs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The matrix that puts the recorded accuracies on the grid of whole epochs (linear interpolation)."""
    left = np.clip(np.searchsorted(epochs, grid, side="right") - 1, 0, len(epochs) - 1)
    right = np.minimum(left + 1, len(epochs) - 1)
    gap = (epochs[right] - epochs[left]).astype(float)
    share = np.divide(grid - epochs[left], gap, out=np.zeros(len(grid)), where=gap > 0)
    matrix = np.zeros((len(grid), len(epochs)))
    rows = np.arange(len(grid))
    np.add.at(matrix, (rows, left), 1 - share)
    np.add.at(matrix, (rows, right), share)
    return matrix


def _line_fit(size: int, half: int) -> np.ndarray:
    """The matrix of a straight-line fit at each epoch through the epochs within ``half`` either side."""
    at = np.arange(size)
    low, high = np.maximum(0, at - half), np.minimum(size, at + half + 1)
    count = (high - low).astype(float)
    centre = (low + high - 1) / 2
    spread = count * (count**2 - 1) / 12  # sum of squared distances of low..high-1 from their centre
    x = at[None, :]
    slope = np.zeros((size, size))
    np.divide((at - centre)[:, None] * (x - centre[:, None]), spread[:, None], out=slope, where=spread[:, None] > 0)
    inside = (x >= low[:, None]) & (x < high[:, None])
    return np.where(inside, 1 / count[:, None] + slope, 0.0)


def _smoothing(interpolation: np.ndarray, sigma: float, window: int, target: float) -> tuple[int, int]:
    """Half-widths of the trend's fit: the one whose window gains have standard error <= target, and
    the one used (the same, or the widest the run allows when it is too short for the first)."""
    size = len(interpolation)
    if sigma == 0:
        return 0, 0
    middle = max(0, (size - 1 - window) // 2)
    # With one record per epoch, a fit over k epochs has error sigma * sqrt(2 * min(window, k)) / k.
    ratio = sigma / target
    k = 2 * ratio**2 if 2 * ratio**2 < window else ratio * np.sqrt(2 * window)
    estimate = max(0, int(np.ceil((k - 1) / 2)))
    largest = (size - 1) // 2
    half = max(0, min(estimate - 1, largest))
    while half <= largest:
        fit = _line_fit(size, half)
        difference = _compose(fit[middle + window] - fit[middle], interpolation)
        if sigma * np.sqrt((difference**2).sum()) <= target:
            return half, half
        half += 1
    return max(estimate, largest + 1), largest


def _gains(values: np.ndarray, interpolation: np.ndarray, half: int, sigma: float, window: int):
    """The non-decreasing trend, its window gains, and their noise allowances."""
    fit = _line_fit(len(values), half) if half > 0 else None
    trend = _isotonic(values if fit is None else fit @ values)
    gains = trend[window:] - trend[:-window]
    if sigma == 0:
        return trend, gains, np.zeros(len(gains))
    weights = interpolation if fit is None else _compose(fit, interpolation)
    errors = np.sqrt(((weights[window:] - weights[:-window]) ** 2).sum(axis=1))
    return trend, gains, NOISE_ALLOWANCE * sigma * errors


def _compose(fit: np.ndarray, interpolation: np.ndarray) -> np.ndarray:
    """Weights on the grid as weights on the recorded accuracies (the same when every epoch is recorded)."""
    if interpolation.shape[0] == interpolation.shape[1]:
        return fit
    return fit @ interpolation


def _isotonic(values: np.ndarray) -> np.ndarray:
    """The non-decreasing least-squares fit (pool adjacent violators)."""
    means: list[float] = []
    counts: list[int] = []
    for value in values:
        means.append(float(value))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mean, count = means.pop(), counts.pop()
            means[-1] = (means[-1] * counts[-1] + mean * count) / (counts[-1] + count)
            counts[-1] += count
    return np.repeat(means, counts)


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


def most_confused_pair(counts: np.ndarray) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal cell of a confusion matrix."""
    off_diagonal = np.array(counts, copy=True)
    np.fill_diagonal(off_diagonal, -1)
    true, predicted = np.unravel_index(int(off_diagonal.argmax()), off_diagonal.shape)
    return int(true), int(predicted)
