"""``auto`` precision, measured on this machine rather than guessed from CPU flags.

What a CPU or GPU claims says little about speed here: on a Zen 5 CPU with AVX512-BF16, mixed bfloat16
trained ResNet-50 no faster than float32 (370.6 vs 370.9 images/s); on an AVX2 CPU bfloat16 is
emulated and about 12x slower; on an AMX Xeon it took 125 to 203 images/s. So ``auto`` is decided so:

1. The candidates are float32 and the mixed policy the hardware claims (``claimed_mixed_precision``:
   mixed_bfloat16 on a CPU with AVX512-BF16 or AMX, mixed_float16 on a GPU with tensor cores). Where it
   claims none, the answer is float32 and nothing is measured.
2. Otherwise, the first time a (device, TensorFlow version, depth, batch size) is trained on this
   machine, each candidate is timed on random images of the batch size: its model is built and
   compiled as for training (``resnet.training.trainer.build_compiled_model``), two warm-up steps (the first
   one compiles), then ``steps`` timed steps, in images/s (``measure_precision``).
3. The mixed policy wins only if it is at least ``MIXED_MARGIN`` (10%) faster (``decide``): float32
   needs no loss scaling, keeps full-precision activations, and its runs compare with every other.
4. The answer is remembered in ``<cache>/.precision.json`` (written atomically; a damaged file is
   ignored and rewritten), keyed by the device (CPU model and a hash of its flags, or GPU name), the
   TensorFlow version, depth, batch size and candidates; later runs read it (``resolve``).

The budget: a full-data epoch is 60,000 images; the steps of the measurement may take 5% of that
epoch's time at the float32 speed it measures (``budget_seconds``). float32 goes first and gets at
most 40% of those images (``default_steps``); the mixed candidate is stopped as soon as it is hopeless
(its first step, beyond float32's first, took longer than float32's whole timing; or a warm step was
twice float32's) or its steps would run past the budget. Building and compiling each model (what
every run pays once at its start) comes on top; ``Measurement.seconds`` is the whole cost, wall clock.

An explicit precision (``--precision float32`` ...) is never measured.
"""

from __future__ import annotations

import datetime
import gc
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data import quiet
from data.fashion_mnist import TRAIN_SIZE
from resnet.core.hardware import (
    Hardware,
    claimed_mixed_precision,
    detect_hardware,
    training_placement,
    training_strategy,
)
from resnet.files import default_cache_dir, file_signature, write_json
from resnet.records import RecordError, finite_number, is_number, read_json

log = logging.getLogger(__name__)

FLOAT32 = "float32"
MIXED_POLICIES = ("mixed_bfloat16", "mixed_float16")
MIXED_MARGIN = 1.10  # a mixed policy must be at least this much faster than float32 to be chosen
BUDGET_SHARE = 0.05  # of a full-data epoch's time at float32 speed, for the measurement's steps
EPOCH_IMAGES = TRAIN_SIZE
FLOAT32_SHARE = 0.4  # of the budget's images, for float32's warm-up and timed steps
WARM_STEPS = 2  # untimed steps before the timed ones; the first one compiles
MIN_STEPS, MAX_STEPS = 2, 10  # timed steps per candidate
HOPELESS_SLOWDOWN = 2.0  # a mixed candidate whose warm step is this much slower than float32's is stopped
RECORD_NAME = ".precision.json"
RECORD_VERSION = 1
MAX_COUNT = 2**31  # the largest depth, batch size or step count a record may hold

MODELS_BUILT = 0  # models built by measurements in this process (a remembered answer builds none)


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


def _nothing_to_measure(hardware: Hardware) -> Precision:
    if hardware.gpus:
        why = "this GPU has no float16 tensor cores (compute capability below 7.0); nothing to measure"
    else:
        why = "this CPU has no bfloat16/float16 hardware support; nothing to measure"
    return Precision(FLOAT32, Source.NOTHING_TO_MEASURE, why)


# --- the record: <cache>/.precision.json ------------------------------------------------------------------
def tensorflow_version() -> str:
    import tensorflow as tf

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


