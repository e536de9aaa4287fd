"""When an ``auto`` run stops adding epochs: the decision on its validation split, and what it says.

After every stable-phase epoch of an ``epochs_mode`` auto run the trainer asks ``check_returns`` about
the validation accuracy so far (never the test accuracy: choosing the stop by test accuracy would make
the reported test accuracy optimistic). The method and threshold are the app's diminishing-returns
verdict (``resnet.analysis.returns_verdict``, the threshold in points per 10 epochs), with one guard:
the verdict must find a point *and* the trend of the last window must have gained less than half the
threshold (``LAST_WINDOW_SHARE``). The verdict alone tolerates later windows up to the threshold plus
its noise allowance; stopping for good needs more than that. In the simulation of tests/test_stopper.py
(curves a - b * exp(-epoch / tau), tau 3-40 epochs, 600 or 5,000 validation images, noise 1.5-4 times
the binomial one early on, decaying to it), the verdict alone stopped 3.25% of runs (13 of 400) while the true curve
still gained more than twice the threshold; with the guard 0.75% (3 of 400), about 4 epochs later.

When no decision comes in time, the cooldown starts at the latest epoch that lets it end by the maximum
(``resnet.core.schedule.stable_epochs_within``): every auto run ends annealed. ``StopDecision`` is what
the run's state records, and its ``sentence`` is what the live view, the Runs page and ``show`` say.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet.analysis import DEFAULT_WINDOW, points_text, returns_verdict
from resnet.wording import TextEnum

LAST_WINDOW_SHARE = 0.5  # the last window's trend gain must be below this share of the threshold


class StopReason(TextEnum):
    RETURNS = "returns"  # the validation curve's returns diminished
    MAXIMUM = "maximum"  # the cooldown had to start to end by the maximum


def threshold_per_epoch(points_per_window: float) -> float:
    """``returns_threshold`` (points of accuracy per 10 epochs) as the verdict's accuracy per epoch."""
    return points_per_window / 100 / DEFAULT_WINDOW


@dataclass(frozen=True)
class ReturnsCheck:
    """One look at the validation curve: whether to stop, and the window's gain it was judged on."""

    stop: bool
    window: int
    gain: float | None  # the trend's gain over the last ``window`` epochs (accuracy), None if too short
    threshold: float  # accuracy per epoch


def check_returns(epochs, validation_accuracy, *, points_per_window: float) -> ReturnsCheck:
    """Whether returns have diminished on the validation curve recorded so far (see the module docstring)."""
    threshold = threshold_per_epoch(points_per_window)
    verdict = returns_verdict(epochs, validation_accuracy, threshold=threshold, window=DEFAULT_WINDOW)
    gain = verdict.last_gain
    limit = threshold * verdict.window
    stop = verdict.status == "point" and gain is not None and gain < LAST_WINDOW_SHARE * limit
    return ReturnsCheck(stop, verdict.window, gain, threshold)


@dataclass(frozen=True)
class StopDecision:
    """Why and where an auto run stopped adding epochs (recorded in its state as ``stop``)."""

    reason: StopReason
    stable_end: int  # the last epoch of the stable phase
    cooldown_end: int  # the last epoch of the cooldown
    window: int  # epochs the last gain was measured over
    gain: float | None  # accuracy the last window gained on the validation trend (None: too short to tell)
    threshold_points: float  # the run's returns threshold, points per 10 epochs

    def to_dict(self) -> dict:
        return {
            "reason": self.reason.value,
            "stable_end": self.stable_end,
            "cooldown_end": self.cooldown_end,
            "window": self.window,
            "gain": self.gain,
            "threshold_points": self.threshold_points,
        }

    @classmethod
    def from_dict(cls, values) -> StopDecision:
        """Parse a recorded decision; ValueError says what is wrong with it."""
        if not isinstance(values, dict) or set(values) != set(cls.__dataclass_fields__):
            raise ValueError(f"a stop decision has the fields {sorted(cls.__dataclass_fields__)}")
        reason = StopReason(values["reason"])
        ints = [values[key] for key in ("stable_end", "cooldown_end", "window")]
        if not all(type(value) is int and value >= 1 for value in ints) or ints[0] >= ints[1]:
            raise ValueError("a stop decision's epochs are whole numbers with the stable phase before the cooldown")
        gain, points = values["gain"], values["threshold_points"]
        if gain is not None and (type(gain) not in (int, float) or not -1.0 <= gain <= 1.0):
            raise ValueError(f"a stop decision's gain must be an accuracy difference, got {gain!r}")
        if type(points) not in (int, float) or not 0 < points <= 100:
            raise ValueError(f"a stop decision's threshold must be positive points, got {points!r}")
        return cls(reason, ints[0], ints[1], ints[2], None if gain is None else float(gain), float(points))

    def sentence(self, test_accuracy: float | None = None, *, done: int | None = None) -> str:
        """What the run says about its stop; ``done``: epochs trained so far (to say the cooldown is running)."""
        limit = f"{self.threshold_points:.2f}"
        if self.window != 10:  # a short run's window: the threshold scaled to it
            limit = f"{self.threshold_points * self.window / 10:.2f} points per {self.window} epochs ({limit} per 10)"
        if self.reason is StopReason.RETURNS:
            text = (
                f"Stopped adding epochs after epoch {self.stable_end}: the {self.window} epochs before it gained "
                f"{points_text(self.gain or 0.0)} points of validation accuracy, below the threshold of {limit}"
            )
        else:
            gained = (
                f" (the last {self.window} gained {points_text(self.gain)} points)" if self.gain is not None else ""
            )
            text = (
                f"Reached the maximum: the cooldown had to start after epoch {self.stable_end} to end by epoch "
                f"{self.cooldown_end}; returns had not diminished yet{gained}, threshold {limit}"
            )
        first = self.stable_end + 1
        span = f"epoch {first}" if first == self.cooldown_end else f"epochs {first}-{self.cooldown_end}"
        if done is not None and done < self.cooldown_end:
            text += f"; cooling down over {span} ({done - self.stable_end} done)"
        else:
            text += f"; cooled down over {span}"
        if test_accuracy is not None and (done is None or done >= self.cooldown_end):
            text += f"; test accuracy {100 * test_accuracy:.1f}%"
        return text + "."
