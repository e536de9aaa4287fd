"""The run store: atomic writes, damage detection, safe paths, listing and deleting."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support import commit_epoch

from resnet.config import TrainConfig
from resnet.files import atomic_write
from resnet.store.runs import HISTORY_COLUMNS, RunError, RunStore


def make_run(store: RunStore, epochs_done: int = 2, **config_changes):
    """A run with real files for ``epochs_done`` epochs (a small zip stands in for the .keras file)."""
    config = TrainConfig(epochs=3, train_subset=200, batch_size=32, **config_changes)
    run = store.create(config, precision="float32", device="CPU: test", train_images=200, eval_images=100)
    for epoch in range(1, epochs_done + 1):
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "cumulative_seconds": 10.0 * epoch}
        commit_epoch(
            store,
            run,
            row,
            save_checkpoint=lambda path: _write_zip(path),
            probabilities=np.full((100, 10), 0.1),
            eval_indices=np.arange(100),
            eval_labels=np.zeros(100),
        )
    store.update_state(run, status="stopped")
    return run


def _write_zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")


def test_a_committed_run_reads_back(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store)
    loaded = store.load(run.run_id)
    assert loaded.status == "stopped" and loaded.epochs_done == 2
    assert loaded.history["epoch"].tolist() == [1, 2]
    assert loaded.checkpoint_path.name == "checkpoint-0002.keras"
    assert not (run.path / "checkpoint-0001.keras").exists()  # the previous epoch's files go with the commit
    assert [entry.run_id for entry in store.list_runs()] == [run.run_id]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path: (path / "history.csv").write_text("epoch,train_loss\n1,"), "history.csv has columns"),
        (lambda path: (path / "history.csv").write_text(""), "history.csv is unreadable"),
        (lambda path: (path / "config.json").write_text('{"epochs": 3, "batch_si'), "config.json is unreadable"),
        (
            lambda path: (path / "config.json").write_text('{"epochs": 3, "dropout": 0.5}'),
            "unknown configuration field",
        ),
        (lambda path: (path / "config.json").write_text('{"epochs": -3}'), "epochs must be between"),
        (lambda path: (path / "state.json").unlink(), "state.json is missing"),
        (lambda path: (path / "checkpoint-0002.keras").unlink(), "checkpoint file of epoch 2 .* is missing"),
        (lambda path: (path / "checkpoint-0002.keras").write_text("not a model"), "is not a valid Keras file"),
        (lambda path: (path / "predictions-0002.npz").write_bytes(b""), "predictions-0002.npz is unreadable"),
    ],
)
def test_damaged_runs_are_listed_with_their_reason(cache_dir, damage, reason):
    store = RunStore(cache_dir)
    good = make_run(store, seed=1)
    bad = make_run(store, seed=2)
    damage(bad.path)
    runs = {run.run_id: run for run in store.list_runs()}
    assert runs[good.run_id].status == "stopped"
    assert runs[bad.run_id].status == "damaged"
    assert runs[bad.run_id].problem and __import__("re").search(reason, runs[bad.run_id].problem)
    store.delete(bad.run_id)
    assert [run.run_id for run in store.list_runs()] == [good.run_id]


def test_an_empty_folder_is_damaged_not_fatal(cache_dir):
    (cache_dir / "empty-run").mkdir()
    (run,) = RunStore(cache_dir).list_runs()
    assert run.status == "damaged" and run.problem == "config.json is missing"


def test_history_rows_past_the_commit_are_ignored(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=1)
    # A crash after history.csv was written but before state.json committed epoch 2.
    with open(run.path / "history.csv", "a") as stream:
        stream.write("2,1,1,1,1,1,20,1,1\n")
    assert store.load(run.run_id).history["epoch"].tolist() == [1]


def test_a_running_state_from_a_dead_process_reads_as_interrupted(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store)
    store.update_state(run, status="running", pid=2**22 + 12345, host=os.uname().nodename)
    assert store.load(run.run_id).status == "interrupted"
    # This very process: running only while it holds the run's lock (a restarted server in a
    # container can get the same pid as the one that died).
    store.update_state(run, status="running", pid=os.getpid(), host=os.uname().nodename)
    assert store.load(run.run_id).status == "interrupted"
    with store.locked(run):
        assert store.load(run.run_id).status == "running"
    assert store.load(run.run_id).status == "interrupted"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "state.json"
    target.write_text('{"epochs_done": 1}')

    def fail_halfway(path):
        path.write_text('{"epochs_do')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail_halfway)
    assert json.loads(target.read_text()) == {"epochs_done": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


@pytest.mark.parametrize("run_id", ["../outside", "/etc", "a/../../b", "..", "", "run id with spaces", "run\n"])
def test_run_ids_cannot_reach_outside_the_cache(cache_dir, run_id):
    store = RunStore(cache_dir)
    with pytest.raises(RunError, match="invalid run id"):
        store.path_for(run_id)
    with pytest.raises(RunError):
        store.delete(run_id)


def test_cache_location_comes_from_the_environment(cache_dir):
    assert RunStore().root == cache_dir
