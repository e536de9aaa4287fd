"""An ``auto`` run's own length: its validation split, and the stopper's decision after each epoch.

An auto run (``epochs_mode`` auto, schedule ``wsd``) holds out ``config.validation_count`` class-balanced
images of its training subset (``split_validation``: fixed by the seed, never trained on) and evaluates
them after every epoch, beside the test images (the history's ``val_loss`` and ``val_accuracy``).
After each stable-phase epoch ``decide_after_epoch`` asks ``resnet.core.stopper.check_returns`` about the
validation curve; when it says stop, or at the latest epoch whose cooldown still ends by the maximum,
the run's last segment becomes "stable up to here, then ``cooldown_for`` epochs of cooldown", and the
decision is recorded in the state (``stop``) before the first cooldown epoch trains, so a stop or a
kill during the cooldown resumes the same cooldown. The epoch's commit and the decision are two writes:
a run resumed without a decision asks again about its last committed epoch first (the trainer does),
so a kill between them decides exactly as an uninterrupted run would.
"""

from __future__ import annotations

import numpy as np

from data.subsets import stratified_subset
from resnet.config import AUTO, TrainConfig
from resnet.core.schedule import Segment, cooldown_for
from resnet.core.stopper import StopDecision, StopReason, check_returns
from resnet.store.runs import Run, RunStore


def split_validation(config: TrainConfig, train_indices: np.ndarray, train_labels: np.ndarray):
    """(indices to train on, validation indices): an auto run's class-balanced hold-out, else none."""
    held_out = config.validation_count
    if not held_out:
        return train_indices, train_indices[:0]
    positions = stratified_subset(train_labels[train_indices], held_out, seed=config.seed + 1)
    validation = train_indices[positions]
    return np.setdiff1d(train_indices, validation, assume_unique=True), validation


def decide_after_epoch(store: RunStore, run: Run, config: TrainConfig, epoch: int) -> tuple[Segment, ...] | None:
    """After committing stable-phase ``epoch`` of an auto run: the new segments if its cooldown starts next.

    None while it goes on (or for any other run). The decision is recorded in the run's state.
    """
    if config.epochs_mode != AUTO or run.state.stop is not None:
        return None
    segments = run.state.segments
    last = segments[-1]
    history = run.history.iloc[:epoch]
    check = check_returns(history["epoch"], history["val_accuracy"], points_per_window=config.returns_threshold)
    done = epoch
    if epoch >= last.cooldown_start - 1:  # the latest start that ends by the maximum (planned since the start)
        epoch, reason, end = last.cooldown_start - 1, StopReason.MAXIMUM, last.end_epoch
    elif check.stop:
        reason, end = StopReason.RETURNS, epoch + cooldown_for(epoch, config.cooldown_fraction)
    else:
        return None
    decided = (*segments[:-1], Segment(last.start_epoch, end, end - epoch))
    decision = StopDecision(reason, epoch, end, check.window, check.gain, config.returns_threshold)
    store.update_state(run, stop=decision, segments=decided, target_epochs=end, message=decision.sentence(done=done))
    return decided
