"""The training configuration: one dataclass whose fields declare their own rules, and its validation.

Each ``TrainConfig`` field is declared once, with :func:`param`: its default, what is allowed (``limits``
for numbers, ``choices`` for a fixed set; true/false fields need neither), its help text and, where it is
not ``--<field-name>``, its command-line flag. Everything else reads that declaration through
:func:`param_specs`: ``TrainConfig.validate()`` (which raises :class:`ConfigError` naming the field and
what is allowed), the CLI flags of ``python -m resnet train``, and the app's sidebar ranges and help and
the types of its URL query parameters. ``LIMITS``, ``CHOICES`` and ``FIELD_HELP`` are views of it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from data.fashion_mnist import TEST_SIZE, TRAIN_SIZE


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; the message names the field."""


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(text: str, name: str = "value") -> bool:
    """True or False from a flag's or a URL's text: true/false, yes/no, on/off or 1/0, in any case."""
    lowered = text.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false; got {text!r}")


# --- declaring a field ------------------------------------------------------------------------------------
def param(
    default,
    *,
    help: str,  # the word argparse and Streamlit use for this text
    limits: tuple | None = None,
    choices: tuple | None = None,
    flag: str | None = None,
):
    """A config field with its rule, help and CLI flag name (default: the field name), for a dataclass body.

    Numbers take ``limits=(low, high)`` (inclusive, of the field's type), a fixed set takes ``choices``,
    and true/false fields take neither.
    """
    metadata = {"help": help, "limits": limits, "choices": choices, "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ParamSpec:
    """One field as :func:`param` declared it, with its Python type (int, float, bool or str)."""

    name: str
    type: type
    default: object
    help: str
    limits: tuple | None
    choices: tuple | None
    flag: str  # e.g. "--batch-size"


@functools.cache
def param_specs(config_class: type) -> tuple[ParamSpec, ...]:
    """The declared fields of a config dataclass, in order; TypeError names a field declared incompletely."""
    types = typing.get_type_hints(config_class)
    specs = []
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        value_type = types[field.name]
        if "help" not in meta:
            raise TypeError(f"{config_class.__name__}.{field.name} is not declared with param()")
        if value_type not in (int, float, bool, str):
            raise TypeError(f"{field.name}: a config field is an int, float, bool or str, not {value_type}")
        has_rule = meta["limits"] is not None or meta["choices"] is not None
        if value_type is bool and has_rule:
            raise TypeError(f"{field.name} is true or false: it takes neither limits nor choices")
        if value_type is not bool and (meta["limits"] is None) == (meta["choices"] is None):
            raise TypeError(f"{field.name} needs either limits (numbers) or choices")
        allowed = meta["limits"] or meta["choices"] or ()
        if not all(type(value) is value_type for value in allowed):
            raise TypeError(f"{field.name}: its limits or choices must be of its type, {value_type.__name__}")
        specs.append(
            ParamSpec(
                name=field.name,
                type=value_type,
                default=field.default,
                help=meta["help"],
                limits=meta["limits"],
                choices=meta["choices"],
                flag="--" + (meta["flag"] or field.name).replace("_", "-"),
            )
        )
    return tuple(specs)


def check_value(spec: ParamSpec, value) -> None:
    """Raise ConfigError, naming the field and what it allows, unless ``value`` is allowed."""
    if spec.choices is not None:
        if value not in spec.choices:
            allowed = ", ".join(str(choice) for choice in spec.choices)
            raise ConfigError(f"{spec.name} must be one of {allowed}; got {value!r}")
        return
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{spec.name} must be true or false; got {value!r}")
        return
    low, high = spec.limits
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{spec.name} must be a number; got {value!r}")
    if spec.type is int and not isinstance(value, int):
        raise ConfigError(f"{spec.name} must be a whole number; got {value!r}")
    if not low <= value <= high:  # also rejects NaN
        raise ConfigError(f"{spec.name} must be between {low} and {high}; got {value!r}")


def check_fields(config) -> None:
    """Check every declared field of a config dataclass instance; the first bad one raises ConfigError."""
    for spec in param_specs(type(config)):
        check_value(spec, getattr(config, spec.name))


def coerce_values(config_class: type, values: dict) -> dict:
    """``values`` with whole floats of int fields made ints (JSON and query strings may write 10 as 10.0).

    Unknown names raise ConfigError.
    """
    types = {spec.name: spec.type for spec in param_specs(config_class)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
    return {
        name: int(value) if types[name] is int and isinstance(value, float) and value.is_integer() else value
        for name, value in values.items()
    }


# --- the training configuration ------------------------------------------------------------------------
# The Keras dtype policies a run trains in (``auto`` chooses one of them: resnet/core/precision.py).
FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16 = "float32", "mixed_bfloat16", "mixed_float16"
PRECISIONS = (FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16)
GPU_CHOICES = ("1", "all")  # one device, or data-parallel over every GPU (resnet/core/hardware.py)
# How a run's length is decided (``epochs_mode``): ``epochs`` epochs; until returns diminish on a validation
# split, then a cooldown (``epochs`` is the maximum); or the stable phase of a budget curve (never cools down).
FIXED, AUTO, TRUNK = "fixed", "auto", "trunk"
DEFAULT_MAX_EPOCHS = 100  # ``--epochs auto`` without ``--max-epochs``
# An auto run's maximum must leave room for its warm-up epoch (resnet/core/schedule.py), one 10-epoch
# window of the stopper (resnet.analysis.DEFAULT_WINDOW) and a cooldown epoch; tests/test_stopper.py checks it.
AUTO_MIN_MAX_EPOCHS = 12
VALIDATION_DEFAULT_MAX = 5000  # validation images held out by default: 10% of the training subset, at most this
# Fields added after runs were cached: left out of ``fingerprint()`` at their defaults, so those runs keep their ids.
LATER_FIELDS = ("epochs_mode", "returns_threshold", "cooldown_fraction", "validation_images")
# Fields that say where a run trains, not what it learns (a checkpoint trains on with any of their values):
# left out of ``TrainConfig.fingerprint()``.
PLACEMENT_FIELDS = ("gpus",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; each field declares its default, rule and help (see ``param``)."""

    epochs: int = param(
        10,
        limits=(1, 500),
        help="Total epochs the run trains to. Extending a finished run raises this.",
    )
    batch_size: int = param(
        128,
        limits=(8, 2048),
        help="Training images per optimisation step.",
    )
    learning_rate: float = param(
        0.003,
        limits=(1e-6, 2.0),
        help="Peak learning rate of the schedule.",
    )
    optimizer: str = param(
        "adamw",
        choices=("adamw", "adam", "sgd"),
        help="AdamW (default), Adam, or SGD with Nesterov momentum 0.9.",
    )
    weight_decay: float = param(
        5e-4,
        limits=(0.0, 0.1),
        help="Decoupled weight decay for AdamW and SGD (Adam ignores it).",
    )
    schedule: str = param(  # resnet/core/schedule.py
        "one_cycle",
        choices=("one_cycle", "cosine", "constant", "wsd"),
        help="one_cycle: warm-up then cosine decay to zero; cosine: no warm-up; constant: flat; wsd: one warm-up "
        "epoch, constant, then a (1-sqrt) cooldown to zero over the last epochs (cooldown_fraction of the rest).",
    )
    epochs_mode: str = param(
        FIXED,
        choices=(FIXED, AUTO, TRUNK),
        help="fixed: train epochs epochs. auto (--epochs auto): until returns diminish on a validation split "
        "held out of the training images, then cool down; epochs is then the maximum. trunk: the stable phase "
        "of a budget curve (python -m resnet budget-curve), never cooled down itself.",
    )
    returns_threshold: float = param(
        0.2,
        limits=(0.01, 50.0),
        help="auto: stop adding epochs once 10 epochs gain fewer points of validation accuracy than this (while "
        "the run is under 20 epochs, a window of a third of its length, with the threshold scaled to it).",
    )
    cooldown_fraction: float = param(
        0.2,
        limits=(0.05, 0.5),
        help="wsd: the cooldown lasts this fraction of the epochs before it (at least one epoch).",
    )
    validation_images: int = param(
        0,
        limits=(0, TRAIN_SIZE),
        help="auto: class-balanced training images held out to decide when to stop (never trained on); "
        f"0: 10% of the training subset, at most {VALIDATION_DEFAULT_MAX:,}.",
    )
    augment: bool = param(
        False,
        help="Random 2-pixel shifts, horizontal flips and random erasing of training images. Off by default: "
        "in 3-epoch runs on all images it cost 3-5 points of test accuracy per epoch (0.853 vs 0.885 after 3).",
    )
    label_smoothing: float = param(  # 0: hard one-hot targets
        0.1,
        limits=(0.0, 0.5),
        help="Moves this much of each target's probability onto the other classes.",
    )
    train_subset: int = param(
        TRAIN_SIZE,
        limits=(100, TRAIN_SIZE),
        flag="subset",
        help="Train on a class-balanced subset of the 60,000 images (fewer = faster epochs).",
    )
    eval_subset: int = param(
        TEST_SIZE,
        limits=(100, TEST_SIZE),
        help="Class-balanced subset of the 10,000 test images evaluated after every epoch.",
    )
    depth: int = param(
        50,
        choices=(18, 34, 50),
        help="ResNet-18/34 use basic blocks; ResNet-50 (the seed's model) uses bottleneck blocks.",
    )
    precision: str = param(  # resnet/core/precision.py decides auto
        "auto",
        choices=("auto", *PRECISIONS),
        help="auto: float32, unless the mixed policy the hardware claims (bfloat16 on CPUs with AMX/AVX512-BF16, "
        "float16 on GPUs) measures at least 1.1 times as fast here (timed once per depth and batch size).",
    )
    seed: int = param(
        42,
        limits=(0, 2**31 - 1),
        help="Fixes the subset, shuffling, augmentation and initial weights.",
    )
    gpus: str = param(  # where a run trains, not what it learns: left out of fingerprint()
        "1",
        choices=GPU_CHOICES,
        help="1: one device (the first GPU, else the CPU). all: data-parallel over every GPU of this machine "
        "(TensorFlow's MirroredStrategy), each batch split evenly across them; with fewer than 2 GPUs it "
        "trains on one device.",
    )

    def validate(self) -> TrainConfig:
        """Return self if every field is allowed, else raise ConfigError naming the first bad one."""
        check_fields(self)
        if self.train_subset < self.batch_size:
            raise ConfigError(
                f"train_subset ({self.train_subset}) must be at least batch_size ({self.batch_size}): "
                "an epoch needs at least one full batch"
            )
        if self.epochs_mode != FIXED and self.schedule != "wsd":
            raise ConfigError(
                f"epochs_mode {self.epochs_mode} trains warm-up, a stable phase, then a cooldown (schedule wsd); "
                f"it cannot follow schedule {self.schedule}, whose shape depends on a length known in advance"
            )
        if self.schedule == "wsd" and self.epochs < 2 and self.epochs_mode == FIXED:
            raise ConfigError("schedule wsd needs at least 2 epochs: a warm-up epoch and a cooldown epoch")
        if self.epochs_mode == AUTO:
            self._validate_auto()
        return self

    def _validate_auto(self) -> None:
        if self.epochs < AUTO_MIN_MAX_EPOCHS:
            raise ConfigError(
                f"an auto run's maximum (max epochs) must be at least {AUTO_MIN_MAX_EPOCHS}: one warm-up epoch, one "
                f"10-epoch window for the stopper to judge, and a cooldown epoch; got {self.epochs}"
            )
        held_out = self.validation_count
        if held_out < 10:
            raise ConfigError(f"validation_images must be at least 10 (one per class); got {held_out}")
        if self.train_subset - held_out < self.batch_size:
            raise ConfigError(
                f"a validation split of {held_out:,} images leaves {self.train_subset - held_out:,} of the "
                f"{self.train_subset:,} training images, fewer than one batch of {self.batch_size}"
            )

    @property
    def validation_count(self) -> int:
        """Training images an ``auto`` run holds out for its stopper (0 for other runs)."""
        if self.epochs_mode != AUTO:
            return 0
        return self.validation_images or min(VALIDATION_DEFAULT_MAX, self.train_subset // 10)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build and validate a config from a dict (JSON, query parameters); unknown keys are errors.

        Missing keys take their defaults, so a config.json written before a field existed still loads.
        """
        return cls(**coerce_values(cls, values)).validate()

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes).validate()

    def fingerprint(self) -> str:
        """A short hash of what a run learns: everything but ``epochs``, ``PLACEMENT_FIELDS`` and the
        fields its mode does not use (the stopper's for a fixed run, the cooldown's for a schedule without one).

        Runs that differ only in length, or in where they train, share it: such a run is continued, not
        started anew. Leaving the placement fields out also keeps the fingerprints (and run ids) of
        configurations cached before those fields existed.
        """
        values = self.to_dict()
        for name in ("epochs", *PLACEMENT_FIELDS):
            values.pop(name)
        if self.epochs_mode != AUTO:  # what only an auto run uses does not make another run different
            values.update(returns_threshold=PARAMS["returns_threshold"].default, validation_images=0)
        if self.schedule != "wsd":
            values["cooldown_fraction"] = PARAMS["cooldown_fraction"].default
        for name in LATER_FIELDS:
            if values[name] == PARAMS[name].default:
                values.pop(name)
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


PARAMS = MappingProxyType({spec.name: spec for spec in param_specs(TrainConfig)})
# Views of the declarations, by field name (read-only):
LIMITS = MappingProxyType({name: spec.limits for name, spec in PARAMS.items() if spec.limits is not None})
CHOICES = MappingProxyType({name: spec.choices for name, spec in PARAMS.items() if spec.choices is not None})
FIELD_HELP = MappingProxyType({name: spec.help for name, spec in PARAMS.items()})


# The defaults overfit by epoch 10 on all 60,000 images (issue 14: train 0.983, test 0.9234); augmentation
# is the lever against it that keeps the seed's layers. docs/benchmarks.md section 12 has its measurement.
TEN_EPOCH_RECIPE_TEXT = (
    "ResNet-50 on all images for 10 epochs with augmentation (shifts, flips, random erasing), against the "
    "overfitting the defaults show by epoch 10 (train 0.983, test 0.923). Augmentation costs 3-5 points in "
    "3-epoch runs, so it is not the default."
)


@dataclass(frozen=True)
class Recipe:
    """Named settings: a starting point for the sidebar and ``train --recipe``; fields not named keep theirs."""

    title: str
    settings: Mapping[str, object]
    description: str


RECIPES = MappingProxyType(
    {
        "quick-try": Recipe(
            "Quick try",
            MappingProxyType({"epochs": 3, "batch_size": 64, "train_subset": 1000, "eval_subset": 1000, "depth": 18}),
            "ResNet-18, 1,000 training and 1,000 test images, batch 64, 3 epochs: a few minutes on a CPU.",
        ),
        "ten-epochs": Recipe(
            "10 epochs, augmented",
            MappingProxyType(
                {"epochs": 10, "augment": True, "train_subset": TRAIN_SIZE, "eval_subset": TEST_SIZE, "depth": 50}
            ),
            TEN_EPOCH_RECIPE_TEXT,
        ),
    }
)


def recipe_config(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with recipe ``name``'s settings; ConfigError for an unknown name."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return (base or TrainConfig()).replace(**RECIPES[name].settings)
