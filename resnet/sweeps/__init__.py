"""Sweeps: a named list of ordinary runs over a grid of settings, trained in order here or on Ray.

A sweep is the seed study made first-class: values per parameter (any ``TrainConfig`` field, checked
with the config's own declarations) expand to a grid of configurations, and each configuration (a
*trial*) becomes an ordinary run in the run cache. The sweep record keeps which run belongs to which
trial, in order:

    <cache>/.sweeps/<name>.json    written atomically; validated when read (a damaged one is reported)
    <cache>/.sweeps/<name>.lock    held (flock) by the process running the sweep

(The folder starts with a dot so the run store's listing never takes it for a run.) A record is read
with bounded size and depth (``resnet/records.py``) and checked in ``sweep_from_json``; the folder, the
records and the locks are never followed through a symbolic link out of the cache.

What a trial trains is ``resnet.store.plan.plan_training``'s answer. Runs that differ only in epochs share a
fingerprint, so a trial never resumes "the newest run of these settings": the first time it adopts a
run trained with exactly its settings and its epoch budget in one learning-rate cycle (reused if
complete, continued if partial), or else starts a new run (``resume=False``); from then on the record
names that run and a rerun continues it. Training is ``prepare_training`` + ``train_prepared`` of the
trainer, nothing else:

- here, one after another (``run_sweep``): each trial in a child process through ``resnet.training.jobs``
  (TensorFlow's memory goes back after every trial), stop ends the current trial after its batch
  (completed epochs kept) and the rest of the queue; running the sweep again continues it;
- on a Ray cluster: ``resnet.sweeps.on_ray.run_sweep_on_ray`` (the optional extra).

Analysis, for the CLI and the app: ``sweep_table`` (one row per trial), ``pareto_front`` (the trials
no other trial beats in both time and accuracy) and ``budget_sentence`` (what a training budget buys).

    python -m resnet sweep --name study --epochs 5,10,20 --batch-size 64,128
    python -m resnet sweeps
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resnet.config import PARAMS, PLACEMENT_FIELDS, ConfigError, TrainConfig, check_value, parse_bool
from resnet.core.schedule import Segment
from resnet.files import lock_held, try_lock, write_json
from resnet.records import RecordError, finite_number, read_json, short
from resnet.store.plan import PlanKind, TrainingPlan, plan_training
from resnet.store.runs import RUN_ID_PATTERN, Run, RunError, RunStore
from resnet.wording import TextEnum, format_duration, plural

FORMAT_VERSION = 1
MAX_TRIALS = 64
SWEEPS_FOLDER = ".sweeps"
PRESETS = {
    # The seed study: the same ResNet-50 trained for several epoch budgets, one run per budget.
    "seed-study": {"epochs": "10,20,60,100,200", "batch_size": "128"},
}


class SweepError(RunError):
    """A sweep cannot be found, read, written or run; the message says which and why."""


class DamagedSweep(SweepError):
    """A sweep record exists but is unreadable or inconsistent."""


# --- the grid ------------------------------------------------------------------------------------------
def parse_values(name: str, text: str) -> tuple:
    """The values of one field from a comma list (``"5,10,20"``), each checked like the config checks it."""
    spec = PARAMS.get(name)
    if spec is None:
        raise ConfigError(f"unknown configuration field {name!r}")
    values = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            raise ConfigError(f"{name}: empty value in {text!r} (give values separated by commas)")
        values.append(_parse_one(spec, item))
    return tuple(values)


def _parse_one(spec, item: str):
    if spec.type is bool:
        value = parse_bool(item, spec.name)
    elif spec.type is str:
        value = item
    else:
        try:
            value = spec.type(item)
        except ValueError:
            kind = "a whole number" if spec.type is int else "a number"
            raise ConfigError(f"{spec.name} must be {kind}; got {item!r}") from None
    check_value(spec, value)
    return value


def check_grid(grid: dict) -> dict[str, tuple]:
    """The grid in the config's field order, every value checked; ConfigError names the field."""
    if not grid:
        raise ConfigError("a sweep needs values for at least one parameter, e.g. epochs 5,10,20")
    unknown = sorted(set(grid) - set(PARAMS))
    if unknown:
        raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
    checked = {}
    for name, spec in PARAMS.items():
        if name not in grid:
            continue
        values = tuple(grid[name]) if isinstance(grid[name], (list, tuple)) else (grid[name],)
        if not values:
            raise ConfigError(f"{name}: no values given")
        if len(values) > MAX_TRIALS:  # before anything else: a record may list 100,000 values
            raise ConfigError(f"{name} lists {len(values):,} values; a sweep runs at most {MAX_TRIALS} trials")
        for value in values:
            check_value(spec, value)
        repeated = sorted({str(value) for value, count in collections.Counter(values).items() if count > 1})
        if repeated:
            raise ConfigError(f"{name} lists {', '.join(repeated)} more than once")
        if name in PLACEMENT_FIELDS and len(values) > 1:  # trials would share a fingerprint and one run
            raise ConfigError(f"{name} says where trials train, not what they learn: give it one value")
        checked[name] = values
    return checked


