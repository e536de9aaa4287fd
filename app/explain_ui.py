"""Why did the model say that? Grad-CAM heatmaps, nearest training images, and the feature-space map.

Everything is computed by ``resnet.core.explain`` from the shown run's checkpoint (loaded once per server
process, see ``app.checkpoints.checkpoint_model``) or read from the files the trainer wrote for each epoch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import areas, chart_specs, charts, checkpoints, state
from data.fashion_mnist import CLASS_NAMES, TEST_SIZE, DatasetError, load_fashion_mnist
from resnet.core import explain
from resnet.store import artefacts
from resnet.store.artefacts import BANK_SIZE
from resnet.store.runs import Run, RunError
from resnet.training.jobs import JobManager
from resnet.wording import plural

NEIGHBOURS = 8  # nearest training images shown for an explained test image
SHOWN_SIZE = 140  # pixels an explanation image is drawn at
REGION_LIMIT = 32  # images shown for a region of the feature map


def why_button(column, grid: str, test_index: int) -> None:
    """The button under a grid image that opens its explanation below that grid."""
    column.button(
        "Why?",
        key=f"why_{grid}_{test_index}",
        on_click=state.explain_image,
        args=(grid, test_index),
        help="Where the model looked (Grad-CAM) and the training images it finds most similar.",
    )


@areas.area("explanation")
def explanation_below(grid: str, manager: JobManager, run: Run, frame: pd.DataFrame, images: np.ndarray) -> None:
    """The explanation of the image picked in ``grid``, if one was picked there and is in ``frame``.

    An area inside the grid's area: its stage picker and Close rerun the explanation alone.
    """
    picked = state.explained(grid)
    if picked is None:
        return
    rows = frame[frame["test_index"] == picked]
    if rows.empty:  # another run, evaluated on another subset
        return
    with st.container(border=True):
        top = st.columns([6, 1])
        top[1].button("Close", key=f"close_{grid}", on_click=state.close_explanation, args=(grid,))
        explanation_ui(manager, run, rows.iloc[0].to_dict(), images, header=top[0], grid=grid)


def _model(manager: JobManager, run: Run, what: str):
    """The run's checkpoint as a model, or None with the reason shown."""
    try:
        with st.spinner(f"Loading the checkpoint of epoch {run.epochs_done} to {what}..."):
            return checkpoints.checkpoint_model(manager.store, run)
    except RunError as error:
        st.warning(f"Cannot {what}: {error}.")
        return None


def explanation_ui(manager: JobManager, run: Run, record: dict, images: np.ndarray, *, header, grid: str) -> None:
    """Two heatmaps (predicted and true class) and the nearest training images of one test image."""
    true_index, predicted_index = int(record["true_index"]), int(record["predicted_index"])
    test_index = int(record["test_index"])
    verdict = "correctly" if true_index == predicted_index else "wrongly"
    header.markdown(
        f"**Test image {test_index:,}**: a {CLASS_NAMES[true_index]}, {verdict} predicted as "
        f"**{CLASS_NAMES[predicted_index]}** ({record['confidence']:.0%}) after epoch {run.epochs_done}."
    )
    model = _model(manager, run, "explain this prediction")
    if model is None:
        return
    heatmaps_ui(grid, run, model, images[test_index], test_index, true_index, predicted_index)
    neighbours_ui(manager, run, model, images[test_index], test_index, true_index, predicted_index)


def heatmaps_ui(grid, run, model, image, test_index, true_index, predicted_index) -> None:
    """The heatmaps of one image, on a stage picked per grid (two grids may each have one open)."""
    stages = explain.spatial_stages(model)
    names = [stage.name for stage in stages]
    labels = {stage.name: f"{stage.name} ({stage.size}x{stage.size})" for stage in stages}
    stage_key = f"{state.EXPLAIN_STAGE}_{grid}"
    if st.session_state.get(stage_key) not in names:
        st.session_state[stage_key] = explain.DEFAULT_STAGE if explain.DEFAULT_STAGE in names else names[-1]
    stage = st.segmented_control(
        "Where the model looked (Grad-CAM on stage)",
        names,
        format_func=labels.get,
        key=stage_key,
        help=explain.STAGE_HELP,
    )
    stage = stage or st.session_state.get(stage_key) or explain.DEFAULT_STAGE
    classes = (predicted_index,) if predicted_index == true_index else (predicted_index, true_index)
    with st.spinner(f"Computing Grad-CAM on {stage}..."):
        heatmaps = checkpoints.heatmaps(run, model, test_index, image, classes, stage)
    columns = st.columns(3)
    columns[0].image(_scaled(image), width=SHOWN_SIZE)
    columns[0].caption("The test image")
    for column, heatmap, role in zip(columns[1:], heatmaps, ("predicted", "true"), strict=False):
        name = CLASS_NAMES[heatmap.class_index]
        caption = f"Evidence for {name} ({role}, {heatmap.probability:.0%})"
        shown = explain.overlay(image, heatmap.heat) if heatmap.has_evidence else image
        column.image(_scaled(shown), width=SHOWN_SIZE)
        column.caption(caption)
        if not heatmap.has_evidence:
            column.caption(f"No positive evidence for {name} on {stage}: the map is zero everywhere.")
    if len(heatmaps) == 1:
        columns[2].caption("Predicted correctly: the true class is the predicted one.")


