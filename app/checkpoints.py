"""Checkpoints loaded once per server process, and what the explanations compute from them.

Keyed by the checkpoint's path and modification time: a checkpoint is loaded once, not on every rerun,
and a new epoch's checkpoint (a new name) or a rewritten one (a new time) is loaded afresh. At most two
models are held, so looking through many runs does not pile them up in memory.
"""

from __future__ import annotations

import sys

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import script_runner

from resnet.core import explain
from resnet.files import path_mtime
from resnet.store import artefacts
from resnet.store.artefacts import FeatureBank
from resnet.store.runs import Run, RunError


def _clean_up_after_a_run_but_keep_keras() -> None:
    """What Streamlit does after every script run, less ``keras.backend.clear_session()``."""
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def keep_compiled_functions() -> None:
    """Ask Streamlit not to clear Keras' session after every script run.

    Streamlit 1.67 calls ``keras.backend.clear_session()`` after each run (``_clean_problem_modules`` in
    ``streamlit.runtime.scriptrunner.script_runner``), which clears TensorFlow's kernel cache: each of the
    explanation's functions was instantiated again (Grappler) on its first call of every run, 0.42 s for
    Grad-CAM and 0.25 s for the features of ResNet-50 here, against 0.05 s and 0.012 s once instantiated
    (docs/benchmarks.md section 15). This app keeps its models and their functions on purpose (at most two
    checkpoints, ``_model_at``) and builds no Keras layer on a rerun, so it keeps the session; matplotlib,
    the other module Streamlit cleans, is still closed. A Streamlit without that function is left as it is.
    """
    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = _clean_up_after_a_run_but_keep_keras


keep_compiled_functions()


def _checkpoint_key(run: Run) -> tuple[str, float]:
    path = run.checkpoint_path
    if path is None or not path.is_file():
        raise RunError(f"run {run.run_id} has no checkpoint for epoch {run.epochs_done}")
    return str(path), path_mtime(path)


@st.cache_resource(max_entries=2, show_spinner=False)
def _model_at(path: str, mtime: float, _store, _run: Run):
    return artefacts.load_model(_store, _run)


def checkpoint_model(store, run: Run):
    """The run's committed checkpoint as a Keras model; RunError (or DamagedRun) if there is none to load."""
    return _model_at(*_checkpoint_key(run), store, run)


@st.cache_data(max_entries=256, show_spinner=False)
def _heatmaps_at(path, mtime, test_index, classes, stage, _model, _image) -> list[explain.Heatmap]:
    return explain.grad_cam(_model, _image, classes, stage=stage)


def heatmaps(run: Run, model, test_index: int, image: np.ndarray, classes, stage: str) -> list[explain.Heatmap]:
    """Grad-CAM heatmaps of one test image for ``classes``, cached per checkpoint, image and stage."""
    return _heatmaps_at(*_checkpoint_key(run), int(test_index), tuple(int(c) for c in classes), stage, model, image)


@st.cache_resource(max_entries=2, show_spinner=False)
def _bank_at(path: str, mtime: float, _run: Run, _model, _images, _labels) -> FeatureBank:
    images = np.asarray(_images)
    return artefacts.feature_bank(
        _run, lambda indices: explain.penultimate_features(_model, images[indices]), train_labels=_labels
    )


def feature_bank(run: Run, model, train_images: np.ndarray, train_labels) -> FeatureBank:
    """The run's nearest-neighbour bank (from its features file, or computed once and written there)."""
    return _bank_at(*_checkpoint_key(run), run, model, train_images, train_labels)


@st.cache_data(max_entries=256, show_spinner=False)
def _neighbours_at(path, mtime, test_index, count, _model, _image, _bank) -> tuple[np.ndarray, np.ndarray]:
    query = explain.penultimate_features(_model, _image[np.newaxis])[0]
    return explain.nearest_neighbours(_bank.features, query, count)


def nearest_neighbours(run: Run, model, test_index: int, image: np.ndarray, bank: FeatureBank, count: int):
    """Rows of ``bank`` nearest to one test image, and their similarities, cached per checkpoint and image
    (a rerun with the explanation open runs no model)."""
    return _neighbours_at(*_checkpoint_key(run), int(test_index), int(count), model, image, bank)


def ensure_feature_map(store, run: Run, model, test_images: np.ndarray) -> dict:
    """The map of the checkpoint's epoch, computed from ``model`` once for a run that recorded none."""
    images = np.asarray(test_images)
    return artefacts.ensure_feature_map(
        store, run, lambda indices: explain.feature_map_of(model, images[indices], indices)
    )
