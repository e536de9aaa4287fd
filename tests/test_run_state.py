"""RunState: state.json parsed and validated in one place, written back as the same JSON; hostile or
damaged values make a run 'damaged' with a reason, never an exception in the listing."""

from __future__ import annotations

import fcntl
import json
import os
import stat

import numpy as np
import pytest
from support import commit_epoch
from test_runs import _write_zip, make_run

from resnet.core.schedule import Segment
from resnet.store.run_state import HISTORY_COLUMNS
from resnet.store.runs import RunError, RunState, RunStatus, RunStore

# A state.json exactly as the first version of the run store wrote it (format_version 1).
OLD_STATE = {
    "checkpoint": "checkpoint-0002.keras",
    "created": 1764300000.5,
    "device": "CPU: AMD EPYC",
    "epochs_done": 2,
    "eval_images": 100,
    "fingerprint": "abc123",
    "format_version": 1,
    "host": "machine",
    "message": "trained 2 epochs",
    "pid": 4242,
    "precision": "float32",
    "predictions": "predictions-0002.npz",
    "run_id": "R",
    "segments": [{"end_epoch": 2, "start_epoch": 1}],
    "status": "complete",
    "target_epochs": 2,
    "train_images": 200,
    "updated": 1764300100.25,
}


def test_an_old_state_reads_typed_and_writes_back_the_same_json():
    state = RunState.from_json(OLD_STATE, run_id="R")
    assert state.status is RunStatus.COMPLETE and state.status == "complete"
    assert state.segments == (Segment(1, 2),) and state.epochs_done == 2 and state.pid == 4242
    assert state.to_json() == OLD_STATE
    newer = {**OLD_STATE, "written_by": "a newer version"}  # unknown fields survive a rewrite
    assert RunState.from_json(newer, run_id="R").to_json() == newer


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"updated": "yesterday"}, "invalid updated time"),
        ({"epochs_done": None}, "invalid epochs_done None"),
        ({"epochs_done": 2.0}, "invalid epochs_done"),
        ({"epochs_done": True}, "invalid epochs_done"),
        ({"epochs_done": 10**30}, "invalid epochs_done"),
        ({"target_epochs": -1}, "invalid target_epochs"),
        ({"status": "paused"}, "unknown status 'paused'"),
        ({"status": ["complete"]}, "unknown status"),
        ({"checkpoint": "../other-run/checkpoint-0002.keras"}, "invalid checkpoint file"),
        ({"checkpoint": "/etc/passwd"}, "invalid checkpoint file"),
        ({"predictions": "predictions-0002.npz/../../x"}, "invalid predictions file"),
        ({"checkpoint": "checkpoint-0001.keras"}, "does not belong to its last epoch"),
        ({"checkpoint": None}, "names no checkpoint"),
        ({"segments": [{"start_epoch": 3, "end_epoch": 1}]}, "invalid segment"),
        ({"segments": "all"}, "invalid segments"),
        ({"pid": "4242"}, "invalid pid"),
        ({"message": 7}, "invalid message"),
        ({"format_version": 2}, "format version 2"),
    ],
)
def test_a_bad_field_is_named(change, reason):
    with pytest.raises(RunError, match=reason):
        RunState.from_json({**OLD_STATE, **change}, run_id="R")


def _edit_state(run, **changes):
    path = run.path / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    "changes",
    [
        {"updated": "not a time"},
        {"epochs_done": None},
        {"checkpoint": "../victim/checkpoint-0002.keras"},
        {"predictions": "/tmp/predictions-0002.npz"},
    ],
)
def test_a_bad_state_damages_one_run_and_the_listing_still_works(cache_dir, changes):
    store = RunStore(cache_dir)
    good, bad = make_run(store, seed=1), make_run(store, seed=2)
    _edit_state(bad, **changes)
    runs = {run.run_id: run for run in store.list_runs()}
    assert runs[good.run_id].status is RunStatus.STOPPED
    assert runs[bad.run_id].damaged and runs[bad.run_id].problem
    assert runs[bad.run_id].checkpoint_path is None or runs[bad.run_id].checkpoint_path.parent == bad.path
    assert runs[bad.run_id].summary()["epochs_done"] >= 0  # summary() of a damaged run works