def expand_grid(grid: dict, base: TrainConfig | None = None) -> list[TrainConfig]:
    """Every combination of the grid over ``base``, in field order with the last field varying fastest.

    ConfigError (naming the field) for a bad value, more than MAX_TRIALS combinations, or a
    combination the config refuses (e.g. a training subset smaller than the batch size).
    """
    grid = check_grid(grid)
    base = base or TrainConfig()
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_TRIALS:
        sizes = " x ".join(f"{len(values)} {name}" for name, values in grid.items())
        raise ConfigError(f"the grid has {count} combinations ({sizes}); a sweep runs at most {MAX_TRIALS}")
    names = list(grid)
    configs = []
    for combination in itertools.product(*grid.values()):
        configs.append(dataclasses.replace(base, **dict(zip(names, combination, strict=True))).validate())
    return configs


# --- the sweep record ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    config: TrainConfig
    run_id: str | None = None  # the run that trains it, once created or adopted


@dataclass(frozen=True)
class Sweep:
    name: str
    grid: dict  # field -> tuple of values, in the config's field order
    base: TrainConfig  # the settings the grid does not set
    trials: tuple[Trial, ...]
    created: float = 0.0
    updated: float = 0.0

    @property
    def varying(self) -> tuple[str, ...]:
        """The fields with more than one value (all grid fields if none has)."""
        many = tuple(name for name, values in self.grid.items() if len(values) > 1)
        return many or tuple(self.grid)

    @property
    def configs(self) -> list[TrainConfig]:
        return [trial.config for trial in self.trials]

    def with_run_id(self, index: int, run_id: str) -> Sweep:
        trials = list(self.trials)
        trials[index] = dataclasses.replace(trials[index], run_id=run_id)
        return dataclasses.replace(self, trials=tuple(trials))

    def describe_grid(self) -> str:
        return " x ".join(f"{name} {','.join(map(str, values))}" for name, values in self.grid.items())

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created": self.created,
            "updated": self.updated,
            "grid": {name: list(values) for name, values in self.grid.items()},
            "base": self.base.to_dict(),
            "trials": [{"config": trial.config.to_dict(), "run_id": trial.run_id} for trial in self.trials],
        }


