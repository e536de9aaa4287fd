"""Learning-rate schedules, as plain functions of the step within a training segment.

A *segment* is one planned stretch of training: a new run is one segment of ``epochs`` epochs. A
stopped or interrupted run resumed to its planned length continues its segment where it left off.
Extending a finished run to more epochs starts a new segment over the added epochs only: a warm
restart (as in SGDR, Loshchilov & Hutter 2017) with the same peak learning rate and the same shape,
so the old epochs' learning rates are never rewritten and the history stays truthful.

- ``one_cycle``: linear warm-up over the first 15% of the segment (at most 2 epochs), then cosine
  decay to zero;
- ``cosine``: cosine decay from the peak to zero, no warm-up;
- ``constant``: the peak learning rate throughout.
"""

from __future__ import annotations

import math

WARMUP_FRACTION = 0.15
WARMUP_MAX_EPOCHS = 2


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
