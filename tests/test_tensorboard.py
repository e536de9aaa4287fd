"""Runs in TensorBoard (issue 23): event files written as each epoch commits, read back with TensorBoard's own
reader; the Projector export; runs trained before event files existed; damage to the folder; TensorBoard's
HTTP data API on a tiny cache.

The runs are the suite's finished tiny run (ResNet-18, 2 epochs on 256 images, 200 evaluated), trained once
per session; tests copy it before changing anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import FINISHED, copy_run

from data.fashion_mnist import CLASS_NAMES
from resnet.analysis import confusion_matrix
from resnet.store import artefacts, event_files, projector
from resnet.store.runs import RunStore

SCALAR_COLUMNS = {split: tags for split, tags in event_files.SCALARS.items() if split != "validation"}


def accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loaded = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    loaded.Reload()
    return loaded


def values(loaded, tag: str) -> tuple[list[int], list[float]]:
    from tensorboard.util import tensor_util

    events = loaded.Tensors(tag)
    return [event.step for event in events], [float(tensor_util.make_ndarray(event.tensor_proto)) for event in events]


def cli(*argv: str) -> tuple[int, str]:
    from resnet.__main__ import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main(list(argv))
    return code, output.getvalue()


@pytest.fixture
def run_copy(trained, cache_dir):
    """A copy of the finished run in the test's cache, with the event files its training wrote."""
    source = trained(FINISHED).path
    folder = copy_run(source, cache_dir)
    shutil.copytree(source / event_files.FOLDER, folder / event_files.FOLDER)
    store = RunStore(cache_dir)
    return store, store.load(folder.name)


def test_each_commit_writes_event_files_that_read_back_as_the_history(trained):
    """The files the training itself wrote (no export): every epoch's scalars equal history.csv's, the
    HParams are the config's, and each epoch has its confusion matrix as an image."""
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    store = RunStore(trained(FINISHED).path.parent)
    run = store.load(trained(FINISHED).run_id)
    root = event_files.folder_of(run)
    history = run.history
    epochs = list(history["epoch"])
    assert epochs == [1, 2]
    for split, tags in SCALAR_COLUMNS.items():
        loaded = accumulator(root / split)
        for tag, column in tags.items():
            steps, found = values(loaded, tag)
            expected = np.maximum.accumulate(history["test_accuracy"]) if column is None else history[column]
            assert steps == epochs, (split, tag)
            assert found == pytest.approx(list(expected), rel=1e-6), (split, tag)
    assert not (root / "validation").exists()  # a fixed run holds no images out

    loaded = accumulator(root)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        loaded.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    )
    recorded = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    assert recorded == {**run.config.to_dict(), "trained_precision": run.state.precision}
    experiment = hparams_metadata.parse_experiment_plugin_data(
        loaded.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG).plugin_data.content
    )
    assert {(metric.name.group, metric.name.tag) for metric in experiment.metric_infos} >= {
        ("test", "epoch_accuracy"), ("test", "best_accuracy"), ("train", "cumulative_seconds"),
    }  # fmt: skip
    assert {info.name for info in experiment.hparam_infos} >= set(run.config.to_dict())

    images = accumulator(root / "test")
    from tensorboard.util import tensor_util

    shown = images.Tensors(event_files.CONFUSION_TAG)
    assert [event.step for event in shown] == epochs
    predictions = store.load_predictions(run)
    counts = confusion_matrix(predictions["labels"], predictions["probabilities"].argmax(axis=1))
    for event in shown:
        width, height, png = tensor_util.make_ndarray(event.tensor_proto)
        image = Image.open(io.BytesIO(png))
        assert (
            image.size
            == (int(width), int(height))
            == (event_files.LABELS + 10 * event_files.CELL, 18 + 10 * event_files.CELL)
        )
    assert png == event_files.confusion_png(counts)[0]  # the last epoch's image is its stored predictions'
    assert counts.sum() == run.state.eval_images


def test_written_files_are_what_an_export_would_write(run_copy):
    """Idempotent: the commit-time files equal those written later from the records, byte for byte."""
    store, run = run_copy
    synced = event_files.sync(store, run)
    assert synced.written == [] and synced.removed == [], synced
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard")
    assert code == 0 and "up to date" in output and f"tensorboard --logdir {store.root}" in output, output


