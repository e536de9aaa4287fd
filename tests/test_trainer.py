"""Real training on tiny subsets: loss goes down, epochs are committed as they finish, stop keeps
completed epochs, runs extend, and only one training runs at a time."""

from __future__ import annotations

import contextlib
import re
import threading
import time

import numpy as np
import pytest
from support import STARTED, copy_run, written

from resnet.config import ConfigError, TrainConfig
from resnet.core.precision import resolve
from resnet.core.schedule import Segment
from resnet.store import artefacts
from resnet.store.runs import RunError, RunStore
from resnet.training import trainer
from resnet.training.jobs import JobAlreadyRunning, JobManager
from resnet.training.trainer import prepare_training, train_prepared

# Small enough for seconds per epoch on two CPU cores: the suite's one-epoch run (tests/support.py).
TINY = STARTED


@pytest.mark.slow  # long run
def test_two_epochs_of_resnet50_lower_the_training_loss(cache_dir):
    config = TrainConfig(
        epochs=2,
        batch_size=64,
        train_subset=512,
        eval_subset=200,
        depth=50,
        optimizer="adam",
        learning_rate=1e-3,
        schedule="constant",
        augment=False,
        label_smoothing=0.0,
    )
    run = train_prepared(prepare_training(config, store=RunStore(cache_dir)))
    history = run.history
    assert history["epoch"].tolist() == [1, 2]
    assert history["train_loss"][1] < history["train_loss"][0]
    # auto precision: what this machine resolves for ResNet-50 at batch 64 (measured if its hardware claims a
    # mixed policy, float32 if it claims none).
    assert run.status == "complete" and run.state.precision == resolve(config, cache_dir=cache_dir)
    assert all(history["images_per_second"] > 0)
    assert history["cumulative_seconds"].tolist() == pytest.approx(history["epoch_seconds"].cumsum().tolist())
    # Without label smoothing the optimised loss is the plain cross-entropy, which is also recorded.
    assert history["train_cross_entropy"].tolist() == pytest.approx(history["train_loss"].tolist(), rel=1e-3)
    # A finished run holds one checkpoint (283 MB for ResNet-50 with its optimizer state), not two.
    assert [path.name for path in run.path.glob("checkpoint-*")] == ["checkpoint-0002.keras"]


def test_history_checkpoint_and_predictions_exist_after_each_epoch(cache_dir):
    store = RunStore(cache_dir)
    prepared = prepare_training(TINY.replace(epochs=2), store=store)
    seen_during_epoch_2 = {}

    def report(progress):
        if progress.epoch == 2 and progress.phase == "training" and not seen_during_epoch_2:
            run = store.load(prepared.run.run_id)
            seen_during_epoch_2.update(
                epochs=run.history["epoch"].tolist(),
                checkpoint=run.checkpoint_path.name,
                checkpoint_exists=run.checkpoint_path.is_file(),
                predictions=store.load_predictions(run)["probabilities"].shape,
            )

    run = train_prepared(prepared, report=report)
    assert seen_during_epoch_2 == {
        "epochs": [1],
        "checkpoint": "checkpoint-0001.keras",
        "checkpoint_exists": True,
        "predictions": (200, 10),
    }
    files = sorted(path.name for path in run.path.iterdir() if not path.name.startswith("."))
    # Epoch 1's checkpoint and predictions went right after epoch 2's commit: a finished run holds one.
    assert files == [
        "checkpoint-0002.keras",
        "config.json",
        "history.csv",
        "map-0001.npz",  # the feature maps of every epoch stay (resnet/core/explain.py)
        "map-0002.npz",
        "predictions-0002.npz",
        "state.json",
        "tensorboard",  # the epochs' TensorBoard event files (resnet/store/event_files.py)
    ]
    predictions = store.load_predictions(run)
    assert np.allclose(predictions["probabilities"].astype(np.float32).sum(axis=1), 1.0, atol=0.02)
    accuracy = (predictions["probabilities"].argmax(axis=1) == predictions["labels"]).mean()
    assert accuracy == pytest.approx(run.history["test_accuracy"].iloc[-1])


@pytest.mark.slow  # long run
def test_stop_during_epoch_two_keeps_epoch_one_and_extending_continues(cache_dir):
    store = RunStore(cache_dir)
    manager = JobManager(store)

    def stop_in_epoch_two(progress, original=manager._report):
        original(progress)
        if progress.epoch == 2 and progress.phase == "training" and progress.batch == 2:
            manager.stop()

    manager._report = stop_in_epoch_two  # stop at a known batch, through the public stop()
    # 10 batches per epoch: the stop reaches the training child within a batch or two, still mid-epoch.
    run_id = manager.start(TINY.replace(epochs=3, train_subset=640))
    assert manager.wait(timeout=600)
    snapshot = manager.snapshot()
    assert snapshot.state == "stopped"
    run = store.load(run_id)
    assert run.status == "stopped" and run.epochs_done == 1
    assert run.history["epoch"].tolist() == [1]
    assert "epochs 1-1 kept, the partial epoch 2 was discarded" in run.message
    assert run.checkpoint_path.name == "checkpoint-0001.keras"

    # Asking for the same configuration again continues this run from its checkpoint.
    manager._report = JobManager._report.__get__(manager)
    assert manager.start(TINY.replace(epochs=2, train_subset=640)) == run_id
    assert manager.wait(timeout=600) and manager.snapshot().state == "complete"
    run = store.load(run_id)
    assert run.history["epoch"].tolist() == [1, 2]
    assert run.history["cumulative_seconds"].is_monotonic_increasing


