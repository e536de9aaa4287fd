"""How the engine words things for people: counts, durations, and how a training ended.

One place for each sentence that more than one module says (the trainer, the job manager, the CLI and
the app), so they cannot drift apart.
"""

from __future__ import annotations

import shlex
from enum import Enum


class TextEnum(str, Enum):  # noqa: UP042 (StrEnum needs Python 3.11; the README promises 3.10)
    """An enum whose members are their text: equal to it, JSON-encoded and printed as it."""

    def __str__(self) -> str:
        return self.value


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def time_unit(seconds: float) -> tuple[str, float]:
    """A readable unit for durations up to ``seconds``: (name, seconds per unit)."""
    if seconds < 120:
        return "seconds", 1.0
    if seconds < 120 * 60:
        return "minutes", 60.0
    return "hours", 3600.0


def format_duration(seconds: float | None) -> str:
    """``45 s``, ``3.5 min``, ``2.1 h`` (the same cut-offs as the charts' time axes); ``-`` for None."""
    if seconds is None:
        return "-"
    unit, scale = time_unit(float(seconds))
    if unit == "seconds":
        return f"{float(seconds):.0f} s"
    return f"{float(seconds) / scale:.1f} {'min' if unit == 'minutes' else 'h'}"


def kept_epochs_text(epochs_done: int) -> str:
    return f"epochs 1-{epochs_done} kept" if epochs_done else "no epoch had completed"


def stopped_message(stopped_in: int, epochs_done: int) -> str:
    return f"stopped during epoch {stopped_in}: {kept_epochs_text(epochs_done)}, the partial epoch {stopped_in} was discarded"


def failed_message(epochs_done: int, reason: str) -> str:
    """A run that failed while training epoch ``epochs_done + 1`` (its completed epochs are kept)."""
    return f"failed during epoch {epochs_done + 1}: {reason}; {kept_epochs_text(epochs_done)}"


def complete_message(epochs_done: int) -> str:
    return f"trained {plural(epochs_done, 'epoch')}"


def diverged_message(epoch: int) -> str:
    # The learning rate is part of a run's settings (its fingerprint), so continuing this run cannot
    # change it: say what does work.
    return (
        f"training diverged in epoch {epoch} (loss or accuracy is not a number). A run keeps its learning "
        "rate, so continuing it would diverge again: start a new run with a lower learning rate (or float32 "
        "precision, if this run used a mixed one); the completed epochs of this run stay as they are"
    )


def tensorboard_command(cache) -> str:
    """What to run to see every run of the cache folder ``cache`` in TensorBoard."""
    return f"tensorboard --logdir {shlex.quote(str(cache))}"
