"""Timing ``auto`` precision's candidates on this machine (``measure_precision``).

Each candidate is built and compiled as for training (``resnet.core.model.build_compiled_model``), runs
two warm-up steps (the first one compiles), then ``steps`` timed steps on random images of the batch
size, in images/s. float32 goes first and sets the budget: the steps may take 5% of a full-data epoch at
its speed (``budget_seconds``); a mixed candidate is stopped as soon as it is hopeless or would pass the
budget (``_stop_rule``). Each model built is logged ("built and compiled a ... to time it").
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from data import quiet
from resnet.core.hardware import (
    Hardware,
    detect_hardware,
    training_placement,
    training_strategy,
)
from resnet.core.precision_record import (
    FLOAT32,
    HOPELESS_SLOWDOWN,
    MIXED_POLICIES,
    WARM_STEPS,
    Measurement,
    budget_seconds,
    candidates_for,
    decide,
    default_steps,
    read_record,
    record_key,
    record_path,
    remember,
)

log = logging.getLogger(__name__)


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
    started = time.perf_counter()
    batch = config.batch_size
    data = _random_batches(config)
    placement = training_placement(config.gpus)
    ordered = (FLOAT32, *(name for name in candidates if name != FLOAT32))  # float32 sets the bar and the budget
    timings: dict[str, _Timing] = {}
    baseline: _Timing | None = None
    budget = math.inf
    for name in ordered:
        timing = _Timing()
        timings[name] = timing
        spent_before = sum(other.after_first for other in timings.values() if other is not timing)
        check = None if baseline is None else _stop_rule(timing, baseline, budget, spent_before, WARM_STEPS + steps)
        _time_candidate(config, name, data, placement, timing, check, steps)
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


def _random_batches(config):
    """One random batch shaped as the input pipeline yields them, repeated."""
    import tensorflow as tf  # here: TensorFlow stays out of processes that only read the record (the app's page)

    rng = np.random.default_rng(config.seed)
    images = rng.integers(0, 256, size=(config.batch_size, 28, 28, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=config.batch_size)]
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _time_candidate(config, name: str, data, placement, timing: _Timing, check, steps: int) -> None:
    """Build and compile the model in precision ``name`` and time ``WARM_STEPS + steps`` steps into ``timing``
    (``check`` may stop it early)."""
    import keras  # here: Keras stays out of processes that only read the record (the app's page)

    from resnet.core.model import build_compiled_model  # imports Keras

    block_started = time.perf_counter()
    keras.backend.clear_session(free_memory=True)
    with training_strategy(config.gpus, devices=placement.devices).scope():
        model = build_compiled_model(config, name)
    log.debug("auto precision: built and compiled a %s ResNet-%d to time it", name, config.depth)
    try:
        with quiet.captured(f"timing {name}"):  # e.g. oneDNN's note that bfloat16 is emulated here
            model.fit(
                data, steps_per_epoch=WARM_STEPS + steps, epochs=1, verbose=0, shuffle=False,
                callbacks=[_step_timer(timing, check)],
            )  # fmt: skip
    finally:
        del model
        keras.backend.clear_session(free_memory=True)
        gc.collect()
    timing.block_seconds = time.perf_counter() - block_started


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
    import keras  # here: as in _time_candidate

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
