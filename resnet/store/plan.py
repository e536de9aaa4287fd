"""What pressing Start (or Extend, or ``python -m resnet train``) will do: the one place that decides it.

``plan_training(store, config, run_id=None, resume=True)`` answers, without training anything:

- whether a new run starts or an existing one is continued (the newest run with the same settings,
  everything but epochs, when ``resume``; the named run when ``run_id`` is given);
- which epochs it trains, and what happens to the learning-rate schedule (an unfinished cycle goes on,
  stretched to the new target; a finished run gets a new cycle over the added epochs, a warm restart);
- or why nothing can be trained (the run already has those epochs, is being trained elsewhere, is
  damaged, or was trained with other settings).

The trainer follows the plan; the sidebar's caption, the Start and Extend messages and the CLI print
its ``summary()``, so what the page says and what the trainer does cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet.config import AUTO, TRUNK, ConfigError, TrainConfig
from resnet.core.schedule import continues_a_cycle, cooldown_for, new_segment, plan_segments
from resnet.store.runs import Run, RunError, RunStatus, RunStore
from resnet.wording import TextEnum, plural


class PlanKind(TextEnum):
    NEW = "new"  # a new run, epochs 1..target
    CONTINUE = "continue"  # an unfinished run goes on within its learning-rate cycle
    EXTEND = "extend"  # a finished run trains more epochs with a new cycle (warm restart)
    UP_TO_DATE = "up_to_date"  # the run already has the epochs asked for: nothing to train
    BUSY = "busy"  # another process trains the run
    DAMAGED = "damaged"  # the run's files cannot be read
    OTHER_SETTINGS = "other_settings"  # the named run was trained with other settings
    STOPPED_ITSELF = "stopped_itself"  # an auto run that cooled down and ended: Extend does not apply
    MAXIMUM_TOO_LOW = "maximum_too_low"  # an auto run's new maximum leaves no room for its cooldown


TRAINS = (PlanKind.NEW, PlanKind.CONTINUE, PlanKind.EXTEND)


@dataclass(frozen=True)
class TrainingPlan:
    kind: PlanKind
    config: TrainConfig  # the settings to train, ``epochs`` = the target
    run: Run | None = None  # the run to continue (None for a new run)
    segments: tuple = ()  # the learning-rate segments (resnet.core.schedule.Segment) once the target is set

    @property
    def trains(self) -> bool:
        return self.kind in TRAINS

    @property
    def auto(self) -> bool:
        """Whether the run decides its own length (``epochs_mode`` auto): ``target_epochs`` is its maximum."""
        return self.config.epochs_mode == AUTO

    @property
    def branch_of(self) -> str | None:
        """A budget-curve branch's origin, ``<trunk>@<epoch>``, or None."""
        return self.run.state.branch_of if self.run is not None and self.run.state is not None else None

    @property
    def last_epoch(self) -> int:
        """The last epoch this plan trains as planned now: an auto run's may move earlier when it decides."""
        return self.segments[-1].end_epoch if self.segments else self.target_epochs

    @property
    def epochs_done(self) -> int:
        return self.run.epochs_done if self.run is not None else 0

    @property
    def first_epoch(self) -> int:
        return self.epochs_done + 1

    @property
    def target_epochs(self) -> int:
        return self.config.epochs

    @property
    def epochs_to_train(self) -> int:
        return max(0, self.last_epoch - self.epochs_done) if self.trains else 0

    def summary(self) -> str:
        """One sentence: what Start will do, or why it will not train."""
        run_id = self.run.run_id if self.run is not None else None
        first, target = self.first_epoch, self.target_epochs
        if self.kind is PlanKind.NEW and self.auto:
            return (
                f"Starts a new run that trains until returns diminish on {self.config.validation_count:,} held-out "
                f"training images, then cools down: at most {target} epochs."
            )
        if self.kind is PlanKind.NEW:
            return f"Starts a new run: epochs 1-{target}."
        if self.kind is PlanKind.CONTINUE and not self.epochs_done:
            return f"Trains run {run_id} (created, no epoch done yet): epochs 1-{target}."
        if self.kind is PlanKind.CONTINUE and self.branch_of:
            return f"Cools down run {run_id}, a budget-curve branch of {self.branch_of}: epochs {first}-{target}."
        if self.kind is PlanKind.CONTINUE and self.auto and self.run.state.stop is not None:
            return (
                f"Continues run {run_id} ({plural(self.epochs_done, 'epoch')} done): its cooldown goes on to epoch "
                f"{self.last_epoch}."
            )
        if self.kind is PlanKind.CONTINUE and self.auto:
            return (
                f"Continues run {run_id} ({plural(self.epochs_done, 'epoch')} done) until returns diminish, "
                f"at most to epoch {target}."
            )
        if self.kind is PlanKind.CONTINUE:
            return (
                f"Continues run {run_id} ({plural(self.epochs_done, 'epoch')} done) with epochs {first}-{target}; "
                f"its unfinished learning-rate cycle goes on, ending at epoch {target}."
            )
        if self.kind is PlanKind.EXTEND:
            return (
                f"Extends run {run_id} from {plural(self.epochs_done, 'epoch')} to {target}, with a new "
                f"learning-rate cycle over epochs {first}-{target} (a warm restart)."
            )
        return str(self.error())

    def started_text(self, run_id: str) -> str:
        """What a Start or Extend that follows this plan is doing (``run_id``: the run it trains)."""
        first, target = self.first_epoch, self.target_epochs
        if self.kind is PlanKind.CONTINUE and self.branch_of:
            return f"Cooling down run {run_id} (a branch of {self.branch_of}) over epochs {first}-{target}."
        if self.kind is PlanKind.CONTINUE and self.auto:
            return f"Continuing run {run_id} from epoch {first}, until returns diminish (at most {target} epochs)."
        if self.kind is PlanKind.CONTINUE:
            return f"Continuing run {run_id} from epoch {first} to {target}; its learning-rate cycle goes on."
        if self.kind is PlanKind.EXTEND:
            return (
                f"Extending run {run_id} from {self.epochs_done} to {target} epochs, with a new learning-rate cycle "
                f"over epochs {first}-{target} (a warm restart)."
            )
        if self.auto:
            return f"Started run {run_id}: until returns diminish, at most {plural(target, 'epoch')}."
        return f"Started run {run_id}: {plural(target, 'epoch')}."

    def error(self) -> Exception | None:
        """The error that training this plan raises (RunError or ConfigError), None if it trains."""
        run = self.run
        if self.kind is PlanKind.UP_TO_DATE:
            return RunError(
                f"run {run.run_id} already has {plural(run.epochs_done, 'epoch')} (asked for {self.target_epochs}); "
                "ask for more epochs to extend it, or start a new run"
            )
        if self.kind is PlanKind.BUSY:
            return RunError(f"run {run.run_id} is being trained by another process (pid {run.state.pid})")
        if self.kind is PlanKind.DAMAGED:
            return RunError(f"run {run.run_id} is damaged ({run.problem}); delete it or start a new run")
        if self.kind is PlanKind.STOPPED_ITSELF:
            stop = run.state.stop
            instead = (
                "a new run with a lower returns threshold trains longer (these settings stop where it did)"
                if stop.reason == "returns"
                else "ask for a larger maximum without naming this run, and a new run trains up to it"
            )
            return RunError(
                f"run {run.run_id} decided its own length: {stop.sentence()} Extend does not apply to it (its "
                f"cooldown has annealed it, and more epochs would start a new stable phase); instead, {instead}"
            )
        if self.kind is PlanKind.MAXIMUM_TOO_LOW:
            done = run.epochs_done
            least = done + cooldown_for(done, run.config.cooldown_fraction)
            return ConfigError(
                f"run {run.run_id} has trained {done} epochs of its stable phase, and its cooldown would take "
                f"{least - done} more: its maximum must be at least {least}; got {self.target_epochs}"
            )
        if self.kind is PlanKind.OTHER_SETTINGS:
            return ConfigError(
                f"run {run.run_id} was trained with other settings; only epochs can change when continuing it"
            )
        return None


