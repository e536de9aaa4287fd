"""Page sections: the sidebar's buttons, the live training view, the learning curves and results table.

Each ``*_ui`` function draws one part of the page and returns plain values (what was clicked); the
decisions about what to do with them are in ``streamlit_app.main`` and ``app.actions``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from app import charts
from app.actions import Outcome
from app.estimate import Estimate
from app.params import DEPTH_NAMES
from resnet.analysis import DEFAULT_THRESHOLD, DEFAULT_WINDOW, MIN_EPOCHS, diminishing_returns, format_duration
from resnet.config import LIMITS, TrainConfig
from resnet.jobs import JobManager, JobSnapshot
from resnet.runs import Run, RunError

REFRESH_SECONDS = 2.0  # live view redraw while a job is active
WATCH_SECONDS = 5.0  # how often an idle page checks whether a job was started (in another tab)
SHOWN_RUN = "shown_run"  # session key: the run this session chose to look at
FLASH = "flash"  # session key: an Outcome to show on the next run (set by callbacks)
QUICK_TRY = {"epochs": 3, "batch_size": 64, "train_subset": 1000, "eval_subset": 1000, "depth": 18}
EXTEND_HELP = (
    "Trains the shown run further, up to this many epochs in total; its completed epochs are kept. "
    "The added epochs get a new learning-rate cycle over just those epochs (a warm restart: the rate "
    "rises again and decays to the end of the extension)."
)


@dataclass(frozen=True)
class Action:
    kind: str  # start | stop | extend
    epochs: int | None = None
    resume: bool = True


def run_label(run: Run) -> str:
    depth = DEPTH_NAMES.get(run.config.depth, "?") if run.config else "?"
    best = f", best {run.best_test_accuracy:.1%}" if run.best_test_accuracy is not None else ""
    return f"{run.run_id} ({depth}, {run.epochs_done} epochs{best}, {run.status})"


def pick_shown_run(runs: list[Run], snapshot: JobSnapshot) -> Run | None:
    """The run to show: the one this session chose, else the running one, else the newest readable one."""
    by_id = {run.run_id: run for run in runs}
    chosen = st.session_state.get(SHOWN_RUN)
    if chosen in by_id:
        return by_id[chosen]
    if snapshot.active and snapshot.run_id in by_id:
        return by_id[snapshot.run_id]
    readable = [run for run in runs if run.status != "damaged"]
    return (readable or runs or [None])[0]


def show_outcome(outcome: Outcome | None) -> None:
    if outcome is None:
        return
    {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}[outcome.level](outcome.text)


def _use_quick_settings() -> None:
    for field, value in QUICK_TRY.items():
        st.session_state[f"cfg_{field}"] = value


# --- sidebar: hardware, estimate and buttons ---------------------------------------------------------------
def hardware_ui(device: str, gpu: bool) -> None:
    where = ":green[GPU in use]" if gpu else ":orange[no GPU found: training runs on the CPU]"
    st.sidebar.markdown(f"**Hardware:** {device}  \n{where}")


def controls_ui(
    config: TrainConfig | None,
    config_error: str | None,
    estimate: Estimate | None,
    resumable: Run | None,
    precision: str,
    snapshot: JobSnapshot,
    shown: Run | None,
) -> Action | None:
    """Estimate, Start / Stop and Extend in the sidebar; returns the button pressed, if any."""
    sidebar = st.sidebar
    if config_error:
        sidebar.error(f"These settings cannot be trained: {config_error}")
    resume = sidebar.checkbox(
        "Continue a run with the same settings",
        value=True,
        key="resume",
        help="If a run with these settings (everything but epochs) exists, Start trains it on to the chosen "
        "number of epochs instead of starting over. Turn off to start a fresh run.",
    )
    if config is not None and estimate is not None:
        epochs_to_train = config.epochs
        if resume and resumable is not None and resumable.epochs_done < config.epochs:
            epochs_to_train = config.epochs - resumable.epochs_done
            sidebar.caption(f"Continues run {resumable.run_id} ({resumable.epochs_done} epochs done).")
        elif resume and resumable is not None:
            sidebar.caption(f"Run {resumable.run_id} already has {resumable.epochs_done} epochs of these settings.")
        sidebar.markdown(estimate.text(epochs_to_train))
        sidebar.caption(f"Precision on this machine: {precision}.")
    left, right = sidebar.columns(2)
    start = left.button(
        "Start", key="start", type="primary", disabled=config is None, width="stretch", help="Train these settings."
    )
    stop = right.button(
        "Stop",
        key="stop",
        disabled=not snapshot.active,
        width="stretch",
        help="Stop after the current batch; completed epochs are kept.",
    )
    if shown is None:  # no runs yet
        sidebar.button(
            "Use quick-try settings",
            key="quick_try",
            on_click=_use_quick_settings,
            help="ResNet-18, 1,000 training and 1,000 test images, batch 64, 3 epochs: a few minutes on a CPU.",
        )
    extend_to = None
    sidebar.divider()
    sidebar.markdown("**Extend a finished run**")
    busy = snapshot.active and shown is not None and snapshot.run_id == shown.run_id
    if shown is None or shown.status == "damaged" or not shown.epochs_done or busy:
        sidebar.caption("Show a finished run (Runs tab) to train it further.")
        extend_pressed = False
    else:
        high = LIMITS["epochs"][1]
        low = min(shown.epochs_done + 1, high)
        extend_to = sidebar.number_input(
            f"Extend {shown.run_id} to (epochs)",
            min_value=low,
            max_value=high,
            value=min(high, shown.epochs_done + 10),
            step=1,
            key=f"extend_to_{shown.run_id}",
            help=EXTEND_HELP,
        )
        extend_pressed = sidebar.button(
            "Extend", key="extend", disabled=shown.epochs_done >= high, help=EXTEND_HELP, width="stretch"
        )
    if start:
        return Action("start", resume=resume)
    if stop:
        return Action("stop")
    if extend_pressed:
        return Action("extend", epochs=int(extend_to))
    return None


# --- the live view ---------------------------------------------------------------------------------------------
def job_status_ui(snapshot: JobSnapshot, history: pd.DataFrame | None) -> None:
    """Progress of the job of this server process (any tab may have started it)."""
    if snapshot.state == "idle":
        return
    run = snapshot.run_id or "(preparing)"
    if not snapshot.active:
        text = f"Run {run}: {snapshot.message or snapshot.state}"
        if snapshot.state == "complete":
            st.success(text)
        elif snapshot.state == "failed":
            st.error(f"Run {run} failed: {snapshot.error}. {snapshot.message}")
        else:
            st.info(text)
        return
    with st.container(border=True):
        phase = {
            "building": "building the model",
            "training": "training",
            "evaluating": "evaluating on the test images",
            "saving": "saving the checkpoint",
        }.get(snapshot.phase, snapshot.message or "preparing")
        if snapshot.state == "stopping":
            phase = "stopping after the current batch"
        st.markdown(f"**Training run {run}** - epoch {snapshot.epoch} of {snapshot.target_epochs}: {phase}")
        eta = snapshot.epoch_eta_seconds
        progress_text = (
            f"Epoch {snapshot.epoch}: batch {snapshot.batch} of {snapshot.batches_per_epoch}"
            f" · {snapshot.images_per_second:.0f} images/s"
            + (f" · {format_duration(eta)} left in this epoch's training pass" if eta is not None else "")
        )
        st.progress(min(1.0, snapshot.epoch_fraction), text=progress_text)
        done = max(0, snapshot.epoch - 1)
        columns = st.columns(4)
        columns[0].metric("Epochs done", f"{done} / {snapshot.target_epochs}")
        columns[1].metric("Images per second", f"{snapshot.images_per_second:.0f}")
        columns[2].metric("Epoch ETA", format_duration(eta) if eta is not None else "-")
        remaining = None
        if history is not None and len(history):
            per_epoch = float(history["epoch_seconds"].tail(3).mean())
            remaining = (eta or 0.0) + per_epoch * max(0, snapshot.target_epochs - snapshot.epoch)
        columns[3].metric("Run ETA", format_duration(remaining) if remaining is not None else "after epoch 1")


def _committed(manager: JobManager, run_id: str | None) -> Run | None:
    if not run_id:
        return None
    try:
        return manager.store.load(run_id)
    except RunError:
        return None


def live_ui(manager: JobManager) -> None:
    """The job's progress, redrawn every ``REFRESH_SECONDS`` while it is active.

    Only this small part redraws that often. When an epoch is committed, or the job ends, or a job
    starts in another tab (checked every ``WATCH_SECONDS`` while idle), it reruns the whole page once,
    so the learning curves, results and predictions grow epoch by epoch without being redrawn in between.
    """
    snapshot = manager.snapshot()
    was_active = snapshot.active
    running = _committed(manager, snapshot.run_id) if was_active else None
    epochs_shown = running.epochs_done if running is not None else None

    @st.fragment(run_every=REFRESH_SECONDS if was_active else WATCH_SECONDS)
    def live() -> None:
        now = manager.snapshot()
        if now.active != was_active:
            st.rerun(scope="app")  # the job ended, or another tab started one
        run = _committed(manager, now.run_id) if now.active else None
        if run is not None and (run.run_id, run.epochs_done) != (snapshot.run_id, epochs_shown):
            st.rerun(scope="app")  # an epoch was committed: grow the curves
        job_status_ui(now, run.history if run is not None else None)

    live()


# --- learning curves and results ----------------------------------------------------------------------------------
def curves_ui(run: Run) -> None:
    st.subheader("Learning curves")
    st.caption(run_label(run))
    if run.status == "damaged":
        st.error(f"Run {run.run_id} is damaged and cannot be shown: {run.problem}")
        return
    history = run.history
    if history is None or history.empty:
        st.info("No epoch has finished yet: the curves appear after the first epoch.")
        return
    left, right = st.columns(2)
    left.altair_chart(charts.accuracy_chart(history), width="stretch", alt="Train and test accuracy per epoch")
    right.altair_chart(charts.loss_chart(history), width="stretch", alt="Train and test loss per epoch")
    left, right = st.columns(2)
    left.altair_chart(charts.epoch_time_chart(history), width="stretch", alt="Seconds per epoch")
    right.altair_chart(charts.cumulative_time_chart(history), width="stretch", alt="Cumulative training time")
    returns_ui(history)
    results_table_ui(run)


def returns_ui(history: pd.DataFrame) -> float:
    """Accuracy against time with the diminishing-returns point; returns the threshold (accuracy per epoch)."""
    st.subheader("When do more epochs stop paying?")
    points = st.number_input(
        f"Diminishing returns below (points of test accuracy per {DEFAULT_WINDOW} epochs)",
        min_value=0.01,
        max_value=20.0,
        width=460,
        value=round(100 * DEFAULT_THRESHOLD * DEFAULT_WINDOW, 2),
        step=0.05,
        key="returns_threshold",
        help=f"The point is the first epoch after which the smoothed test accuracy rose by less than this over the "
        f"preceding {DEFAULT_WINDOW} epochs (runs shorter than {2 * DEFAULT_WINDOW} epochs use a third of their "
        "length as the window).",
    )
    threshold = points / 100 / DEFAULT_WINDOW
    point = diminishing_returns(
        history["epoch"], history["test_accuracy"], history["cumulative_seconds"], threshold=threshold
    )
    st.altair_chart(charts.returns_chart(history, point), width="stretch", alt="Test accuracy against training time")
    if point is not None:
        st.markdown(point.sentence())
    elif len(history) < MIN_EPOCHS:
        st.caption(f"The diminishing-returns point needs at least {MIN_EPOCHS} epochs.")
    else:
        st.caption(f"Test accuracy is still rising faster than {points:g} points per {DEFAULT_WINDOW} epochs.")
    return threshold


def results_frame(history: pd.DataFrame) -> pd.DataFrame:
    return history[["epoch", "train_accuracy", "test_accuracy", "epoch_seconds", "cumulative_seconds"]].reset_index(
        drop=True
    )


def results_table_ui(run: Run) -> None:
    st.subheader("Results per epoch")
    st.dataframe(
        results_frame(run.history),
        hide_index=True,
        column_config={
            "epoch": st.column_config.NumberColumn("Epoch"),
            "train_accuracy": st.column_config.NumberColumn("Train accuracy", format="percent"),
            "test_accuracy": st.column_config.NumberColumn("Test accuracy", format="percent"),
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
