"""Training: prepare a run (new, resumed or extended), then train it epoch by epoch into the run store.

``prepare_training`` does everything that can fail fast (configuration, dataset, the plan of what to
train, the run folder) so that a caller can show the error before anything starts. ``train_prepared``
then trains the plan's epochs; each epoch is three steps:

1. ``train_epoch``: one ``model.fit`` pass over the shuffled training images, the learning rate set
   before every batch from the run's ``SegmentSchedule``. Entering and leaving ``fit`` once per epoch
   costs about 0.04 s; one ``fit`` over the whole run, committing from callbacks, saved 0.01 s of that
   (docs/benchmarks.md, section 13), so each epoch keeps its own ``fit``;
2. ``evaluate_with_features``: probabilities, loss and accuracy on the evaluation images, and their
   penultimate features from the same forward pass;
3. ``evaluate_and_commit`` writes the checkpoint, predictions and the epoch's feature map (those features
   projected to 2-D, ``resnet/core/explain.py``) with ``RunStore.write_epoch_files``, then the history row
   and state with ``RunStore.record_epoch`` (``resnet/store/runs.py``), which then writes the epoch's
   TensorBoard event files (``resnet/store/event_files.py``: outside the epoch's time, never its truth).
   The epoch's time is taken after the files are written, so it is the whole time a user waits.

Where it trains is ``config.gpus``: the model is built (or its checkpoint loaded), compiled and trained
under ``resnet.core.hardware.training_strategy``, one device by default, data-parallel over every GPU with
``"all"`` (``model.fit`` splits each batch across them). Checkpoints do not depend on it: a run trained on
several GPUs continues on one, and the other way round.

It never imports Streamlit: progress goes to a ``report`` callback, and cancellation comes through a
``threading.Event`` that is checked after every batch. A stop keeps every completed epoch and discards
the partial one. Each epoch's batches and random generators are fixed by (seed, epoch) (``seed_epoch``),
so a run that is stopped and resumed trains exactly as one that was never interrupted; TensorFlow's
global seed is set once per run, so the compiled train step is traced and optimised once per run.

Headless use: ``python -m resnet train --help`` (trains in that process); in the app,
``resnet.training.jobs.JobManager`` runs it in a child process (``resnet/training/worker.py``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from data.fashion_mnist import FashionMNIST, load_fashion_mnist
from data.pipeline import epoch_seed, eval_dataset, train_dataset
from data.subsets import stratified_subset
from resnet.config import TrainConfig
from resnet.core.explain import feature_map_arrays, predict_with_features
from resnet.core.hardware import Placement, training_placement, training_strategy, training_text
from resnet.core.model import build_compiled_model
from resnet.core.precision import choose_precision, resolve
from resnet.core.schedule import SegmentSchedule
from resnet.store import artefacts
from resnet.store.plan import TrainingPlan, plan_training
from resnet.store.runs import Run, RunStatus, RunStore
from resnet.training.protocol import EpochProgress, Phase
from resnet.training.until_returns import decide_after_epoch, split_validation
from resnet.wording import complete_message, diverged_message, failed_message, stopped_message

EVAL_BATCH_SIZE = 500

log = logging.getLogger(__name__)


@dataclass
class PreparedTraining:
    """A validated request: the plan, the run to train, its data, and the epochs to reach."""

    plan: TrainingPlan
    run: Run
    store: RunStore
    dataset: FashionMNIST
    train_indices: np.ndarray
    eval_indices: np.ndarray
    precision: str
    placement: Placement  # the devices it trains on (``config.gpus`` on this machine)
    validation_indices: np.ndarray  # training images an auto run holds out for its stopper (else empty)

    @property
    def config(self) -> TrainConfig:
        """The run's settings with ``epochs`` = the target."""
        return self.plan.config

    @property
    def target_epochs(self) -> int:
        return self.plan.target_epochs

    @property
    def last_epoch(self) -> int:
        """The last epoch to train: the target, or an auto run's end once it has decided (``plan.last_epoch``)."""
        return self.plan.last_epoch


@dataclass(frozen=True)
class EpochTraining:
    """What one training pass measured."""

    loss: float  # the optimised loss (with label smoothing)
    accuracy: float
    cross_entropy: float  # plain cross-entropy, comparable with the test loss
    seconds: float
    images_per_second: float
    learning_rate: float  # of the epoch's last batch


