"""The Sweep tab: a grid of runs over the settings that matter, trained one after another, and its answer.

The grid is typed as comma lists (checked by ``resnet.sweeps``' own parsing, so a bad value is named by
its field); every other setting is the sidebar's. Start sweep hands the checked sweep to the server's
one ``app.sweep_job.SweepRunner``, whose trials are jobs of the one ``JobManager``: the live view above
shows each trial, and the sidebar's Start is refused while one trains. The study's answer: final test
accuracy against total training time with the Pareto front, every run's test-accuracy curve, the table
in the seed's form (CSV) and the budget sentence, for any recorded sweep.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import areas, chart_specs, charts, feedback, state
from app.actions import Outcome
from app.sweep_job import SweepBusy, SweepRunner, SweepSnapshot, SweepState
from resnet.config import FIELD_HELP, ConfigError, TrainConfig
from resnet.store.runs import Run
from resnet.sweeps.budget_curve import budget_table, compute_text, trunk_of
from resnet.sweeps.grid import MAX_TRIALS, PRESETS, check_grid, parse_values
from resnet.sweeps.record import DamagedSweep, Sweep, SweepError, SweepStore, requested_sweep
from resnet.sweeps.report import budget_sentence, describe_trial, estimate_text, pareto_front, sweep_table
from resnet.sweeps.trials import sweep_progress

REFRESH_SECONDS = 2.0  # the progress box's redraw while a sweep runs
SEED_STUDY = "seed-study"
FIELDS = {  # the settings a sweep varies here, with their labels and an example
    "epochs": ("Epochs", "10,20,60"),
    "batch_size": ("Batch sizes", "64,128"),
    "learning_rate": ("Learning rates", "0.001,0.003"),
    "depth": ("Depths", "18,50"),
    "optimizer": ("Optimizers", "adamw,sgd"),
    "augment": ("Augmentation", "off,on"),
    "seed": ("Seeds", "1,2,3"),
}
NO_VALUES = "Give values for at least one parameter, e.g. Epochs 5,10,20 (empty fields take the sidebar's)."
X_AXES = {"epoch": "Epoch", "time": "Wall time (cumulative training time)"}
INDEPENDENT, BRANCHES = "independent", "branches"
HOW_NAMES = {INDEPENDENT: "independent runs, one per budget", BRANCHES: "one run with cooldown branches"}
HOW_HELP = (
    "Independent: every epoch budget is its own one-cycle run (the seed study's way: 390 epochs for 10, 20, 60, "
    "100 and 200). One run with cooldown branches: one warm-up-and-stable run (the trunk) trains to the largest "
    "budget; at each budget B a branch starts from it and cools its learning rate down over 20% of B (Hägele et "
    "al. 2024): 200 + 0.2 x 390 = 278 epochs for the same budgets. Branches vary the epochs alone."
)


def _fill_seed_study() -> None:
    """The seed study: the same network for 10, 20, 60, 100 and 200 epochs at batch 128."""
    for field in FIELDS:
        st.session_state[state.sweep_key(field)] = PRESETS[SEED_STUDY].get(field, "")
    st.session_state[state.SWEEP_NAME] = SEED_STUDY


def _shown_value(field: str, value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- the request --------------------------------------------------------------------------------------
def request_ui(base: TrainConfig | None, base_error: str | None, sweeps: SweepStore, runs: list[Run]):
    """Name and values; returns (the checked sweep, None) or (None, what is wrong)."""
    st.button(
        "Reproduce the seed study",
        key="sweep_preset",
        on_click=_fill_seed_study,
        help="Fills epochs 10, 20, 60, 100, 200 at batch size 128 (the notebook study this app grew out of); "
        "the other settings are the sidebar's. The estimate below says how long that takes here.",
    )
    how = st.radio(
        "Budgets train as",
        tuple(HOW_NAMES),
        format_func=HOW_NAMES.get,
        horizontal=True,
        key=state.SWEEP_BRANCHES,
        help=HOW_HELP,
    )
    st.session_state.setdefault(state.SWEEP_NAME, f"sweep-{time.strftime('%Y%m%d-%H%M')}")
    name = st.text_input(
        "Sweep name",
        key=state.SWEEP_NAME,
        help="Letters, digits, '.', '_' and '-'. Starting a sweep with the name of an existing one continues it "
        "(empty value fields: as recorded).",
    )
    texts = {}
    columns = st.columns(4)
    for number, (field, (label, example)) in enumerate(FIELDS.items()):
        sidebar = _shown_value(field, getattr(base, field)) if base is not None else "?"
        texts[field] = columns[number % 4].text_input(
            label,
            key=state.sweep_key(field),
            placeholder=f"sidebar: {sidebar}",
            help=f"{FIELD_HELP[field]} Comma-separated values, e.g. {example}; empty: the sidebar's value.",
        )
    return check_request(name.strip(), texts, base, base_error, sweeps, branches=how == BRANCHES)


def check_request(
    name: str, texts: dict, base: TrainConfig | None, base_error: str | None, sweeps: SweepStore, *, branches=False
):
    """The sweep asked for, or what is wrong (naming the field); nothing is written."""
    texts = {field: text.strip() for field, text in texts.items() if text and text.strip()}
    if base is None:
        return None, f"The sidebar's settings (the sweep's other settings) cannot be trained: {base_error}"
    for field, text in texts.items():
        try:
            check_grid({field: parse_values(field, text)})  # each value, and none twice
        except ConfigError as error:
            return None, f"{FIELDS[field][0]}: {error}"
    try:
        existing = sweeps.load(name) if sweeps.exists(name) else None
    except DamagedSweep as error:
        return None, f"Sweep name: {error}; choose another name."
    except SweepError as error:
        return None, f"Sweep name: {error}"
    if not texts and existing is None:
        return None, NO_VALUES
    try:
        return requested_sweep(sweeps, name, texts, base=base, branches=branches), None
    except DamagedSweep as error:
        return None, f"Sweep name: {error}"
    except SweepError:  # the name is taken by other settings
        return None, (
            f"Sweep name: sweep {name} already exists with other settings ({existing.describe_grid()}, the rest as "
            "the sidebar was when it started). Empty the value fields to continue it, or choose another name."
        )
    except ConfigError as error:  # a combination the config refuses, or too many
        return None, str(error)


def request_summary_ui(sweep: Sweep, runs: list[Run], sweeps: SweepStore) -> None:
    done, total = sweep_progress(sweep, runs)
    if sweep.branches:
        exists = "exists; Start sweep continues it" if sweeps.exists(sweep.name) else "is new"
        st.markdown(
            f"Budget curve **{sweep.name}** {exists}: {done} of {total} branches done. "
            + compute_text(sweep, budget_table(sweep, runs), None)
        )
        return
    if sweeps.exists(sweep.name):
        what = f"Sweep **{sweep.name}** exists: {done} of {total} runs have all their epochs; Start sweep continues it."
    else:
        what = f"**{total} runs** ({sweep.describe_grid()}; the other settings from the sidebar), at most {MAX_TRIALS}."
    st.markdown(what)
    if done < total:  # nothing left to train: no estimate to give
        st.markdown(estimate_text(sweep, runs, sweeps.root))


# --- start / stop -------------------------------------------------------------------------------------
def start(runner: SweepRunner, sweep: Sweep) -> Outcome:
    try:
        runner.start(sweep)
    except SweepBusy as error:
        return Outcome("warning", f"Sweep not started: {error}.")
    except SweepError as error:
        return Outcome("error", f"Sweep not started: {error}")
    return Outcome("success", f"Started sweep {sweep.name}: {len(sweep.trials)} runs, one after another.")


def stop(runner: SweepRunner) -> Outcome:
    if runner.stop():
        return Outcome("info", "Stopping the sweep: the current run stops after its batch (completed epochs kept).")
    return Outcome("info", "No sweep is running.")


def controls_ui(runner: SweepRunner, sweep: Sweep | None, snapshot: SweepSnapshot) -> None:
    left, right, _ = st.columns([1, 1, 4])
    pressed_start = left.button("Start sweep", key="sweep_start", type="primary", disabled=sweep is None)
    pressed_stop = right.button("Stop sweep", key="sweep_stop", disabled=not snapshot.active)
    outcome = None
    if pressed_start and sweep is not None:
        outcome = start(runner, sweep)
        if outcome.level == "success":
            st.session_state[state.SWEEP_SHOWN] = sweep.name
    elif pressed_stop:
        outcome = stop(runner)
    if outcome is not None:
        state.flash(outcome, state.SWEEP_FLASH)
        st.rerun()  # the whole page in the new state (the live view shows the first trial)


# --- progress -----------------------------------------------------------------------------------------
def status_ui(snapshot: SweepSnapshot) -> None:
    if snapshot.state is SweepState.IDLE:
        return
    if not snapshot.active:
        text = (
            f"Sweep {snapshot.name} {snapshot.state}: {snapshot.done} of {snapshot.total} runs done. {snapshot.message}"
        )
        failed = snapshot.state is SweepState.FAILED or snapshot.failed
        box = st.error if failed else st.success if snapshot.state is SweepState.FINISHED else st.info
        box(text)
        return
    with st.container(border=True):
        stopping = " (stopping)" if snapshot.state is SweepState.STOPPING else ""
        run = f" (run {snapshot.run_id})" if snapshot.run_id else ""
        st.markdown(f"**Sweep {snapshot.name}{stopping}**: trial {snapshot.trial or 1} of {snapshot.total}{run}")
        st.progress(snapshot.done / max(1, snapshot.total), text=f"{snapshot.done} of {snapshot.total} runs done")
        st.caption(snapshot.message)


def progress_ui(runner: SweepRunner) -> None:
    """The runner's progress, redrawn while it runs; the whole page reruns when a trial ends or starts."""
    first = runner.snapshot()
    drawn = (first.state, first.trial, first.done, first.failed)

    @areas.area("sweep_progress", run_every=REFRESH_SECONDS if first.active else None)
    def progress() -> None:
        now = runner.snapshot()
        if (now.state, now.trial, now.done, now.failed) != drawn:
            st.rerun(scope="app")
        status_ui(now)

    progress()


