"""Issue 19's eleven reproductions: hostile or damaged files in the run cache are reported, never raised,
never followed out of the cache, and Delete removes runs only.

Each test is one reproduction of the issue, on a cache holding one run with real files (its checkpoint a
small zip standing in for a .keras file, ``test_runs.make_run``), its per-epoch feature maps and a 2-trial
sweep record, driven through the real store, the real command line (``python -m resnet`` in-process) and
the real page (AppTest). Nothing here trains: the one reproduction that needs a real checkpoint (a
features file made a folder, under Why?) is in tests/test_app_explain.py with its trained run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from support import measurement_values
from test_app import assert_no_exception, new_app, texts
from test_runs import make_run

from resnet.__main__ import main
from resnet.config import TrainConfig
from resnet.core import explain
from resnet.core.precision import resolve_precision
from resnet.core.precision_record import read_record, record_path
from resnet.store import artefacts
from resnet.store.plan import PlanKind, plan_training
from resnet.store.run_state import map_name
from resnet.store.runs import RunError, RunStore
from resnet.sweeps.record import DamagedSweep, SweepError, SweepStore, new_sweep

BASE = TrainConfig(epochs=3, train_subset=200, batch_size=32)


@pytest.fixture
def store(cache_dir) -> RunStore:
    """The cache of the issue's reproductions: one run (2 of 3 epochs, with maps) and one 2-trial sweep."""
    store = RunStore(cache_dir)
    run = make_run(store)
    rng = np.random.default_rng(0)
    for epoch in (1, 2):  # the maps the trainer records (make_run writes none)
        probabilities = np.load(run.path / "predictions-0002.npz")["probabilities"]
        arrays = explain.feature_map_arrays(rng.standard_normal((100, 16)), probabilities)
        np.savez(run.path / map_name(epoch), indices=np.arange(100, dtype=np.int32), epoch=np.int32(epoch), **arrays)
    SweepStore(cache_dir).save(new_sweep("study", {"epochs": (1, 2)}, BASE))
    return store


def cli(cache_dir, *args) -> int:
    return main(["--cache-dir", str(cache_dir), *args])


def the_run(store: RunStore):
    (run,) = store.list_runs()
    return run


def page(cache_dir):
    """The app's page on ``cache_dir`` (the cache the fixture exported): it must show no exception."""
    at = new_app().run()
    assert_no_exception(at)
    return at


def edit_record(cache_dir, name: str, change) -> None:
    path = cache_dir / ".sweeps" / f"{name}.json"
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def rewrite_npz(path, **changes) -> None:
    arrays = dict(np.load(path))
    np.savez(path, **(arrays | changes))


# --- 1, 2, 6: sweep records --------------------------------------------------------------------------------
def test_1_a_401_digit_created_time_makes_the_sweep_damaged_not_an_overflow(store, cache_dir, capsys):
    edit_record(cache_dir, "study", lambda values: values.update(created=10**400))
    (listing,) = SweepStore(cache_dir).list_sweeps()
    assert listing.sweep is None and "invalid created time" in listing.problem
    assert cli(cache_dir, "sweeps") == 0 and "damaged" in capsys.readouterr().out
    assert cli(cache_dir, "sweep", "--name", "study") == 2
    assert "invalid created time" in capsys.readouterr().err
    at = page(cache_dir)
    assert any("Sweep study cannot be shown" in text for text in texts(at.warning))


def test_2_a_grid_of_100000_values_is_refused_in_linear_time(store, cache_dir, capsys):
    edit_record(cache_dir, "study", lambda values: values["grid"].update(epochs=[1] * 100_000))
    started = time.perf_counter()
    (listing,) = SweepStore(cache_dir).list_sweeps()
    assert cli(cache_dir, "sweeps") == 0
    seconds = time.perf_counter() - started
    assert listing.sweep is None and "epochs lists 100,000 values" in listing.problem
    assert seconds < 3, f"listing a 100,000-value grid took {seconds:.1f} s (a quadratic check took 34 s)"
    assert "damaged" in capsys.readouterr().out


def test_6_two_trials_naming_one_run_make_the_record_damaged(store, cache_dir, capsys):
    run = the_run(store)
    sweep = new_sweep("twins", {"seed": (1, 2)}, BASE)
    SweepStore(cache_dir).save(sweep)
    edit_record(cache_dir, "twins", lambda values: [trial.update(run_id=run.run_id) for trial in values["trials"]])
    state_before = (run.path / "state.json").read_bytes()
    with pytest.raises(DamagedSweep, match=f"trials 1 and 2 both name run {run.run_id}"):
        SweepStore(cache_dir).load("twins")
    assert cli(cache_dir, "sweep", "--name", "twins") == 2  # refused: nothing is extended or orphaned
    assert "both name run" in capsys.readouterr().err
    assert (run.path / "state.json").read_bytes() == state_before


