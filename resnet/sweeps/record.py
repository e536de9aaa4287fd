"""The sweep record and its store: which run belongs to which trial, in order.

    <cache>/.sweeps/<name>.json    written atomically; validated when read (a damaged one is reported)
    <cache>/.sweeps/<name>.lock    held (flock) by the process running the sweep

(The folder starts with a dot so the run store's listing never takes it for a run.) A record is read
with bounded size and depth (``resnet/records.py``) and checked in ``sweep_from_json``; the folder, the
records and the locks are never followed through a symbolic link out of the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from resnet.config import PARAMS, ConfigError, TrainConfig
from resnet.files import lock_held, try_lock, write_json
from resnet.records import RecordError, finite_number, read_json, short
from resnet.store.run_folder import valid_run_id
from resnet.store.runs import RunError
from resnet.sweeps.grid import MAX_TRIALS, PRESETS, budget_configs, check_grid, expand_grid, parse_values

FORMAT_VERSION = 1
SWEEPS_FOLDER = ".sweeps"


class SweepError(RunError):
    """A sweep cannot be found, read, written or run; the message says which and why."""


class DamagedSweep(SweepError):
    """A sweep record exists but is unreadable or inconsistent."""


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
    # A budget curve (resnet/sweeps/budget_curve.py): the grid is {"epochs": budgets}, the trials are the
    # cooldown branches, and ``trunk_run_id`` names the one stable-phase run they branch from.
    branches: bool = False
    trunk_run_id: str | None = None

    @property
    def budgets(self) -> tuple[int, ...]:
        return tuple(self.grid["epochs"]) if self.branches else ()

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
            **({"branches": True, "trunk_run_id": self.trunk_run_id} if self.branches else {}),
        }


def check_name(name: str) -> str:
    if not valid_run_id(name):
        raise SweepError(f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' (up to 100)")
    return name


def new_sweep(name: str, grid: dict, base: TrainConfig | None = None, *, branches: bool = False) -> Sweep:
    """A sweep over ``grid`` (field -> values) on ``base``; ConfigError/SweepError before anything is written.

    ``branches``: a budget curve over ``grid["epochs"]`` (one trunk, a cooldown branch per budget).
    """
    check_name(name)
    grid = check_grid(grid)
    base = base or TrainConfig()
    if branches:  # the settings every branch shares (each sets its own epochs): fixed-length wsd runs
        budgets = grid.get("epochs", ())
        base = dataclasses.replace(base, schedule="wsd", epochs_mode="fixed", epochs=max(budgets, default=2))
        base = base.replace(validation_images=0, returns_threshold=PARAMS["returns_threshold"].default).validate()
    configs = budget_configs(grid, base) if branches else expand_grid(grid, base)
    now = time.time()
    return Sweep(name, grid, base, tuple(Trial(config) for config in configs), now, now, branches=branches)


def requested_sweep(
    sweeps: SweepStore,
    name: str,
    texts: dict,
    *,
    preset: str | None = None,
    base: TrainConfig | None = None,
    branches: bool = False,
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
    grid = {key: parse_values(key, text) for key, text in texts.items()}
    if branches:  # one value per other field: they go into the base, the budgets are the grid
        many = [key for key, values in grid.items() if key != "epochs" and len(values) > 1]
        if many:
            raise ConfigError(f"a budget curve varies its budgets alone; give {', '.join(many)} one value")
        base = dataclasses.replace(
            base or TrainConfig(), **{key: values[0] for key, values in grid.items() if key != "epochs"}
        )
        grid = {"epochs": grid.get("epochs", ())}
    sweep = new_sweep(name, grid, base, branches=branches)
    if existing is not None and (existing.configs != sweep.configs or existing.branches != branches):
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
    branches, trunk = values.get("branches", False), values.get("trunk_run_id")
    if branches is not True and "branches" in values:
        raise DamagedSweep(f"branches is {short(branches)}, not true")
    if trunk is not None and (not branches or not valid_run_id(trunk)):
        raise DamagedSweep(f"it names an invalid trunk run {short(trunk)}")
    try:
        grid = check_grid(_grid(values))
        base = TrainConfig.from_dict(_field(values, "base", dict))
        configs = budget_configs(grid, base) if branches else expand_grid(grid, base)
        trials = _trials(_field(values, "trials", list))
    except (ConfigError, TypeError) as error:
        raise DamagedSweep(f"invalid settings ({error})") from error
    if [trial.config for trial in trials] != configs:
        raise DamagedSweep("its trials are not the combinations of its grid")
    if trunk is not None and trunk in {trial.run_id for trial in trials}:
        raise DamagedSweep(f"its trunk run {trunk} is also one of its branches")
    return Sweep(name, grid, base, tuple(trials), created, updated, branches=bool(branches), trunk_run_id=trunk)


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
            if not valid_run_id(run_id):
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
