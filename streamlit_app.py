"""Explore how a Keras ResNet learns Fashion-MNIST: train, watch, compare and understand runs.

    streamlit run streamlit_app.py

Training runs in one background job per server process (``resnet.training.jobs.JobManager``); every tab sees it.
Runs live in ``$RESNET_CACHE_DIR`` (default ``cache/``); the dataset comes from ``$FASHION_MNIST_DIR``
or the Keras cache. The page is assembled here, top to bottom; its parts are in the ``app`` package,
named for the part of the screen they draw.
"""

from __future__ import annotations

import streamlit as st

from app import actions, areas, curves, feedback, insight, live, params, runs_page, services, sidebar, state, sweep_tab
from app.sweep_job import get_sweep_runner
from resnet.store.estimate import estimate_time


def settings_ui() -> tuple[dict, list[str]]:
    """The sidebar settings (from the URL on a session's first run), mirrored back into the URL."""
    problems = params.load_settings_from_url()
    st.sidebar.header("Training settings")
    values = params.settings_ui()
    params.mirror_to_url(values)
    return values, problems


def welcome_ui(cache_root) -> None:
    st.info(
        "**No training runs yet.** Choose settings in the sidebar and press **Start**; for a first look, "
        "press **Quick try** (ResNet-18 on 1,000 images for 3 epochs). Progress, learning "
        "curves and predictions appear here as it trains, and every run is kept in "
        f"`{cache_root}` to compare later."
    )


@areas.page
def main() -> None:
    st.set_page_config(page_title="ResNet on Fashion-MNIST", page_icon=":material/checkroom:", layout="wide")
    manager = services.get_manager()

    sidebar.hardware_ui(services.device_text(), services.uses_gpu())
    values, url_problems = settings_ui()
    config, config_error = params.config_from_values(values)
    runs = manager.store.list_runs()  # one listing per rerun, shared by every part of the page
    snapshot = manager.snapshot()
    shown = state.pick_shown_run(runs, state.active_run_id(snapshot))
    precision = services.concrete_precision(values["precision"], config)
    guess = None
    if config is not None:
        guess = estimate_time(config, runs, device=services.device_label(), precision=precision)
    action = sidebar.controls_ui(manager, config, config_error, runs, guess, precision, snapshot, shown)

    if action is not None:
        outcome = actions.perform(manager, action, config, shown)
        if outcome.run_id:
            state.show_run(outcome.run_id)
        state.flash(outcome)
        st.rerun()  # draw the whole page (buttons included) in the job's new state

    # Everything above the tabs lives in this one container, so the tabs keep their place on the page
    # whatever appears above them (the live view, the curves, a message), and with it the tab chosen:
    # switching tabs is the browser's alone and reruns nothing.
    with st.container():
        st.title("How a ResNet learns Fashion-MNIST")
        for problem in url_problems:
            st.warning(problem)
        feedback.show_outcome(state.take_flash())
        feedback.show_outcome(services.dataset_problem())
        if not runs and not manager.snapshot().active:
            welcome_ui(manager.store.root)
        live.live_ui(manager)
        if shown is not None:
            curves.curves_ui(shown)
    understanding, runs_tab, sweep = st.tabs(["Understanding the predictions", "Runs", "Sweep"], key=state.TAB)
    with understanding:
        insight.understanding_ui(manager, shown)
    with runs_tab:
        runs_page.runs_ui(manager, runs, shown)
    with sweep:
        sweep_tab.sweep_ui(get_sweep_runner(manager), config, config_error, runs)


if __name__ == "__main__":
    main()