def prepare_training(
    config: TrainConfig,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    resume: bool = True,
    dataset_dir: str | os.PathLike | None = None,
    measure: bool = True,
) -> PreparedTraining:
    """Validate everything and pick the run to train; raises ConfigError, DatasetError or RunError.

    What is trained is ``resnet.store.plan.plan_training``'s answer: with ``run_id``, that run continues to
    ``config.epochs``; else, with ``resume``, the newest run of the same settings does; else a new run.
    A continued run keeps its settings but trains where ``config`` asks (``config.gpus``).

    Precision ``auto`` is measured here, the first time on this machine (``resnet.core.precision``), before
    a new run records it; and for a run without a checkpoint yet, in the process that trains it.
    ``measure=False`` is for a process that only creates the run for another to train (the app's
    server): it records the remembered or claimed answer, and the training process decides.
    """
    config.validate()
    store = store or RunStore()
    dataset = load_fashion_mnist(dataset_dir)
    plan = plan_training(store, config, run_id=run_id, resume=resume)
    if not plan.trains:
        raise plan.error()
    if plan.config.gpus != config.gpus:  # where to train is this request's, not the run's (not in its fingerprint)
        plan = dataclasses.replace(plan, config=plan.config.replace(gpus=config.gpus))
    placement = training_placement(config.gpus)
    log.info("%s", training_text(placement))
    train_indices = _subset(dataset.train_labels, config.train_subset, config.seed)
    train_indices, validation_indices = split_validation(plan.config, train_indices, dataset.train_labels)
    eval_indices = _subset(dataset.test_labels, config.eval_subset, config.seed)
    run = plan.run
    if run is None:
        precision = str(choose_precision(plan.config, cache_dir=store.root, measure=measure))
        run = store.create(
            config,
            precision=precision,
            device=placement.label,
            train_images=len(train_indices),
            eval_images=len(eval_indices),
            validation_images=len(validation_indices),
        )
    elif measure and not run.epochs_done and plan.config.precision == "auto":
        # No checkpoint fixes its precision yet: the process that trains it decides (and measures).
        precision = str(choose_precision(plan.config, cache_dir=store.root))
        if precision != run.state.precision:
            store.update_state(run, precision=precision)
    else:
        precision = run.state.precision or str(
            resolve(config, cache_dir=store.root)
        )  # a checkpoint keeps its precision
        log.info("precision: %s (run %s's own)", precision, run.run_id)
    return PreparedTraining(
        plan, run, store, dataset, train_indices, eval_indices, precision, placement, validation_indices
    )


def _subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:

    return stratified_subset(labels, size, seed=seed)


def seed_epoch(model, seed: int, epoch: int) -> None:
    """Seed every random generator of ``epoch`` from (seed, epoch), leaving TensorFlow's global seed alone.

    The batches (order and augmentation) depend on (seed, epoch) alone (``data.pipeline``, stateless ops);
    here Python's and NumPy's generators and the state of every Keras ``SeedGenerator`` in the model
    (dropout and the like; the ResNets have none) are set. TensorFlow's global seed is set once per run
    (``_model_for``): setting it clears TensorFlow's kernel caches, so each epoch would instantiate and
    optimise its compiled train and predict functions again (tensorflow/tensorflow#33297; issue 24).
    """
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value)
    for position, state in enumerate(_seed_generator_states(model)):
        generator_seed = np.random.default_rng([value, position]).integers(0, 2**31, size=2)
        state.assign(generator_seed.astype(state.dtype))