def _ends_elsewhere(decided, maximum: int, asked: int) -> bool:
    """Whether a new auto run of the same settings up to ``asked`` epochs would end elsewhere than one that
    ended (``decided``) with the maximum ``maximum``: a larger maximum after a forced stop, or one too small
    for where it ended."""
    return (decided.reason == "maximum" and asked > maximum) or asked < decided.cooldown_end


def plan_training(
    store: RunStore,
    config: TrainConfig,
    *,
    run_id: str | None = None,
    resume: bool = True,
    runs: list[Run] | None = None,
) -> TrainingPlan:
    """What training ``config`` would do (see the module docstring); reads the store, writes nothing.

    ``runs`` is a listing of the store the caller already has (the app lists runs once per rerun).
    RunError if ``run_id`` names no run.
    """
    config.validate()
    if run_id is not None:
        run = store.load(run_id)
        if run.damaged:
            return TrainingPlan(PlanKind.DAMAGED, config, run)
        if run.config.fingerprint() != config.fingerprint():
            return TrainingPlan(PlanKind.OTHER_SETTINGS, config, run)
    elif resume:
        run = store.latest_with_fingerprint(config.fingerprint(), runs)
    else:
        run = None
    if run is None:
        first = new_segment(config.schedule, 1, config.epochs, cooldown_fraction=config.cooldown_fraction)
        return TrainingPlan(PlanKind.NEW, config, None, (first,) if config.epochs_mode != TRUNK else (first.stable(),))
    if run.status is RunStatus.RUNNING:
        return TrainingPlan(PlanKind.BUSY, config, run)
    decided = run.state.stop
    if decided is not None and run.epochs_done >= decided.cooldown_end:
        if run_id is None and _ends_elsewhere(decided, run.config.epochs, config.epochs):
            return plan_training(store, config, resume=False)  # another maximum ends it elsewhere: a new run
        return TrainingPlan(PlanKind.STOPPED_ITSELF, config, run)
    if decided is None and run.config.epochs_mode == AUTO and run.epochs_done:
        begun = run.state.segments and run.state.segments[-1].cooldown_start <= run.epochs_done  # kept as it is
        if not begun and config.epochs < run.epochs_done + cooldown_for(run.epochs_done, run.config.cooldown_fraction):
            return TrainingPlan(PlanKind.MAXIMUM_TOO_LOW, config, run)
    if decided is not None:  # an auto run in its cooldown: it ends where it decided, whatever is asked
        return TrainingPlan(PlanKind.CONTINUE, run.config, run, run.state.segments)
    if run.epochs_done >= config.epochs:
        return TrainingPlan(PlanKind.UP_TO_DATE, config, run)
    trunk = run.config.epochs_mode == TRUNK
    segments = plan_segments(
        run.state.segments,
        epochs_done=run.epochs_done,
        target_epochs=config.epochs,
        schedule=run.config.schedule,
        cooldown_fraction=run.config.cooldown_fraction,
        stable_only=trunk,
    )
    unfinished = not run.epochs_done or trunk or continues_a_cycle(run.state.segments, epochs_done=run.epochs_done)
    return TrainingPlan(
        PlanKind.CONTINUE if unfinished else PlanKind.EXTEND,
        run.config.replace(epochs=config.epochs),
        run,
        tuple(segments),
    )
