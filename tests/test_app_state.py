"""Session state the page shares between widgets and callbacks, checked through AppTest on a cached run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest
from test_runs import make_run

from app import state
from data.fashion_mnist import CLASS_NAMES
from resnet.store.runs import RunStore

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"


@pytest.fixture
def run_with_predictions(cache_dir, dataset):
    """A cached run whose predictions mostly confuse Shirt (6) with T-shirt/top (0): not the first pair."""
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=1)
    labels = dataset.test_labels[:100]
    predicted = np.where(labels == 6, 0, labels)
    probabilities = np.full((100, 10), 0.01)
    probabilities[np.arange(100), predicted] = 0.91
    np.savez(
        run.path / run.state.predictions,
        probabilities=probabilities.astype(np.float16),
        indices=np.arange(100, dtype=np.int32),
        labels=labels.astype(np.uint8),
        epoch=np.int32(1),
    )
    return run


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_picked_confusion_pair_sets_the_selectboxes_without_a_duplicate_value_warning(run_with_predictions):
    recorder = Recorder()
    logger = logging.getLogger(policies.__name__)
    logger.addHandler(recorder)
    policies._shown_default_value_warning = False  # Streamlit warns once per process
    try:
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        assert not at.exception
        # First look: the most confused pair.
        assert at.selectbox(key=state.PAIR_TRUE).value == "Shirt"
        assert at.selectbox(key=state.PAIR_PREDICTED).value == "T-shirt/top"
        # What a click on a cell does: write the pair into session state, then rerun.
        at.session_state[state.PAIR_TRUE] = CLASS_NAMES[2]
        at.session_state[state.PAIR_PREDICTED] = CLASS_NAMES[4]
        at.run()
        assert not at.exception
        assert at.selectbox(key=state.PAIR_TRUE).value == "Pullover"
    finally:
        logger.removeHandler(recorder)
    assert not [message for message in recorder.messages if "Session State API" in message], recorder.messages


def test_a_recipe_button_fills_the_settings_it_names_and_keeps_the_others():
    from resnet.config import RECIPES

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.number_input(key="cfg_seed").set_value(7).run()
    at.button(key="recipe_ten-epochs").click().run()
    assert not at.exception
    for field, value in RECIPES["ten-epochs"].settings.items():
        assert at.session_state[f"cfg_{field}"] == value, field
    assert at.toggle(key="cfg_augment").value is True and at.slider(key="cfg_epochs").value == 10
    assert at.number_input(key="cfg_seed").value == 7