# --- 3, 10: the sweep folder and its lock files ----------------------------------------------------------
def test_3_a_sweep_lock_that_is_a_link_out_of_the_cache_is_never_followed(store, cache_dir, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("not a lock")
    (cache_dir / ".sweeps" / "study.lock").symlink_to(outside)
    (listing,) = SweepStore(cache_dir).list_sweeps()
    assert listing.sweep is not None and not listing.running
    assert cli(cache_dir, "sweeps") == 0 and "study" in capsys.readouterr().out
    assert cli(cache_dir, "sweep", "--name", "study") == 2
    assert "lock file study.lock is a symbolic link" in capsys.readouterr().err
    page(cache_dir)
    assert outside.read_text() == "not a lock" and (cache_dir / ".sweeps" / "study.lock").is_symlink()


def test_10_a_sweeps_folder_linked_out_of_the_cache_is_not_written_or_read(store, cache_dir, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    (cache_dir / ".sweeps").rename(outside)  # its record stays there, outside the cache
    (cache_dir / ".sweeps").symlink_to(outside)
    before = sorted(path.name for path in outside.iterdir())
    sweeps = SweepStore(cache_dir)
    with pytest.raises(SweepError, match="symbolic link"):
        sweeps.save(new_sweep("new", {"epochs": (1, 2)}, BASE))
    with pytest.raises(SweepError, match="symbolic link"):
        sweeps.load("study")
    (listing,) = sweeps.list_sweeps()
    assert listing.sweep is None and "is a symbolic link" in listing.problem
    assert cli(cache_dir, "sweep", "--name", "new", "--epochs", "1,2", "--subset", "200", "--batch-size", "32") == 2
    assert "symbolic link" in capsys.readouterr().err
    assert cli(cache_dir, "sweeps") == 0 and "symbolic link" in capsys.readouterr().out
    at = page(cache_dir)
    assert any("symbolic link" in text for text in texts(at.warning))
    assert sorted(path.name for path in outside.iterdir()) == before  # no record, no lock written there


# --- 4, 5: maps and predictions whose values do not fit the run ---------------------------------------------
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"indices": np.r_[np.arange(99), 1_000_000].astype(np.int32)}, "test-set indices outside 0-9999"),
        ({"predicted": np.full(100, 200, dtype=np.uint8)}, "predicted classes outside 0-9"),
    ],
    ids=["index-1000000", "predicted-200"],
)
def test_4_a_map_with_out_of_range_values_is_reported_on_the_page(store, cache_dir, change, reason):
    run = the_run(store)
    rewrite_npz(run.path / map_name(2), **change)
    at = page(cache_dir)
    warnings = "\n".join(texts(at.warning))
    assert "The map of epoch 2 cannot be read" in warnings and reason in warnings
    with pytest.raises(RunError, match=reason):
        artefacts.load_feature_map(store, run, 2)
    assert the_run(store).status == "stopped"  # a map is no reason to refuse the run


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"indices": np.r_[np.arange(99), 10**6]}, "test-set indices outside 0-9999"),
        ({"labels": np.r_[np.zeros(99), 77].astype(np.uint8)}, "labels outside 0-9"),
        ({"probabilities": np.full((100, 3), 1 / 3)}, r"probabilities of shape \(100, 3\)"),
        (
            {"probabilities": np.full((10, 10), 0.1), "indices": np.arange(10), "labels": np.zeros(10, np.uint8)},
            "has 10 predictions, but the run evaluates 100 images",
        ),
    ],
    ids=["index-10**6", "label-77", "3-columns", "10-rows"],
)
def test_5_predictions_that_do_not_fit_the_run_make_it_damaged(store, cache_dir, change, reason, capsys):
    run = the_run(store)
    rewrite_npz(run.path / "predictions-0002.npz", **change)
    damaged = the_run(store)
    assert damaged.status == "damaged" and re.search(reason, damaged.problem), damaged.problem
    assert cli(cache_dir, "runs") == 0 and "damaged" in capsys.readouterr().out
    at = page(cache_dir)
    assert any("is damaged" in text for text in texts(at.error))


# --- 7: the precision record ----------------------------------------------------------------------------
HUGE = 10**400


