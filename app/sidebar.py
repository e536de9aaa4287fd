"""The sidebar below the settings: hardware, what Start will do and how long, Start / Stop, and
training a shown run further.

``controls_ui`` returns the button pressed as an ``actions.Action``; what it does is decided in
``app.actions`` and, for what gets trained, in the engine's plan (``resnet.store.plan``), whose words the
captions here show.
"""

from __future__ import annotations

import streamlit as st

from app import state
from app.actions import Action
from app.params import key
from resnet.config import AUTO, AUTO_MIN_MAX_EPOCHS, LIMITS, RECIPES, ConfigError, TrainConfig
from resnet.core.precision_record import BUDGET_SHARE, MIXED_MARGIN, Source
from resnet.core.schedule import continues_a_cycle, cooldown_for
from resnet.store.estimate import Estimate
from resnet.store.plan import PlanKind, TrainingPlan, plan_training
from resnet.store.runs import Run, RunError, RunStatus
from resnet.training.jobs import JobManager, JobSnapshot

EXTEND_STEP = 10  # a finished run's default extension, in epochs


def hardware_ui(device: str, gpu: bool) -> None:
    where = ":green[GPU in use]" if gpu else ":orange[no GPU found: training runs on the CPU]"
    st.sidebar.markdown(f"**Hardware:** {device}  \n{where}")


def precision_caption(precision: str) -> str:
    """What precision Start trains with, and how ``auto`` got there (``resnet.core.precision.Precision``)."""
    source = getattr(precision, "source", None)
    if source == Source.MEASURED:
        measured = precision.measurement
        return (
            f"Precision (auto): {precision}, measured on this machine on {measured.date}: "
            f"{measured.speeds_text()} (the measurement took {measured.seconds:.0f} s)."
        )
    if source == Source.NOT_MEASURED:
        return (
            f"Precision (auto): not measured yet for this depth and batch size. Start first times float32 "
            f"against {precision} (a few steps each, about {BUDGET_SHARE:.0%} of an epoch's time) and trains "
            f"with {precision} only if it is at least {MIXED_MARGIN - 1:.0%} faster."
        )
    if source == Source.TOO_SHORT:
        return f"Precision (auto): {precision}: {precision.detail}."
    if source == Source.NOTHING_TO_MEASURE:
        return f"Precision (auto): {precision}: {precision.detail}."
    if source == Source.REQUESTED:
        return f"Precision: {precision}, as chosen."
    return f"Precision on this machine: {precision}."


def _use_recipe(name: str) -> None:
    for field, value in RECIPES[name].settings.items():
        st.session_state[key(field)] = value


def recipes_ui() -> None:
    """One button per named recipe (``resnet.config.RECIPES``): it fills the settings above."""
    columns = st.sidebar.columns(len(RECIPES))
    for column, (name, recipe) in zip(columns, RECIPES.items(), strict=True):
        column.button(
            recipe.title,
            key=f"recipe_{name}",
            on_click=_use_recipe,
            args=(name,),
            width="stretch",
            help=f"{recipe.description} Sets: "
            + ", ".join(f"{field} {value}" for field, value in recipe.settings.items())
            + "; the other settings stay.",
        )


def _plan_caption(plan: TrainingPlan | None, estimate: Estimate | None, precision: str) -> None:
    sidebar = st.sidebar
    if plan is None:
        return
    sidebar.caption(plan.summary())
    if estimate is not None:  # what these settings cost here, also when Start has nothing to train
        epochs = plan.epochs_to_train if plan.trains else plan.target_epochs
        undecided = plan.auto and (plan.run is None or plan.run.state.stop is None)  # it may stop sooner
        sidebar.markdown(estimate.text(epochs, at_most=undecided))
    sidebar.caption(precision_caption(precision))


def controls_ui(
    manager: JobManager,
    config: TrainConfig | None,
    config_error: str | None,
    runs: list[Run],
    estimate: Estimate | None,
    precision: str,
    snapshot: JobSnapshot,
    shown: Run | None,
) -> Action | None:
    """Plan, estimate, Start / Stop and 'train further' in the sidebar; returns the button pressed."""
    sidebar = st.sidebar
    if config_error:
        sidebar.error(f"These settings cannot be trained: {config_error}")
    resume = sidebar.checkbox(
        "Continue a run with the same settings",
        value=True,
        key=state.RESUME,
        help="If a run with these settings (everything but epochs) exists, Start trains it on to the chosen "
        "number of epochs instead of starting over. Turn off to start a fresh run.",
    )
    plan = plan_training(manager.store, config, resume=resume, runs=runs) if config is not None else None
    _plan_caption(plan, estimate, precision)
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
    recipes_ui()
    further = train_further_ui(manager, snapshot, shown)
    if start:
        return Action("start", resume=resume)
    if stop:
        return Action("stop")
    return further


def _further_default(run: Run) -> int:
    """An unfinished run's default is the end of its cycle; a finished one's is ``EXTEND_STEP`` more."""
    high = LIMITS["epochs"][1]
    if run.status is not RunStatus.COMPLETE and run.target_epochs > run.epochs_done:
        return min(high, run.target_epochs)
    return min(high, run.epochs_done + EXTEND_STEP)


def _further_help(run: Run) -> str:
    if continues_a_cycle(run.state.segments, epochs_done=run.epochs_done):
        return (
            f"This run is {run.status} inside its learning-rate cycle (planned to end at epoch {run.target_epochs}). "
            "Training it further continues that cycle, stretched or shortened to end at the epochs you choose; "
            "its completed epochs are kept."
        )
    return (
        "This run finished its learning-rate cycle. Training it further adds a new cycle over just the added "
        "epochs (a warm restart: the rate rises again and decays to the new end); its completed epochs are kept."
    )


def train_further_ui(manager: JobManager, snapshot: JobSnapshot, shown: Run | None) -> Action | None:
    """'Train a run further': the shown run to a new total of epochs, with what that does to its schedule."""
    sidebar = st.sidebar
    sidebar.divider()
    sidebar.markdown("**Train a run further**")
    busy = snapshot.active and shown is not None and snapshot.run_id == shown.run_id
    if shown is None or shown.damaged or not shown.epochs_done or busy:
        sidebar.caption("Show a run with completed epochs (Runs tab) to train it further.")
        return None
    high = LIMITS["epochs"][1]
    auto = shown.config is not None and shown.config.epochs_mode == AUTO
    if auto and shown.state.stop is not None:  # it decided where it ends: nothing to choose
        epochs = shown.config.epochs
    else:
        low = shown.epochs_done + 1
        if auto:  # a maximum that leaves room for the cooldown of the epochs done
            done = shown.epochs_done
            low = max(low, AUTO_MIN_MAX_EPOCHS, done + cooldown_for(done, shown.config.cooldown_fraction))
        epochs = sidebar.number_input(
            f"Train {shown.run_id} {'up to (maximum epochs)' if auto else 'to (epochs in total)'}",
            min_value=min(low, high),
            max_value=high,
            value=min(max(low, _further_default(shown)), high),
            step=1,
            key=f"extend_to_{shown.run_id}",
            help=_further_help(shown),
        )
    try:
        plan = plan_training(manager.store, shown.config.replace(epochs=int(epochs)), run_id=shown.run_id)
    except (RunError, ConfigError) as error:
        sidebar.caption(str(error))
        return None
    sidebar.caption(plan.summary())
    label = "Continue" if plan.kind is PlanKind.CONTINUE else "Extend"
    pressed = sidebar.button(label, key="extend", disabled=not plan.trains, help=_further_help(shown), width="stretch")
    return Action("extend", epochs=int(epochs)) if pressed else None
