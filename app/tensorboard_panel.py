"""The Runs tab's TensorBoard button: one run's event files and Projector files, and how to open them."""

from __future__ import annotations

import streamlit as st

from app import checkpoints, feedback
from app.actions import Outcome
from data.fashion_mnist import DatasetError, load_fashion_mnist
from resnet.core import explain
from resnet.store.runs import DamagedRun, Run, RunError
from resnet.wording import tensorboard_command

EXPORTED = "tensorboard_exported"  # session state: (run id, Outcome) of the last export


def export_run(store, run: Run) -> Outcome:
    """Bring the run's event files up to date and write its last epoch's Projector files (the features
    computed from the checkpoint only if they are not on disk yet)."""
    import resnet.store.event_files as event_files  # tensorboard: 0.1 s, not at the page's start
    import resnet.store.projector as projector  # the same

    try:
        synced = event_files.sync(store, run)
    except RunError as error:
        return Outcome("error", f"TensorBoard files of {run.run_id} not written: {error}")
    try:
        dataset = load_fashion_mnist(download=False)
        exported = projector.export(
            store,
            run,
            None,
            compute=lambda current, indices: explain.penultimate_features(
                checkpoints.checkpoint_model(store, current), dataset.test_images[indices]
            ),
            test_images=dataset.test_images,
            test_labels=dataset.test_labels,
        )
    except (RunError, DamagedRun, DatasetError) as error:
        return Outcome(
            "warning",
            f"Event files of {run.run_id} written ({synced.text()}: Scalars, Images and HParams show it), but not "
            f"the Projector's: {error}",
            run.run_id,
        )
    return Outcome(
        "success",
        f"TensorBoard files of {run.run_id} written (event files: {synced.text()}; Projector: epoch "
        f"{exported.epoch}, {exported.images:,} test images x {exported.dimensions} features). Run the command "
        "below, open http://localhost:6006 and pick runs starting with the run id: Scalars and Images "
        "(the confusion matrix) per epoch, HParams to compare runs, Projector for the feature map.",
        run.run_id,
    )


def tensorboard_button(column, store, run: Run) -> None:
    """The button (in ``column``) and, below the buttons, what the last export of this run said."""
    if column.button(
        "TensorBoard files",
        key="tensorboard_run",
        width="stretch",
        disabled=run.damaged or not run.epochs_done,
        help="Write this run's TensorBoard files (curves, confusion matrix, settings, feature map for the "
        "Projector) and show the command that opens them. Every run's curves are written as it trains.",
    ):
        with st.spinner(f"Writing the TensorBoard files of {run.run_id}..."):
            st.session_state[EXPORTED] = (run.run_id, export_run(store, run))


def exported_ui(store, run: Run) -> None:
    exported = st.session_state.get(EXPORTED)
    if exported is not None and exported[0] == run.run_id:
        outcome = exported[1]
        feedback.show_outcome(outcome)
        if outcome.level != "error":
            st.code(tensorboard_command(store.root), language="bash")
