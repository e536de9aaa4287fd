"""The live view: the background job's progress, redrawn every few seconds while it runs.

Only this small part redraws that often. When an epoch is committed, or the job ends, or a job starts in
another tab, it reruns the whole page once, so the learning curves, results and predictions grow epoch
by epoch without being redrawn in between.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import areas
from resnet.store.estimate import run_eta_seconds
from resnet.training.jobs import JobManager, JobSnapshot, JobState
from resnet.training.protocol import Phase
from resnet.wording import format_duration

REFRESH_SECONDS = 2.0  # live view redraw while a job is active
WATCH_SECONDS = 5.0  # how often an idle page checks whether a job was started (in another tab)
PHASE_TEXT = {
    Phase.BUILDING: "building the model",
    Phase.TRAINING: "training",
    Phase.EVALUATING: "evaluating on the test images",
    Phase.SAVING: "saving the checkpoint",
}


def _finished_ui(snapshot: JobSnapshot) -> None:
    run = snapshot.run_id or "(preparing)"
    text = f"Run {run}: {snapshot.message or snapshot.state}"
    if snapshot.state is JobState.COMPLETE:
        st.success(text)
    elif snapshot.state is JobState.FAILED:
        st.error(f"Run {run} failed: {snapshot.error}. {snapshot.message}")
    else:
        st.info(text)


def job_status_ui(snapshot: JobSnapshot, history: pd.DataFrame | None, length: str | None = None) -> None:
    """Progress of the job of this server process (any tab may have started it); ``length``: how an auto
    run's length is being decided (``Run.length_text``)."""
    if snapshot.state is JobState.IDLE:
        return
    if not snapshot.active:
        _finished_ui(snapshot)
        return
    with st.container(border=True):
        phase = PHASE_TEXT.get(snapshot.phase, snapshot.message or "preparing")
        if snapshot.state is JobState.STOPPING:
            phase = "stopping after the current batch"
        run = snapshot.run_id or "(preparing)"
        st.markdown(f"**Training run {run}** - epoch {snapshot.epoch} of {snapshot.target_epochs}: {phase}")
        if length is not None:  # an auto run: until when, or why it stopped adding epochs
            st.caption(length)
        eta = snapshot.epoch_eta_seconds
        progress_text = (
            f"Epoch {snapshot.epoch}: batch {snapshot.batch} of {snapshot.batches_per_epoch}"
            f" · {snapshot.images_per_second:.0f} images/s"
            + (f" · {format_duration(eta)} left in this epoch's training pass" if eta is not None else "")
        )
        st.progress(min(1.0, snapshot.epoch_fraction), text=progress_text)
        columns = st.columns(4)
        columns[0].metric("Epochs done", f"{max(0, snapshot.epoch - 1)} / {snapshot.target_epochs}")
        columns[1].metric("Images per second", f"{snapshot.images_per_second:.0f}")
        columns[2].metric("Epoch ETA", format_duration(eta) if eta is not None else "-")
        remaining = run_eta_seconds(
            epoch=snapshot.epoch, target_epochs=snapshot.target_epochs, epoch_eta=eta, history=history
        )
        columns[3].metric("Run ETA", format_duration(remaining) if remaining is not None else "after epoch 1")


def live_ui(manager: JobManager) -> None:
    """The job's progress, redrawn every ``REFRESH_SECONDS`` while it is active (see the module docstring)."""
    snapshot = manager.snapshot()
    was_active = snapshot.active
    running = manager.store.find(snapshot.run_id) if was_active else None
    epochs_shown = running.epochs_done if running is not None else None

    @areas.area("live", run_every=REFRESH_SECONDS if was_active else WATCH_SECONDS)
    def live() -> None:
        now = manager.snapshot()
        if now.active != was_active:
            st.rerun(scope="app")  # the job ended, or another tab started one
        run = manager.store.find(now.run_id) if now.active else None
        if run is not None and (run.run_id, run.epochs_done) != (snapshot.run_id, epochs_shown):
            st.rerun(scope="app")  # an epoch was committed: grow the curves
        auto = run is not None and run.config is not None and run.config.epochs_mode == "auto"
        job_status_ui(now, run.history if run is not None else None, run.length_text() if auto else None)

    live()
