"""A sweep's grid: comma lists of values per ``TrainConfig`` field, checked with the config's own rules,
expanded in the order given (the later field varying faster), at most ``MAX_TRIALS`` combinations.

Every check is linear in what it reads: a record or a command line with 100,000 values is refused
before its values are looked at.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

from resnet.config import FIXED, PARAMS, PLACEMENT_FIELDS, TRUNK, ConfigError, TrainConfig, check_value, parse_bool
from resnet.core.schedule import WSD, WSD_WARMUP_EPOCHS, cooldown_for

MAX_TRIALS = 64
PRESETS = {
    # The seed study: the same ResNet-50 trained for several epoch budgets, one run per budget.
    "seed-study": {"epochs": "10,20,60,100,200", "batch_size": "128"},
}


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
        if name == "epochs_mode" and TRUNK in values:
            raise ConfigError("epochs_mode trunk is a budget curve's own run: python -m resnet budget-curve makes it")
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


# --- a budget curve: one trunk, a cooldown branch per budget (resnet/sweeps/budget_curve.py) ---------------
def check_budgets(budgets) -> tuple[int, ...]:
    """Budgets as whole numbers, increasing, each past the warm-up; ConfigError says which is wrong."""
    budgets = tuple(budgets)
    if not budgets:
        raise ConfigError("a budget curve needs at least one budget, e.g. 10,20,60")
    if len(budgets) > MAX_TRIALS:
        raise ConfigError(f"{len(budgets):,} budgets; a budget curve has at most {MAX_TRIALS}")
    for budget in budgets:
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ConfigError(f"budgets must be whole numbers of epochs; got {budget!r}")
        if budget <= WSD_WARMUP_EPOCHS:
            raise ConfigError(f"a budget must be more than the {WSD_WARMUP_EPOCHS}-epoch warm-up; got {budget}")
    if any(later <= earlier for earlier, later in zip(budgets, budgets[1:], strict=False)):
        raise ConfigError(f"budgets must increase: the trunk passes each in turn; got {','.join(map(str, budgets))}")
    return budgets


def parse_budgets(text: str) -> tuple[int, ...]:
    """``--budgets 10,20,60`` checked: whole numbers, increasing, past the warm-up."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            values.append(int(item))
        except ValueError:
            raise ConfigError(f"budgets must be whole numbers of epochs; got {item!r} in {text!r}") from None
    return check_budgets(values)


def trunk_config(base: TrainConfig, budget: int) -> TrainConfig:
    """The trunk at ``budget``: warm-up and stable phase of ``base``'s settings, no cooldown."""
    return dataclasses.replace(base, schedule=WSD, epochs_mode=TRUNK, epochs=budget).validate()


def branch_config(base: TrainConfig, budget: int) -> TrainConfig:
    """The branch at ``budget``: the trunk's ``budget`` epochs, then a cooldown over a fraction of them."""
    epochs = budget + cooldown_for(budget, base.cooldown_fraction)
    return dataclasses.replace(base, schedule=WSD, epochs_mode=FIXED, epochs=epochs).validate()


def budget_configs(grid: dict, base: TrainConfig) -> list[TrainConfig]:
    """A budget curve's trials (its branches), from a grid of ``epochs`` budgets alone."""
    if set(grid) != {"epochs"}:
        raise ConfigError("a budget curve varies epochs (its budgets) alone; give other settings one value")
    return [branch_config(base, budget) for budget in check_budgets(grid["epochs"])]