# --- the answer ---------------------------------------------------------------------------------------
def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(label=[f"{row.trial}: {describe_trial(row)}" for _, row in table.iterrows()])


def pareto_ui(table: pd.DataFrame) -> None:
    usable = table[
        np.isfinite(table["total_seconds"].astype(float)) & np.isfinite(table["test_accuracy"].astype(float))
    ]
    if usable.empty:
        st.info("No run of this sweep has a completed epoch yet: the comparison appears after the first one.")
        return
    front = pareto_front(table)
    points = _labelled(usable).assign(on_front=usable["trial"].isin(front["trial"]))
    points = points[["trial", "label", "total_seconds", "test_accuracy", "on_front"]]
    chart_specs.draw(
        st,
        ("pareto", chart_specs.frame_token(points)),
        lambda: charts.pareto_chart(points),
        alt="Final test accuracy against total training time",
    )
    if front.empty:
        st.caption("The Pareto front appears once a run has all its epochs.")
        return
    lines = [
        f"- trial {row.trial}: {describe_trial(row)}, {row.test_accuracy:.2%} in {row.total_seconds:.0f} s"
        for _, row in front.iterrows()
    ]
    st.markdown("**On the Pareto front** (no run both faster and more accurate):\n" + "\n".join(lines))


def curves_frame(sweep: Sweep, by_id: dict[str, Run], colour: str) -> pd.DataFrame:
    """Every trial's test accuracy per epoch (up to its own epochs), with ``colour``'s value as text."""
    frames = []
    for number, trial in enumerate(sweep.trials, start=1):
        run = by_id.get(trial.run_id)
        if run is None or run.damaged or run.history is None or run.history.empty:
            continue
        history = run.history[run.history["epoch"] <= trial.config.epochs]
        label = f"{number}: " + ", ".join(
            f"{name.replace('_', ' ')} {_shown_value(name, getattr(trial.config, name))}" for name in sweep.varying
        )
        frames.append(
            history[["epoch", "cumulative_seconds", "test_accuracy"]].assign(
                run=label, colour=_shown_value(colour, getattr(trial.config, colour))
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curves_ui(sweep: Sweep, by_id: dict[str, Run]) -> None:
    left, right = st.columns(2)
    options = list(dict.fromkeys([*sweep.varying, *sweep.grid]))
    if st.session_state.get(state.SWEEP_COLOUR) not in options:
        st.session_state[state.SWEEP_COLOUR] = options[0]
    colour = left.selectbox(
        "Colour the curves by",
        options,
        key=state.SWEEP_COLOUR,
        format_func=lambda name: FIELDS.get(name, (name.replace("_", " "),))[0],
    )
    x_axis = right.radio("x axis", list(X_AXES), key=state.SWEEP_X_AXIS, format_func=X_AXES.get, horizontal=True)
    frame = curves_frame(sweep, by_id, colour)
    if frame.empty:
        return
    title = FIELDS.get(colour, (colour.replace("_", " "),))[0]
    chart_specs.draw(
        st,
        ("sweep_curves", chart_specs.frame_token(frame), title, x_axis),
        lambda: charts.sweep_curves_chart(frame, color_title=title, x_axis=x_axis),
        alt="Test accuracy per epoch of every run",
    )


def table_ui(sweep: Sweep, table: pd.DataFrame) -> None:
    percent = {"format": "percent"}
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "trial": st.column_config.NumberColumn("Trial"),
            "run_id": st.column_config.TextColumn("Run"),
            "epochs": st.column_config.NumberColumn("Epochs"),
            "epochs_done": st.column_config.NumberColumn("Epochs done"),
            "train_accuracy": st.column_config.NumberColumn("Train accuracy", **percent),
            "test_accuracy": st.column_config.NumberColumn("Test accuracy", **percent),
            "best_test_accuracy": st.column_config.NumberColumn("Best test accuracy", **percent),
            "best_epoch": st.column_config.NumberColumn("Best at epoch"),
            "total_seconds": st.column_config.NumberColumn("Time (s)", format="%.1f"),
        },
    )
    st.download_button(
        "Download the sweep's table (CSV)",
        data=table.to_csv(index=False),
        file_name=f"sweep-{sweep.name}.csv",
        mime="text/csv",
        key="sweep_csv",
        on_click="ignore",
    )


