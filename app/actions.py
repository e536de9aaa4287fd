"""What the buttons do: call the JobManager / RunStore and turn every expected error into a message.

Each function returns an ``Outcome`` (a level for the message box, its text, and the run to show), so
the page decides how to display it. Nothing here draws anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.fashion_mnist import DatasetError
from resnet.config import ConfigError, TrainConfig
from resnet.jobs import JobAlreadyRunning, JobManager
from resnet.runs import Run, RunError


@dataclass(frozen=True)
class Outcome:
    level: str  # success | info | warning | error
    text: str
    run_id: str | None = None  # the run the views should show afterwards


def start(manager: JobManager, config: TrainConfig, *, resume: bool = True) -> Outcome:
    """Start training ``config`` (continuing the newest run of the same settings if ``resume``)."""
    existing = manager.store.latest_with_fingerprint(config.fingerprint()) if resume else None
    try:
        run_id = manager.start(config, resume=resume)
    except JobAlreadyRunning as error:
        return Outcome("warning", f"Not started: {error}.")
    except (ConfigError, DatasetError) as error:
        return Outcome("error", f"Not started: {error}")
    except RunError as error:
        if existing is not None and existing.epochs_done >= config.epochs:
            return Outcome(
                "info",
                f"Nothing to train: {error}. Showing that run; raise the epochs (or use Extend) to train it further.",
                existing.run_id,
            )
        return Outcome("error", f"Not started: {error}")
    if existing is not None and existing.run_id == run_id:
        text = f"Continuing run {run_id} from epoch {existing.epochs_done + 1} to {config.epochs}."
    else:
        text = f"Started run {run_id}: {config.epochs} epoch{'s' if config.epochs != 1 else ''}."
    return Outcome("success", text, run_id)


def extend(manager: JobManager, run: Run, epochs: int) -> Outcome:
    """Train the finished ``run`` further, to ``epochs`` in total (a new learning-rate cycle)."""
    try:
        config = run.config.replace(epochs=epochs)
        run_id = manager.start(config, run_id=run.run_id)
    except JobAlreadyRunning as error:
        return Outcome("warning", f"Not extended: {error}.")
    except (ConfigError, DatasetError, RunError) as error:
        return Outcome("error", f"Not extended: {error}")
    return Outcome("success", f"Extending run {run_id} from {run.epochs_done} to {epochs} epochs.", run_id)


def stop(manager: JobManager) -> Outcome:
    if manager.stop():
        return Outcome("info", "Stopping after the current batch: completed epochs are kept, the partial one is not.")
    return Outcome("info", "No training is running.")


def delete(manager: JobManager, run_id: str) -> Outcome:
    snapshot = manager.snapshot()
    if snapshot.active and snapshot.run_id == run_id:
        return Outcome("warning", f"Run {run_id} is training: stop it before deleting it.")
    try:
        manager.store.delete(run_id)
    except (RunError, OSError) as error:
        return Outcome("error", f"Could not delete run {run_id}: {error}")
    return Outcome("success", f"Deleted run {run_id}.")