# --- resolving and choosing ------------------------------------------------------------------------------
def resolve_precision(
    requested: str,
    hardware: Hardware | None = None,
    *,
    depth: int | None = None,
    batch_size: int | None = None,
    gpus: str = "1",
    cache_dir=None,
) -> Precision:
    """What ``requested`` trains with on this machine, without measuring anything.

    A precision other than ``auto`` is itself; ``auto`` is float32 where the hardware claims no mixed
    policy (nothing to measure), else the measurement remembered in the cache folder for this machine,
    ``depth`` and ``batch_size`` (when given), else the claimed mixed policy, marked as not measured yet.
    Reads at most a small JSON file: measuring is ``choose_precision``'s, when a run is prepared. With a
    ``TrainConfig`` at hand, ask ``resolve``.
    """
    if requested != "auto":
        return Precision(requested, Source.REQUESTED, "as asked")
    hardware = hardware or detect_hardware()
    candidates = candidates_for(hardware)
    if len(candidates) == 1:
        return _nothing_to_measure(hardware)
    mixed = candidates[1]
    if depth is not None and batch_size is not None:
        key = record_key(hardware, depth=depth, batch_size=batch_size, candidates=candidates, gpus=gpus)
        known = read_record(record_path(cache_dir)).get(key)
        if known is not None:
            return Precision(known.precision, Source.MEASURED, measurement=known)
        what = f"for ResNet-{depth} at batch {batch_size}"
    else:
        what = "here"
    units = "this GPU's tensor cores" if hardware.gpus else "this CPU's bfloat16 units"
    return Precision(
        mixed,
        Source.NOT_MEASURED,
        f"claimed by {units}; not measured yet {what}: the first run times {FLOAT32} against {mixed} and "
        f"keeps {mixed} only if it is at least {MIXED_MARGIN - 1:.0%} faster",
    )


def resolve(config, *, cache_dir=None, hardware: Hardware | None = None) -> Precision:
    """What a run of ``config`` (a ``TrainConfig``) trains with here, without measuring: its precision for
    its depth, batch size and devices, with the measurement remembered in ``cache_dir`` (default: the
    cache). The one answer the sidebar, the time estimates, the trainer and the Ray tasks all use."""
    return resolve_precision(
        config.precision,
        hardware,
        depth=config.depth,
        batch_size=config.batch_size,
        gpus=config.gpus,
        cache_dir=cache_dir,
    )


def choose_precision(config, *, cache_dir=None, hardware: Hardware | None = None, measure: bool = True) -> Precision:
    """The precision a new run of ``config`` trains with here; measures ``auto`` the first time.

    With ``measure=False`` (a process that only creates the run and leaves the training to another,
    like the app's server), nothing is measured: the remembered or claimed answer. A measurement that
    fails is reported and gives float32 (nothing is remembered, so the next run measures again).
    """
    if config.precision != "auto":
        return Precision(config.precision, Source.REQUESTED, "as asked")
    hardware = hardware or detect_hardware()
    known = resolve(config, cache_dir=cache_dir, hardware=hardware)
    if known.source != Source.NOT_MEASURED or not measure:
        log.info("auto precision: %s", known.text)
        return known
    candidates = candidates_for(hardware)
    log.info(
        "auto precision: timing %s for ResNet-%d at batch %d (once for this machine; a few steps each)",
        " and ".join(candidates),
        config.depth,
        config.batch_size,
    )
    try:
        measurement = measure_precision(config, cache_dir=cache_dir, candidates=candidates, hardware=hardware)
    except Exception as error:  # never fatal: float32 always works
        log.warning("auto precision: measuring failed (%s: %s); training with float32", type(error).__name__, error)
        return Precision(FLOAT32, Source.FAILED, f"measuring failed: {type(error).__name__}: {error}")
    chosen = Precision(measurement.precision, Source.MEASURED, measurement=measurement)
    log.info("auto precision: %s", chosen.text)
    return chosen


# --- measuring ---------------------------------------------------------------------------------------------
def measure_precision(
    config,
    *,
    cache_dir=None,
    candidates: Sequence[str] | None = None,
    steps: int | None = None,
    hardware: Hardware | None = None,
    force: bool = False,
) -> Measurement:
    """Time ``candidates`` (default: ``candidates_for`` this hardware) for ``config``'s depth and batch size.

    A measurement remembered for the same key is returned without measuring (``fresh`` False) unless
    ``force``; a new one is remembered. ``steps``: timed steps per candidate (default ``default_steps``).
    """
    hardware = hardware or detect_hardware()
    candidates = tuple(candidates or candidates_for(hardware))
    if FLOAT32 not in candidates or len(candidates) < 2 or len(set(candidates)) != len(candidates):
        raise ValueError(f"candidates must be float32 and at least one mixed policy; got {candidates!r}")
    unknown = [name for name in candidates if name not in (FLOAT32, *MIXED_POLICIES)]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}")
    key = record_key(
        hardware, depth=config.depth, batch_size=config.batch_size, candidates=candidates, gpus=config.gpus
    )
    path = record_path(cache_dir)
    if not force:
        known = read_record(path).get(key)
        if known is not None:
            return known
    measurement = _measure(config, candidates, steps or default_steps(config.batch_size))
    remember(path, key, measurement)
    return measurement


@dataclass
class _Timing:
    """One candidate's steps: wall seconds of each, in order (the first one compiles)."""

    block_seconds: float = 0.0  # everything: building, compiling, the steps, freeing the model
    times: list[float] = field(default_factory=list)
    stopped: str = ""

    @property
    def timed(self) -> list[float]:
        return self.times[WARM_STEPS:]

    @property
    def after_first(self) -> float:
        return sum(self.times[1:])


