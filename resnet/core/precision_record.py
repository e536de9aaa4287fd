"""What ``auto`` precision decides from, and what it remembers: the candidates, the rule, the record.

``candidates_for`` names float32 and the mixed policy the hardware claims; ``decide`` keeps the mixed
policy only if it measured at least ``MIXED_MARGIN`` (10%) faster. A ``Measurement`` is remembered in
``<cache>/.precision.json`` (written atomically; read with bounded size and depth, every number compared
before it is converted, a damaged entry left out and a damaged file ignored), keyed by the device (CPU
model and a hash of its flags, or GPU name), the TensorFlow version, depth, batch size and candidates.
``Precision`` is the answer: a policy name that also says how it was decided.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.fashion_mnist import TRAIN_SIZE
from resnet.config import FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16
from resnet.core.hardware import (
    Hardware,
    claimed_mixed_precision,
)
from resnet.files import default_cache_dir, file_signature, write_json
from resnet.records import RecordError, finite_number, is_number, read_json

log = logging.getLogger(__name__)

MIXED_POLICIES = (MIXED_BFLOAT16, MIXED_FLOAT16)
MIXED_MARGIN = 1.10  # a mixed policy must be at least this much faster than float32 to be chosen
BUDGET_SHARE = 0.05  # of a full-data epoch's time at float32 speed, for the measurement's steps
EPOCH_IMAGES = TRAIN_SIZE
FLOAT32_SHARE = 0.4  # of the budget's images, for float32's warm-up and timed steps
WARM_STEPS = 2  # untimed steps before the timed ones; the first one compiles
MIN_STEPS, MAX_STEPS = 2, 10  # timed steps per candidate
HOPELESS_SLOWDOWN = 2.0  # a mixed candidate whose warm step is this much slower than float32's is stopped
RECORD_NAME = ".precision.json"
# auto measures only for a run that trains at least one full-data epoch's images: the measurement's steps
# alone may take 5% of such an epoch (BUDGET_SHARE), and building and compiling each candidate comes on
# top (11-12 s for two ResNet-18s on a 2-core CPU: 45-50% of a fresh quick try). A shorter run trains float32.
MEASURED_FROM_IMAGES = EPOCH_IMAGES
RECORD_VERSION = 1
MAX_COUNT = 2**31  # the largest depth, batch size or step count a record may hold


# --- the decision ----------------------------------------------------------------------------------------
def candidates_for(hardware: Hardware) -> tuple[str, ...]:
    """float32, and the mixed policy the hardware claims, if any."""
    mixed = claimed_mixed_precision(hardware)
    return (FLOAT32, mixed) if mixed else (FLOAT32,)


def decide(speeds: Mapping[str, float | None], margin: float = MIXED_MARGIN) -> str:
    """The precision to train with, from images/s per candidate (None: not measured).

    float32 unless a mixed policy is at least ``margin`` times as fast (the fastest such one); float32
    also when its own speed is unknown, since nothing can then be compared with it.
    """
    base = speeds.get(FLOAT32)
    if base is None or not math.isfinite(base) or base <= 0:
        return FLOAT32
    best, best_speed = FLOAT32, base
    for name, speed in speeds.items():
        if name == FLOAT32 or speed is None or not math.isfinite(speed):
            continue
        if speed / base >= margin - 1e-9 and speed > best_speed:
            best, best_speed = name, speed
    return best


def budget_seconds(float32_speed: float) -> float:
    """What the measurement's steps may take: 5% of a full-data epoch at ``float32_speed`` images/s."""
    return BUDGET_SHARE * EPOCH_IMAGES / float32_speed


def default_steps(batch_size: int) -> int:
    """Timed steps per candidate: float32's warm-up and timed steps cover at most 40% of the budget's
    images (1,200 of 3,000: 8 steps at batch 128), within 2-10 steps."""
    fit = int(FLOAT32_SHARE * BUDGET_SHARE * EPOCH_IMAGES / batch_size) - (WARM_STEPS - 1)
    return max(MIN_STEPS, min(MAX_STEPS, fit))