def budget_curve_ui(sweep: Sweep, runs: list[Run]) -> None:
    """A budget curve's answer: per budget, test accuracy after the cooldown, its epochs and time."""
    table = budget_table(sweep, runs)
    st.markdown(compute_text(sweep, table, trunk_of(sweep, runs)))
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "budget": st.column_config.NumberColumn("Budget (epochs)"),
            "run_id": st.column_config.TextColumn("Branch"),
            "epochs": st.column_config.NumberColumn("Epochs with cooldown"),
            "cooldown_epochs": st.column_config.NumberColumn("Cooldown epochs"),
            "epochs_done": st.column_config.NumberColumn("Epochs done"),
            "test_accuracy": st.column_config.NumberColumn("Test accuracy after cooldown", format="percent"),
            "seconds": st.column_config.NumberColumn("Time to this model (s)", format="%.1f"),
            "cooldown_seconds": st.column_config.NumberColumn("Cooldown time (s)", format="%.1f"),
        },
    )


@areas.area("sweep_answer")
def results_ui(sweeps: SweepStore, runs: list[Run], runner: SweepRunner) -> None:
    """Choose a recorded sweep (damaged records are reported) and show its answer. An area of its own:
    the sweep, colour and axis pickers rerun it alone."""
    st.subheader("A sweep's answer")
    listings = sweeps.list_sweeps()
    for listing in listings:
        if listing.sweep is None:
            st.warning(f"Sweep {listing.name} cannot be shown: {listing.problem}")
    good = {listing.name: listing.sweep for listing in listings if listing.sweep is not None}
    if not good:
        st.info("No sweeps yet: choose values above and press **Start sweep**.")
        return
    if st.session_state.get(state.SWEEP_SHOWN) not in good:
        current = runner.snapshot().name
        st.session_state[state.SWEEP_SHOWN] = current if current in good else next(iter(good))
    progress = {name: sweep_progress(sweep, runs) for name, sweep in good.items()}
    name = st.selectbox(
        "Sweep",
        list(good),
        key=state.SWEEP_SHOWN,
        format_func=lambda item: f"{item} ({progress[item][0]} of {progress[item][1]} runs done)",
    )
    sweep = good[name]
    st.caption(f"Grid: {sweep.describe_grid()}; other settings as when it started.")
    if sweep.branches:
        budget_curve_ui(sweep, runs)
    table = sweep_table(sweep, runs)
    st.markdown(budget_sentence(table))
    pareto_ui(table)
    curves_ui(sweep, {run.run_id: run for run in runs})
    table_ui(sweep, table)


