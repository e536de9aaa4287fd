"""Until returns diminish and the budget curve in the app (AppTest): the sidebar's choice and the URL, a
finished auto run's page (what it decided, the chart's cooldown band, the Runs table, Extend refused),
and a budget curve started from the Sweep tab with its per-budget answer.
"""

from __future__ import annotations

import pytest
from support import copy_run
from test_app import assert_no_exception, charts, new_app, texts
from test_app_sweep import SWEEP_TIMEOUT, fill, runner  # noqa: F401 (runner: a fixture)
from test_auto_training import AUTO

from app import state
from resnet.sweeps.record import SweepStore


def test_the_sidebar_trains_until_returns_diminish_and_the_url_keeps_it(cache_dir):
    at = new_app({"epochs": 10}).run()
    at.radio(key="cfg_epochs_mode").set_value("auto").run()
    assert_no_exception(at)
    assert at.slider(key="cfg_epochs").value == 100  # 10 is below an auto run's smallest maximum: the default
    assert at.slider(key="cfg_epochs").label == "Maximum epochs"
    assert at.selectbox(key="cfg_schedule").disabled is True
    captions = " ".join(texts(at.sidebar.markdown) + texts(at.sidebar.caption))
    assert "Starts a new run that trains until returns diminish on 5,000 held-out training images" in captions
    assert at.query_params["epochs_mode"] == "auto" and at.query_params["schedule"] == "wsd"
    shared = new_app({"epochs_mode": "auto", "schedule": "wsd", "epochs": 40, "returns_threshold": 0.5}).run()
    assert_no_exception(shared)
    assert shared.radio(key="cfg_epochs_mode").value == "auto" and shared.slider(key="cfg_epochs").value == 40
    assert shared.number_input(key="cfg_returns_threshold").value == 0.5
    assert not shared.warning  # nothing of the shared link was refused
    refused = new_app({"epochs_mode": "trunk"}).run()
    assert any("budget curve's trunk" in text for text in texts(refused.warning))


def test_a_finished_auto_run_says_why_it_stopped_and_marks_its_cooldown(cache_dir, trained):
    run = trained(AUTO)
    copy_run(run.path, cache_dir)
    at = new_app().run()
    assert_no_exception(at)
    stop = run.state.stop
    infos = " ".join(texts(at.info))
    assert f"Stopped adding epochs after epoch {stop.stable_end}" in infos and "test accuracy" in infos
    drawn = charts(at)
    layers = drawn["Test accuracy against training time"]
    labels = [frame["label"].tolist() for frame in layers if "label" in frame]
    assert [f"cooldown, epochs {stop.stable_end + 1}-{stop.cooldown_end}"] in labels
    assert [f"stable phase ended after epoch {stop.stable_end}"] in labels
    accuracy = drawn["Train and test accuracy per epoch"][0]
    assert set(accuracy["split"]) == {"train", "validation", "test"}
    runs_table = next(frame.value for frame in at.dataframe if "length" in frame.value)
    assert runs_table.loc[0, "length"] == "until returns diminish"
    captions = " ".join(texts(at.sidebar.caption))
    assert "Extend does not apply to it" in captions


def test_an_auto_run_stopped_in_its_cooldown_offers_to_finish_it(cache_dir):
    from test_stopper import auto_run

    from resnet.store.runs import RunStore
    from resnet.training.until_returns import decide_after_epoch

    store = RunStore(cache_dir)
    run = auto_run(store, [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7])  # fake model files: the page must still work
    decide_after_epoch(store, run, run.config, 7)
    at = new_app().run()
    assert_no_exception(at)
    captions = " ".join(texts(at.sidebar.caption))
    assert f"Continues run {run.run_id} (7 epochs done): its cooldown goes on to epoch 11." in captions
    assert at.button(key="extend").label == "Continue" and at.button(key="extend").disabled is False


@pytest.mark.slow  # trains a trunk and two branches
def test_a_budget_curve_from_the_sweep_tab_branches_one_trunk(cache_dir, runner):  # noqa: F811
    tiny = {"batch_size": 64, "train_subset": 256, "eval_subset": 200, "depth": 18, "precision": "float32"}
    at = new_app(tiny).run()
    at.radio(key=state.SWEEP_BRANCHES).set_value("branches").run()
    fill(at, "curve", epochs="2,3")
    shown = " ".join(texts(at.markdown))
    assert "Budget curve **curve** is new: 0 of 2 branches done" in shown
    assert "3 epochs and cooldowns of 2: 5 epochs in all, against 5 for independent runs" in shown
    at.button(key="sweep_start").click().run()
    assert runner.wait(SWEEP_TIMEOUT), runner.snapshot()
    assert runner.snapshot().state == "finished", runner.snapshot()
    record = SweepStore(cache_dir).load("curve")
    assert record.branches and record.trunk_run_id is not None
    at.run()
    assert_no_exception(at)
    table = next(frame.value for frame in at.dataframe if "budget" in frame.value)
    assert table["budget"].tolist() == [2, 3] and table["cooldown_epochs"].tolist() == [1, 1]
    assert table["test_accuracy"].between(0, 1).all() and table["run_id"].tolist() == [t.run_id for t in record.trials]
    runs_table = next(frame.value for frame in at.dataframe if "length" in frame.value)
    assert sorted(runs_table["length"]) == ["budget-curve branch", "budget-curve branch", "budget-curve trunk"]


def test_the_accuracy_legend_lists_validation_only_for_a_run_that_has_it():
    import numpy as np
    import pandas as pd

    from app.charts import accuracy_chart

    history = pd.DataFrame({"epoch": [1, 2], "train_accuracy": [0.5, 0.6], "test_accuracy": [0.4, 0.5]})
    fixed = history.assign(val_accuracy=np.nan)  # a fixed run: the column is there, empty
    assert accuracy_chart(fixed).to_dict()["encoding"]["color"]["scale"]["domain"] == ["train", "test"]
    auto = history.assign(val_accuracy=[0.45, 0.55])
    assert accuracy_chart(auto).to_dict()["encoding"]["color"]["scale"]["domain"] == ["train", "validation", "test"]