@pytest.mark.parametrize(
    "hostile",
    [
        {"seconds": HUGE},
        {"step_seconds": HUGE},
        {"budget_seconds": HUGE},
        {"speeds": {"float32": HUGE, "mixed_bfloat16": 1.0}},
        {"setup_seconds": {"float32": HUGE}},
        {"depth": HUGE},
        {"batch_size": HUGE},
        {"steps": HUGE},
    ],
    ids=lambda hostile: next(iter(hostile)),
)
def test_7_a_400_digit_number_in_the_precision_record_drops_that_entry(tmp_path, hostile):
    path = record_path(tmp_path)
    path.write_text(
        json.dumps({"version": 1, "entries": {"good": measurement_values(), "hostile": measurement_values(**hostile)}})
    )
    assert list(read_record(path)) == ["good"]


def test_7_200000_nested_brackets_in_the_precision_record_are_ignored(tmp_path):
    from resnet.core.hardware import Hardware

    path = record_path(tmp_path)
    for document in ("[" * 200_000, '{"version": 1, "entries": {"deep": ' + "[" * 200_000 + "}}"):
        path.write_text(document)
        assert read_record(path) == {}
    # What the train command and the sidebar do on hardware that claims bfloat16: the claim, unmeasured.
    bf16 = Hardware(gpus=(), gpu_compute_capability=None, cpu_name="Test CPU", cpu_bf16=True)
    claimed = resolve_precision("auto", bf16, depth=50, batch_size=128, cache_dir=tmp_path)
    assert claimed == "mixed_bfloat16" and claimed.source == "not measured yet"


# --- 9: liveness that survives pid reuse ------------------------------------------------------------------
HOLD_LOCK = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(120)"


def test_9_a_running_state_with_a_reused_pid_and_no_lock_is_interrupted(store, cache_dir, capsys):
    run = the_run(store)
    # pid 1 is alive (it is init, or this container's first process) but trains nothing, and holds no lock.
    store.update_state(run, status="running", pid=1, host=os.uname().nodename)
    assert store.load(run.run_id).status == "interrupted"
    plan = plan_training(store, BASE, run_id=run.run_id)
    assert plan.kind is not PlanKind.BUSY and plan.trains  # it can be trained further
    # A trainer holding the run's lock in another process is respected: running, and Delete refuses.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run.path / ".lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"1"
        assert store.load(run.run_id).status == "running"
        assert plan_training(store, BASE, run_id=run.run_id).kind is PlanKind.BUSY
        assert cli(cache_dir, "delete", run.run_id) == 2 and "being trained" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert store.load(run.run_id).status == "interrupted"  # its lock died with it
    assert cli(cache_dir, "delete", run.run_id) == 0 and not run.path.exists()


# --- 11: Delete removes runs only ---------------------------------------------------------------------------
def test_11_delete_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    home = tmp_path / "home"  # RESNET_CACHE_DIR=$HOME by mistake
    documents = home / "Documents"
    (documents / "photos").mkdir(parents=True)
    (documents / "notes.txt").write_text("mine")
    (documents / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    assert cli(home, "delete", "Documents") == 2
    error = capsys.readouterr().err
    assert "Documents" in error and "is not a run" in error and "'notes.txt'" in error and "folder 'photos'" in error
    assert (documents / "notes.txt").read_text() == "mine" and (documents / "photos" / "a.jpg").is_file()


def test_11_delete_refuses_links_and_runs_holding_files_no_run_writes(store, cache_dir, tmp_path, capsys):
    run = the_run(store)
    (cache_dir / "alias").symlink_to(run.path)  # a link to a run inside the cache
    moved = tmp_path / "moved-run"
    make_run(RunStore(tmp_path / "other"), seed=9).path.rename(moved)
    (cache_dir / "linked").symlink_to(moved)  # a link to a run outside it
    for name in ("alias", "linked"):
        assert cli(cache_dir, "delete", name) == 2 and "symbolic link" in capsys.readouterr().err
    assert run.path.is_dir() and (moved / "state.json").is_file()
    assert [listed.run_id for listed in store.list_runs()] == [run.run_id]  # links are no runs

    (run.path / "my-notes.txt").write_text("keep me")
    assert cli(cache_dir, "delete", run.run_id) == 2
    assert "holds 'my-notes.txt', which no run writes" in capsys.readouterr().err
    (run.path / "my-notes.txt").unlink()
    assert cli(cache_dir, "delete", run.run_id) == 0 and not run.path.exists()
