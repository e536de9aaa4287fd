"""``auto`` precision, measured on this machine rather than guessed from CPU flags.

What a CPU or GPU claims says little about speed here: on a Zen 5 CPU with AVX512-BF16, mixed bfloat16
trained ResNet-50 no faster than float32 (370.6 vs 370.9 images/s); on an AVX2 CPU bfloat16 is
emulated and about 12x slower; on an AMX Xeon it took 125 to 203 images/s. So ``auto`` is decided so:

1. The candidates are float32 and the mixed policy the hardware claims (``claimed_mixed_precision``:
   mixed_bfloat16 on a CPU with AVX512-BF16 or AMX, mixed_float16 on a GPU with tensor cores). Where it
   claims none, the answer is float32 and nothing is measured.
2. Otherwise, the first time a (device, TensorFlow version, depth, batch size) is trained on this
   machine by a run of at least one full-data epoch's images (``MEASURED_FROM_IMAGES``; a shorter run
   trains float32 unmeasured: the measurement would cost more than it could save), each candidate is timed on random images of the batch size: its model is built and
   compiled as for training (``resnet.core.model.build_compiled_model``), two warm-up steps (the first
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

import logging

from resnet.core.hardware import (
    Hardware,
    detect_hardware,
)
from resnet.core.precision_record import (
    FLOAT32,
    MEASURED_FROM_IMAGES,
    MIXED_MARGIN,
    Precision,
    Source,
    candidates_for,
    nothing_to_measure,
    read_record,
    record_key,
    record_path,
)
from resnet.core.precision_timing import measure_precision

log = logging.getLogger(__name__)


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
        return nothing_to_measure(hardware)
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
    cache). The one answer the sidebar, the time estimates, the trainer and the Ray tasks all use.

    A run that trains fewer images than one full-data epoch (``epochs * train_subset`` below
    ``MEASURED_FROM_IMAGES``) and finds nothing remembered trains float32 without measuring
    (``Source.TOO_SHORT``): measuring would cost more than it could save."""
    precision = resolve_precision(
        config.precision,
        hardware,
        depth=config.depth,
        batch_size=config.batch_size,
        gpus=config.gpus,
        cache_dir=cache_dir,
    )
    images = config.epochs * config.train_subset
    if precision.source == Source.NOT_MEASURED and images < MEASURED_FROM_IMAGES:
        return Precision(
            FLOAT32,
            Source.TOO_SHORT,
            f"this run trains {images:,} images, less than one full epoch of {MEASURED_FROM_IMAGES:,}: too short "
            f"for timing {FLOAT32} against {precision} to pay; a longer run measures it once",
        )
    return precision


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