def neighbours_ui(manager, run, model, image, test_index, true_index, predicted_index) -> None:
    try:
        train = load_fashion_mnist(download=False)
    except DatasetError as error:
        st.warning(f"The nearest training images cannot be shown: {error}")
        return
    try:
        with st.spinner(
            f"Computing the features of {min(BANK_SIZE, run.config.train_subset):,} training images for epoch "
            f"{run.epochs_done} (once per checkpoint; later views read them from the cache)..."
        ):
            bank = checkpoints.feature_bank(run, model, train.train_images, train.train_labels)
    except RunError as error:
        st.warning(f"The nearest training images cannot be shown: {error}")
        return
    if bank.unsaved:
        st.caption(f"These features are kept in memory only and computed again after a restart: {bank.unsaved}.")
    rows, similarities = checkpoints.nearest_neighbours(run, model, test_index, image, bank, NEIGHBOURS)
    neighbour_labels = bank.labels[rows]
    who = f"It called this {CLASS_NAMES[true_index]} a {CLASS_NAMES[predicted_index]}"
    if true_index == predicted_index:
        who = f"It recognised this {CLASS_NAMES[true_index]}"
    st.markdown(
        f"{who}; its {len(rows)} nearest training images (cosine similarity of the penultimate features, among "
        f"{len(bank.indices):,} class-balanced training images) are "
        f"**{explain.neighbour_summary(neighbour_labels, CLASS_NAMES)}**."
    )
    columns = st.columns(len(rows))
    for column, row, similarity in zip(columns, rows, similarities, strict=True):
        index = int(bank.indices[row])
        column.image(_scaled(train.train_images[index], 3), width=84)
        column.caption(f"{CLASS_NAMES[int(bank.labels[row])]}  \nsimilarity {similarity:.2f}")


def _scaled(image: np.ndarray, scale: int = 5) -> np.ndarray:
    """A 28x28 (grey or RGB) image enlarged pixel by pixel, so it stays sharp."""
    return np.asarray(image).repeat(scale, axis=0).repeat(scale, axis=1)


# --- the feature-space map ------------------------------------------------------------------------------


def _map_frame(feature_map: dict, true_labels: np.ndarray) -> pd.DataFrame:
    """The map's points with their classes; ``true_labels`` maps test-set index -> label (-1: unknown)."""
    names = np.asarray(CLASS_NAMES)
    labels = true_labels[np.asarray(feature_map["indices"], dtype=int)]
    predicted = np.asarray(feature_map["predicted"], dtype=int)
    coords = np.asarray(feature_map["coords"], dtype=np.float32)
    return pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "test_index": np.asarray(feature_map["indices"], dtype=int),
            "true": np.where(labels >= 0, names[labels.clip(0)], ""),
            "predicted": names[predicted],
            "confidence": np.asarray(feature_map["confidence"], dtype=np.float32),
            "outcome": np.where(labels == predicted, "correct", "mistake"),
        }
    )


def _selected(frame: pd.DataFrame, event) -> pd.DataFrame | None:
    """The rows inside the brushed rectangle, or None when nothing is brushed."""
    region = (event.selection.get(charts.MAP_REGION) if event is not None else None) or {}
    if "x" not in region or "y" not in region:
        return None
    (x0, x1), (y0, y1) = sorted(region["x"]), sorted(region["y"])
    return frame[frame["x"].between(x0, x1) & frame["y"].between(y0, y1)]