def test_extending_a_finished_run_trains_only_the_new_epochs(cache_dir, trained):
    store = RunStore(cache_dir)
    first = store.load(copy_run(trained(STARTED).path, cache_dir).name)  # TINY, trained once per session
    first_row = first.history.iloc[0].to_dict()
    with pytest.raises(RunError, match="already has 1 epoch "):
        prepare_training(TINY, store=store)
    epochs_trained = []
    extended = train_prepared(
        prepare_training(TINY.replace(epochs=2), store=store, run_id=first.run_id),
        report=lambda progress: epochs_trained.append(progress.epoch),
    )
    assert set(epochs_trained) == {2}
    assert extended.run_id == first.run_id
    assert extended.history.iloc[0].to_dict() == pytest.approx(first_row, rel=1e-5, nan_ok=True)
    assert extended.history["epoch"].tolist() == [1, 2]
    assert extended.state.segments == (Segment(1, 1), Segment(2, 2))
    with pytest.raises(ConfigError, match="only epochs can change"):
        prepare_training(TINY.replace(epochs=3, batch_size=32), store=store, run_id=first.run_id)


def test_a_second_start_while_running_is_refused(cache_dir):
    manager = JobManager(RunStore(cache_dir))
    manager.start(TINY.replace(epochs=2))
    with pytest.raises(JobAlreadyRunning, match="already running"):
        manager.start(TINY.replace(seed=7))
    assert sum(thread.name == "resnet-training" for thread in threading.enumerate()) == 1
    manager.stop()
    assert manager.wait(timeout=600)
    assert manager.snapshot().state in ("stopped", "complete")
    assert len(RunStore(cache_dir).list_runs()) == 1


def test_invalid_configs_raise_before_anything_starts(cache_dir):
    manager = JobManager(RunStore(cache_dir))
    with pytest.raises(ConfigError, match="batch_size must be between 8 and 2048"):
        manager.start(TrainConfig(batch_size=4))
    assert manager.snapshot().state == "idle"
    assert written(cache_dir) == []


class SlowSavingStore(RunStore):
    """A run store whose checkpoint and predictions take ``SAVE_SECONDS`` longer to write (a slow disk)."""

    SAVE_SECONDS = 2.0

    def write_epoch_files(self, run, epoch, **files):
        time.sleep(self.SAVE_SECONDS)
        return super().write_epoch_files(run, epoch, **files)


@pytest.mark.slow  # long run
def test_epoch_time_includes_writing_the_checkpoint(cache_dir):
    store = SlowSavingStore(cache_dir)
    started = time.perf_counter()
    run = train_prepared(prepare_training(TINY.replace(epochs=2), store=store))
    waited = time.perf_counter() - started
    history = run.history
    training_seconds = run.state.train_images / history["images_per_second"]
    assert (history["epoch_seconds"] - training_seconds >= SlowSavingStore.SAVE_SECONDS).all(), history
    assert history["cumulative_seconds"].iloc[-1] == pytest.approx(history["epoch_seconds"].sum())
    assert history["cumulative_seconds"].iloc[-1] <= waited  # never more than the user waited


def _stop_after_epoch_one(cancel):
    def report(progress):
        if progress.epoch == 1 and progress.phase == "saving":
            cancel.set()  # epoch 1 is committed, epoch 2 never starts

    return report