@areas.area("sweep_request")
def request_area(runner: SweepRunner, base: TrainConfig | None, base_error: str | None, runs: list[Run]) -> None:
    """The request, its check and estimate, and Start / Stop. An area of its own: typing values reruns it
    alone; Start and Stop rerun the whole page (the live view follows the sweep's runs)."""
    sweep, problem = request_ui(base, base_error, runner.sweeps, runs)
    if problem:
        (st.info if problem == NO_VALUES else st.error)(problem)  # nothing typed yet is not an error
    else:
        request_summary_ui(sweep, runs, runner.sweeps)
    controls_ui(runner, sweep, runner.snapshot())


def sweep_ui(runner: SweepRunner, base: TrainConfig | None, base_error: str | None, runs: list[Run]) -> None:
    """The whole tab: the request, Start / Stop, progress, and a recorded sweep's answer."""
    sweeps = runner.sweeps
    st.subheader("Sweep: a grid of runs, compared")
    st.caption(
        "Each combination of the values below is trained as an ordinary run, one after another, as this "
        "server's one training (the live view above follows each run). Stop sweep stops the current run "
        "after its batch and the rest of the queue; starting the same sweep again continues it."
    )
    feedback.show_outcome(state.take_flash(state.SWEEP_FLASH))
    request_area(runner, base, base_error, runs)
    progress_ui(runner)
    results_ui(sweeps, runs, runner)
