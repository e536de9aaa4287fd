"""The Sweep tab under AppTest, and the server's sweep runner on its own: bad values, the seed-study
preset, a real 2-run sweep started from the tab, the one-training rule across tabs, and a trial stopped
from the sidebar that stops the sweep and is continued by starting the sweep again.

Everything is real: the app's own JobManager and SweepRunner (fetched as the app fetches them) train
tiny ResNet-18s (256 images) into a temporary run cache. ``run_every`` does not fire under AppTest, so
the tests wait on the runner and rerun the page.
"""

from __future__ import annotations

import time

import pytest
from support import run_folders, written
from test_app import TRAINING_TIMEOUT, assert_no_exception, charts, new_app, texts

from app import state
from resnet.sweeps.grid import MAX_TRIALS
from resnet.sweeps.record import SweepStore

TINY = {"epochs": 1, "batch_size": 64, "train_subset": 256, "eval_subset": 200, "depth": 18}
SWEEP_TIMEOUT = 2 * TRAINING_TIMEOUT


@pytest.fixture
def runner(cache_dir):
    """The app's sweep runner for this test's cache; any sweep or training still running is stopped after."""
    from app import services
    from app.sweep_job import get_sweep_runner

    manager = services.get_manager()
    runner = get_sweep_runner(manager)
    assert runner.manager is manager and runner.sweeps.root.resolve() == cache_dir.resolve()
    yield runner
    runner.stop()
    manager.stop()
    assert runner.wait(SWEEP_TIMEOUT), "the sweep thread did not end"
    assert manager.wait(TRAINING_TIMEOUT), "the training thread did not end"


def fill(at, name: str, **values) -> None:
    at.text_input(key=state.SWEEP_NAME).set_value(name)
    for field, text in values.items():
        at.text_input(key=state.sweep_key(field)).set_value(text)
    at.run()


def errors(at) -> str:
    return " ".join(texts(at.error))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.2)


def test_bad_values_are_named_and_nothing_starts(cache_dir, runner):
    at = new_app(TINY).run()
    assert_no_exception(at)
    cases = [
        ({}, "Give values for at least one parameter"),
        ({"batch_size": "64,4096"}, "Batch sizes: batch_size must be between 8 and 2048; got 4096"),
        ({"batch_size": "", "epochs": "5,,10"}, "Epochs: epochs: empty value in '5,,10'"),
        ({"epochs": "2", "optimizer": "adamw,lion"}, "Optimizers: optimizer must be one of adamw, adam, sgd"),
        ({"optimizer": "", "augment": "maybe"}, "Augmentation: augment must be true or false"),
        ({"augment": "", "seed": "1,1"}, "Seeds: seed lists 1 more than once"),
        ({"epochs": ",".join(map(str, range(1, 10))), "seed": ",".join(map(str, range(8)))}, f"at most {MAX_TRIALS}"),
        ({"epochs": "1", "seed": "", "batch_size": "512"}, "train_subset (256) must be at least batch_size (512)"),
    ]
    for values, message in cases:
        fill(at, "bad-values", **values)
        assert_no_exception(at)
        shown = errors(at) if values else " ".join(texts(at.info))  # nothing typed yet: a hint, not an error
        assert message in shown, (values, shown)
        assert at.button(key="sweep_start").disabled is True
    fill(at, "bad name!", batch_size="64")
    assert "Sweep name: invalid sweep name 'bad name!'" in errors(at)
    assert at.button(key="sweep_start").disabled is True
    assert not runner.snapshot().active and not runner.manager.snapshot().active
    assert not (cache_dir / ".sweeps").exists() and not written(cache_dir)
    assert any("No sweeps yet" in text for text in texts(at.info))


def test_the_seed_study_preset_fills_the_fields_and_says_how_long(cache_dir, runner):
    at = new_app().run()
    at.button(key="sweep_preset").click().run()
    assert_no_exception(at)
    assert at.text_input(key=state.sweep_key("epochs")).value == "10,20,60,100,200"
    assert at.text_input(key=state.sweep_key("batch_size")).value == "128"
    assert at.text_input(key=state.sweep_key("seed")).value == ""
    assert at.text_input(key=state.SWEEP_NAME).value == "seed-study"
    shown = " ".join(texts(at.markdown))
    assert "**5 runs** (epochs 10,20,60,100,200 x batch_size 128" in shown
    # No run on this machine yet: the estimate says it cannot tell, and why.
    assert "Time on this machine: unknown until an earlier run of these settings gives a speed." in shown
    assert at.button(key="sweep_start").disabled is False
    assert not (cache_dir / ".sweeps").exists()