def _seed_generator_states(model) -> list:
    """The state variables of the model's Keras ``SeedGenerator``s (``model.variables`` includes them)."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


class ProgressCallback(keras.callbacks.Callback):
    """Sets the learning rate before each batch; after it, reports progress and honours a cancel."""

    def __init__(self, cancel, report, *, epoch, target_epochs, batches, batch_size, images, learning_rate_for_batch):
        super().__init__()
        self.cancel, self.report = cancel, report
        self.epoch, self.target_epochs = epoch, target_epochs
        self.batches, self.batch_size, self.images = batches, batch_size, images
        self.learning_rate_for_batch = learning_rate_for_batch
        self.batches_done = 0
        self.started = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.learning_rate_for_batch(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done = batch + 1
        elapsed = time.perf_counter() - self.started
        seen = min(self.batches_done * self.batch_size, self.images)
        self.report(
            EpochProgress(
                phase=Phase.TRAINING,
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


def average_replica_statistics(model) -> None:
    """Give every replica of a data-parallel model the mean of their BatchNorm moving statistics.

    Keras 3 updates non-trainable variables on each replica without aggregating them, so after an epoch
    on several devices each replica has its own moving mean and variance: ``predict`` would normalise each
    replica's share of a batch differently, and a checkpoint would keep the first replica's alone. These
    statistics are moving averages (linear in the batch statistics), so the mean taken once per epoch is
    the mean every step would have given (what ``tf.keras`` 2 did, with aggregation "mean").
    """
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync < 2:
        return
    for variable in model.non_trainable_variables:
        copies = strategy.experimental_local_results(variable.value)
        if len(copies) > 1 and np.issubdtype(np.dtype(variable.dtype), np.floating):
            variable.assign(np.mean([np.asarray(copy) for copy in copies], axis=0))


def train_epoch(model, prepared: PreparedTraining, schedule: SegmentSchedule, epoch: int, *, cancel, report):
    """One pass over the training images; None if it was cancelled before the last batch."""
    config = prepared.config
    images = prepared.dataset.train_images[prepared.train_indices]
    labels = prepared.dataset.train_labels[prepared.train_indices]
    batches = schedule.steps_per_epoch
    seed_epoch(model, config.seed, epoch)
    callback = ProgressCallback(
        cancel,
        report,
        epoch=epoch,
        target_epochs=prepared.last_epoch,
        batches=batches,
        batch_size=config.batch_size,
        images=len(images),
        learning_rate_for_batch=lambda batch: schedule.learning_rate(epoch, batch),
    )
    started = time.perf_counter()
    data = train_dataset(
        images, labels, batch_size=config.batch_size, augment=config.augment, seed=config.seed, epoch=epoch
    )
    fit = model.fit(data, epochs=epoch, initial_epoch=epoch - 1, verbose=0, callbacks=[callback], shuffle=False)
    average_replica_statistics(model)
    seconds = time.perf_counter() - started
    if callback.batches_done < batches:  # stopped mid-epoch: the partial epoch is discarded
        return None
    return EpochTraining(
        loss=float(fit.history["loss"][-1]),
        accuracy=float(fit.history["accuracy"][-1]),
        cross_entropy=float(fit.history.get("cross_entropy", [math.nan])[-1]),  # older checkpoints lack it
        seconds=seconds,
        images_per_second=len(images) / seconds,
        learning_rate=schedule.learning_rate(epoch, batches - 1),
    )


@dataclass(frozen=True)
class Evaluation:
    """What one pass over the evaluation images gives."""

    probabilities: np.ndarray  # (n, classes) float32
    features: np.ndarray  # (n, d) float32 penultimate features, from the same forward pass
    loss: float  # cross-entropy, no label smoothing
    accuracy: float


def evaluate_with_features(model, dataset: FashionMNIST, indices: np.ndarray) -> Evaluation:
    """Probabilities and penultimate features of the evaluation images in one forward pass, loss and accuracy."""
    labels = dataset.test_labels[indices]
    probabilities, features = predict_with_features(
        model, eval_dataset(dataset.test_images[indices], labels, batch_size=EVAL_BATCH_SIZE)
    )
    true_class_probability = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(true_class_probability, 1e-7, 1.0))))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    return Evaluation(probabilities, features, loss, accuracy)


def evaluate_validation(model, prepared: PreparedTraining) -> tuple[float, float]:
    """Cross-entropy and accuracy on an auto run's held-out training images; NaN for a run without them."""
    indices = prepared.validation_indices
    if not len(indices):
        return math.nan, math.nan
    labels = prepared.dataset.train_labels[indices]
    probabilities, _ = predict_with_features(
        model, eval_dataset(prepared.dataset.train_images[indices], labels, batch_size=EVAL_BATCH_SIZE)
    )
    true_class_probability = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(true_class_probability, 1e-7, 1.0))))
    return loss, float(np.mean(probabilities.argmax(axis=1) == labels))


