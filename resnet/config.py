"""The training configuration: one dataclass, its limits, and its validation.

Every field has a limit in ``LIMITS`` (numbers) or ``CHOICES`` (names); ``TrainConfig.validate()``
raises :class:`ConfigError` naming the field and what is allowed. The CLI flags, the app's sidebar and
the URL query parameters are all checked through this one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from data.fashion_mnist import TEST_SIZE, TRAIN_SIZE


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # total epochs the run should reach (extending a run raises this)
    batch_size: int = 128  # training images per step
    learning_rate: float = 0.003  # peak learning rate of the schedule
    optimizer: str = "adamw"  # adamw | adam | sgd (SGD with Nesterov momentum 0.9)
    weight_decay: float = 5e-4  # decoupled weight decay (adamw, sgd); ignored by adam
    schedule: str = "one_cycle"  # one_cycle | cosine | constant (see resnet/schedule.py)
    augment: bool = False  # random shift, horizontal flip and random erasing (off: it slowed short runs)
    label_smoothing: float = 0.1  # 0 = hard one-hot targets
    train_subset: int = TRAIN_SIZE  # stratified subset of the 60,000 training images
    eval_subset: int = TEST_SIZE  # stratified subset of the 10,000 test images evaluated each epoch
    depth: int = 50  # 18 / 34 (basic blocks) or 50 (bottleneck blocks, the seed's model)
    precision: str = "auto"  # auto | float32 | mixed_bfloat16 | mixed_float16
    seed: int = 42  # shuffling, augmentation, subset choice and weight initialisation

    def validate(self) -> TrainConfig:
        """Return self if every field is allowed, else raise ConfigError naming the first bad one."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in CHOICES:
                if value not in CHOICES[field.name]:
                    allowed = ", ".join(str(choice) for choice in CHOICES[field.name])
                    raise ConfigError(f"{field.name} must be one of {allowed}; got {value!r}")
                continue
            expected = bool if field.type in ("bool", bool) else None
            if expected is bool:
                if not isinstance(value, bool):
                    raise ConfigError(f"{field.name} must be true or false; got {value!r}")
                continue
            low, high = LIMITS[field.name]
            number_type = int if isinstance(low, int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{field.name} must be a number; got {value!r}")
            if number_type is int and not isinstance(value, int):
                raise ConfigError(f"{field.name} must be a whole number; got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"{field.name} must be between {low} and {high}; got {value!r}")
        if self.train_subset < self.batch_size:
            raise ConfigError(
                f"train_subset ({self.train_subset}) must be at least batch_size ({self.batch_size}): "
                "an epoch needs at least one full batch"
            )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build and validate a config from a dict (JSON, query parameters); unknown keys are errors."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        coerced = {}
        for name, value in values.items():
            low = LIMITS.get(name, CHOICES.get(name, (None,)))[0]
            if isinstance(low, int) and isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON and query strings may write 10 as 10.0
            coerced[name] = value
        return cls(**coerced).validate()

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes).validate()

    def fingerprint(self) -> str:
        """A short hash of everything but ``epochs``: runs that differ only in length share it."""
        values = self.to_dict()
        values.pop("epochs")
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


LIMITS = {
    "epochs": (1, 500),
    "batch_size": (8, 2048),
    "learning_rate": (1e-6, 2.0),
    "weight_decay": (0.0, 0.1),
    "label_smoothing": (0.0, 0.5),
    "train_subset": (100, TRAIN_SIZE),
    "eval_subset": (100, TEST_SIZE),
    "seed": (0, 2**31 - 1),
}
CHOICES = {
    "optimizer": ("adamw", "adam", "sgd"),
    "schedule": ("one_cycle", "cosine", "constant"),
    "depth": (18, 34, 50),
    "precision": ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
}
FIELD_HELP = {
    "epochs": "Total epochs the run trains to. Extending a finished run raises this.",
    "batch_size": "Training images per optimisation step.",
    "learning_rate": "Peak learning rate of the schedule.",
    "optimizer": "AdamW (default), Adam, or SGD with Nesterov momentum 0.9.",
    "weight_decay": "Decoupled weight decay for AdamW and SGD (Adam ignores it).",
    "schedule": "one_cycle: warm-up then cosine decay to zero; cosine: no warm-up; constant: flat.",
    "augment": "Random 2-pixel shifts, horizontal flips and random erasing of training images. Off by default: "
    "in 3-epoch runs on all images it cost 3-5 points of test accuracy per epoch (0.853 vs 0.885 after 3).",
    "label_smoothing": "Moves this much of each target's probability onto the other classes.",
    "train_subset": "Train on a class-balanced subset of the 60,000 images (fewer = faster epochs).",
    "eval_subset": "Class-balanced subset of the 10,000 test images evaluated after every epoch.",
    "depth": "ResNet-18/34 use basic blocks; ResNet-50 (the seed's model) uses bottleneck blocks.",
    "precision": "auto picks mixed_bfloat16 on CPUs with AMX/AVX512-BF16, mixed_float16 on GPUs, else float32.",
    "seed": "Fixes the subset, shuffling, augmentation and initial weights.",
}
