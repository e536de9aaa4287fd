"""What the buttons do: call the JobManager and turn every expected error into a message.

Each function returns an ``Outcome`` (a level for the message box, its text, and the run to show), so
the page decides how to display it (``app.feedback``). Nothing here draws anything. What Start and
Extend will train, and how it is worded, comes from the engine's plan (``resnet.store.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from data.fashion_mnist import DatasetError
from resnet.config import ConfigError, TrainConfig
from resnet.store.plan import PlanKind, plan_training
from resnet.store.runs import Run, RunError
from resnet.training.jobs import JobAlreadyRunning, JobManager

Level = Literal["success", "info", "warning", "error"]


@dataclass(frozen=True)
class Outcome:
    level: Level
    text: str
    run_id: str | None = None  # the run the views should show afterwards


@dataclass(frozen=True)
class Action:
    """A button the user pressed in the sidebar."""

    kind: Literal["start", "stop", "extend"]
    epochs: int | None = None  # extend: the new total
    resume: bool = True  # start: continue the newest run of the same settings


def perform(manager: JobManager, action: Action, config: TrainConfig | None, shown: Run | None) -> Outcome:
    if action.kind == "start":
        return start(manager, config, resume=action.resume)
    if action.kind == "stop":
        return stop(manager)
    return extend(manager, shown, action.epochs, gpus=config.gpus if config is not None else None)


def start(manager: JobManager, config: TrainConfig, *, resume: bool = True) -> Outcome:
    """Start training ``config`` (continuing the newest run of the same settings if ``resume``)."""
    plan = plan_training(manager.store, config, resume=resume)
    if plan.kind is PlanKind.UP_TO_DATE:
        return Outcome(
            "info",
            f"Nothing to train: {plan.error()}. Showing that run; raise the epochs (or use the sidebar's "
            "'Train a run further') to train it further.",
            plan.run.run_id,
        )
    try:
        run_id = manager.start(config, resume=resume)
    except JobAlreadyRunning as error:
        return Outcome("warning", f"Not started: {error}.")
    except (ConfigError, DatasetError, RunError) as error:
        return Outcome("error", f"Not started: {error}")
    return Outcome("success", _started_text(manager, run_id), run_id)


def extend(manager: JobManager, run: Run, epochs: int, *, gpus: str | None = None) -> Outcome:
    """Train ``run`` further, to ``epochs`` in total (what happens to its schedule: see resnet.store.plan).

    ``gpus``: where to train it now (the sidebar's setting); a run's placement is not part of what it learns.
    """
    try:
        config = run.config.replace(epochs=epochs, **({"gpus": gpus} if gpus else {}))
        run_id = manager.start(config, run_id=run.run_id)
    except JobAlreadyRunning as error:
        return Outcome("warning", f"Not extended: {error}.")
    except (ConfigError, DatasetError, RunError) as error:
        return Outcome("error", f"Not extended: {error}")
    return Outcome("success", _started_text(manager, run_id), run_id)


def _started_text(manager: JobManager, run_id: str) -> str:
    plan = manager.snapshot().plan
    return plan.started_text(run_id) if plan is not None else f"Started run {run_id}."


def stop(manager: JobManager) -> Outcome:
    if manager.stop():
        return Outcome("info", "Stopping after the current batch: completed epochs are kept, the partial one is not.")
    return Outcome("info", "No training is running.")


def delete(manager: JobManager, run_id: str) -> Outcome:
    try:
        manager.delete(run_id)
    except (RunError, OSError) as error:
        return Outcome("warning" if "stop it" in str(error) else "error", f"Could not delete run {run_id}: {error}")
    return Outcome("success", f"Deleted run {run_id}.")
