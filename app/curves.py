"""The shown run's learning curves, the diminishing-returns view, and its per-epoch results table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import areas, chart_specs, charts, state
from app.params import DEPTH_NAMES
from resnet.analysis import DEFAULT_THRESHOLD, DEFAULT_WINDOW, MIN_EPOCHS, returns_verdict
from resnet.store.runs import Run

RETURNS_HELP = (
    f"The point is the earliest epoch after which the next {DEFAULT_WINDOW} epochs added less than this, measured "
    "on a trend fitted to the test-accuracy curve (wide enough to see through the epoch-to-epoch noise of the "
    "evaluation, and never falling, so a dip and its recovery gain nothing), provided no later stretch of "
    f"{DEFAULT_WINDOW} epochs clearly beat it. Runs under {MIN_EPOCHS} epochs, runs still gaining, and runs too "
    f"noisy to tell get no point and say why. Runs shorter than {2 * DEFAULT_WINDOW} epochs use a third of their "
    "length as the window."
)


def run_label(run: Run) -> str:
    depth = DEPTH_NAMES.get(run.config.depth, "?") if run.config else "?"
    best = f", best {run.best_test_accuracy:.1%}" if run.best_test_accuracy is not None else ""
    return f"{run.run_id} ({depth}, {run.epochs_done} epochs{best}, {run.status})"


def curves_ui(run: Run) -> None:
    st.subheader("Learning curves")
    st.caption(run_label(run))
    if run.damaged:
        st.error(f"Run {run.run_id} is damaged and cannot be shown: {run.problem}")
        return
    history = run.history
    if history is None or history.empty:
        st.info("No epoch has finished yet: the curves appear after the first epoch.")
        return
    token = chart_specs.frame_token(history)  # the charts' key: drawn again only when the history changes
    smoothing = run.config.label_smoothing
    left, right = st.columns(2)
    chart_specs.draw(
        left, ("accuracy", token), lambda: charts.accuracy_chart(history), alt="Train and test accuracy per epoch"
    )
    chart_specs.draw(
        right,
        ("loss", token, smoothing),
        lambda: charts.loss_chart(history, label_smoothing=smoothing),
        alt="Train and test cross-entropy per epoch",
    )
    left, right = st.columns(2)
    chart_specs.draw(left, ("epoch_time", token), lambda: charts.epoch_time_chart(history), alt="Seconds per epoch")
    chart_specs.draw(
        right,
        ("cumulative_time", token),
        lambda: charts.cumulative_time_chart(history),
        alt="Cumulative training time",
    )
    returns_ui(history, run)
    results_table_ui(run)


@areas.area("returns")
def returns_ui(history: pd.DataFrame, run: Run | None = None) -> None:
    """Accuracy against time with the diminishing-returns point, for the threshold chosen here.

    For an auto run, what it decided comes first, and the chart marks its stable phase and cooldown.
    An area of its own: changing the threshold reruns this alone.
    """
    st.subheader("When do more epochs stop paying?")
    stop = run.state.stop if run is not None and run.state is not None else None
    if stop is not None:
        last = float(history["test_accuracy"].iloc[-1])
        st.info(stop.sentence(last, done=run.epochs_done), icon=":material/timer_off:")
    elif run is not None and run.config is not None and run.config.epochs_mode == "auto":
        st.info(run.length_text().replace("auto: ", "Training ", 1) + ".", icon=":material/timer:")
    points = st.number_input(
        f"Diminishing returns below (points of test accuracy per {DEFAULT_WINDOW} epochs)",
        min_value=0.01,
        max_value=20.0,
        width=460,
        value=round(100 * DEFAULT_THRESHOLD * DEFAULT_WINDOW, 2),
        step=0.05,
        key=state.RETURNS_THRESHOLD,
        help=RETURNS_HELP,
    )
    threshold = points / 100 / DEFAULT_WINDOW
    verdict = returns_verdict(
        history["epoch"], history["test_accuracy"], history["cumulative_seconds"], threshold=threshold
    )
    cooldown = (stop.stable_end, stop.cooldown_end) if stop is not None else None
    point = verdict.point
    chart_specs.draw(
        st,
        ("returns", chart_specs.frame_token(history), point, cooldown),
        lambda: charts.returns_chart(history, point, cooldown=cooldown),
        alt="Test accuracy against training time",
    )
    (st.markdown if verdict.point is not None else st.caption)(verdict.sentence())


def results_frame(history: pd.DataFrame) -> pd.DataFrame:
    columns = ["epoch", "train_accuracy", "test_accuracy", "epoch_seconds", "cumulative_seconds"]
    if "val_accuracy" in history and history["val_accuracy"].notna().any():  # an auto run's split
        columns.insert(2, "val_accuracy")
    return history[columns].reset_index(drop=True)


def results_table_ui(run: Run) -> None:
    st.subheader("Results per epoch")
    st.dataframe(
        results_frame(run.history),
        hide_index=True,
        column_config={
            "epoch": st.column_config.NumberColumn("Epoch"),
            "train_accuracy": st.column_config.NumberColumn("Train accuracy", format="percent"),
            "test_accuracy": st.column_config.NumberColumn("Test accuracy", format="percent"),
            "val_accuracy": st.column_config.NumberColumn("Validation accuracy", format="percent"),
            "epoch_seconds": st.column_config.NumberColumn("Seconds", format="%.1f"),
            "cumulative_seconds": st.column_config.NumberColumn("Total seconds", format="%.1f"),
        },
    )
    st.download_button(
        "Download results (CSV)",
        data=run.history.to_csv(index=False),
        file_name=f"{run.run_id}-history.csv",
        mime="text/csv",
        key="results_csv",
        on_click="ignore",
    )
