"""Training: prepare a run (new, resumed or extended), then train it epoch by epoch into the run store.

``prepare_training`` does everything that can fail fast (configuration, dataset, run folder) so that a
caller can show the error before anything starts. ``train_prepared`` then trains one epoch per
``model.fit`` call and, after each epoch, evaluates on the evaluation images and commits checkpoint,
predictions, history and state (see ``resnet/runs.py``). It never imports Streamlit: progress goes to a
``report`` callback, and cancellation comes through a ``threading.Event`` that is checked after every
batch. A stop keeps every completed epoch and discards the partial one.

Headless use: ``python -m resnet train --help`` (trains in that process); in the app,
``resnet.jobs.JobManager`` runs it in a child process (``resnet/worker.py``).
"""

from __future__ import annotations

import fcntl
import gc
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from data.fashion_mnist import FashionMNIST, load_fashion_mnist
from resnet.config import ConfigError, TrainConfig
from resnet.hardware import detect_hardware, resolve_precision
from resnet.runs import ACTIVE_RUNS, Run, RunError, RunStore
from resnet.schedule import learning_rate_at

EVAL_BATCH_SIZE = 500


@dataclass
class PreparedTraining:
    """A validated request: the run to train, its data, and the epochs to reach."""

    run: Run
    config: TrainConfig
    store: RunStore
    dataset: FashionMNIST
    train_indices: np.ndarray
    eval_indices: np.ndarray
    precision: str
    target_epochs: int


@dataclass
class EpochProgress:
    """What the trainer reports while it works (the job manager keeps the latest one)."""

    phase: str  # "building" | "training" | "evaluating" | "saving"
    epoch: int
    target_epochs: int
    batch: int = 0
    batches_per_epoch: int = 0
    images_per_second: float = 0.0
    epoch_elapsed: float = 0.0


def _optimizer(config: TrainConfig):
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate)
    return keras.optimizers.SGD(
        learning_rate=config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )


def build_compiled_model(config: TrainConfig, precision: str):
    """A fresh, compiled model for ``config`` (weights from the config's seed)."""
    from resnet.model import build_resnet

    keras.utils.set_random_seed(config.seed)
    model = build_resnet(config.depth, precision=precision)
    optimizer = _optimizer(config)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def prepare_training(
    config: TrainConfig,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    resume: bool = True,
    dataset_dir: str | os.PathLike | None = None,
) -> PreparedTraining:
    """Validate everything and pick the run to train; raises ConfigError, DatasetError or RunError.

    - ``run_id`` given: continue that run to ``config.epochs`` (the other fields must match the run's).
    - else, with ``resume``: continue the newest run of the same configuration if it has fewer epochs;
      if it already has ``config.epochs`` epochs, RunError says so (nothing to train).
    - else: a new run.
    """
    config.validate()
    store = store or RunStore()
    dataset = load_fashion_mnist(dataset_dir)
    existing = None
    if run_id is not None:
        existing = store.load(run_id)
        if existing.status == "damaged":
            raise RunError(f"run {run_id} is damaged ({existing.problem}); delete it or start a new run")
        if existing.config.fingerprint() != config.fingerprint():
            raise ConfigError(
                f"run {run_id} was trained with other settings; only epochs can change when continuing it"
            )
    elif resume:
        existing = store.latest_with_fingerprint(config.fingerprint())
    if existing is not None:
        if existing.status == "running":
            raise RunError(
                f"run {existing.run_id} is being trained by another process (pid {existing.state.get('pid')})"
            )
        if existing.epochs_done >= config.epochs:
            raise RunError(
                f"run {existing.run_id} already has {plural(existing.epochs_done, 'epoch')} (asked for {config.epochs}); "
                "ask for more epochs to extend it, or start a new run"
            )

    precision = resolve_precision(config.precision)
    train_indices = _subset(dataset.train_labels, config.train_subset, config.seed)
    eval_indices = _subset(dataset.test_labels, config.eval_subset, config.seed)
    if existing is None:
        existing = store.create(
            config,
            precision=precision,
            device=detect_hardware().device_label,
            train_images=len(train_indices),
            eval_images=len(eval_indices),
        )
    else:
        precision = existing.state.get("precision", precision)  # a checkpoint keeps its precision
    return PreparedTraining(
        run=existing,
        config=existing.config,
        store=store,
        dataset=dataset,
        train_indices=train_indices,
        eval_indices=eval_indices,
        precision=precision,
        target_epochs=config.epochs,
    )