@pytest.mark.slow  # long run
def test_a_resumed_run_trains_exactly_like_an_uninterrupted_one(cache_dir):
    config = TINY.replace(epochs=3, augment=True)
    store = RunStore(cache_dir)  # both runs in one cache: the same precision (auto is measured once per cache)
    whole = store.load(train_prepared(prepare_training(config, store=store, resume=False)).run_id)  # as written

    cancel = threading.Event()
    first = train_prepared(
        prepare_training(config, store=store, resume=False), cancel=cancel, report=_stop_after_epoch_one(cancel)
    )
    assert (first.status, first.epochs_done) == ("stopped", 1)
    # Resumed in a fresh training process, as the app does (no random state left over from epoch 1).
    manager = JobManager(store)
    assert manager.start(config, run_id=first.run_id) == first.run_id
    assert manager.wait(timeout=600) and manager.snapshot().state == "complete", manager.snapshot()
    resumed = store.load(first.run_id)

    columns = ["epoch", "learning_rate", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert resumed.history["learning_rate"].tolist() == whole.history["learning_rate"].tolist()
    # The same batches in the same order, augmented the same way: the same losses (to float noise).
    assert resumed.history[columns].to_numpy() == pytest.approx(whole.history[columns].to_numpy(), rel=1e-4)


def test_each_epoch_restarts_the_models_keras_seed_generators_from_seed_and_epoch():
    import keras

    from resnet.training.trainer import seed_epoch

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])  # a layer with a SeedGenerator
    ones = np.ones((4, 64), dtype=np.float32)

    def masks(epoch):
        seed_epoch(model, 7, epoch)
        return [model(ones, training=True).numpy() for _ in range(2)]

    first = masks(3)
    assert not np.array_equal(first[0], first[1])  # the generator moves on within an epoch
    assert np.array_equal(masks(3), first)  # and restarts where epoch 3 starts, whatever ran before
    assert not np.array_equal(masks(4)[0], first[0])


def test_a_diverged_epoch_fails_the_run_says_what_works_and_keeps_the_completed_epochs(cache_dir, trained):
    store = RunStore(cache_dir)
    run = store.load(copy_run(trained(STARTED).path, cache_dir).name)  # TINY, trained once per session
    model = artefacts.load_model(store, run)  # poison the weights as a diverged optimiser step would
    logits = model.get_layer("logits")
    logits.kernel.assign(np.full(logits.kernel.shape, np.nan, dtype=np.float32))
    run.checkpoint_path.unlink()  # a hard link to the session's run: replaced, not written through
    model.save(run.checkpoint_path)
    with pytest.raises(FloatingPointError, match="training diverged in epoch 2"):
        train_prepared(prepare_training(TINY.replace(epochs=2), store=store, run_id=run.run_id))
    failed = store.load(run.run_id)
    assert (failed.status, failed.epochs_done) == ("failed", 1)
    assert "start a new run with a lower learning rate" in failed.message and "epochs 1-1 kept" in failed.message
    assert "continue from the last epoch" not in failed.message


@contextlib.contextmanager
def compiled_functions():
    """The names of the functions TensorFlow instantiates meanwhile, once per instantiation.

    Instantiating a traced function (graph optimisation, kernels) is what a call after TensorFlow's
    kernel caches were cleared pays again, without a new trace: resetting the global seed clears them.
    TensorFlow's graph collection records every instantiation's graphs; a function's name carries its
    trace's unique id, so distinct names are distinct traces.
    """
    from tensorflow.python.eager import context

    tensorflow_context = context.context()
    tensorflow_context.export_run_metadata()  # discard anything recorded before
    tensorflow_context.enable_graph_collection()
    names = []
    try:
        yield names
    finally:
        metadata = tensorflow_context.export_run_metadata()
        tensorflow_context.disable_graph_collection()
        for graphs in metadata.function_graphs:
            names.extend(function.signature.name for function in graphs.pre_optimization_graph.library.function)


TRAIN_STEP = re.compile(r"__inference_one_step_on_data_\d+$")  # Keras' train step (its predict step is ..._distributed)


def train_step_tracings(model) -> int:
    """How often Keras traced ``model``'s train step: the tf.functions inside ``model.train_function``."""
    cells = [cell.cell_contents for cell in model.train_function.__closure__]
    functions = [value for value in cells if hasattr(value, "experimental_get_tracing_count")]
    assert functions, "Keras' train function no longer closes over its tf.function"
    return sum(function.experimental_get_tracing_count() for function in functions)


def test_a_run_traces_and_compiles_its_train_step_once_not_once_per_epoch(cache_dir, monkeypatch):
    """Issue 24: resetting TensorFlow's global seed before each epoch compiled the train step again every epoch."""
    models = []
    model_for = trainer._model_for
    monkeypatch.setattr(trainer, "_model_for", lambda prepared: models.append(model_for(prepared)) or models[-1])
    store = RunStore(cache_dir)
    # float32: an `auto` precision would first time candidates here, compiling their own train steps.
    config = TINY.replace(epochs=3, train_subset=128, eval_subset=100, augment=True, precision="float32")
    with compiled_functions() as compiled:
        run = train_prepared(prepare_training(config, store=store))
    assert run.epochs_done == 3
    assert [train_step_tracings(model) for model in models] == [1]
    train_steps = [name for name in compiled if TRAIN_STEP.match(name)]
    assert len(train_steps) == 1, compiled

    # Resumed from its checkpoint (here: extended), the run builds a new model: traced and compiled once more.
    with compiled_functions() as compiled:
        train_prepared(prepare_training(config.replace(epochs=4), store=store, run_id=run.run_id))
    assert [train_step_tracings(model) for model in models] == [1, 1]
    resumed_train_steps = [name for name in compiled if TRAIN_STEP.match(name)]
    assert len(resumed_train_steps) == 1 and resumed_train_steps != train_steps, compiled
