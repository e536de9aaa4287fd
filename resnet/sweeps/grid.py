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

from resnet.config import PARAMS, PLACEMENT_FIELDS, ConfigError, TrainConfig, check_value, parse_bool

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
