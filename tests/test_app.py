"""The Streamlit app under AppTest: empty cache, settings and the URL, a real tiny training, two sessions.

Everything is real: the app's own JobManager (fetched the same way the app does, ``app.services``) trains
tiny ResNet-18s on the Fashion-MNIST files into a temporary run cache (``cache_dir`` from conftest). A
fragment's ``run_every`` does not fire under AppTest, so the tests wait on the manager and rerun.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from support import run_folders, written

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
TIMEOUT = 120  # seconds per script run (the first one imports TensorFlow)
TRAINING_TIMEOUT = 300
TINY = {"epochs": 1, "batch_size": 64, "train_subset": 200, "eval_subset": 200, "depth": 18}


@pytest.fixture
def manager(cache_dir):
    """The app's JobManager for this test's cache; any training still running is stopped afterwards."""
    from app import services

    manager = services.get_manager()
    assert Path(manager.store.root).resolve() == cache_dir.resolve()
    yield manager
    manager.stop()
    assert manager.wait(TRAINING_TIMEOUT), "the training thread did not end"


def new_app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for name, value in (query or {}).items():
        at.query_params[name] = str(value)
    return at


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [exception.value for exception in at.exception]


def set_tiny(at: AppTest) -> None:
    at.slider(key="cfg_epochs").set_value(TINY["epochs"])
    at.select_slider(key="cfg_batch_size").set_value(TINY["batch_size"])
    at.number_input(key="cfg_train_subset").set_value(TINY["train_subset"])
    at.number_input(key="cfg_eval_subset").set_value(TINY["eval_subset"])
    at.selectbox(key="cfg_depth").set_value(TINY["depth"])
    at.run()


def charts(at: AppTest) -> dict[str, list[pd.DataFrame]]:
    """Every Altair chart on the page: its title -> the data frames it draws."""
    found = {}
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        title = spec.get("title")
        title = title.get("text") if isinstance(title, dict) else title
        found[title] = [pa.ipc.open_stream(dataset.data.data).read_pandas() for dataset in element.proto.datasets]
    return found


def sidebar_text(at: AppTest) -> str:
    return "\n".join(texts(at.sidebar.markdown))


def wait_until_idle(manager, timeout: float = TRAINING_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while manager.snapshot().active:
        assert time.monotonic() < deadline, f"training did not finish in {timeout} s: {manager.snapshot()}"
        manager.wait(1.0)


def test_empty_cache_loads_and_explains_what_to_do(cache_dir, manager):
    at = new_app().run()
    assert_no_exception(at)
    assert any("No training runs yet" in text for text in texts(at.info))
    assert any(f"No runs in {cache_dir}" in text for text in texts(at.info))
    assert at.button(key="start").disabled is False
    assert at.button(key="stop").disabled is True  # nothing runs
    assert "unknown until the first epoch" in sidebar_text(at)
    # Names the device and says whether a GPU is in use, as it is on this machine.
    from resnet.core.hardware import detect_hardware

    hardware = detect_hardware()
    shown, not_shown = ("GPU in use", "no GPU found") if hardware.gpus else ("no GPU found", "GPU in use")
    assert f"**Hardware:** {hardware.device_label}" in sidebar_text(at)
    assert shown in sidebar_text(at) and not_shown not in sidebar_text(at)
    # Defaults (TrainConfig's) are used and mirrored into the URL.
    assert at.slider(key="cfg_epochs").value == 10
    assert at.select_slider(key="cfg_batch_size").value == 128
    assert at.query_params["epochs"] == "10" and at.query_params["depth"] == "50"
    # Every setting has help text.
    for widget in [*at.sidebar.slider, *at.sidebar.number_input, *at.sidebar.selectbox, *at.sidebar.toggle]:
        assert widget.help, f"{widget.label} has no help text"


def test_sidebar_changes_reach_the_url_and_are_validated(cache_dir, manager):
    at = new_app().run()
    at.slider(key="cfg_epochs").set_value(25)
    at.select_slider(key="cfg_batch_size").set_value(256)
    at.number_input(key="cfg_train_subset").set_value(5000)
    at.toggle(key="cfg_augment").set_value(True)
    at.selectbox(key="cfg_optimizer").set_value("sgd")
    at.run()
    assert_no_exception(at)
    assert at.query_params["epochs"] == "25"
    assert at.query_params["batch_size"] == "256"
    assert at.query_params["train_subset"] == "5000"
    assert at.query_params["augment"] == "true"
    assert at.query_params["optimizer"] == "sgd"
    assert "ResNet-50 run at batch size 256" in sidebar_text(at)

    # Fewer training images than one batch cannot be trained: said so, and Start is disabled.
    at.number_input(key="cfg_train_subset").set_value(100)
    at.run()
    assert_no_exception(at)
    assert any("train_subset (100) must be at least batch_size (256)" in text for text in texts(at.sidebar.error))
    assert at.button(key="start").disabled is True


def test_shared_url_is_applied_and_bad_values_are_replaced_by_defaults(cache_dir, manager):
    at = new_app({"epochs": "abc", "batch_size": "7", "depth": "18", "augment": "true", "learning_rate": "nan"})
    at.run()
    assert_no_exception(at)
    warnings = " ".join(texts(at.warning))
    assert "epochs='abc'" in warnings and "whole number" in warnings
    assert "batch_size='7'" in warnings
    assert "learning_rate='nan'" in warnings
    assert at.slider(key="cfg_epochs").value == 10  # defaults replace the bad values
    assert at.select_slider(key="cfg_batch_size").value == 128
    assert at.number_input(key="cfg_learning_rate").value == pytest.approx(0.003)
    assert at.selectbox(key="cfg_depth").value == 18  # the good values of the link are used
    assert at.toggle(key="cfg_augment").value is True
    assert at.query_params["epochs"] == "10" and at.query_params["batch_size"] == "128"
    assert at.query_params["depth"] == "18"

    # Out of the widgets' range, or inconsistent with each other, is rejected too.
    at = new_app({"epochs": "501", "train_subset": "150", "batch_size": "256", "precision": "fp8"}).run()
    assert_no_exception(at)
    warnings = " ".join(texts(at.warning))
    assert "epochs must be between 1 and 500" in warnings
    assert "precision='fp8'" in warnings
    assert "train_subset" in warnings and "batch_size" in warnings
    assert at.number_input(key="cfg_train_subset").value == 60000


def test_damaged_run_is_shown_as_damaged_and_the_rest_works(cache_dir, manager):
    broken = cache_dir / "20200101-000000-resnet18-broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    at = new_app().run()
    assert_no_exception(at)
    errors = " ".join(texts(at.error))
    assert "is damaged" in errors and "config.json" in errors
    table = at.dataframe[0].value
    assert table.loc[0, "status"] == "damaged"
    assert "DAMAGED" in table.loc[0, "problem_or_note"]
    assert at.button(key="start").disabled is False


def test_dataset_missing_is_explained(cache_dir, manager, tmp_path, monkeypatch):
    empty = tmp_path / "no-dataset"
    empty.mkdir()
    monkeypatch.setenv("FASHION_MNIST_DIR", str(empty))
    at = new_app(TINY).run()
    assert_no_exception(at)
    assert any("FASHION_MNIST_DIR" in text and "lacks" in text for text in texts(at.error))
    at.button(key="start").click().run()
    assert_no_exception(at)
    assert any(text.startswith("Not started:") and "FASHION_MNIST_DIR" in text for text in texts(at.error))
    assert not manager.snapshot().active
    assert not written(cache_dir)  # no run was created


def test_tiny_training_fills_every_view_then_extend_and_delete(cache_dir, manager, dataset_dir):
    at = new_app().run()
    set_tiny(at)
    at.button(key="start").click().run()
    assert_no_exception(at)
    assert any(text.startswith("Started run") for text in texts(at.success)), texts(at.success)
    run_id = manager.snapshot().run_id
    assert run_id
    wait_until_idle(manager)
    assert manager.snapshot().state == "complete", manager.snapshot()

    at.run()
    assert_no_exception(at)
    history = pd.read_csv(cache_dir / run_id / "history.csv")
    assert list(history["epoch"]) == [1]

    # The results table holds the run's numbers.
    table = at.dataframe[0].value
    assert list(table.columns) == ["epoch", "train_accuracy", "test_accuracy", "epoch_seconds", "cumulative_seconds"]
    assert table["test_accuracy"].tolist() == pytest.approx(history["test_accuracy"].tolist())
    assert table["train_accuracy"].tolist() == pytest.approx(history["train_accuracy"].tolist())
    assert any(button.label == "Download results (CSV)" for button in at.download_button)

    # The charts draw the run's history and its predictions.
    drawn = charts(at)
    accuracy = drawn["Train and test accuracy per epoch"][0]
    assert accuracy[accuracy["split"] == "test"]["accuracy"].tolist() == pytest.approx(
        history["test_accuracy"].tolist()
    )
    # Plain cross-entropy for train and test (they compare like with like), the smoothed loss beside them.
    loss = drawn["Train and test cross-entropy per epoch"][0]
    assert set(loss["split"]) == {"train", "test", "train, label-smoothed (optimised)"}
    assert loss[loss["split"] == "train"]["loss"].tolist() == pytest.approx(history["train_cross_entropy"].tolist())
    assert loss[loss["split"] == "test"]["loss"].tolist() == pytest.approx(history["test_loss"].tolist())
    assert "Seconds per epoch" in drawn and "Cumulative training time" in drawn
    assert "Test accuracy against training time" in drawn
    matrix = drawn["Confusion matrix (image counts)"][0]
    assert len(matrix) == 100 and matrix["count"].sum() == TINY["eval_subset"]
    correct = matrix[matrix["true"] == matrix["predicted"]]["count"].sum()
    assert correct / TINY["eval_subset"] == pytest.approx(history["test_accuracy"].iloc[0])
    assert "Test accuracy per class" in drawn
    assert len(at.get("image")) > 0  # the prediction grids show test images
    assert any("The diminishing-returns point needs at least 6 epochs" in text for text in texts(at.caption))

    # Row-normalised confusion matrix.
    at.toggle(key="confusion_normalised").set_value(True).run()
    shares = charts(at)["Confusion matrix (share of each true class)"][0]
    assert shares.groupby("true")["share"].sum().tolist() == pytest.approx([1.0] * 10)

    # Speeds measured in this run now give an estimate, scaled by the subset size.
    estimate = sidebar_text(at)
    assert "per epoch" in estimate and "measured" in estimate
    at.number_input(key="cfg_train_subset").set_value(4000).run()
    assert sidebar_text(at) != estimate

    # The runs table lists it; starting the same settings again trains nothing and says so.
    runs = at.dataframe[1].value
    assert runs.loc[0, "run"] == run_id and runs.loc[0, "status"] == "complete"
    at.number_input(key="cfg_train_subset").set_value(TINY["train_subset"]).run()
    at.button(key="start").click().run()
    assert any("already has 1 epoch" in text for text in texts(at.info)), texts(at.info)
    assert run_folders(cache_dir) == [run_id]

    # Extend trains the same run on (default: 10 more epochs); here to 2 epochs.
    extend = at.number_input(key=f"extend_to_{run_id}")
    assert extend.value == 11
    extend.set_value(2).run()
    at.button(key="extend").click().run()
    assert_no_exception(at)
    assert any(f"Extending run {run_id} from 1 to 2 epochs" in text for text in texts(at.success)), texts(at.success)
    wait_until_idle(manager)
    assert manager.snapshot().state == "complete", manager.snapshot()
    at.run()
    assert_no_exception(at)
    assert at.dataframe[0].value["epoch"].tolist() == [1, 2]
    assert run_folders(cache_dir) == [run_id]

    # The training child wrote each epoch's TensorBoard files; the Runs tab's button adds the Projector's.
    events = cache_dir / run_id / "tensorboard"
    assert {path.name for path in (events / "test").iterdir()} >= {
        f"events.out.tfevents.000{epoch}.{kind}" for epoch in (1, 2) for kind in ("scalars", "confusion")
    }
    at.button(key="tensorboard_run").click().run()
    assert_no_exception(at)
    assert any(f"TensorBoard files of {run_id} written" in text for text in texts(at.success)), texts(at.success)
    assert any(f"tensorboard --logdir {cache_dir}" in code.value for code in at.code)
    assert (events / "projector_config.pbtxt").is_file() and (events / "projector" / "epoch-0002").is_dir()

    # Delete needs a confirmation; it removes the run with its TensorBoard files.
    at.button(key="delete_run").click().run()
    assert any("cannot be undone" in text for text in texts(at.warning))
    assert (cache_dir / run_id).exists()
    at.button(key="confirm_delete_yes").click().run()
    assert_no_exception(at)
    assert not (cache_dir / run_id).exists()
    assert any(f"Deleted run {run_id}" in text for text in texts(at.success))
    assert any("No training runs yet" in text for text in texts(at.info))


def test_two_sessions_share_one_job(cache_dir, manager, dataset_dir):
    first, second = new_app(TINY).run(), new_app(TINY).run()
    first.button(key="start").click().run()
    assert_no_exception(first)
    assert manager.snapshot().active
    assert first.button(key="stop").disabled is False  # the page is redrawn in the new state at once
    second.button(key="start").click().run()
    assert_no_exception(second)
    refusals = [text for text in texts(second.warning) if "already running" in text]
    assert refusals and manager.snapshot().run_id in refusals[0]
    assert len(run_folders(cache_dir)) == 1  # exactly one training
    # The second tab sees the same job.
    assert any(f"Training run {manager.snapshot().run_id}" in text for text in texts(second.markdown))
    assert second.button(key="stop").disabled is False

    second.button(key="stop").click().run()  # any tab can stop it
    wait_until_idle(manager)
    assert manager.snapshot().state == "stopped"
    second.run()
    assert_no_exception(second)
