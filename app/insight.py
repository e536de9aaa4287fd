"""Understanding the predictions of a run's last epoch: confusion matrix, per-class accuracy, image grids.

Each grid image has a "Why?" button that opens its explanation (``app.explain_ui``) below that grid; the
feature-space map closes the tab.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import areas, chart_specs, charts, explain_ui, state
from data.fashion_mnist import CLASS_NAMES, DatasetError, load_fashion_mnist
from resnet.analysis import (
    confusion_frame,
    confusion_matrix,
    filter_predictions,
    most_confused_pair,
    per_class_accuracy,
    prediction_frame,
)
from resnet.store.runs import DamagedRun, Run, RunError
from resnet.training.jobs import JobManager

ANY = "Any"
GRID_COLUMNS = 8
SCALE = 3  # 28 px images drawn as 84 px, pixel-sharp


def test_images() -> np.ndarray | None:
    """The 10,000 test images, or None (with an error shown) if the dataset is not readable here."""
    try:
        return load_fashion_mnist(download=False).test_images
    except DatasetError as error:
        st.error(f"The test images cannot be shown: {error}")
        return None


def image_grid(rows: pd.DataFrame, images: np.ndarray | None, *, limit: int, grid: str | None = None) -> None:
    """Images with true class, prediction and confidence, ``GRID_COLUMNS`` to a row.

    With a ``grid`` name, each image gets a "Why?" button that opens its explanation below the grid.
    """
    if rows.empty:
        st.caption("No images match.")
        return
    rows = rows.head(limit)
    if images is None:
        st.dataframe(rows[["test_index", "true", "predicted", "confidence"]], hide_index=True)
        return
    records = rows.to_dict("records")
    for start in range(0, len(records), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, record in zip(columns, records[start : start + GRID_COLUMNS], strict=False):
            picture = images[record["test_index"]].repeat(SCALE, axis=0).repeat(SCALE, axis=1)
            column.image(picture, width=28 * SCALE)
            mark = ":green[✓]" if record["correct"] else ":red[✗]"
            column.caption(f"{mark} **{record['predicted']}** {record['confidence']:.0%}  \ntrue: {record['true']}")
            if grid is not None:
                explain_ui.why_button(column, grid, record["test_index"])


@areas.area("confusion")
def confusion_ui(manager: JobManager, run: Run, frame: pd.DataFrame, images: np.ndarray | None) -> None:
    """The confusion matrix and per-class accuracy, and the images of one confused pair (a matrix cell or
    the pair picker). An area of its own: its toggle, cell clicks, picker and Why? rerun it alone."""
    counts = confusion_matrix(frame["true_index"], frame["predicted_index"])
    left, right = st.columns([3, 2])
    with left:
        normalised = st.toggle(
            "Row-normalised (share of each true class)",
            key="confusion_normalised",
            help="Off: how many images of each true class got each prediction. On: the share of the true class.",
        )
        token = chart_specs.array_token(counts)
        event = chart_specs.draw(
            st,
            ("confusion", token, normalised),
            lambda: charts.confusion_chart(confusion_frame(counts), normalised=normalised, class_order=CLASS_NAMES),
            key="confusion_chart",
            on_select="rerun",
            selection_mode=charts.CELL_SELECTION,
            alt="Confusion matrix of true against predicted classes",
        )
    with right:
        labels, predicted = frame["true_index"].to_numpy(), frame["predicted_index"].to_numpy()
        chart_specs.draw(
            st,
            ("per_class", token),
            lambda: charts.per_class_chart(per_class_accuracy(labels, predicted)),
            alt="Test accuracy per class",
        )

    picked = (event.selection.get(charts.CELL_SELECTION) or [None])[0] if event is not None else None
    if picked and (picked.get("true"), picked.get("predicted")) != st.session_state.get(state.PICKED_CELL):
        st.session_state[state.PICKED_CELL] = (picked.get("true"), picked.get("predicted"))
        st.session_state[state.PAIR_TRUE], st.session_state[state.PAIR_PREDICTED] = picked["true"], picked["predicted"]

    st.markdown("**Which images are confused?** Pick a cell of the matrix, or a pair here:")
    if state.PAIR_TRUE not in st.session_state:  # first look: the most confused pair (set once, no index=)
        default_true, default_predicted = most_confused_pair(counts)
        st.session_state[state.PAIR_TRUE] = CLASS_NAMES[default_true]
        st.session_state[state.PAIR_PREDICTED] = CLASS_NAMES[default_predicted]
    left, right = st.columns(2)
    true_name = left.selectbox("True class", CLASS_NAMES, key=state.PAIR_TRUE)
    predicted_name = right.selectbox("Predicted as", CLASS_NAMES, key=state.PAIR_PREDICTED)
    true_index, predicted_index = CLASS_NAMES.index(true_name), CLASS_NAMES.index(predicted_name)
    rows = filter_predictions(frame, true_class=true_index, predicted_class=predicted_index)
    what = "correctly classified" if true_index == predicted_index else "misclassified"
    images_word = "image" if len(rows) == 1 else "images"
    st.caption(f"{len(rows)} {true_name} {images_word} {what} as {predicted_name}, most confident first.")
    image_grid(rows, images, limit=2 * GRID_COLUMNS, grid="pair")
    if images is not None:
        explain_ui.explanation_below("pair", manager, run, frame, images)


@areas.area("sample_grid")
def predictions_grid_ui(manager: JobManager, run: Run, frame: pd.DataFrame, images: np.ndarray | None) -> None:
    """Sample predictions, filtered and ordered here. An area of its own: its filters and Why? rerun it alone."""
    st.subheader("Sample predictions")
    columns = st.columns([2, 2, 2, 2, 1])
    mistakes = columns[0].toggle("Misclassified only", value=True, key="grid_mistakes")
    true_choice = columns[1].selectbox("True class", (ANY, *CLASS_NAMES), key="grid_true")
    predicted_choice = columns[2].selectbox("Predicted class", (ANY, *CLASS_NAMES), key="grid_predicted")
    order = columns[3].selectbox(
        "Order",
        ("Most confident first", "Least confident first"),
        key="grid_order",
        help="With 'Misclassified only', the most confident mistakes come first.",
    )
    limit = columns[4].number_input("Images", min_value=8, max_value=96, value=24, step=8, key="grid_limit")
    rows = filter_predictions(
        frame,
        mistakes_only=mistakes,
        true_class=None if true_choice == ANY else CLASS_NAMES.index(true_choice),
        predicted_class=None if predicted_choice == ANY else CLASS_NAMES.index(predicted_choice),
        most_confident_first=order == "Most confident first",
    )
    st.caption(f"{len(rows)} of {len(frame)} evaluated test images match; showing up to {limit}.")
    image_grid(rows, images, limit=int(limit), grid="sample")
    if images is not None:
        explain_ui.explanation_below("sample", manager, run, frame, images)


def understanding_ui(manager: JobManager, run: Run | None) -> None:
    """Everything about the shown run's latest predictions."""
    if run is None:
        st.info("No run to look at yet: train one (sidebar) and its predictions appear here.")
        return
    if run.damaged:
        st.error(f"Run {run.run_id} is damaged: {run.problem}")
        return
    try:
        predictions = manager.store.load_predictions(run)
    except DamagedRun as error:  # damaged since the run was listed
        st.error(f"Run {run.run_id} is damaged: {error}")
        return
    except RunError as error:
        st.info(f"{error}: predictions appear after the first epoch.")
        return
    frame = prediction_frame(predictions["probabilities"], predictions["labels"], predictions["indices"])
    accuracy = float(frame["correct"].mean()) if len(frame) else 0.0
    st.caption(
        f"Run {run.run_id}: predictions after epoch {int(predictions['epoch'])} on {len(frame):,} test images "
        f"({accuracy:.1%} correct)."
    )
    images = test_images()
    st.subheader("Confusion matrix and per-class accuracy")
    confusion_ui(manager, run, frame, images)
    predictions_grid_ui(manager, run, frame, images)
    explain_ui.feature_map_ui(manager, run, predictions, images)