def test_a_run_trained_before_event_files_gets_them_on_export(run_copy):
    store, run = run_copy
    shutil.rmtree(event_files.folder_of(run))
    assert not store.load(run.run_id).damaged
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard")
    assert code == 0 and f"{run.run_id}: event files 6 written" in output, output
    root = event_files.folder_of(run)
    steps, found = values(accumulator(root / "test"), "epoch_accuracy")
    assert steps == [1, 2] and found == pytest.approx(list(run.history["test_accuracy"]), rel=1e-6)
    # The predictions of epoch 1 are gone (a run keeps its last epoch's): only epoch 2 gets an image.
    assert [event.step for event in accumulator(root / "test").Tensors("confusion_matrix")] == [2]
    assert "up to date" in cli("--cache-dir", str(store.root), "export-tensorboard")[1]


def test_a_process_that_trains_a_run_on_first_writes_every_missing_epochs_files(run_copy, dataset_dir):
    """A commit writes its own epoch's files; the first commit of a process checks them all, so event files
    lost to a kill between a commit and its event files (or to a hand) come back when the run goes on."""
    from resnet.training.trainer import prepare_training, train_prepared

    store, run = run_copy
    root = event_files.folder_of(run)
    (root / "train" / "events.out.tfevents.0001.scalars").unlink()
    shutil.rmtree(root / "test")
    config = run.config.replace(epochs=3)
    train_prepared(prepare_training(config, store=RunStore(store.root), run_id=run.run_id, dataset_dir=dataset_dir))
    run = store.load(run.run_id)
    assert run.epochs_done == 3
    for split in ("train", "test"):
        steps, found = values(accumulator(root / split), "epoch_accuracy")
        assert steps == [1, 2, 3] and found == pytest.approx(list(run.history[f"{split}_accuracy"]), rel=1e-6)
    assert event_files.sync(store, run).written == []


def test_damage_to_the_folder_is_rewritten_and_never_damages_the_run(run_copy, tmp_path):
    store, run = run_copy
    root = event_files.folder_of(run)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the run's")
    confusion_1 = root / "test" / "events.out.tfevents.0001.confusion"
    original = confusion_1.read_bytes()
    (root / "train" / "events.out.tfevents.0002.scalars").write_bytes(b"garbage")
    (root / "test" / "events.out.tfevents.0001.scalars").unlink()
    (root / "test" / "events.out.tfevents.0001.scalars").mkdir()  # a folder where the file belongs
    (root / "test" / "events.out.tfevents.0009.scalars").write_bytes(b"an epoch never committed")
    (root / "validation").symlink_to(outside)  # never followed
    (root / "train" / "notes.txt").write_text("a user's own file")
    stale = root / "test" / ".tmp-abc.events"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert not store.load(run.run_id).damaged
    synced = event_files.sync(store, run)
    assert sorted(synced.written) == ["test/events.out.tfevents.0001.scalars", "train/events.out.tfevents.0002.scalars"]
    assert {"test/events.out.tfevents.0009.scalars", "test/.tmp-abc.events"} <= set(synced.removed)
    assert confusion_1.read_bytes() == original  # sound: kept, though it cannot be written again
    assert (root / "train" / "notes.txt").exists() and sorted(os.listdir(outside)) == ["keep.txt"]
    assert not os.path.lexists(root / "validation")
    assert event_files.sync(store, run).written == []

    confusion_1.write_bytes(original[:-3])  # truncated: no longer reads back, and cannot be rewritten
    assert "test/events.out.tfevents.0001.confusion" in event_files.sync(store, run).removed
    shutil.rmtree(root)
    root.write_text("a file where the folder was")
    assert not store.load(run.run_id).damaged
    event_files.sync(store, run)
    assert root.is_dir() and (root / event_files.HPARAMS_FILE).is_file()


