"""Learning-rate schedules over training segments, and how asking for more epochs changes the segments.

A *segment* is one planned stretch of training: a new run is one segment of ``epochs`` epochs. A
stopped or interrupted run resumed to its planned length continues its segment where it left off
(asked for a different length, the unfinished segment is stretched or shortened to it). Extending a
*finished* run to more epochs starts a new segment over the added epochs only: a warm restart (as in
SGDR, Loshchilov & Hutter 2017) with the same peak learning rate and the same shape, so the old
epochs' learning rates are never rewritten and the history stays truthful.

- ``one_cycle``: linear warm-up over the first 15% of the segment (at most 2 epochs), then cosine
  decay to zero;
- ``cosine``: cosine decay from the peak to zero, no warm-up;
- ``constant``: the peak learning rate throughout;
- ``wsd`` (warmup-stable-decay): a linear warm-up over the first epoch, the peak learning rate (the
  stable phase), then a cooldown over the segment's last ``cooldown_epochs`` epochs with the (1-sqrt)
  shape, lr = peak * (1 - sqrt(progress)), down to zero at the segment's end.

The ``wsd`` schedule follows Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
Training Durations" (arXiv:2405.18392): a constant learning rate with a cooldown matches a cosine schedule
of the same total length when the cooldown takes about 20% of the steps, and the (1-sqrt) cooldown beats
a linear one. Because the stable phase does not depend on how long the run will be, its length can be
decided while it trains (``epochs_mode`` auto: until returns diminish, ``resnet/core/stopper.py``), and
one stable run can be branched into cooldowns at several budgets (a budget curve). The warm-up is one
epoch whatever the length, so every branch shares its trunk's epochs exactly. ``cooldown_for(stable)`` is
the cooldown after ``stable`` epochs: ``cooldown_fraction`` of them, at least one epoch; a fixed-length
``wsd`` run of N epochs cools down over the last ``N - stable_epochs_within(N)`` of them.

    schedule = SegmentSchedule("one_cycle", peak=0.003, segments=plan_segments([], epochs_done=0,
                               target_epochs=10), steps_per_epoch=469)
    schedule.learning_rate(epoch=3, batch=0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

WARMUP_FRACTION = 0.15
WARMUP_MAX_EPOCHS = 2
WSD = "wsd"
WSD_WARMUP_EPOCHS = 1
DEFAULT_COOLDOWN_FRACTION = 0.2


def cooldown_for(stable_epochs: int, fraction: float = DEFAULT_COOLDOWN_FRACTION) -> int:
    """Cooldown epochs after ``stable_epochs`` epochs of warm-up and stable phase: a fraction, at least one."""
    return max(1, round(fraction * stable_epochs))


def stable_epochs_within(total_epochs: int, fraction: float = DEFAULT_COOLDOWN_FRACTION) -> int:
    """The most stable-phase epochs whose cooldown still ends by ``total_epochs`` (at least 1)."""
    stable = max(1, total_epochs - 1)
    while stable > 1 and stable + cooldown_for(stable, fraction) > total_epochs:
        stable -= 1
    return stable


@dataclass(frozen=True)
class Segment:
    """Epochs ``start_epoch`` to ``end_epoch`` (1-based, inclusive) share one learning-rate cycle.

    ``cooldown_epochs`` is used by ``wsd`` alone: its last epochs that cool down (0: all stable, a trunk).
    """

    start_epoch: int
    end_epoch: int
    cooldown_epochs: int = 0

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch + 1

    @property
    def cooldown_start(self) -> int:
        """The first epoch of the cooldown (``end_epoch + 1`` when the segment never cools down)."""
        return self.end_epoch - self.cooldown_epochs + 1

    def stable(self) -> Segment:
        """The same epochs without a cooldown (a budget curve's trunk)."""
        return Segment(self.start_epoch, self.end_epoch)

    def to_dict(self) -> dict:
        values = {"start_epoch": self.start_epoch, "end_epoch": self.end_epoch}
        if self.cooldown_epochs:
            values["cooldown_epochs"] = self.cooldown_epochs
        return values


def learning_rate_at(schedule: str, *, peak: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning rate for ``step`` (0-based) of a segment of ``total_steps`` steps."""
    if schedule == "constant":
        return peak
    step = min(max(step, 0), total_steps)
    if schedule == WSD:
        raise ValueError("a wsd learning rate needs its cooldown: use wsd_learning_rate_at")
    warmup = 0
    if schedule == "one_cycle":
        warmup = min(int(WARMUP_FRACTION * total_steps), WARMUP_MAX_EPOCHS * steps_per_epoch)
    elif schedule != "cosine":
        raise ValueError(f"schedule must be one_cycle, cosine or constant, got {schedule!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_learning_rate_at(
    *, peak: float, step: int, total_steps: int, steps_per_epoch: int, cooldown_steps: int
) -> float:
    """The ``wsd`` learning rate for ``step`` (0-based) of a segment whose last ``cooldown_steps`` cool down."""
    step = min(max(step, 0), total_steps - 1)
    warmup = min(WSD_WARMUP_EPOCHS * steps_per_epoch, total_steps - max(0, cooldown_steps))  # none if all cooldown
    if step < warmup:
        return peak * (step + 1) / warmup
    cooldown_from = total_steps - cooldown_steps
    if cooldown_steps <= 0 or step < cooldown_from:
        return peak
    return peak * (1.0 - math.sqrt((step - cooldown_from + 1) / (cooldown_steps + 1)))


def new_segment(
    schedule: str, start: int, end: int, *, cooldown_fraction: float = DEFAULT_COOLDOWN_FRACTION
) -> Segment:
    """Epochs ``start``-``end`` as one cycle; a ``wsd`` one cools down over its last epochs (``cooldown_for``)."""
    if schedule != WSD:
        return Segment(start, end)
    epochs = end - start + 1
    # One epoch (an extension by one): all cooldown, no warm-up, so the run still ends annealed.
    return Segment(start, end, epochs - stable_epochs_within(epochs, cooldown_fraction) if epochs > 1 else 1)


def plan_segments(
    segments: Iterable[Segment],
    *,
    epochs_done: int,
    target_epochs: int,
    schedule: str = "one_cycle",
    cooldown_fraction: float = DEFAULT_COOLDOWN_FRACTION,
    stable_only: bool = False,
) -> list[Segment]:
    """The segments after asking for ``target_epochs`` in total.

    An unfinished segment is stretched or shortened to the target (a ``wsd`` one with its cooldown
    recomputed, unless it has begun); a finished run gets a new segment over the added epochs (a warm
    restart). ``stable_only``: a ``wsd`` trunk, which never cools down, so it is always stretched.
    """
    segments = list(segments)
    if segments and (segments[-1].end_epoch > epochs_done or stable_only):
        last = segments[-1]
        end = max(target_epochs, epochs_done + 1)
        if stable_only:
            segments[-1] = Segment(last.start_epoch, end)
        elif schedule == WSD and last.cooldown_start <= epochs_done:
            segments[-1] = last  # a cooldown that has begun runs to its end
        elif schedule == WSD:
            segments[-1] = new_segment(schedule, last.start_epoch, end, cooldown_fraction=cooldown_fraction)
        else:
            segments[-1] = Segment(last.start_epoch, end)
    elif target_epochs > epochs_done:
        if stable_only:
            segments.append(Segment(epochs_done + 1, target_epochs))
        else:
            segments.append(new_segment(schedule, epochs_done + 1, target_epochs, cooldown_fraction=cooldown_fraction))
    return segments


def continues_a_cycle(segments: Iterable[Segment], *, epochs_done: int) -> bool:
    """Whether the run stopped inside a learning-rate cycle (so more epochs stretch it, no warm restart)."""
    segments = list(segments)
    return bool(segments) and segments[-1].end_epoch > epochs_done


@dataclass(frozen=True)
class SegmentSchedule:
    """The learning rate of every batch of a run, from its schedule, peak and segments."""

    schedule: str
    peak: float
    segments: tuple[Segment, ...]
    steps_per_epoch: int

    def segment_of(self, epoch: int) -> Segment:
        for segment in self.segments:
            if segment.start_epoch <= epoch <= segment.end_epoch:
                return segment
        raise ValueError(f"epoch {epoch} lies in no training segment {list(self.segments)}")

    def learning_rate(self, epoch: int, batch: int) -> float:
        """The learning rate for ``batch`` (0-based) of ``epoch`` (1-based)."""
        segment = self.segment_of(epoch)
        if self.schedule == WSD:
            return wsd_learning_rate_at(
                peak=self.peak,
                step=(epoch - segment.start_epoch) * self.steps_per_epoch + batch,
                total_steps=segment.epochs * self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch,
                cooldown_steps=segment.cooldown_epochs * self.steps_per_epoch,
            )
        return learning_rate_at(
            self.schedule,
            peak=self.peak,
            step=(epoch - segment.start_epoch) * self.steps_per_epoch + batch,
            total_steps=segment.epochs * self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
        )