def evaluate(model, dataset: FashionMNIST, indices: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Probabilities, cross-entropy loss (no label smoothing) and accuracy on the evaluation images."""
    evaluation = evaluate_with_features(model, dataset, indices)
    return evaluation.probabilities, evaluation.loss, evaluation.accuracy


def evaluate_and_commit(model, prepared: PreparedTraining, epoch: int, training: EpochTraining, *, started, report):
    """Evaluate after ``epoch``, then commit it; ``started`` is the epoch's start (perf_counter)."""
    store, run = prepared.store, prepared.run
    progress = {"epoch": epoch, "target_epochs": prepared.last_epoch}
    report(EpochProgress(phase=Phase.EVALUATING, **progress))
    evaluation = evaluate_with_features(model, prepared.dataset, prepared.eval_indices)
    test_loss, test_accuracy = evaluation.loss, evaluation.accuracy
    val_loss, val_accuracy = evaluate_validation(model, prepared)
    measured = (training.loss, training.accuracy, test_loss, test_accuracy)
    if len(prepared.validation_indices):
        measured += (val_loss, val_accuracy)
    if not all(math.isfinite(value) for value in measured):
        raise FloatingPointError(diverged_message(epoch))
    report(EpochProgress(phase=Phase.SAVING, **progress))
    files = store.write_epoch_files(
        run,
        epoch,
        save_checkpoint=model.save,
        probabilities=evaluation.probabilities,
        eval_indices=prepared.eval_indices,
        eval_labels=prepared.dataset.test_labels[prepared.eval_indices],
        # The epoch's map of the evaluation images (PCA of their features), kept for every epoch.
        feature_map=feature_map_arrays(evaluation.features, evaluation.probabilities),
    )
    epoch_seconds = time.perf_counter() - started  # training, evaluation and saving: what the user waited
    row = {
        "epoch": epoch,
        "train_loss": training.loss,
        "train_accuracy": training.accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "epoch_seconds": epoch_seconds,
        "cumulative_seconds": run.total_seconds + epoch_seconds,
        "learning_rate": training.learning_rate,
        "images_per_second": training.images_per_second,
        "train_cross_entropy": training.cross_entropy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
    }
    store.record_epoch(run, row, files)


def _model_for(prepared: PreparedTraining):
    """The run's model, built or loaded under its devices' strategy (so ``fit`` and ``predict`` use them all)."""
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(prepared.config.seed)  # once per run, before anything is traced (see seed_epoch)
    strategy = training_strategy(prepared.config.gpus, devices=prepared.placement.devices)
    with strategy.scope():
        if prepared.run.epochs_done:
            return artefacts.load_model(prepared.store, prepared.run)
        return build_compiled_model(prepared.config, prepared.precision)


def _train_epochs(prepared: PreparedTraining, *, cancel, report) -> int | None:
    """Train the plan's epochs; returns the epoch a stop interrupted, or None if all were trained."""
    run, config = prepared.run, prepared.config
    report(EpochProgress(phase=Phase.BUILDING, epoch=run.epochs_done + 1, target_epochs=prepared.last_epoch))
    model = _model_for(prepared)
    try:
        schedule = SegmentSchedule(
            config.schedule,
            peak=config.learning_rate,
            segments=prepared.plan.segments,
            steps_per_epoch=-(-len(prepared.train_indices) // config.batch_size),
        )
        epoch = run.epochs_done + 1
        if run.epochs_done:  # resumed: its last epoch's decision may not have been written (until_returns.py)
            schedule = _decide(prepared, schedule, run.epochs_done)
        while epoch <= prepared.last_epoch:
            if cancel.is_set():
                return epoch
            started = time.perf_counter()
            training = train_epoch(model, prepared, schedule, epoch, cancel=cancel, report=report)
            if training is None:
                return epoch
            evaluate_and_commit(model, prepared, epoch, training, started=started, report=report)
            schedule = _decide(prepared, schedule, epoch)
            epoch += 1
        return None
    finally:
        del model
        gc.collect()


def _decide(prepared: PreparedTraining, schedule: SegmentSchedule, epoch: int) -> SegmentSchedule:
    """After ``epoch``: the schedule to go on with (an auto run's cooldown, if it starts next epoch)."""
    decided = decide_after_epoch(prepared.store, prepared.run, prepared.config, epoch)
    if decided is None:
        return schedule
    prepared.plan = dataclasses.replace(prepared.plan, segments=decided)
    return dataclasses.replace(schedule, segments=decided)


def _on(message: str, placement: Placement) -> str:
    """``message`` and where the run trains, when that is worth saying (several GPUs, or "all" without them)."""
    return f"{message} {placement.note}" if placement.note else message


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
    cancel = cancel or threading.Event()
    report = report or (lambda progress: None)
    store, run, target = prepared.store, prepared.run, prepared.last_epoch
    doing = f"training epochs {run.epochs_done + 1}-{target}"
    if prepared.plan.auto and run.state.stop is None:
        doing = f"training from epoch {run.epochs_done + 1} until returns diminish (at most {target} epochs)"
    with store.locked(run):  # one trainer per run, across processes; while held, the run reads as running
        try:
            store.remove_uncommitted_files(run)
            store.update_state(
                run,
                status=RunStatus.RUNNING,
                target_epochs=target,
                segments=prepared.plan.segments,
                pid=os.getpid(),
                host=socket.gethostname(),
                message=_on(doing, prepared.placement),
            )
            stopped_in = _train_epochs(prepared, cancel=cancel, report=report)
            if stopped_in is None:
                done = complete_message(run.epochs_done)
                if run.state.stop is not None:  # an auto run says why it ended where it did
                    done = run.state.stop.sentence(float(run.history["test_accuracy"].iloc[-1]))
                store.update_state(run, status=RunStatus.COMPLETE, message=_on(done, prepared.placement))
            else:
                store.update_state(run, status=RunStatus.STOPPED, message=stopped_message(stopped_in, run.epochs_done))
            return run
        except BaseException as error:
            reason = str(error) if isinstance(error, FloatingPointError) else f"{type(error).__name__}: {error}"
            store.update_state(run, status=RunStatus.FAILED, message=failed_message(run.epochs_done, reason))
            raise
