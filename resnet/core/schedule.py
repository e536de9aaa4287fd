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
- ``constant``: the peak learning rate throughout.

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


@dataclass(frozen=True)
class Segment:
    """Epochs ``start_epoch`` to ``end_epoch`` (1-based, inclusive) share one learning-rate cycle."""

    start_epoch: int
    end_epoch: int

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch + 1

    def to_dict(self) -> dict:
        return {"start_epoch": self.start_epoch, "end_epoch": self.end_epoch}


def learning_rate_at(schedule: str, *, peak: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning rate for ``step`` (0-based) of a segment of ``total_steps`` steps."""
    if schedule == "constant":
        return peak
    step = min(max(step, 0), total_steps)
    warmup = 0
    if schedule == "one_cycle":
        warmup = min(int(WARMUP_FRACTION * total_steps), WARMUP_MAX_EPOCHS * steps_per_epoch)
    elif schedule != "cosine":
        raise ValueError(f"schedule must be one_cycle, cosine or constant, got {schedule!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def plan_segments(segments: Iterable[Segment], *, epochs_done: int, target_epochs: int) -> list[Segment]:
    """The segments after asking for ``target_epochs`` in total.

    An unfinished segment is stretched or shortened to the target; a finished run gets a new segment
    over the added epochs (a warm restart).
    """
    segments = list(segments)
    if segments and segments[-1].end_epoch > epochs_done:
        segments[-1] = Segment(segments[-1].start_epoch, max(target_epochs, epochs_done + 1))
    elif target_epochs > epochs_done:
        segments.append(Segment(epochs_done + 1, target_epochs))
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
        return learning_rate_at(
            self.schedule,
            peak=self.peak,
            step=(epoch - segment.start_epoch) * self.steps_per_epoch + batch,
            total_steps=segment.epochs * self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
        )
