"""The Runs tab: every cached run, overlaid curves, and loading, downloading and deleting one run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import actions, areas, chart_specs, charts, state, tensorboard_panel
from app.curves import run_label
from resnet.store.runs import Run, RunError
from resnet.training.jobs import JobManager
from resnet.wording import format_duration

# How each run's length was decided (``Run.summary()["length"]``), as the table says it.
LENGTH_NAMES = {
    "fixed": "fixed",
    "auto": "until returns diminish",
    "trunk": "budget-curve trunk",
    "branch": "budget-curve branch",
}


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run for the table: configuration, progress, best accuracy, time, status, damage."""
    rows = []
    for run in runs:
        summary = run.summary()
        config = run.config
        rows.append(
            {
                "run": run.run_id,
                "status": run.status.value,
                "epochs": f"{summary['epochs_done']} / {summary['target_epochs']}",
                "length": LENGTH_NAMES.get(summary["length"], summary["length"]),
                "best_test_accuracy": summary["best_test_accuracy"],
                "total_time": format_duration(summary["total_seconds"]) if summary["total_seconds"] else "-",
                "depth": summary["depth"],
                "batch_size": summary["batch_size"],
                "learning_rate": config.learning_rate if config else None,
                "optimizer": config.optimizer if config else None,
                "augment": config.augment if config else None,
                "train_subset": summary["train_subset"],
                "eval_subset": summary["eval_subset"],
                "precision": summary["precision"],
                "device": summary["device"],
                "problem_or_note": (f"DAMAGED: {run.problem}" if run.damaged else summary["problem"]) or "",
            }
        )
    return pd.DataFrame(rows)


def overlay_frame(runs: list[Run]) -> pd.DataFrame:
    frames = [
        run.history[["epoch", "test_accuracy"]].assign(run=run.run_id)
        for run in runs
        if run.history is not None and not run.history.empty
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "test_accuracy", "run"])


def _ask_delete(run_id: str) -> None:
    st.session_state[state.CONFIRM_DELETE] = run_id


def _cancel_delete() -> None:
    st.session_state.pop(state.CONFIRM_DELETE, None)


def _delete(manager: JobManager, run_id: str) -> None:
    outcome = actions.delete(manager, run_id)
    st.session_state.pop(state.CONFIRM_DELETE, None)
    if outcome.level == "success":
        state.forget_shown_run(run_id)
    state.flash(outcome)
    st.session_state[state.RUN_DELETED] = True  # every view still shows the run: the whole page must rerun


def _checkpoint_download(manager: JobManager, run: Run):
    """The checkpoint's bytes, read only when the download is clicked; None if it has none."""
    if run.checkpoint_path is None:
        return None

    def read() -> bytes:
        try:
            return manager.store.checkpoint_bytes(run)
        except (RunError, OSError):  # deleted or superseded since the page was drawn
            return b""

    return read


def runs_ui(manager: JobManager, runs: list[Run], shown: Run | None) -> None:
    """The Runs tab: the table of every run, overlaid curves, and one run's buttons."""
    if not runs:
        st.info(f"No runs in {manager.store.root} yet. Runs trained here or with `python -m resnet train` appear here.")
        return
    runs_table_ui(runs)
    compare_ui(runs, shown)
    manage_ui(manager, runs, shown)


def runs_table_ui(runs: list[Run]) -> None:
    st.dataframe(
        runs_frame(runs),
        hide_index=True,
        column_config={
            "run": st.column_config.TextColumn("Run"),
            "best_test_accuracy": st.column_config.NumberColumn("Best test accuracy", format="percent"),
            "total_time": st.column_config.TextColumn("Training time"),
            "length": st.column_config.TextColumn("Length", help="How the run's length was decided"),
            "problem_or_note": st.column_config.TextColumn("Damage / note", width="large"),
        },
    )
    damaged = [run for run in runs if run.damaged]
    if damaged:
        st.warning(
            f"{len(damaged)} run(s) are damaged and cannot be shown or continued (reason in the table); "
            "delete them or repair their files. Everything else works."
        )


@areas.area("overlay")
def compare_ui(runs: list[Run], shown: Run | None) -> None:
    """Test-accuracy curves of the runs chosen here. An area of its own: the choice reruns it alone."""
    readable = [run for run in runs if not run.damaged and run.history is not None and not run.history.empty]
    if not readable:
        return
    st.subheader("Compare runs")
    ids = [run.run_id for run in readable]
    default = [shown.run_id] if shown is not None and shown.run_id in ids else ids[:1]
    chosen = st.multiselect(
        "Runs to overlay", ids, default=default, key="overlay_runs", help="Test accuracy per epoch of each run."
    )
    if chosen:
        frame = overlay_frame([run for run in readable if run.run_id in chosen])
        chart_specs.draw(
            st,
            ("overlay", chart_specs.frame_token(frame)),
            lambda: charts.overlay_chart(frame),
            alt="Test accuracy of the selected runs",
        )


@areas.area("manage")
def manage_ui(manager: JobManager, runs: list[Run], shown: Run | None) -> None:
    """Show, download or delete one run. An area of its own: picking a run reruns it alone; showing or
    deleting one reruns the whole page, which then shows (or no longer lists) that run."""
    if st.session_state.pop(state.RUN_DELETED, False):
        st.rerun(scope="app")
    st.subheader("Manage a run")
    by_id = {run.run_id: run for run in runs}
    ids = list(by_id)
    index = ids.index(shown.run_id) if shown is not None and shown.run_id in by_id else 0
    run_id = st.selectbox("Run", ids, index=index, format_func=lambda rid: run_label(by_id[rid]), key="manage_run")
    run = by_id[run_id]
    columns = st.columns(5)
    shown_now = columns[0].button(
        "Show in all views",
        key="show_run",
        on_click=state.show_run,
        args=(run_id,),
        width="stretch",
        disabled=shown is not None and shown.run_id == run_id,
    )
    checkpoint = _checkpoint_download(manager, run)
    columns[1].download_button(
        "Download model (.keras)",
        data=checkpoint or b"",
        file_name=f"{run_id}.keras",
        mime="application/octet-stream",
        key="download_model",
        on_click="ignore",
        disabled=checkpoint is None,
        width="stretch",
        help="The checkpoint of the last completed epoch (model and optimizer state).",
    )
    has_history = run.history is not None and not run.history.empty
    columns[2].download_button(
        "Download history (CSV)",
        data=(lambda: run.history.to_csv(index=False)) if has_history else "",
        file_name=f"{run_id}-history.csv",
        mime="text/csv",
        key="download_history",
        on_click="ignore",
        disabled=not has_history,
        width="stretch",
    )
    tensorboard_panel.tensorboard_button(columns[3], manager.store, run)
    columns[4].button("Delete...", key="delete_run", on_click=_ask_delete, args=(run_id,), width="stretch")
    tensorboard_panel.exported_ui(manager.store, run)
    if st.session_state.get(state.CONFIRM_DELETE) == run_id:
        st.warning(f"Delete run {run_id} and all its files (checkpoint, history, predictions)? This cannot be undone.")
        yes, no = st.columns(2)
        yes.button("Yes, delete it", key="confirm_delete_yes", type="primary", on_click=_delete, args=(manager, run_id))
        no.button("Cancel", key="confirm_delete_no", on_click=_cancel_delete)
    if shown_now:
        st.rerun(scope="app")
