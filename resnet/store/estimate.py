"""How long a configuration will take on this machine, from the speed measured in earlier runs.

A run's history records, per epoch, the training speed (``images_per_second``) and the whole epoch's
time (training + evaluation + saving). An epoch of a new configuration is estimated as

    train_subset / speed  +  eval_subset / (3 * speed)  +  fixed overhead

where speed is the median training speed of earlier runs with the same depth, batch size, precision
and device (epochs after the first, which also pays for building the graph, when there are any),
evaluation is taken as three times faster per image than training (a forward pass only), and the
fixed overhead (saving the checkpoint and predictions) is what those epochs took beyond both.

``run_eta_seconds`` adds up what is left of a running job: the rest of its current epoch's training
pass, and the remaining epochs at the mean time of the run's last three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from resnet.config import TrainConfig
from resnet.store.runs import Run
from resnet.wording import format_duration, plural

EVAL_SPEEDUP = 3.0  # evaluation images per training image in the same time (forward pass only)


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float | None
    total_seconds: float | None
    images_per_second: float | None
    basis: str  # where the figure comes from, or why there is none
    guess: bool = False  # True if no run matched depth and batch size exactly

    def text(self, epochs: int, *, at_most: bool = False) -> str:
        """The estimate for ``epochs`` epochs; ``at_most``: an auto run's maximum (it may stop sooner)."""
        if self.epoch_seconds is None:
            return self.basis
        prefix = "Rough guess: " if self.guess else "Estimated: "
        bound = "at most " if at_most else ""
        return (
            f"{prefix}**{format_duration(self.epoch_seconds)} per epoch**, "
            f"**{bound}{format_duration(self.epoch_seconds * epochs)} for {bound}{plural(epochs, 'epoch')}** "
            f"({self.basis})."
        )


def _usable(run: Run) -> bool:
    return not run.damaged and run.history is not None and not run.history.empty


def _speed_rows(runs: list[Run]) -> dict[str, np.ndarray]:
    """Per-epoch arrays over ``runs``: speed (images/s), train images, eval images, epoch seconds."""
    speed, train, evaluated, seconds = [], [], [], []
    for run in runs:
        epochs = run.history["epoch"].to_numpy()
        images_per_second = run.history["images_per_second"].to_numpy(float)
        keep = images_per_second > 0
        if len(epochs) > 1:
            keep &= epochs > epochs.min()  # the first epoch also builds the graph
        speed.append(images_per_second[keep])
        seconds.append(run.history["epoch_seconds"].to_numpy(float)[keep])
        train.append(np.full(int(keep.sum()), run.state.train_images or run.config.train_subset, dtype=float))
        evaluated.append(np.full(int(keep.sum()), run.state.eval_images or run.config.eval_subset, dtype=float))
    columns = {"speed": speed, "train": train, "evaluated": evaluated, "seconds": seconds}
    return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}


def estimate_time(config: TrainConfig, runs: list[Run], *, device: str, precision: str) -> Estimate:
    """Estimate ``config``'s time per epoch and in total on ``device`` at concrete ``precision``."""
    candidates = [
        run
        for run in runs
        if _usable(run)
        and run.config.depth == config.depth
        and (run.state.device or device) == device
        and (run.state.precision or precision) == precision
    ]
    exact = [run for run in candidates if run.config.batch_size == config.batch_size]
    used, guess = (exact, False) if exact else (candidates, True)
    rows = _speed_rows(used)
    if not len(rows["speed"]):
        return Estimate(
            None,
            None,
            None,
            f"Time per epoch is unknown until the first epoch of a ResNet-{config.depth} run at batch size "
            f"{config.batch_size} finishes on this machine; earlier runs give an estimate here.",
        )
    speed = float(np.median(rows["speed"]))
    overheads = rows["seconds"] - rows["train"] / rows["speed"] - rows["evaluated"] / (EVAL_SPEEDUP * rows["speed"])
    overhead = float(np.median(np.clip(overheads, 0.0, None)))
    epoch_seconds = config.train_subset / speed + config.eval_subset / (EVAL_SPEEDUP * speed) + overhead
    runs_word = "run" if len(used) == 1 else "runs"
    if guess:
        batches = sorted({run.config.batch_size for run in used})
        basis = (
            f"no run at batch size {config.batch_size} yet; from {len(used)} ResNet-{config.depth} {runs_word} "
            f"at batch size {', '.join(map(str, batches))}, {speed:.0f} images/s"
        )
    else:
        basis = f"measured {speed:.0f} training images/s in {len(used)} earlier {runs_word} like this"
    return Estimate(epoch_seconds, epoch_seconds * config.epochs, speed, basis, guess)


def run_eta_seconds(
    *, epoch: int, target_epochs: int, epoch_eta: float | None, history: pd.DataFrame | None
) -> float | None:
    """Seconds until a running job reaches ``target_epochs``; None before its first epoch is timed."""
    if history is None or history.empty:
        return None
    per_epoch = float(history["epoch_seconds"].tail(3).mean())
    return (epoch_eta or 0.0) + per_epoch * max(0, target_epochs - epoch)
