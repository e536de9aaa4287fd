"""Sweeps: grids checked with the config's own rules, trials as ordinary runs trained in order, a stop
and a rerun that continues, the record, and the analysis (table, Pareto front, budget sentence).

The real sweep is 2x2 tiny ResNet-18 runs (256 images): its first part runs in this process through
the engine (stopped from the report hook during trial 2), the rest through ``python -m resnet sweep``
in-process, which trains each trial in a child process as a user's command does.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from support import written

from resnet.__main__ import main
from resnet.config import ConfigError, TrainConfig
from resnet.store.runs import HISTORY_COLUMNS, RunStore
from resnet.sweeps.grid import MAX_TRIALS
from resnet.sweeps.local import run_sweep
from resnet.sweeps.record import DamagedSweep, SweepError, SweepStore, new_sweep, requested_sweep
from resnet.sweeps.report import budget_sentence, estimate_text, pareto_front, sweep_table
from resnet.sweeps.trials import TrialOutcome

# epochs 2,1 first: trial 1 (2 epochs) finishes, trial 2 (2 epochs) is stopped after its first epoch.
GRID = {"epochs": "2,1", "batch_size": "64,32"}
TINY = {"depth": "18", "train_subset": "256", "eval_subset": "200"}
FLAGS = ["--epochs", "2,1", "--batch-size", "64,32", "--depth", "18", "--subset", "256", "--eval-subset", "200"]


def history_stamp(run) -> int:
    return (run.path / "history.csv").stat().st_mtime_ns


@pytest.mark.slow  # long run: four trials, stopped and continued
def test_a_sweep_stopped_in_its_second_trial_continues_where_it_stopped(cache_dir, dataset_dir, capsys):
    store, sweeps = RunStore(cache_dir), SweepStore(cache_dir)
    sweep = requested_sweep(sweeps, "study", {**GRID, **TINY})
    assert [(config.epochs, config.batch_size) for config in sweep.configs] == [(2, 64), (2, 32), (1, 64), (1, 32)]
    cancel, events = threading.Event(), []

    def stop_after_the_first_epoch_of_trial_2(event):
        events.append(event)
        if event.kind == "epoch" and event.index == 1 and event.epoch == 1:
            cancel.set()

    results = run_sweep(sweep, store, cancel=cancel, report=stop_after_the_first_epoch_of_trial_2, isolated=False)
    assert [result.outcome for result in results] == [
        TrialOutcome.TRAINED,
        TrialOutcome.STOPPED,
        TrialOutcome.NOT_RUN,
        TrialOutcome.NOT_RUN,
    ]
    record = sweeps.load("study")
    first, second = (store.load(trial.run_id) for trial in record.trials[:2])
    assert record.trials[2].run_id is None and record.trials[3].run_id is None  # never started
    assert (first.status, first.epochs_done, second.status, second.epochs_done) == ("complete", 2, "stopped", 1)
    assert [event.epoch for event in events if event.kind == "epoch"] == [1, 2, 1]
    first_stamp, second_row = history_stamp(first), second.history.iloc[0]

    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "study", *FLAGS]) == 0
    out = capsys.readouterr()
    record = sweeps.load("study")
    runs = [store.load(trial.run_id) for trial in record.trials]
    assert [run.config for run in runs] == [trial.config for trial in record.trials]  # in order, one run each
    assert len({run.run_id for run in runs}) == 4 and record.trials[1].run_id == second.run_id
    assert [run.epochs_done for run in runs] == [2, 2, 1, 1] and all(run.status == "complete" for run in runs)
    assert history_stamp(runs[0]) == first_stamp  # finished: not retrained
    assert all(run.history.columns.tolist() == list(HISTORY_COLUMNS) for run in runs)
    assert runs[1].history["epoch"].tolist() == [1, 2]  # the partial one continued from its epoch 2
    assert runs[1].history.iloc[0].equals(second_row)  # NaN equals NaN: no validation split here
    assert "trial 1/4 done: already trained" in out.err and "Continuing run" in out.err
    for run in runs:  # the table, in the seed's form
        assert run.run_id in out.out
    assert "train acc" in out.out and "best (epoch)" in out.out and "Pareto front" in out.out

    table = sweep_table(record, store.list_runs())
    assert table.columns.tolist()[:4] == ["trial", "run_id", "status", "batch_size"]
    assert table["epochs_done"].tolist() == [2, 2, 1, 1] and table["done"].all()
    assert table["best_epoch"].between(1, 2).all() and (table["total_seconds"] > 0).all()

    assert main(["--cache-dir", str(cache_dir), "sweeps"]) == 0
    listing = capsys.readouterr().out
    assert "study" in listing and "4/4" in listing and "complete" in listing
    later = requested_sweep(sweeps, "later", {**TINY, "epochs": "3", "batch_size": "64", "seed": "7"})
    assert estimate_text(later, store.list_runs(), cache_dir).startswith("Estimated time on this machine: ")
    stamps = [history_stamp(run) for run in runs]
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "study"]) == 0  # all done: nothing trains
    assert capsys.readouterr().err.count("already trained") == 4
    assert [history_stamp(store.load(run.run_id)) for run in runs] == stamps


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "5,,10"], "epochs: empty value in '5,,10'"),
        (["--epochs", ""], "epochs: empty value"),
        (["--epochs", "0,10"], "epochs must be between 1 and 500; got 0"),
        (["--batch-size", "64,4096"], "batch_size must be between 8 and 2048; got 4096"),
        (["--learning-rate", "fast"], "learning_rate must be a number; got 'fast'"),
        (["--optimizer", "adamw,lion"], "optimizer must be one of adamw, adam, sgd; got 'lion'"),
        (["--augment", "yes,maybe"], "augment must be true or false; got 'maybe'"),
        (["--seed", "1,1"], "seed lists 1 more than once"),
        (["--gpus", "1,all"], "gpus says where trials train, not what they learn"),
        (["--batch-size", "512", "--subset", "256"], "train_subset (256) must be at least batch_size (512)"),
        (["--epochs", ",".join(map(str, range(1, 10))), "--seed", ",".join(map(str, range(8)))], "the grid has 72"),
        ([], "no sweep 'bad' yet: give values for at least one parameter"),
    ],
)
def test_bad_grids_are_refused_naming_the_field_and_nothing_is_written(cache_dir, capsys, flags, message):
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "bad", *flags]) == 2
    assert message in capsys.readouterr().err
    assert written(cache_dir) == []


def test_unknown_fields_and_names_are_refused(cache_dir, capsys):
    with pytest.raises(ConfigError, match="unknown configuration field.*colour"):
        new_sweep("x", {"colour": (1, 2)})
    with pytest.raises(ConfigError, match="a sweep needs values"):
        new_sweep("x", {})
    with pytest.raises(ConfigError, match="epochs: no values given"):
        new_sweep("x", {"epochs": ()})
    with pytest.raises(ConfigError, match=f"at most {MAX_TRIALS}"):
        new_sweep("x", {"seed": tuple(range(MAX_TRIALS + 1))})
    with pytest.raises(SystemExit):
        main(["--cache-dir", str(cache_dir), "sweep", "--name", "x", "--colour", "1,2"])
    assert "unrecognized arguments: --colour" in capsys.readouterr().err
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "../up", "--epochs", "1"]) == 2
    assert "invalid sweep name '../up'" in capsys.readouterr().err
    assert written(cache_dir) == []


def test_a_name_taken_by_other_settings_is_refused_and_a_damaged_record_is_reported(cache_dir, capsys):
    sweeps = SweepStore(cache_dir)
    sweeps.save(new_sweep("taken", {"epochs": (1, 2)}))
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "taken", "--epochs", "1,3"]) == 2
    assert "sweep taken already exists with other settings (epochs 1,2)" in capsys.readouterr().err

    (sweeps.folder / "truncated.json").write_text('{"format_version": 1, "na')
    values = json.loads(sweeps.path_for("taken").read_text())
    values["trials"] = values["trials"][::-1]
    (sweeps.folder / "shuffled.json").write_text(json.dumps({**values, "name": "shuffled"}))
    listing = {item.name: item for item in sweeps.list_sweeps()}
    assert listing["taken"].sweep is not None and listing["taken"].problem is None
    assert "unreadable" in listing["truncated"].problem
    assert "its trials are not the combinations of its grid" in listing["shuffled"].problem
    with pytest.raises(DamagedSweep):
        sweeps.load("shuffled")
    assert main(["--cache-dir", str(cache_dir), "sweeps"]) == 0
    out = capsys.readouterr().out
    assert "0/2" in out and "damaged" in out and "truncated" in out


def test_without_ray_the_cluster_path_says_how_to_install_it(cache_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the optional extra were not installed
    assert main(["--cache-dir", str(cache_dir), "sweep", "--name", "r", "--epochs", "1,2", "--ray"]) == 2
    assert "pip install -r requirements-cluster.txt" in capsys.readouterr().err
    assert written(cache_dir) == []


def test_the_table_of_a_sweep_not_yet_run():
    sweep = new_sweep("fresh", {"epochs": (1, 2), "batch_size": (64,)})
    sweep = sweep.with_run_id(1, "20260101-000000-resnet50-gone00")
    table = sweep_table(sweep, [])
    assert table["status"].tolist() == ["not started", "missing"]
    assert table.columns.tolist()[:3] == ["trial", "run_id", "status"] and "batch_size" not in table.columns
    assert table["test_accuracy"].isna().all() and not table["done"].any()
    assert pareto_front(table).empty and budget_sentence(table) == "No trial has finished yet: nothing to compare."


def hand_made_table() -> pd.DataFrame:
    rows = [  # (trial, seconds, test accuracy, done)
        ("A", 10.0, 0.80, True),
        ("B", 20.0, 0.85, True),
        ("C", 20.0, 0.83, True),  # as fast as B, less accurate: dominated
        ("D", 30.0, 0.85, True),  # as accurate as B, slower: dominated
        ("E", 40.0, 0.90, True),
        ("F", 40.0, 0.90, True),  # an exact tie with E: neither beats the other
        ("G", 50.0, 0.88, True),  # slower and less accurate than E
        ("H", 5.0, np.nan, False),  # nothing finished
        ("I", 60.0, 0.95, False),  # a half-trained trial is no budget's result
    ]
    return pd.DataFrame([{"trial": name, "total_seconds": s, "test_accuracy": a, "done": d} for name, s, a, d in rows])


def test_the_pareto_front_keeps_ties_and_drops_dominated_and_unfinished_trials():
    front = pareto_front(hand_made_table())
    assert front["trial"].tolist() == ["A", "B", "E", "F"]
    assert pareto_front(hand_made_table().drop(columns="done"))["trial"].tolist() == ["A", "B", "E", "F", "I"]


def seed_table() -> pd.DataFrame:
    """The seed study's final accuracies (README), at a made-up 60 s per epoch."""
    accuracy = {10: 0.8732, 20: 0.8850, 60: 0.9004, 100: 0.9037, 200: 0.9066}
    return pd.DataFrame(
        [
            {
                "trial": number,
                "batch_size": 128,
                "epochs": epochs,
                "test_accuracy": value,
                "total_seconds": 60.0 * epochs,
            }
            for number, (epochs, value) in enumerate(accuracy.items(), start=1)
        ]
    )