@areas.area("feature_map")
def feature_map_ui(manager: JobManager, run: Run, predictions: dict, images: np.ndarray | None) -> None:
    """A 2-D PCA map of the evaluated test images' penultimate features, for any recorded epoch (or two).

    The true classes come from the run's predictions file: every epoch evaluates the same test images.
    An area of its own: the epoch pickers and the brush rerun the maps alone.
    """
    st.subheader("Feature-space map")
    true_labels = np.full(TEST_SIZE, -1, dtype=int)
    true_labels[np.asarray(predictions["indices"], dtype=int)] = np.asarray(predictions["labels"], dtype=int)
    epochs = artefacts.feature_map_epochs(run)
    if run.epochs_done and run.epochs_done not in epochs:
        st.caption(
            f"This run recorded no map for epoch {run.epochs_done} (it was trained before maps were kept); "
            "it can be computed from the checkpoint."
        )
        if _compute_map_button(manager, run, images, "Compute the map of the last epoch") is not None:
            epochs = artefacts.feature_map_epochs(run)
    if not epochs:
        st.info("No feature map yet: one is recorded after every epoch.")
        return
    st.caption(
        "Each point is an evaluated test image placed by its penultimate-layer features (2048 numbers for "
        "ResNet-50, 512 for ResNet-18/34) projected onto their two principal components; colour is the true "
        "class, a cross a mistake. Drag a rectangle to see those images. Compare two epochs to watch the "
        "classes separate."
    )
    columns = st.columns(2)
    if st.session_state.get(state.MAP_EPOCH) not in epochs:
        st.session_state[state.MAP_EPOCH] = epochs[-1]
    epoch = columns[0].selectbox("Epoch", epochs, key=state.MAP_EPOCH)
    choices = ["none", *[e for e in epochs if e != epoch]]
    if st.session_state.get(state.MAP_COMPARE) not in choices:
        st.session_state[state.MAP_COMPARE] = "none" if epoch == epochs[0] else epochs[0]
    compare = columns[1].selectbox("Compare with epoch", choices, key=state.MAP_COMPARE)
    shown = [epoch] if compare == "none" else [compare, epoch]
    shown.sort()
    for column, shown_epoch in zip(st.columns(len(shown)), shown, strict=True):
        with column:
            _one_map(manager, run, shown_epoch, true_labels, images)


def _compute_map_button(manager: JobManager, run: Run, images: np.ndarray | None, label: str) -> dict | None:
    """A button that computes (and saves) the map of the checkpoint's epoch; the map once it has."""
    if images is None or not st.button(label, key="compute_map"):
        return None
    model = _model(manager, run, "compute the map")
    if model is None:
        return None
    try:
        with st.spinner(f"Computing features of the evaluated test images for epoch {run.epochs_done}..."):
            return checkpoints.ensure_feature_map(manager.store, run, model, images)
    except RunError as error:
        st.warning(f"The map of epoch {run.epochs_done} cannot be computed: {error}")
        return None


def _one_map(manager: JobManager, run: Run, epoch: int, true_labels: np.ndarray, images: np.ndarray | None) -> None:
    try:
        feature_map = artefacts.load_feature_map(manager.store, run, epoch)
    except RunError as error:
        st.warning(f"The map of epoch {epoch} cannot be read: {error}")
        if epoch != run.epochs_done:
            return  # an earlier epoch's map cannot be computed again: its checkpoint is gone
        feature_map = _compute_map_button(manager, run, images, "Compute it again from the checkpoint")
        if feature_map is None:
            return
    frame = _map_frame(feature_map, true_labels)
    if (frame["true"] == "").any():
        st.warning(f"The map of epoch {epoch} covers test images the predictions do not: it cannot be coloured.")
        return
    explained = np.asarray(feature_map["explained"], dtype=float)
    accuracy = float((frame["outcome"] == "correct").mean()) if len(frame) else 0.0
    title = f"Epoch {epoch}: {accuracy:.1%} correct"
    axis_titles = (f"PC 1 ({explained[0]:.0%} of variance)", f"PC 2 ({explained[1]:.0%})")
    event = chart_specs.draw(
        st,
        ("feature_map", chart_specs.frame_token(frame), title, axis_titles),
        lambda: charts.feature_map_chart(frame, class_order=CLASS_NAMES, title=title, axis_titles=axis_titles),
        key=f"feature_map_{epoch}",
        on_select="rerun",
        selection_mode=charts.MAP_REGION,
        alt=f"Feature-space map of epoch {epoch}",
    )
    picked = _selected(frame, event)
    if picked is None:
        return
    mistakes = int((picked["outcome"] == "mistake").sum())
    st.caption(
        f"{plural(len(picked), 'image')} in the region ({plural(mistakes, 'mistake')}); showing up to "
        f"{REGION_LIMIT}, mistakes first."
    )
    if images is None or picked.empty:
        return
    picked = picked.sort_values(["outcome", "confidence"], ascending=[False, False]).head(REGION_LIMIT)
    records = picked.to_dict("records")
    per_row = 8
    for start in range(0, len(records), per_row):
        for column, record in zip(st.columns(per_row), records[start : start + per_row], strict=False):
            column.image(_scaled(images[record["test_index"]], 2), width=56)
            mark = ":red[✗]" if record["outcome"] == "mistake" else ":green[✓]"
            column.caption(f"{mark} {record['predicted']}")
