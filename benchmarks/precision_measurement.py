"""What measuring ``auto`` precision costs on this machine (docs/benchmarks.md, section 11).

    .venv/bin/python benchmarks/precision_measurement.py                       # ResNet-50, batch 128
    .venv/bin/python benchmarks/precision_measurement.py --depth 18 --batch-size 64

``auto`` measures only where the hardware claims a mixed policy (resnet/core/precision.py); this forces the
candidates (float32 against mixed_bfloat16 by default), so the cost and the early stop of a hopeless
candidate can be seen on any CPU. It measures afresh (``force``) into a temporary cache folder, so the
project's cache/.precision.json is left alone, and prints the measurement and its parts.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--candidates", default="float32,mixed_bfloat16")
    parser.add_argument("--steps", type=int, help="timed steps per candidate (default: the budget's)")
    args = parser.parse_args()

    from resnet.config import TrainConfig
    from resnet.core import precision, precision_record
    from resnet.core.hardware import detect_hardware

    hardware = detect_hardware()
    config = TrainConfig(depth=args.depth, batch_size=args.batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        measurement = precision.measure_precision(
            config, cache_dir=cache, candidates=tuple(args.candidates.split(",")), steps=args.steps, force=True
        )
    wall = time.perf_counter() - started
    float32 = measurement.speeds["float32"]
    epoch = precision_record.EPOCH_IMAGES / float32
    print(
        f"auto precision measurement, ResNet-{args.depth}, batch {args.batch_size}, "
        f"{datetime.date.today().isoformat()}, {hardware.cpu_text if not hardware.gpus else hardware.gpus[0]}, "
        f"TensorFlow {precision_record.tensorflow_version()}, {platform.python_version()}"
    )
    print(f"result: {measurement.text()}")
    print(f"timed steps per candidate: {measurement.steps} (after {precision_record.WARM_STEPS} warm-up steps)")
    print(f"float32 epoch of {precision_record.EPOCH_IMAGES:,} images at {float32:.1f} img/s: {epoch:.0f} s")
    print(
        f"budget (5% of that epoch): {measurement.budget_seconds:.1f} s; steps after each first step: "
        f"{measurement.step_seconds:.1f} s; the rest: {measurement.seconds - measurement.step_seconds:.1f} s"
    )
    for name, seconds in measurement.setup_seconds.items():
        print(f"  {name}: building it, its first (compiling) step and freeing it: {seconds:.1f} s")
    print(
        f"whole measurement: {measurement.seconds:.1f} s = {100 * measurement.seconds / epoch:.1f}% of an epoch "
        f"(this script: {wall:.1f} s with the TensorFlow start-up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
