"""Explore how a Keras ResNet learns Fashion-MNIST: train, watch, compare and understand runs.

    streamlit run streamlit_app.py

Training runs in one background job per server process (``resnet.jobs.JobManager``); every tab sees it.
Runs live in ``$RESNET_CACHE_DIR`` (default ``cache/``); the dataset comes from ``$FASHION_MNIST_DIR``
or the Keras cache. The page is assembled here; its parts are in the ``app`` package.
"""

from __future__ import annotations

import streamlit as st

from app import actions, estimate, insight, params, runs_page, services, views


def settings_ui() -> tuple[dict, list[str]]:
    """The sidebar settings (from the URL on a session's first run), mirrored back into the URL."""
    problems = params.load_settings_from_url()
    st.sidebar.header("Training settings")
    values = params.settings_ui()
    params.mirror_to_url(values)
    return values, problems


def perform(manager, action: views.Action, config, shown) -> actions.Outcome:
    if action.kind == "start":
        return actions.start(manager, config, resume=action.resume)
    if action.kind == "stop":
        return actions.stop(manager)
    return actions.extend(manager, shown, action.epochs)


def main() -> None:
    st.set_page_config(page_title="ResNet on Fashion-MNIST", page_icon=":material/checkroom:", layout="wide")
    manager = services.get_manager()
    store = manager.store

    views.hardware_ui(services.device_label(), services.uses_gpu())
    values, url_problems = settings_ui()
    config, config_error = params.config_from_values(values)
    runs = store.list_runs()
    snapshot = manager.snapshot()
    shown = views.pick_shown_run(runs, snapshot)
    precision = services.concrete_precision(values["precision"])
    guess = resumable = None
    if config is not None:
        guess = estimate.estimate_time(config, runs, device=services.device_label(), precision=precision)
        resumable = store.latest_with_fingerprint(config.fingerprint())
    action = views.controls_ui(config, config_error, guess, resumable, precision, snapshot, shown)

    if action is not None:
        outcome = perform(manager, action, config, shown)
        if outcome.run_id:
            st.session_state[views.SHOWN_RUN] = outcome.run_id
        st.session_state[views.FLASH] = outcome
        st.rerun()  # draw the whole page (buttons included) in the job's new state
    outcome = st.session_state.pop(views.FLASH, None)

    st.title("How a ResNet learns Fashion-MNIST")
    for problem in url_problems:
        st.warning(problem)
    views.show_outcome(outcome)
    dataset_problem = services.dataset_problem()
    if dataset_problem is not None:
        level, message = dataset_problem
        (st.error if level == "error" else st.info)(message)
    if not runs and not manager.snapshot().active:
        st.info(
            "**No training runs yet.** Choose settings in the sidebar and press **Start**; for a first look, "
            "press **Use quick-try settings** (ResNet-18 on 1,000 images for 3 epochs). Progress, learning "
            "curves and predictions appear here as it trains, and every run is kept in "
            f"`{store.root}` to compare later."
        )

    views.live_ui(manager)
    if shown is not None:
        views.curves_ui(shown)
    understanding, runs_tab = st.tabs(["Understanding the predictions", "Runs"])
    with understanding:
        insight.understanding_ui(store, shown)
    with runs_tab:
        runs_page.runs_ui(manager, runs, shown)


if __name__ == "__main__":
    main()