def test_a_check_never_removes_what_a_trainer_committed_since(run_copy, dataset_dir):
    """An export with a run read before the trainer's last commits (a page's runs), or during a commit."""
    from resnet.training.trainer import prepare_training, train_prepared

    store, stale = run_copy
    train_prepared(
        prepare_training(
            stale.config.replace(epochs=3), store=RunStore(store.root), run_id=stale.run_id, dataset_dir=dataset_dir
        )
    )
    test = event_files.folder_of(stale) / "test"
    assert stale.epochs_done == 2
    assert event_files.sync(store, stale).removed == []
    assert {"events.out.tfevents.0003.scalars", "events.out.tfevents.0003.confusion"} <= set(os.listdir(test))

    # While a trainer holds the run's lock, a file of an epoch after the committed ones is its own.
    later = test / "events.out.tfevents.0004.scalars"
    later.write_bytes(b"a trainer's, written right after its commit")
    run = store.load(stale.run_id)
    with store.locked(run):
        assert event_files.sync(store, run).removed == [] and later.exists()
    assert event_files.sync(store, run).removed == ["test/events.out.tfevents.0004.scalars"]


def test_the_projector_export_follows_no_link(run_copy, dataset, tmp_path):
    store, run = run_copy
    outside = tmp_path / "outside"
    (outside / "epoch-0002").mkdir(parents=True)
    (outside / "epoch-0002" / "features.tsv").write_text("1\t2\n" * run.state.eval_images)
    before = sorted(str(path) for path in outside.rglob("*"))
    (event_files.folder_of(run) / projector.FOLDER).symlink_to(outside)
    exported = projector.export(
        store, run, None, compute=lambda run, indices: np.ones((len(indices), 7)),
        test_images=dataset.test_images, test_labels=dataset.test_labels,
    )  # fmt: skip
    assert exported.computed and exported.dimensions == 7  # not the 2 columns behind the link
    assert sorted(str(path) for path in outside.rglob("*")) == before
    assert not projector.epoch_folder(run, 2).parent.is_symlink()
    assert "projector/epoch-0002/features.tsv" in (event_files.folder_of(run) / projector.CONFIG_FILE).read_text()


def test_delete_removes_the_tensorboard_folder(run_copy, trained):
    store, run = run_copy
    store.delete(run.run_id)
    assert not run.path.exists()