def _subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from data.pipeline import stratified_subset

    return stratified_subset(labels, size, seed=seed)


def plan_segments(segments: list[dict], *, epochs_done: int, target_epochs: int) -> list[dict]:
    """The learning-rate segments after asking for ``target_epochs`` (see resnet/schedule.py).

    An unfinished segment is stretched or shortened to the target; a finished run gets a new segment
    over the added epochs (a warm restart).
    """
    segments = [dict(segment) for segment in segments]
    if segments and segments[-1]["end_epoch"] > epochs_done:
        segments[-1]["end_epoch"] = max(target_epochs, epochs_done + 1)
    elif target_epochs > epochs_done:
        segments.append({"start_epoch": epochs_done + 1, "end_epoch": target_epochs})
    return segments


class ProgressCallback(keras.callbacks.Callback):
    """Sets the learning rate before each batch; after it, reports progress and honours a cancel."""

    def __init__(self, cancel, report, *, epoch, target_epochs, batches, batch_size, images, learning_rate_for_step):
        super().__init__()
        self.cancel, self.report = cancel, report
        self.epoch, self.target_epochs = epoch, target_epochs
        self.batches, self.batch_size, self.images = batches, batch_size, images
        self.learning_rate_for_step = learning_rate_for_step
        self.batches_done = 0
        self.started = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate_for_step(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done = batch + 1
        elapsed = time.perf_counter() - self.started
        seen = min(self.batches_done * self.batch_size, self.images)
        self.report(
            EpochProgress(
                phase="training",
                epoch=self.epoch,
                target_epochs=self.target_epochs,
                batch=self.batches_done,
                batches_per_epoch=self.batches,
                images_per_second=seen / elapsed if elapsed > 0 else 0.0,
                epoch_elapsed=elapsed,
            )
        )
        if self.cancel.is_set():
            self.model.stop_training = True


def _lock_run(run: Run):
    """An exclusive lock on the run folder for as long as the returned file stays open."""
    lock = open(run.path / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunError(f"run {run.run_id} is being trained by another process") from None
    return lock


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def kept_epochs_text(epochs_done: int) -> str:
    return f"epochs 1-{epochs_done} kept" if epochs_done else "no epoch had completed"


def _evaluate(model, dataset: FashionMNIST, indices: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Probabilities, cross-entropy loss (no label smoothing) and accuracy on the evaluation images."""
    from data.pipeline import eval_dataset

    labels = dataset.test_labels[indices]
    probabilities = model.predict(
        eval_dataset(dataset.test_images[indices], labels, batch_size=EVAL_BATCH_SIZE), verbose=0
    ).astype(np.float32)
    true_class_probability = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(true_class_probability, 1e-7, 1.0))))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    return probabilities, loss, accuracy


def train_prepared(
    prepared: PreparedTraining,
    *,
    cancel: threading.Event | None = None,
    report: Callable[[EpochProgress], None] | None = None,
) -> Run:
    """Train ``prepared.run`` up to ``prepared.target_epochs``; returns the run with its final state.

    Status afterwards: ``complete`` (target reached), ``stopped`` (cancelled; completed epochs kept) or
    ``failed`` (an exception: completed epochs kept, the error recorded and raised again).
    """
    from data.pipeline import train_dataset

    cancel = cancel or threading.Event()
    report = report or (lambda progress: None)
    store, run, config = prepared.store, prepared.run, prepared.config
    target = prepared.target_epochs
    segments = plan_segments(run.state.get("segments", []), epochs_done=run.epochs_done, target_epochs=target)
    lock = _lock_run(run)  # one trainer per run, across processes (app and CLI)
    ACTIVE_RUNS.add(run.run_id)
    model = None
    try:
        store.remove_uncommitted_files(run)
        store.update_state(
            run,
            status="running",
            target_epochs=target,
            segments=segments,
            pid=os.getpid(),
            host=socket.gethostname(),
            message=f"training epochs {run.epochs_done + 1}-{target}",
        )
        report(EpochProgress(phase="building", epoch=run.epochs_done + 1, target_epochs=target))
        keras.backend.clear_session(free_memory=True)
        if run.epochs_done:
            model = store.load_model(run)
        else:
            model = build_compiled_model(config, prepared.precision)
        images = prepared.dataset.train_images[prepared.train_indices]
        labels = prepared.dataset.train_labels[prepared.train_indices]
        batches = -(-len(images) // config.batch_size)
        cumulative = run.total_seconds
        stopped_in = None
        for epoch in range(run.epochs_done + 1, target + 1):
            if cancel.is_set():
                stopped_in = epoch
                break
            segment = next(s for s in segments if s["start_epoch"] <= epoch <= s["end_epoch"])
            segment_steps = (segment["end_epoch"] - segment["start_epoch"] + 1) * batches
            first_step = (epoch - segment["start_epoch"]) * batches

            def learning_rate_for_step(batch, first_step=first_step, segment_steps=segment_steps):
                return learning_rate_at(
                    config.schedule,
                    peak=config.learning_rate,
                    step=first_step + batch,
                    total_steps=segment_steps,
                    steps_per_epoch=batches,
                )

            callback = ProgressCallback(
                cancel,
                report,
                epoch=epoch,
                target_epochs=target,
                batches=batches,
                batch_size=config.batch_size,
                images=len(images),
                learning_rate_for_step=learning_rate_for_step,
            )
            started = time.perf_counter()
            data = train_dataset(
                images, labels, batch_size=config.batch_size, augment=config.augment, seed=config.seed, epoch=epoch
            )
            fit = model.fit(data, epochs=epoch, initial_epoch=epoch - 1, verbose=0, callbacks=[callback], shuffle=False)
            train_seconds = time.perf_counter() - started
            if callback.batches_done < batches:  # stopped mid-epoch: the partial epoch is discarded
                stopped_in = epoch
                break

            report(
                EpochProgress(
                    phase="evaluating", epoch=epoch, target_epochs=target, batch=batches, batches_per_epoch=batches
                )
            )
            probabilities, test_loss, test_accuracy = _evaluate(model, prepared.dataset, prepared.eval_indices)
            report(
                EpochProgress(
                    phase="saving", epoch=epoch, target_epochs=target, batch=batches, batches_per_epoch=batches
                )
            )
            epoch_seconds = time.perf_counter() - started
            cumulative += epoch_seconds
            row = {
                "epoch": epoch,
                "train_loss": float(fit.history["loss"][-1]),
                "train_accuracy": float(fit.history["accuracy"][-1]),
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
                "epoch_seconds": epoch_seconds,
                "cumulative_seconds": cumulative,
                "learning_rate": learning_rate_for_step(batches - 1),
                "images_per_second": len(images) / train_seconds,
            }
            if not all(math.isfinite(value) for value in row.values()):
                raise RuntimeError(
                    f"training diverged in epoch {epoch} (loss or accuracy is not a number); "
                    "lower the learning rate and continue from the last epoch"
                )
            store.commit_epoch(
                run,
                row,
                save_checkpoint=model.save,
                probabilities=probabilities,
                eval_indices=prepared.eval_indices,
                eval_labels=prepared.dataset.test_labels[prepared.eval_indices],
            )
        if stopped_in is None:
            store.update_state(run, status="complete", message=f"trained {plural(run.epochs_done, 'epoch')}")
        else:
            store.update_state(
                run,
                status="stopped",
                message=f"stopped during epoch {stopped_in}: {kept_epochs_text(run.epochs_done)}, "
                f"the partial epoch {stopped_in} was discarded",
            )
        return run
    except BaseException as error:
        store.update_state(
            run,
            status="failed",
            message=f"failed during epoch {run.epochs_done + 1}: {type(error).__name__}: {error}; "
            + kept_epochs_text(run.epochs_done),
        )
        raise
    finally:
        ACTIVE_RUNS.discard(run.run_id)
        lock.close()  # releases the flock
        del model
        gc.collect()