def check_name(name: str) -> str:
    if not isinstance(name, str) or not RUN_ID_PATTERN.fullmatch(name) or ".." in name:
        raise SweepError(f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' (up to 100)")
    return name


def new_sweep(name: str, grid: dict, base: TrainConfig | None = None) -> Sweep:
    """A sweep over ``grid`` (field -> values) on ``base``; ConfigError/SweepError before anything is written."""
    check_name(name)
    grid = check_grid(grid)
    base = base or TrainConfig()
    configs = expand_grid(grid, base)
    now = time.time()
    return Sweep(name, grid, base, tuple(Trial(config) for config in configs), now, now)


def requested_sweep(
    sweeps: SweepStore, name: str, texts: dict, *, preset: str | None = None, base: TrainConfig | None = None
) -> Sweep:
    """The sweep a command asks for, checked; nothing is written.

    ``texts``: field -> comma list (None or missing: not given); a ``preset`` fills fields not given;
    ``base`` (default ``TrainConfig()``) sets the fields the grid does not (the app: its sidebar).
    With no values, the recorded sweep ``name`` is continued; with values, they must expand to the
    recorded trials (else SweepError: the name is taken) or to a new sweep's.
    """
    texts = {key: value for key, value in texts.items() if value is not None}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
        texts = {**PRESETS[preset], **texts}
    existing = sweeps.load(name) if sweeps.exists(name) else None
    if not texts and existing is None:
        check_name(name)
        raise ConfigError(f"no sweep {name!r} yet: give values for at least one parameter, e.g. --epochs 5,10,20")
    if not texts:
        return existing
    sweep = new_sweep(name, {key: parse_values(key, text) for key, text in texts.items()}, base)
    if existing is not None and existing.configs != sweep.configs:
        raise SweepError(
            f"sweep {name} already exists with other settings ({existing.describe_grid()}); continue it with "
            f"only --name {name}, or choose another name"
        )
    return existing or sweep


def sweep_from_json(values, name: str) -> Sweep:
    """Parse and validate a record; DamagedSweep says what is wrong.

    Linear in the record's size: a list longer than a sweep can be (``MAX_TRIALS``) is refused before
    its items are looked at, times are compared before they are converted, and two trials may not name
    the same run (the second would extend the first's run and orphan its own).
    """
    if not isinstance(values, dict):
        raise DamagedSweep("the record is not a JSON object")
    if values.get("format_version") != FORMAT_VERSION:
        raise DamagedSweep(f"format version {short(values.get('format_version'))}, expected {FORMAT_VERSION}")
    if values.get("name") != name:
        raise DamagedSweep(f"the record names sweep {short(values.get('name'))}, not {name!r}")
    created, updated = _time(values, "created"), _time(values, "updated")
    try:
        grid = check_grid(_grid(values))
        base = TrainConfig.from_dict(_field(values, "base", dict))
        configs = expand_grid(grid, base)
        trials = _trials(_field(values, "trials", list))
    except (ConfigError, TypeError) as error:
        raise DamagedSweep(f"invalid settings ({error})") from error
    if [trial.config for trial in trials] != configs:
        raise DamagedSweep("its trials are not the combinations of its grid")
    return Sweep(name, grid, base, tuple(trials), created, updated)


def _grid(values: dict) -> dict[str, tuple]:
    grid = _field(values, "grid", dict)
    if len(grid) > len(PARAMS):
        raise DamagedSweep(f"its grid has {len(grid):,} fields; a configuration has {len(PARAMS)}")
    for key, items in grid.items():
        if not isinstance(items, list):
            raise DamagedSweep(f"its grid's {short(key)} is {short(items)}, not a list of values")
    return {key: tuple(items) for key, items in grid.items()}


def _trials(items: list) -> list[Trial]:
    if len(items) > MAX_TRIALS:
        raise DamagedSweep(f"it lists {len(items):,} trials; a sweep runs at most {MAX_TRIALS}")
    trials, owners = [], {}
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or set(item) != {"config", "run_id"}:
            raise DamagedSweep(f"invalid trial {number}: {short(item)}")
        run_id = item["run_id"]
        if run_id is not None:
            if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
                raise DamagedSweep(f"trial {number} names an invalid run id {short(run_id)}")
            if run_id in owners:
                raise DamagedSweep(
                    f"trials {owners[run_id]} and {number} both name run {run_id} (each trial trains its own run)"
                )
            owners[run_id] = number
        trials.append(Trial(TrainConfig.from_dict(_field(item, "config", dict)), run_id))
    return trials


def _time(values: dict, key: str) -> float:
    value = values.get(key)
    if not finite_number(value, low=0.0):  # compared, not converted: float(10**400) raises OverflowError
        raise DamagedSweep(f"invalid {key} time {short(value)}")
    return float(value)


def _field(values: dict, key: str, kind: type):
    value = values.get(key)
    if not isinstance(value, kind):
        raise DamagedSweep(f"{key} is missing or not a {kind.__name__}")
    return value


@dataclass(frozen=True)
class SweepListing:
    """One entry of ``SweepStore.list_sweeps``: a sweep, or the name of a damaged record and why."""

    name: str
    sweep: Sweep | None
    problem: str | None = None
    running: bool = False  # another process (or this one) runs it now


class SweepStore:
    """Sweep records under ``<cache>/.sweeps``, a real folder of the cache: if ``.sweeps`` is a symbolic
    link (or not a folder), nothing is read or written through it, and the listing says why."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.folder = self.root / SWEEPS_FOLDER

    def path_for(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.json"

    def folder_problem(self) -> str | None:
        """Why the sweep folder cannot be used (a link, not a folder), or None (also when it does not exist)."""
        try:
            mode = os.lstat(self.folder).st_mode
        except FileNotFoundError:
            return None
        except OSError as error:
            return f"the sweep folder {self.folder} cannot be read ({error.strerror})"
        if stat.S_ISLNK(mode):
            return (
                f"the sweep folder {self.folder} is a symbolic link (to {os.readlink(self.folder)}), not a folder of "
                "the cache: no record is read or written through it; replace it with a folder"
            )
        if not stat.S_ISDIR(mode):
            return f"{self.folder} is not a folder: no sweep record can be kept there; remove it"
        return None

    def _checked_folder(self, *, create: bool = False) -> Path:
        """The sweep folder, created if asked; SweepError if it is a link or not a folder."""
        if create and not os.path.lexists(self.folder):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise SweepError(f"cannot create the sweep folder {self.folder}: {error}") from error
        problem = self.folder_problem()
        if problem:
            raise SweepError(problem)
        return self.folder

    def exists(self, name: str) -> bool:
        """Whether a record of ``name`` is there (a link named so is none); SweepError for a bad folder."""
        path = self.path_for(name)
        self._checked_folder()
        return path.is_file() and not path.is_symlink()

    def load(self, name: str) -> Sweep:
        """The validated record; SweepError if there is none, DamagedSweep if it cannot be read."""
        path = self.path_for(name)
        self._checked_folder()
        if not os.path.lexists(path):
            raise SweepError(f"no sweep {name!r} in {self.folder}")
        try:
            values = read_json(path)
        except RecordError as error:
            raise DamagedSweep(f"sweep {name}: {error}") from error
        try:
            return sweep_from_json(values, name)
        except DamagedSweep as error:
            raise DamagedSweep(f"sweep {name} is damaged: {error}") from error

    def save(self, sweep: Sweep) -> Sweep:
        sweep = dataclasses.replace(sweep, updated=time.time())
        self._checked_folder(create=True)
        write_json(self.path_for(sweep.name), sweep.to_json())
        return sweep

    def list_sweeps(self) -> list[SweepListing]:
        """Every record, newest first; damaged ones with the reason, and a sweep folder that cannot be used
        as one listing named after it (never raised)."""
        problem = self.folder_problem()
        if problem:
            return [SweepListing(SWEEPS_FOLDER, None, problem)]
        if not self.folder.is_dir():
            return []
        listings = []
        for path in sorted(self.folder.glob("*.json")):
            name = path.stem
            if name.startswith("."):  # a record being written (.tmp-*): not a sweep
                continue
            try:
                listings.append(SweepListing(name, self.load(name), running=self.is_running(name)))
            except SweepError as error:
                listings.append(SweepListing(name, None, str(error)))
        return sorted(listings, key=lambda item: item.sweep.updated if item.sweep else 0.0, reverse=True)

    @contextlib.contextmanager
    def locked(self, name: str):
        """Hold the sweep's lock while it runs; SweepError if another process runs it, or if the lock
        file or the sweep folder is a link (never followed) or not a file."""
        path = self._checked_folder(create=True) / f"{check_name(name)}.lock"
        try:
            lock = try_lock(path)
        except OSError as error:
            what = "a symbolic link (never followed)" if os.path.islink(path) else f"unusable ({error.strerror})"
            raise SweepError(
                f"sweep {name} cannot be locked: its lock file {path.name} is {what}; remove it"
            ) from error
        if lock is None:
            raise SweepError(f"sweep {name} is being run by another process; wait for it or stop it")
        try:
            yield
        finally:
            lock.close()

    def is_running(self, name: str) -> bool:
        """Whether some process holds the sweep's lock (a link or anything but a file is held by no one)."""
        if self.folder_problem():
            return False
        return lock_held(self.folder / f"{check_name(name)}.lock")


# --- what a trial trains -------------------------------------------------------------------------------
def adoptable_run(trial: Trial, runs: Iterable[Run], taken: set[str]) -> Run | None:
    """A run trained with exactly the trial's settings and budget in one cycle, not another trial's."""
    config = trial.config
    one_cycle = ((), (Segment(1, config.epochs),))
    for run in runs:
        if run.damaged or run.run_id in taken or run.state.fingerprint != config.fingerprint():
            continue
        if run.state.target_epochs == config.epochs and run.state.segments in one_cycle:
            return run
    return None


def plan_trial(store: RunStore, sweep: Sweep, index: int, runs: list[Run] | None = None) -> TrainingPlan:
    """What training trial ``index`` does now: its recorded run continued, an adopted run, or a new run."""
    trial = sweep.trials[index]
    runs = store.list_runs() if runs is None else runs
    known = {run.run_id for run in runs}
    if trial.run_id is not None and trial.run_id in known:
        return plan_training(store, trial.config, run_id=trial.run_id, runs=runs)
    taken = {other.run_id for other in sweep.trials if other.run_id is not None}
    adopted = adoptable_run(trial, runs, taken)
    if adopted is not None:
        return plan_training(store, trial.config, run_id=adopted.run_id, runs=runs)
    return plan_training(store, trial.config, resume=False, runs=runs)


def sweep_progress(sweep: Sweep, runs: Iterable[Run]) -> tuple[int, int]:
    """(trials whose run has all its epochs, trials)."""
    by_id = {run.run_id: run for run in runs}
    done = 0
    for trial in sweep.trials:
        run = by_id.get(trial.run_id)
        if run is not None and not run.damaged and run.epochs_done >= trial.config.epochs:
            done += 1
    return done, len(sweep.trials)


# --- running it ----------------------------------------------------------------------------------------
class Outcome(TextEnum):
    """How a trial ended this time."""

    TRAINED = "trained"  # reached its epochs now
    DONE = "done"  # had them already: nothing trained
    STOPPED = "stopped"  # stopped by the user (completed epochs kept)
    FAILED = "failed"  # an error (completed epochs kept)
    REFUSED = "refused"  # could not start (busy elsewhere, damaged...)
    NOT_RUN = "not run"  # the sweep was stopped before its turn


@dataclass(frozen=True)
class TrialResult:
    index: int
    run_id: str | None
    outcome: str
    message: str = ""
    seconds: float = 0.0  # wall time of this trial here (preparing, training, waiting for a worker)
    epochs_done: int = 0
    target_epochs: int = 0
    worker: str = ""  # where it trained (Ray: "pid N on HOST")


@dataclass(frozen=True)
class SweepEvent:
    """What a running sweep reports: a trial ``start``s, makes ``progress``, commits an ``epoch``, ``end``s."""

    kind: str
    index: int
    total: int
    run_id: str | None = None
    text: str = ""
    epoch: int = 0
    target_epochs: int = 0
    phase: str = ""
    fraction: float = 0.0  # of the current epoch's training pass
    row: dict | None = None  # ``epoch``: the committed history row
    pid: int | None = None  # the process training the trial, when known
    result: TrialResult | None = None  # ``end``


Report = Callable[[SweepEvent], None]


@dataclass
class TrialStart:
    """A trial ready to train (the sweep record names its run), or the result of one with nothing to train."""

    index: int
    sweep: Sweep
    plan: TrainingPlan
    result: TrialResult | None = None  # set when nothing is to be trained
    run_id: str | None = None


def start_trial(
    store: RunStore, sweeps: SweepStore, sweep: Sweep, index: int, *, prepare: Callable[[TrainingPlan], str]
) -> TrialStart:
    """Plan trial ``index``; if it trains, ``prepare(plan)`` creates or picks the run and returns its id,
    which the sweep record then names (saved at once). Shared by every executor."""
    trial = sweep.trials[index]
    plan = plan_trial(store, sweep, index)
    if plan.kind is PlanKind.UP_TO_DATE:
        sweep = _record_run(sweeps, sweep, index, plan.run.run_id)
        result = TrialResult(
            index, plan.run.run_id, Outcome.DONE, "already trained", 0.0, plan.epochs_done, plan.target_epochs
        )
        return TrialStart(index, sweep, plan, result, run_id=plan.run.run_id)
    if not plan.trains:
        run_id = plan.run.run_id if plan.run else trial.run_id
        result = TrialResult(
            index, run_id, Outcome.REFUSED, str(plan.error()), 0.0, plan.epochs_done, plan.target_epochs
        )
        return TrialStart(index, sweep, plan, result, run_id=run_id)
    run_id = prepare(plan)
    sweep = _record_run(sweeps, sweep, index, run_id)
    return TrialStart(index, sweep, plan, run_id=run_id)


def _record_run(sweeps: SweepStore, sweep: Sweep, index: int, run_id: str) -> Sweep:
    if sweep.trials[index].run_id == run_id:
        return sweep
    return sweeps.save(sweep.with_run_id(index, run_id))


def run_sweep(
    sweep: Sweep,
    store: RunStore,
    *,
    cancel: threading.Event | None = None,
    report: Report | None = None,
    dataset_dir=None,
    isolated: bool = True,
    poll_seconds: float = 0.2,
    manager=None,
) -> list[TrialResult]:
    """Train the sweep's trials here, one after another; returns one result per trial, in order.

    Each trial is a ``resnet.training.jobs.JobManager`` job (``prepare_training`` + ``train_prepared``; in a
    child process with ``isolated``). With ``manager`` (the app's one JobManager), every trial is a job
    of that manager instead, so it is the server's one training (``dataset_dir`` and ``isolated`` are
    then the manager's); a trial it cannot start because another job runs raises JobAlreadyRunning.
    Setting ``cancel`` stops the current trial after its batch and leaves the rest; finished trials are
    skipped and a partial one continues when it runs again.
    The record is saved (with its run ids) as trials start; the caller holds ``SweepStore.locked``.
    """
    from resnet.training.jobs import JobManager  # imports TensorFlow: only once the sweep is valid

    cancel = cancel or threading.Event()
    report = report or (lambda event: None)
    sweeps = SweepStore(store.root)
    if not sweeps.exists(sweep.name):
        sweep = sweeps.save(sweep)
    results = []
    for index in range(len(sweep.trials)):
        if cancel.is_set():
            results.append(TrialResult(index, sweep.trials[index].run_id, Outcome.NOT_RUN, "the sweep was stopped"))
            continue
        trial_manager = manager or JobManager(store, dataset_dir=dataset_dir, isolated=isolated)
        result, sweep = _run_trial_here(
            trial_manager, store, sweeps, sweep, index, cancel=cancel, report=report, poll=poll_seconds
        )
        results.append(result)
        report(SweepEvent("end", index, len(sweep.trials), result.run_id, result.message, result=result))
    return results


def _run_trial_here(manager, store, sweeps, sweep, index, *, cancel, report, poll) -> tuple[TrialResult, Sweep]:
    total, trial, started = len(sweep.trials), sweep.trials[index], time.perf_counter()

    def prepare(plan: TrainingPlan) -> str:
        return manager.start(trial.config, run_id=plan.run.run_id if plan.run else None, resume=False)

    try:
        start = start_trial(store, sweeps, sweep, index, prepare=prepare)
    except RunError as error:  # this trial's run (locked meanwhile...); a missing dataset stops the sweep
        return TrialResult(index, trial.run_id, Outcome.REFUSED, str(error)), sweep
    if start.result is not None:
        return start.result, start.sweep
    run_id = start.run_id
    report(
        SweepEvent(
            "start", index, total, run_id, start.plan.started_text(run_id), target_epochs=start.plan.target_epochs
        )
    )
    committed = store.load(run_id).epochs_done
    while not manager.wait(timeout=poll):
        if cancel.is_set():
            manager.stop()
        committed = _report_commits(store, run_id, committed, index, total, report)
        snapshot = manager.snapshot()
        phase = str(snapshot.phase or "")
        report(
            SweepEvent(
                "progress",
                index,
                total,
                run_id,
                phase=phase,
                epoch=snapshot.epoch,
                target_epochs=snapshot.target_epochs,
                fraction=snapshot.epoch_fraction,
            )
        )
    _report_commits(store, run_id, committed, index, total, report)
    snapshot, run = manager.snapshot(), store.load(run_id)
    outcome = {"complete": Outcome.TRAINED, "stopped": Outcome.STOPPED}.get(str(snapshot.state), Outcome.FAILED)
    message = snapshot.message + (f" ({snapshot.error})" if snapshot.error else "")
    seconds = time.perf_counter() - started
    return TrialResult(index, run_id, outcome, message, seconds, run.epochs_done, trial.config.epochs), start.sweep


def _report_commits(store: RunStore, run_id: str, committed: int, index: int, total: int, report: Report) -> int:
    """Report the epochs committed since ``committed``; returns the epochs done now."""
    try:
        run = store.load(run_id)
    except RunError:
        return committed
    for row in run.history.to_dict("records")[committed:] if run.history is not None else []:
        report(
            SweepEvent("epoch", index, total, run_id, epoch=int(row["epoch"]), target_epochs=run.target_epochs, row=row)
        )
    return max(committed, run.epochs_done)


# --- analysis ------------------------------------------------------------------------------------------
TABLE_COLUMNS = (
    "trial",
    "run_id",
    "status",
    # the varying settings come here
    "epochs",
    "epochs_done",
    "done",
    "train_accuracy",
    "test_accuracy",
    "best_test_accuracy",
    "best_epoch",
    "total_seconds",
)


def sweep_table(sweep: Sweep, runs: Iterable[Run] | dict) -> pd.DataFrame:
    """One row per trial, in order: its run, status, the settings that vary, epochs done of the trial's
    ``epochs``, final train and test accuracy, best test accuracy and its epoch, training seconds.

    A run trained past the trial's epochs (extended later) is read up to them. Status is the run's, or
    ``not started`` / ``missing`` (the record names a run that is gone). Numbers are NaN where no epoch
    is done; ``done`` is True once the trial has all its epochs.
    """
    by_id = runs if isinstance(runs, dict) else {run.run_id: run for run in runs}
    rows = []
    for number, trial in enumerate(sweep.trials, start=1):
        row = {"trial": number, "run_id": trial.run_id}
        row |= {name: getattr(trial.config, name) for name in sweep.varying if name != "epochs"}
        row |= _trial_results(trial, by_id.get(trial.run_id))
        rows.append(row)
    columns = list(TABLE_COLUMNS[:3]) + [name for name in sweep.varying if name != "epochs"] + list(TABLE_COLUMNS[3:])
    return pd.DataFrame(rows, columns=columns)


def _trial_results(trial: Trial, run: Run | None) -> dict:
    nothing = {
        "train_accuracy": np.nan,
        "test_accuracy": np.nan,
        "best_test_accuracy": np.nan,
        "best_epoch": pd.NA,
        "total_seconds": np.nan,
    }
    epochs = trial.config.epochs
    if run is None:
        status = "not started" if trial.run_id is None else "missing"
        return {"status": status, "epochs": epochs, "epochs_done": 0, "done": False} | nothing
    history = run.history if run.history is not None else pd.DataFrame()
    history = history[history["epoch"] <= epochs] if not history.empty else history
    done = len(history)
    row = {
        "status": run.status.value,
        "epochs": epochs,
        "epochs_done": done,
        "done": not run.damaged and done >= epochs,
    }
    if history.empty:
        return row | nothing
    best = int(history["test_accuracy"].to_numpy().argmax())
    last = history.iloc[-1]
    return row | {
        "train_accuracy": float(last["train_accuracy"]),
        "test_accuracy": float(last["test_accuracy"]),
        "best_test_accuracy": float(history["test_accuracy"].iloc[best]),
        "best_epoch": int(history["epoch"].iloc[best]),
        "total_seconds": float(last["cumulative_seconds"]),
    }


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats: none is at least as fast and as accurate and strictly better in one.

    Uses ``total_seconds`` and final ``test_accuracy``; rows without both are left out, and so are
    unfinished trials when the table has a ``done`` column (a half-trained run is not a budget's
    result). Exact ties in both are all kept (neither beats the other); a row as fast but less accurate,
    or as accurate but slower, than another is dominated. Sorted fastest first.
    """
    usable = table[
        np.isfinite(table["total_seconds"].astype(float)) & np.isfinite(table["test_accuracy"].astype(float))
    ]
    if "done" in usable.columns:
        usable = usable[usable["done"].astype(bool)]
    seconds = usable["total_seconds"].to_numpy(float)
    accuracy = usable["test_accuracy"].to_numpy(float)
    keep = []
    for i in range(len(usable)):
        at_least = (seconds <= seconds[i]) & (accuracy >= accuracy[i])
        strictly = (seconds < seconds[i]) | (accuracy > accuracy[i])
        keep.append(not np.any(at_least & strictly))
    front = usable[np.array(keep, dtype=bool)] if len(usable) else usable
    return front.sort_values(["total_seconds", "test_accuracy"], ascending=[True, False], kind="stable")


WORDS = {"batch_size": "batch", "train_subset": "training subset", "eval_subset": "evaluation subset"}


def describe_trial(row) -> str:
    """``batch 128 for 10 epochs``: the row's setting columns (TrainConfig fields), then its epochs."""
    parts = []
    for name in row.index:
        if name in PARAMS and name != "epochs":
            value, kind = row[name], PARAMS[name].type  # a row of mixed columns may hold 128 as 128.0
            value = (
                ("on" if value else "off")
                if kind is bool
                else int(value)
                if kind is int
                else f"{value:g}"
                if kind is float
                else value
            )
            parts.append(f"{WORDS.get(name, name.replace('_', ' '))} {value}")
    text = ", ".join(parts)
    if "epochs" in row.index:
        text = f"{text} for {plural(int(row['epochs']), 'epoch')}" if text else plural(int(row["epochs"]), "epoch")
    return text or f"trial {row.get('trial', '?')}"


def budget_sentence(table: pd.DataFrame, *, within_points: float = 1.0) -> str:
    """What a training budget buys, from the Pareto front of finished trials.

    The *budget* is the fastest Pareto trial whose test accuracy is within ``within_points`` points
    (percentage points) of the best finished trial's. The sentence gives its time and accuracy, then
    compares it with the most accurate trial that took at most twice its time: how many points that
    added, or that none within twice the time did better (and, if the best took longer, the best).
    """
    front = pareto_front(table)
    if front.empty:
        return "No trial has finished yet: nothing to compare."
    best = front.loc[front["test_accuracy"].idxmax()]
    budget = front[front["test_accuracy"] >= best["test_accuracy"] - within_points / 100].iloc[0]
    seconds, accuracy = float(budget["total_seconds"]), float(budget["test_accuracy"])
    text = (
        f"Within {format_duration(seconds)} of training, {describe_trial(budget)} reached {accuracy:.3f} test accuracy"
    )
    if len(front) == 1:
        return text + ", the best of the finished trials (no other trial was faster and as accurate)."
    doubled = front[(front["total_seconds"] <= 2 * seconds) & (front["test_accuracy"] > accuracy)]
    if not doubled.empty:
        better = doubled.loc[doubled["test_accuracy"].idxmax()]
        gain = 100 * (float(better["test_accuracy"]) - accuracy)
        return (
            f"{text}; doubling the budget ({describe_trial(better)}, {format_duration(float(better['total_seconds']))}) "
            f"added {gain:.1f} points."
        )
    if float(best["test_accuracy"]) > accuracy:
        gain = 100 * (float(best["test_accuracy"]) - accuracy)
        return (
            f"{text}; no trial within twice that time did better, and the best ({describe_trial(best)}, "
            f"{format_duration(float(best['total_seconds']))}) added {gain:.1f} points."
        )
    return f"{text}, the best of the finished trials; no trial within twice that time did better."


def format_sweep_table(table: pd.DataFrame) -> str:
    """The seed's table for a sweep: run, settings that vary, epochs, train/test accuracy, best, time."""
    settings = [name for name in table.columns if name in PARAMS and name != "epochs"]
    header = [f"{'#':>2}", f"{'run':<34}"] + [f"{_short(name):>10}" for name in settings]
    header += [
        f"{'epochs':>7}",
        f"{'train acc':>9}",
        f"{'test acc':>8}",
        f"{'best (epoch)':>14}",
        f"{'time':>8}",
        "status",
    ]
    lines = ["  ".join(header)]
    for row in table.itertuples(index=False):
        values = row._asdict()
        cells = [f"{values['trial']:>2}", f"{values['run_id'] or '-':<34}"]
        cells += [f"{str(values[name]):>10}" for name in settings]
        best = "-" if pd.isna(values["best_epoch"]) else f"{values['best_test_accuracy']:.4f} ({values['best_epoch']})"
        cells += [
            f"{values['epochs_done']:>3}/{values['epochs']:<3}",
            f"{_number(values['train_accuracy']):>9}",
            f"{_number(values['test_accuracy']):>8}",
            f"{best:>14}",
            f"{format_duration(values['total_seconds']) if np.isfinite(values['total_seconds']) else '-':>8}",
            values["status"],
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _short(name: str) -> str:
    return WORDS.get(name, name)[:10]


def _number(value) -> str:
    return "-" if not np.isfinite(value) else f"{value:.4f}"


# --- time ----------------------------------------------------------------------------------------------
def estimate_text(sweep: Sweep, runs: list[Run], cache_dir=None) -> str:
    """How long the trials' remaining epochs would take on this machine, from earlier runs' speed.

    Each trial's precision is what Start would train it with (``resnet.core.precision.resolve``: for ``auto``, the
    measurement remembered in ``cache_dir`` for its depth and batch size), as the sidebar's estimate uses.
    """
    from resnet.core.hardware import detect_hardware
    from resnet.core.precision import resolve
    from resnet.store.estimate import estimate_time

    device = detect_hardware().device_label
    by_id = {run.run_id: run for run in runs}
    total, unknown, bases = 0.0, [], set()
    for number, trial in enumerate(sweep.trials, start=1):
        done = by_id[trial.run_id].epochs_done if trial.run_id in by_id else 0
        remaining = max(0, trial.config.epochs - done)
        if not remaining:
            continue
        precision = resolve(trial.config, cache_dir=cache_dir)
        estimate = estimate_time(trial.config, runs, device=device, precision=precision)
        if estimate.epoch_seconds is None:
            unknown.append(number)
            continue
        total += estimate.epoch_seconds * remaining
        bases.add(estimate.basis)
    if unknown and not total:
        return "Time on this machine: unknown until an earlier run of these settings gives a speed."
    text = f"Estimated time on this machine: {format_duration(total)} ({'; '.join(sorted(bases))})"
    return text + (f"; trials {', '.join(map(str, unknown))} not included (no speed measured yet)." if unknown else ".")


def first_failure(results: list[TrialResult]) -> TrialResult | None:
    return next((result for result in results if result.outcome in (Outcome.FAILED, Outcome.REFUSED)), None)