def test_projector_export_writes_features_metadata_and_sprite(run_copy, dataset):
    store, run = run_copy
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard", run.run_id, "--projector")
    assert code == 0 and "computed from the checkpoint" in output, output
    folder = projector.epoch_folder(run, 2)
    features = np.loadtxt(folder / "features.tsv", delimiter="\t")
    feature_map = artefacts.load_feature_map(store, run, 2)
    indices = feature_map["indices"]
    assert features.shape == (run.state.eval_images, 512) and np.isfinite(features).all()
    from resnet.core import explain  # the checkpoint's own features, in the order of the metadata

    model = artefacts.load_model(store, run)
    expected = explain.penultimate_features(model, dataset.test_images[indices[:8]])
    assert features[:8] == pytest.approx(expected, rel=1e-3, abs=1e-4)
    rows = (folder / "metadata.tsv").read_text().splitlines()
    assert rows[0].split("\t") == list(projector.METADATA_COLUMNS) and len(rows) == 1 + len(indices)
    for row, index, predicted in zip(rows[1:], indices, feature_map["predicted"], strict=True):
        label, guess, correct, _, test_index = row.split("\t")
        assert (label, guess, int(test_index)) == (
            CLASS_NAMES[dataset.test_labels[index]],
            CLASS_NAMES[predicted],
            index,
        )
        assert correct == ("right" if label == guess else "wrong")
    sprite = np.asarray(Image.open(folder / "sprite.png"))
    side = math.ceil(math.sqrt(len(indices)))
    assert sprite.shape == (side * 28, side * 28)
    assert (sprite[:28, 28:56] == dataset.test_images[indices[1]]).all()
    config = (event_files.folder_of(run) / projector.CONFIG_FILE).read_text()
    assert 'tensor_path: "projector/epoch-0002/features.tsv"' in config and "single_image_dim: 28" in config

    code, output = cli("--cache-dir", str(store.root), "export-tensorboard", run.run_id, "--projector")
    assert code == 0 and "features already on disk" in output, output
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard", run.run_id, "--projector", "--epoch", "1")
    assert code == 2 and "checkpoint is gone" in output, output
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard", "--projector")
    assert code == 2 and "need a run id" in output, output
    code, output = cli("--cache-dir", str(store.root), "export-tensorboard", run.run_id, "--epoch", "2")
    assert code == 2 and "add --projector" in output, output


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_the_runs_scalars_hparams_images_and_projector_live(run_copy, tmp_path, dataset_dir):
    """A real ``tensorboard --logdir`` on the tiny cache, asked through its HTTP data API: what the run's
    training wrote, the Projector's export, and an epoch committed while it runs."""
    from resnet.training.trainer import prepare_training, train_prepared

    store, run = run_copy
    assert cli("--cache-dir", str(store.root), "export-tensorboard", run.run_id, "--projector")[0] == 0
    port = _free_port()
    tensorboard = Path(sys.executable).with_name("tensorboard")
    command = [str(tensorboard), "--logdir", str(store.root), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        # The Python loader (not the default Rust one): it reads a folder's files in name order, the stricter.
        [*command, "--reload_interval", "1", "--load_fast", "false"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "tensorboard.log", "w"),  # noqa: SIM115 (closed with the process)
    )
    base = f"http://127.0.0.1:{port}/data"
    test_run = f"{run.run_id}/tensorboard/test"
    try:
        deadline, runs = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                runs = _get(f"{base}/runs")
                if test_run in runs:
                    break
            time.sleep(0.5)
        assert {f"{run.run_id}/tensorboard", test_run, f"{run.run_id}/tensorboard/train"} <= set(runs), (
            runs, (tmp_path / "tensorboard.log").read_text()[-2000:],
        )  # fmt: skip
        scalars = _get(f"{base}/plugin/scalars/scalars?run={test_run}&tag=epoch_accuracy")
        assert [step for _, step, _ in scalars] == [1, 2]
        assert [value for *_, value in scalars] == pytest.approx(list(run.history["test_accuracy"]), rel=1e-6)
        images = _get(f"{base}/plugin/images/images?run={test_run}&tag=confusion_matrix")
        assert [image["step"] for image in images] == [1, 2]
        experiment = _get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        assert {info["name"] for info in experiment["hparamInfos"]} >= {"depth", "batch_size", "learning_rate"}
        groups = _get(
            f"{base}/plugin/hparams/session_groups",
            {"startIndex": 0, "sliceSize": 10, "allowedStatuses": ["STATUS_UNKNOWN"], "colParams": []},
        )
        (group,) = groups["sessionGroups"]
        assert group["hparams"]["depth"] == 18 and group["hparams"]["batch_size"] == 64
        metrics = {(value["name"]["group"], value["name"]["tag"]): value["value"] for value in group["metricValues"]}
        assert metrics[("test", "epoch_accuracy")] == pytest.approx(run.history["test_accuracy"].iloc[-1], rel=1e-6)

        session_run = f"{run.run_id}/tensorboard"
        assert session_run in _get(f"{base}/plugin/projector/runs")
        (embedding,) = _get(f"{base}/plugin/projector/info?run={session_run}")["embeddings"]
        assert embedding["tensorShape"] == [run.state.eval_images, 512]
        assert embedding["sprite"]["singleImageDim"] == [28, 28]

        # Live: an epoch committed now appears without restarting TensorBoard.
        train_prepared(
            prepare_training(run.config.replace(epochs=3), store=store, run_id=run.run_id, dataset_dir=dataset_dir)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(scalars) < 3:
            time.sleep(0.5)
            scalars = _get(f"{base}/plugin/scalars/scalars?run={test_run}&tag=epoch_accuracy")
        assert [step for _, step, _ in scalars] == [1, 2, 3]
        assert scalars[-1][2] == pytest.approx(store.load(run.run_id).history["test_accuracy"].iloc[-1], rel=1e-6)
        images = _get(f"{base}/plugin/images/images?run={test_run}&tag=confusion_matrix")
        assert [image["step"] for image in images] == [1, 2, 3]  # the new epoch's image too, not skipped
    finally:
        process.terminate()
        process.wait(timeout=30)