def test_the_budget_sentence_names_the_cheap_run_near_the_best_and_what_doubling_adds():
    assert budget_sentence(seed_table()) == (
        "Within 60.0 min of training, batch 128 for 60 epochs reached 0.900 test accuracy; doubling the budget "
        "(batch 128 for 100 epochs, 100.0 min) added 0.3 points."
    )
    assert budget_sentence(seed_table(), within_points=0.1) == (
        "Within 3.3 h of training, batch 128 for 200 epochs reached 0.907 test accuracy, the best of the finished "
        "trials; no trial within twice that time did better."
    )
    two = seed_table().iloc[[0, 4]]  # 10 and 200 epochs: the best took 20x the time
    assert budget_sentence(two, within_points=5.0) == (
        "Within 10.0 min of training, batch 128 for 10 epochs reached 0.873 test accuracy; no trial within twice "
        "that time did better, and the best (batch 128 for 200 epochs, 3.3 h) added 3.3 points."
    )
    assert budget_sentence(hand_made_table()).startswith("Within 40 s of training, trial E reached 0.900")


def test_expand_grid_keeps_the_given_order_with_the_last_field_fastest():
    sweep = new_sweep("order", {"batch_size": (128, 64), "epochs": (20, 10), "augment": (False,)})
    assert list(sweep.grid) == ["epochs", "batch_size", "augment"]  # the config's field order
    assert [(config.epochs, config.batch_size) for config in sweep.configs] == [
        (20, 128),
        (20, 64),
        (10, 128),
        (10, 64),
    ]
    assert sweep.varying == ("epochs", "batch_size") and sweep.base == TrainConfig()
    with pytest.raises(SweepError, match="invalid sweep name"):
        new_sweep("a/b", {"epochs": (1,)})


def test_the_seed_study_preset_trains_one_run_per_epoch_budget(cache_dir):
    sweeps = SweepStore(cache_dir)
    sweep = requested_sweep(sweeps, "seed", {}, preset="seed-study")
    assert [config.epochs for config in sweep.configs] == [10, 20, 60, 100, 200]
    assert {(config.batch_size, config.depth, config.train_subset) for config in sweep.configs} == {(128, 50, 60_000)}
    assert sweep.varying == ("epochs",)
    smaller = requested_sweep(sweeps, "seed", {"batch_size": "64"}, preset="seed-study")  # flags override it
    assert {config.batch_size for config in smaller.configs} == {64}
    assert estimate_text(sweep, []).startswith("Time on this machine: unknown")
    assert written(cache_dir) == []  # asking writes nothing