@pytest.mark.slow  # long run: several trials
def test_a_tiny_sweep_from_the_tab_is_one_training_at_a_time_and_shows_its_answer(cache_dir, runner, dataset_dir):
    at, other = new_app(TINY).run(), new_app(TINY).run()
    fill(at, "tiny", seed="1,2")
    assert "**2 runs** (seed 1,2" in " ".join(texts(at.markdown))
    at.button(key="sweep_start").click().run()
    assert_no_exception(at)
    assert any("Started sweep tiny: 2 runs" in text for text in texts(at.success)), texts(at.success)
    manager = runner.manager

    # While a trial trains it is the server's one job: every tab follows it, and a second start is refused.
    wait_for(lambda: manager.snapshot().state == "running", 60, "the first trial to train")
    other.run()
    assert any(f"Training run {manager.snapshot().run_id}" in text for text in texts(other.markdown))
    other.button(key="start").click().run()
    assert any("already running" in text for text in texts(other.warning)), texts(other.warning)
    fill(other, "tiny", seed="1,2")
    other.button(key="sweep_start").click().run()
    assert any("Sweep not started: sweep tiny is running" in text for text in texts(other.warning))

    assert runner.wait(SWEEP_TIMEOUT), runner.snapshot()
    snapshot = runner.snapshot()
    assert (snapshot.state, snapshot.done, snapshot.total, snapshot.failed) == ("finished", 2, 2, 0), snapshot
    record = SweepStore(cache_dir).load("tiny")
    run_ids = [trial.run_id for trial in record.trials]
    assert run_folders(cache_dir) == sorted(run_ids)
    assert [trial.config.seed for trial in record.trials] == [1, 2]
    assert all(trial.config.depth == 18 and trial.config.train_subset == 256 for trial in record.trials)

    at.run()
    assert_no_exception(at)
    assert any("Sweep tiny finished: 2 of 2 runs done" in text for text in texts(at.success)), texts(at.success)
    table = at.dataframe[-1].value
    assert table["run_id"].tolist() == run_ids and table["seed"].tolist() == [1, 2]
    assert table["done"].all() and table["epochs_done"].tolist() == [1, 1]
    assert table["test_accuracy"].between(0, 1).all() and (table["total_seconds"] > 0).all()
    assert any(button.label == "Download the sweep's table (CSV)" for button in at.download_button)
    drawn = charts(at)
    points = max(drawn["Final test accuracy against total training time"], key=len)  # the front line: a subset
    assert sorted(points["trial"]) == [1, 2] and points["on_front"].any()
    assert points["label"].str.contains("seed").all()
    curves = drawn["Test accuracy per epoch of every run"][0]
    assert sorted(curves["run"].unique()) == ["1: seed 1", "2: seed 2"]
    shown = " ".join(texts(at.markdown))
    assert "Within " in shown and "test accuracy" in shown  # the budget sentence
    assert "On the Pareto front" in shown

    # The same name again with the same values: nothing is left to train, and it says so.
    fill(at, "tiny", seed="1,2")
    assert "Sweep **tiny** exists: 2 of 2 runs have all their epochs" in " ".join(texts(at.markdown))


@pytest.mark.slow  # long run: several trials
def test_a_trial_stopped_from_the_sidebar_stops_the_sweep_and_a_restart_continues_it(cache_dir, runner, dataset_dir):
    from resnet.config import TrainConfig
    from resnet.sweeps.record import requested_sweep

    manager = runner.manager
    base = TrainConfig(**TINY)
    sweep = requested_sweep(runner.sweeps, "halted", {"batch_size": "32,64"}, base=base)
    runner.start(sweep)
    wait_for(lambda: manager.snapshot().active, 60, "the first trial to start")
    at = new_app(TINY).run()
    at.button(key="stop").click().run()  # the sidebar's Stop, in a tab that did not start the sweep
    assert runner.wait(SWEEP_TIMEOUT), runner.snapshot()
    snapshot = runner.snapshot()
    assert snapshot.state == "stopped" and snapshot.done == 0, snapshot
    record = runner.sweeps.load("halted")
    assert record.trials[1].run_id is None  # the second trial never started
    first = manager.store.find(record.trials[0].run_id)
    assert first.status == "stopped"

    at.run()
    assert_no_exception(at)
    assert any("Sweep halted stopped" in text and "Trial 1 was stopped" in text for text in texts(at.info))
    # Starting it again from the tab, by name alone, continues it.
    fill(at, "halted")
    assert "Sweep **halted** exists: 0 of 2 runs have all their epochs" in " ".join(texts(at.markdown))
    at.button(key="sweep_start").click().run()
    assert runner.wait(SWEEP_TIMEOUT), runner.snapshot()
    assert (runner.snapshot().state, runner.snapshot().done) == ("finished", 2), runner.snapshot()
    record = runner.sweeps.load("halted")
    assert record.trials[0].run_id == first.run_id  # the same run, continued
    assert [manager.store.find(trial.run_id).epochs_done for trial in record.trials] == [1, 1]


def test_a_damaged_sweep_record_is_reported_not_raised(cache_dir, runner):
    folder = cache_dir / ".sweeps"
    folder.mkdir()
    (folder / "broken.json").write_text("{not json")
    at = new_app().run()
    assert_no_exception(at)
    assert any("Sweep broken cannot be shown" in text and "unreadable" in text for text in texts(at.warning))
    fill(at, "broken", epochs="1,2")
    assert "Sweep name: sweep broken: broken.json is unreadable" in errors(at)