def test_a_non_numeric_history_value_damages_the_run(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    text = (run.path / "history.csv").read_text().splitlines()
    fields = text[2].split(",")
    fields[4] = "high"  # test_accuracy
    (run.path / "history.csv").write_text("\n".join([*text[:2], ",".join(fields)]) + "\n")
    loaded = store.load(run.run_id)
    assert loaded.damaged and "not a number" in loaded.problem


def test_a_history_larger_than_500_epochs_take_is_not_parsed(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    with open(run.path / "history.csv", "a") as stream:  # uncommitted rows, 5 MB of them
        stream.write("3,0.5,0.5,0.5,0.5,0.5,30,0.5,0.5,0.5\n" * 150_000)
    loaded = store.load(run.run_id)
    assert loaded.damaged and "history.csv is 5," in loaded.problem and "more than 500 epochs take" in loaded.problem


@pytest.mark.parametrize("dropped", [3, 2])  # before train_cross_entropy; before the validation columns
def test_an_old_history_without_the_newer_columns_still_loads(cache_dir, dropped):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    history = (run.path / "history.csv").read_text().splitlines()
    old = [",".join(line.split(",")[:-dropped]) for line in history]  # drop the newest columns
    (run.path / "history.csv").write_text("\n".join(old) + "\n")
    loaded = store.load(run.run_id)
    assert not loaded.damaged
    for column in ["train_cross_entropy", "val_loss", "val_accuracy"][-dropped:]:
        assert loaded.history[column].isna().all()
    if dropped == 2:
        assert not loaded.history["train_cross_entropy"].isna().any()


def test_files_get_the_umask_permissions_not_mkstemps_private_ones(cache_dir):
    run = make_run(RunStore(cache_dir), epochs_done=1)
    for name in ("state.json", "config.json", "history.csv", "checkpoint-0001.keras", "predictions-0001.npz"):
        mode = stat.S_IMODE((run.path / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_delete_is_refused_while_another_process_holds_the_run_lock(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store)
    with open(run.path / ".lock", "a") as lock:  # what a trainer in another process holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunError, match="being trained by another process"):
            store.delete(run.run_id)
        assert run.path.is_dir()
    store.delete(run.run_id)
    assert not run.path.exists()


def test_a_commit_removes_the_previous_epochs_files_and_a_reader_of_the_old_state_reads_again(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=3)
    names = sorted(path.name for path in run.path.glob("*-000*") if not path.name.startswith("map"))
    assert names == ["checkpoint-0003.keras", "predictions-0003.npz"]  # one checkpoint per run
    before = store.load(run.run_id)  # read before the next commit: it names epoch 3's files
    row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": 4, "cumulative_seconds": 40.0}
    commit_epoch(
        store, run, row, save_checkpoint=_write_zip, probabilities=np.full((100, 10), 0.1),
        eval_indices=np.arange(100), eval_labels=np.zeros(100),
    )  # fmt: skip
    assert not (run.path / "predictions-0003.npz").exists()
    assert int(store.load_predictions(before)["epoch"]) == 4  # its file gone: the state read once more


def test_the_parsed_run_cache_sees_every_change(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    assert not store.load(run.run_id).damaged
    (run.path / "checkpoint-0002.keras").write_text("not a model")  # same folder, same state.json
    assert store.load(run.run_id).damaged
    other = RunStore(cache_dir)  # a second reader (another server) sees the same
    assert other.load(run.run_id).damaged


def test_a_run_whose_lock_is_a_link_out_of_the_cache_is_deleted_without_touching_the_target(cache_dir, tmp_path):
    store = RunStore(cache_dir)
    run = make_run(store)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run.path / ".lock").symlink_to(victim)
    store.delete(run.run_id)
    assert not run.path.exists() and victim.read_text() == "keep me"


def test_stored_predictions_keep_the_predicted_class_of_near_ties(cache_dir):
    """The confusion matrix is computed from the stored probabilities: it must match the recorded test
    accuracy even for a barely trained model whose probabilities are all near 0.1 (float16 broke ties)."""
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=0)
    rng = np.random.default_rng(0)
    probabilities = (0.1 + rng.uniform(-1e-4, 1e-4, (500, 10))).astype(np.float32)
    files = store.write_epoch_files(
        run, 1, save_checkpoint=_write_zip, probabilities=probabilities, eval_indices=np.arange(500),
        eval_labels=np.zeros(500),
    )  # fmt: skip
    with np.load(run.path / files.predictions) as archive:
        assert (archive["probabilities"].argmax(axis=1) == probabilities.argmax(axis=1)).all()