def _speed(timing: _Timing, batch_size: int, baseline: _Timing | None) -> float | None:
    """Images/s over the timed steps; for a candidate stopped before them, the best estimate there is."""
    if timing.timed:
        return batch_size * len(timing.timed) / sum(timing.timed)
    if len(timing.times) > 1:  # the warm step
        return batch_size / timing.times[1]
    if timing.times and baseline is not None and baseline.timed:
        # Its first step less float32's compiling time (float32's first step less one of its steps).
        compiling = baseline.times[0] - sum(baseline.timed) / len(baseline.timed)
        step = timing.times[0] - compiling
        return batch_size / step if step > 0 else None
    return None


def _measure(config, candidates: Sequence[str], steps: int) -> Measurement:
    # Imported here: TensorFlow and Keras stay out of processes that only read the record (the app's page).
    import keras
    import numpy as np
    import tensorflow as tf

    from resnet.core.model import build_compiled_model

    global MODELS_BUILT
    started = time.perf_counter()
    batch = config.batch_size
    rng = np.random.default_rng(config.seed)
    images = rng.integers(0, 256, size=(batch, 28, 28, 1)).astype(np.float32)  # what the input pipeline yields
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=batch)]
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    placement = training_placement(config.gpus)
    ordered = (FLOAT32, *(name for name in candidates if name != FLOAT32))  # float32 sets the bar and the budget
    timings: dict[str, _Timing] = {}
    baseline: _Timing | None = None
    budget = math.inf

    for name in ordered:
        timing = _Timing()
        timings[name] = timing
        block_started = time.perf_counter()
        keras.backend.clear_session(free_memory=True)
        with training_strategy(config.gpus, devices=placement.devices).scope():
            model = build_compiled_model(config, name)
        MODELS_BUILT += 1
        spent_before = sum(other.after_first for other in timings.values() if other is not timing)
        check = None if baseline is None else _stop_rule(timing, baseline, budget, spent_before, WARM_STEPS + steps)
        try:
            with quiet.captured(f"timing {name}"):  # e.g. oneDNN's note that bfloat16 is emulated here
                model.fit(
                    data,
                    steps_per_epoch=WARM_STEPS + steps,
                    epochs=1,
                    verbose=0,
                    shuffle=False,
                    callbacks=[_step_timer(timing, check)],
                )
        finally:
            del model
            keras.backend.clear_session(free_memory=True)
            gc.collect()
        timing.block_seconds = time.perf_counter() - block_started
        if baseline is None:
            baseline = timing
            budget = budget_seconds(_speed(timing, batch, None))

    speeds = {name: _speed(timing, batch, baseline) for name, timing in timings.items()}
    stopped = {name: timing.stopped for name, timing in timings.items() if timing.stopped}
    # A candidate stopped as hopeless or for the budget is not chosen on a partial estimate.
    comparable = {name: (None if name in stopped else speed) for name, speed in speeds.items()}
    return Measurement(
        precision=decide(comparable),
        speeds=speeds,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        step_seconds=sum(timing.after_first for timing in timings.values()),
        setup_seconds={name: timing.block_seconds - timing.after_first for name, timing in timings.items()},
        budget_seconds=budget,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        depth=config.depth,
        batch_size=batch,
        steps=steps,
        fresh=True,
    )


def _stop_rule(timing: _Timing, baseline: _Timing, budget: float, spent_before: float, planned: int):
    """Why a mixed candidate should stop after its latest step (or ""), judged against float32's timing."""
    window = sum(baseline.timed)  # float32's whole timing
    baseline_step = window / len(baseline.timed)

    def check() -> str:
        times, done = timing.times, len(timing.times)
        if done == 1 and times[0] - baseline.times[0] > window:
            return (
                f"its first step took {times[0] - baseline.times[0]:.1f} s longer than float32's, more than "
                f"float32's whole timing ({window:.1f} s)"
            )
        if done == 2 and times[1] > HOPELESS_SLOWDOWN * baseline_step:
            return f"a warm step took {times[1] / baseline_step:.1f}x float32's"
        if done > 2 and times[-1] > window:
            return f"one step took longer than float32's whole timing ({window:.1f} s)"
        if done < planned and done > 1 and spent_before + timing.after_first + times[-1] > budget:
            return f"the next step would pass the budget of {budget:.1f} s (5% of an epoch at float32 speed)"
        return ""

    return check


def _step_timer(timing: _Timing, check):
    """A callback that times every training step of ``model.fit`` and stops it when ``check`` gives a reason."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            # The logs arrive as Python numbers (Keras converts them for a synchronous callback like this
            # one), so the step has finished, also on a GPU.
            timing.times.append(time.perf_counter() - self.began)
            reason = check() if check is not None else ""
            if reason:
                timing.stopped = reason
                self.model.stop_training = True

    return StepTimer()
