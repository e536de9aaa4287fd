"""Nothing lost, nothing crashes: real kills, real write failures, a real full disk, real concurrency."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
from support import STARTED, copy_run, own_file, written

from resnet.store import artefacts
from resnet.store.runs import DamagedRun, RunStore
from resnet.training.jobs import JobAlreadyRunning, JobManager

pytestmark = pytest.mark.slow  # fault injection: kills, torn writes, a full disk

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY = STARTED  # tests/support.py
TINY_FLAGS = ["--subset", "256", "--eval-subset", "200", "--batch-size", "64", "--depth", "18", "--augment", "false"]


def cli(*args, cache_dir, **kwargs):
    environment = {**os.environ, "RESNET_CACHE_DIR": str(cache_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "resnet", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_for(condition, *, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def committed_epochs(cache_dir: Path) -> int:
    for state in cache_dir.glob("*/state.json"):
        try:
            return json.loads(state.read_text())["epochs_done"]
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def test_sigkill_mid_epoch_keeps_completed_epochs_and_the_run_extends(cache_dir, dataset_dir):
    process = cli("train", "--epochs", "4", *TINY_FLAGS, cache_dir=cache_dir)
    try:
        # epochs_done == 2 is committed last, so from then on the process is inside epoch 3.
        wait_for(lambda: committed_epochs(cache_dir) >= 2, timeout=600)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    store = RunStore(cache_dir)
    (run,) = store.list_runs()
    assert run.status == "interrupted"
    k = run.epochs_done
    assert k in (2, 3)  # 3 only if epoch 3 finished within the half second
    assert run.history["epoch"].tolist() == list(range(1, k + 1))
    assert run.checkpoint_path.name == f"checkpoint-{k:04d}.keras" and zipfile.is_zipfile(run.checkpoint_path)
    assert int(store.load_predictions(run)["epoch"]) == k

    resumed = cli("train", "--epochs", "4", *TINY_FLAGS, cache_dir=cache_dir)
    output, errors = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, errors
    run = store.load(run.run_id)
    assert run.status == "complete"
    assert run.history["epoch"].tolist() == [1, 2, 3, 4]
    assert run.history["cumulative_seconds"].is_monotonic_increasing
    assert run.checkpoint_path.name == "checkpoint-0004.keras"
    # The committed checkpoint alone: the previous epoch's goes right after each commit.
    checkpoints = sorted(path.name for path in run.path.iterdir() if "checkpoint" in path.name)
    assert checkpoints == ["checkpoint-0004.keras"]


EPOCH_REPEATS = 200_000  # each checkpoint of WRITER holds str(epoch) this many times
EPOCH_LIMIT = 400  # a run holds at most 500 epochs: a fast machine commits that many within the kills
WRITER = (
    textwrap.dedent(
        """
    import sys, zipfile, numpy as np
    from resnet.config import TrainConfig
    from resnet.store.runs import HISTORY_COLUMNS, RunStore

    store = RunStore(sys.argv[1])
    runs = [run for run in store.list_runs() if run.epochs_done < EPOCH_LIMIT]
    run = runs[0] if runs else store.create(TrainConfig(epochs=500, train_subset=100, batch_size=8),
                                              precision="float32", device="test", train_images=100, eval_images=100)
    def checkpoint_writer(epoch):
        def write(path):
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("epoch.txt", str(epoch) * EPOCH_REPEATS)  # big enough to be caught mid-write
        return write
    def probabilities(epoch):  # rows of probabilities (the store checks them) that say their epoch
        rows = np.zeros((100, 10))
        rows[:, 0], rows[:, 1] = epoch / 1000, 1 - epoch / 1000
        return rows
    print("ready", flush=True)
    while run.epochs_done < EPOCH_LIMIT:
        epoch = run.epochs_done + 1
        row = {column: float(epoch) for column in HISTORY_COLUMNS}
        files = store.write_epoch_files(run, epoch, save_checkpoint=checkpoint_writer(epoch),
                                        probabilities=probabilities(epoch), eval_indices=np.arange(100),
                                        eval_labels=np.zeros(100))
        store.record_epoch(run, row, files)
    """
    )
    .replace("EPOCH_REPEATS", str(EPOCH_REPEATS))
    .replace("EPOCH_LIMIT", str(EPOCH_LIMIT))
)


def test_killing_a_writer_at_random_instants_never_leaves_a_trusted_torn_file(cache_dir):
    """Commit epochs as fast as possible and SIGKILL the writer at random moments, many times."""
    rng = random.Random(1234)
    store = RunStore(cache_dir)
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    last_epochs = {}  # run id -> epochs committed when last looked
    for _ in range(15):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache_dir)], env=environment, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.random() * 0.4)  # then kill anywhere inside the commit loop
        process.send_signal(signal.SIGKILL)
        process.wait()
        for run in store.list_runs():  # a new run once one has EPOCH_LIMIT epochs
            assert run.status != "damaged", run.problem
            k = run.epochs_done
            assert k >= last_epochs.get(run.run_id, 0)
            last_epochs[run.run_id] = k
            assert run.history["epoch"].tolist() == list(range(1, k + 1))
            if k:
                with zipfile.ZipFile(run.checkpoint_path) as archive:
                    assert archive.read("epoch.txt").decode() == str(k) * EPOCH_REPEATS  # the whole of epoch k's file
                assert round(1000 * float(store.load_predictions(run)["probabilities"][0, 0])) == k
    assert sum(last_epochs.values()) > 0


def test_a_checkpoint_that_is_not_a_keras_model_is_reported_and_not_loaded(cache_dir, trained):
    store = RunStore(cache_dir)
    run = store.load(copy_run(trained(TINY).path, cache_dir).name)  # trained once per session
    with zipfile.ZipFile(own_file(run.checkpoint_path), "w") as archive:  # a zip, but not a Keras model
        archive.writestr("config.json", "{}")
    with pytest.raises(DamagedRun, match="checkpoint-0001.keras is not a loadable Keras model"):
        artefacts.load_model(store, store.load(run.run_id))
    manager = JobManager(store)
    manager.start(TINY.replace(epochs=2), run_id=run.run_id)
    assert manager.wait(timeout=600)
    snapshot = manager.snapshot()
    assert snapshot.state == "failed" and "not a loadable Keras model" in snapshot.error
    assert store.load(run.run_id).history["epoch"].tolist() == [1]  # the completed epoch is still there


def test_a_truncated_dataset_file_is_named_by_the_cli(cache_dir, tmp_path, dataset_dir):
    folder = tmp_path / "fashion"
    shutil.copytree(dataset_dir, folder)
    images = folder / "train-images-idx3-ubyte.gz"
    images.chmod(0o644)
    images.write_bytes(images.read_bytes()[:100_000])
    process = cli("train", "--epochs", "1", "--dataset-dir", str(folder), *TINY_FLAGS, cache_dir=cache_dir)
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "train-images-idx3-ubyte.gz' is truncated or corrupt" in errors and "FASHION_MNIST_DIR" in errors
    assert written(cache_dir) == []


def test_simultaneous_starts_run_exactly_one_training(cache_dir, dataset_dir):
    manager = JobManager(RunStore(cache_dir))
    barrier = threading.Barrier(4)
    outcomes = []

    def press_start(seed):
        barrier.wait()
        try:
            outcomes.append(manager.start(TINY.replace(epochs=2, seed=seed)))
        except JobAlreadyRunning as error:
            outcomes.append(error)

    threads = [threading.Thread(target=press_start, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert len(started) == 1 and len(outcomes) == 4
    assert all("already running" in str(outcome) for outcome in outcomes if not isinstance(outcome, str))

    # Stop pressed repeatedly, then Start pressed right after: refused until the worker has finished.
    assert manager.stop() is True
    assert manager.stop() is True
    with pytest.raises(JobAlreadyRunning):
        manager.start(TINY.replace(seed=99))
    assert manager.wait(timeout=600)
    assert manager.snapshot().state == "stopped"
    assert manager.stop() is False
    assert len(RunStore(cache_dir).list_runs()) == 1
    manager.start(TINY.replace(seed=99))
    assert manager.wait(timeout=600) and manager.snapshot().state == "complete"


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 200 MB tmpfs: one ResNet-18 checkpoint (about 130 MB) fits, two do not."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_stops_training_with_a_clear_error_and_keeps_completed_epochs(small_filesystem, dataset_dir):
    store = RunStore(small_filesystem / "cache")
    manager = JobManager(store)
    run_id = manager.start(TINY.replace(epochs=3))
    assert manager.wait(timeout=600)
    snapshot = manager.snapshot()
    assert snapshot.state == "failed"
    assert "No space left on device" in snapshot.error or "Errno 28" in snapshot.error
    run = store.load(run_id)
    assert run.status == "failed" and run.epochs_done == 1
    assert "failed during epoch 2" in run.message and "epochs 1-1 kept" in run.message
    assert run.history["epoch"].tolist() == [1]
    assert not [path for path in run.path.iterdir() if path.name.startswith(".tmp-")]
    artefacts.load_model(store, run)  # the epoch-1 checkpoint is intact and loads