# --- what was measured, and how auto was decided -----------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """One timing of the candidates for a (device, TensorFlow, depth, batch size)."""

    precision: str  # the choice (``decide``)
    speeds: dict[str, float | None]  # images/s per candidate, float32 first; None: no step could be timed
    stopped: dict[str, str]  # candidates stopped early, and why
    seconds: float  # the whole measurement, wall clock: building, compiling and the steps
    step_seconds: float  # of which the steps after each candidate's first (compiling) one
    setup_seconds: dict[str, float]  # per candidate: the rest, mostly building its model and its first, compiling step
    budget_seconds: float  # 5% of a full-data epoch at the float32 speed measured
    measured_at: str  # ISO 8601, UTC
    depth: int
    batch_size: int
    steps: int  # timed steps asked per candidate
    fresh: bool = field(default=False, compare=False)  # measured by this call, not read from the record

    @property
    def date(self) -> str:
        return self.measured_at[:10]

    def speeds_text(self) -> str:
        parts = []
        for name, speed in self.speeds.items():
            shown = "-" if speed is None else f"{speed:.0f} img/s"
            if name in self.stopped:
                shown = f"about {shown}" if speed is not None else "not timed"
                shown += f" (stopped early: {self.stopped[name]})"
            parts.append(f"{name} {shown}")
        return ", ".join(parts)

    def text(self) -> str:
        """``float32 370 img/s, mixed_bfloat16 371 img/s -> float32 (measured 2026-11-29, 14 s)``."""
        return f"{self.speeds_text()} -> {self.precision} (measured {self.date}, {self.seconds:.0f} s)"

    def to_dict(self) -> dict:
        return {
            "precision": self.precision,
            "speeds": dict(self.speeds),
            "stopped": dict(self.stopped),
            "seconds": self.seconds,
            "step_seconds": self.step_seconds,
            "setup_seconds": dict(self.setup_seconds),
            "budget_seconds": self.budget_seconds,
            "measured_at": self.measured_at,
            "depth": self.depth,
            "batch_size": self.batch_size,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, values) -> Measurement | None:
        """The measurement ``values`` describe, or None if they are not a valid one."""
        try:
            speeds, stopped, setup = values["speeds"], values["stopped"], values["setup_seconds"]
            valid = (
                values["precision"] in (FLOAT32, *MIXED_POLICIES)
                and isinstance(speeds, dict)
                and speeds
                and all(
                    name in (FLOAT32, *MIXED_POLICIES) and (speed is None or (finite_number(speed) and speed > 0))
                    for name, speed in speeds.items()
                )
                and values["precision"] in speeds
                and isinstance(stopped, dict)
                and all(name in speeds and isinstance(reason, str) for name, reason in stopped.items())
                and isinstance(setup, dict)
                and all(name in speeds and finite_number(value, low=0.0) for name, value in setup.items())
                and all(finite_number(values[name], low=0.0) for name in ("seconds", "step_seconds", "budget_seconds"))
                and isinstance(values["measured_at"], str)
                and all(
                    is_number(values[name]) and isinstance(values[name], int) and 0 < values[name] <= MAX_COUNT
                    for name in ("depth", "batch_size", "steps")
                )
            )
            if not valid:
                return None
            datetime.datetime.fromisoformat(values["measured_at"])
            return cls(
                precision=values["precision"],
                speeds={name: None if speed is None else float(speed) for name, speed in speeds.items()},
                stopped=dict(stopped),
                seconds=float(values["seconds"]),
                step_seconds=float(values["step_seconds"]),
                setup_seconds={name: float(value) for name, value in setup.items()},
                budget_seconds=float(values["budget_seconds"]),
                measured_at=values["measured_at"],
                depth=values["depth"],
                batch_size=values["batch_size"],
                steps=values["steps"],
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


class Source:
    """How a precision was decided (``Precision.source``)."""

    REQUESTED = "requested"  # the user named it
    NOTHING_TO_MEASURE = "nothing to measure"  # auto, and the hardware claims no mixed policy
    MEASURED = "measured"  # auto, measured now or remembered
    NOT_MEASURED = "not measured yet"  # auto, the hardware's claim, before the first run measures it
    TOO_SHORT = "too short to measure"  # auto: float32 for a run shorter than one full-data epoch, unmeasured
    FAILED = "measurement failed"  # auto: float32, because measuring failed


class Precision(str):
    """A Keras dtype policy name that also says how it was decided (``source``, ``text``)."""

    def __new__(cls, name: str, source: str = Source.REQUESTED, detail: str = "", measurement=None):
        self = super().__new__(cls, name)
        self.source, self.detail, self.measurement = source, detail, measurement
        return self

    @property
    def name(self) -> str:
        return str(self)

    @property
    def text(self) -> str:
        """What was decided, and why, in one line (after "auto precision: ")."""
        if self.source == Source.MEASURED and self.measurement is not None:
            return self.measurement.text()
        return f"{self.name} ({self.detail})" if self.detail else self.name


def nothing_to_measure(hardware: Hardware) -> Precision:
    if hardware.gpus:
        why = "this GPU has no float16 tensor cores (compute capability below 7.0); nothing to measure"
    else:
        why = "this CPU has no bfloat16/float16 hardware support; nothing to measure"
    return Precision(FLOAT32, Source.NOTHING_TO_MEASURE, why)


# --- the record: <cache>/.precision.json ------------------------------------------------------------------
def tensorflow_version() -> str:
    import tensorflow as tf  # here: only processes that measure or train ask (they import it anyway)

    return tf.__version__


def device_key(hardware: Hardware, gpus: str = "1") -> str:
    """The device a measurement holds for: the GPU(s) it trains on, else the CPU model and its flags."""
    if hardware.gpus:
        names = hardware.gpus if gpus == "all" and len(hardware.gpus) > 1 else hardware.gpus[:1]
        return "GPU: " + " + ".join(names)
    return f"CPU: {hardware.cpu_name} [flags {hardware.cpu_flags_hash or 'unknown'}]"


def record_key(hardware: Hardware, *, depth: int, batch_size: int, candidates: Sequence[str], gpus: str = "1") -> str:
    return (
        f"{device_key(hardware, gpus)} | TensorFlow {tensorflow_version()} | ResNet-{depth} | batch {batch_size} | "
        + " vs ".join(candidates)
    )


def record_path(cache_dir=None) -> Path:

    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / RECORD_NAME


_parsed: dict[str, tuple[tuple[int, int, int], dict[str, Measurement]]] = {}  # path -> (file signature, entries)


def read_record(path: Path) -> dict[str, Measurement]:
    """The valid measurements in ``path`` by key; {} if it is missing or damaged (never raises).

    Parsed once per change of the file (its mtime, size and inode), so a page rerun costs one stat. The
    file is read with bounded size and depth (``resnet.records.read_json``: a link is not followed) and
    every number is compared before it is converted (``Measurement.from_dict``): a damaged entry is
    left out, a damaged file is ignored, and the next measurement rewrites it.
    """
    signature = file_signature(path)
    if signature is None:
        return {}
    cached = _parsed.get(str(path))
    if cached is not None and cached[0] == signature:
        return cached[1]
    entries = _parse_record(path)
    _parsed[str(path)] = (signature, entries)
    return entries


def _parse_record(path: Path) -> dict[str, Measurement]:
    try:
        values = read_json(path)
    except RecordError as error:
        log.warning("ignoring the damaged precision record %s (%s); the next measurement rewrites it", path, error)
        return {}
    if (
        not isinstance(values, dict)
        or values.get("version") != RECORD_VERSION
        or not isinstance(values.get("entries"), dict)
    ):
        log.warning("ignoring the precision record %s: not a version-%d record", path, RECORD_VERSION)
        return {}
    entries = {}
    for key, value in values["entries"].items():
        measurement = Measurement.from_dict(value) if isinstance(value, dict) else None
        if measurement is not None:
            entries[key] = measurement
    return entries


def remember(path: Path, key: str, measurement: Measurement) -> None:
    """Add (or replace) ``key`` in the record, keeping its other valid entries; written atomically.

    A record that cannot be written (a folder in its place, a read-only cache) is reported in the log:
    the measurement still decides this run, and the next run measures again.
    """

    entries = {name: value.to_dict() for name, value in _parse_record(path).items()} if os.path.lexists(path) else {}
    entries[key] = measurement.to_dict()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"version": RECORD_VERSION, "entries": entries})
    except OSError as error:
        log.warning("auto precision: the measurement cannot be remembered in %s (%s)", path, error)
