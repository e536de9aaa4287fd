"""Checkpoints loaded once per server process, and what the explanations compute from them.

Keyed by the checkpoint's path and modification time: a checkpoint is loaded once, not on every rerun,
and a new epoch's checkpoint (a new name) or a rewritten one (a new time) is loaded afresh. At most two
models are held, so looking through many runs does not pile them up in memory.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from resnet.core import explain
from resnet.files import path_mtime
from resnet.store import artefacts
from resnet.store.artefacts import FeatureBank
from resnet.store.runs import Run, RunError


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
