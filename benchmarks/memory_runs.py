"""Memory of consecutive short trainings in one process (as a long-lived app server does them).

    .venv/bin/python benchmarks/memory_runs.py --runs 20

Trains ``--runs`` tiny ResNet-18 runs one after another in this process through the real trainer and
prints the resident memory after each (after gc and malloc_trim), and the growth per run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def resident_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--depth", type=int, default=18, choices=(18, 34, 50))
    args = parser.parse_args()

    from resnet.config import TrainConfig
    from resnet.runs import RunStore
    from resnet.trainer import prepare_training, train_prepared

    libc = ctypes.CDLL("libc.so.6")
    store = RunStore(tempfile.mkdtemp(prefix="memory-runs-"))
    figures = []
    print(f"{'run':>4} {'resident MB':>12} {'seconds':>8}")
    for seed in range(args.runs):
        config = TrainConfig(
            epochs=1, batch_size=64, train_subset=128, eval_subset=100, depth=args.depth, augment=False, seed=seed
        )
        started = time.perf_counter()
        train_prepared(prepare_training(config, store=store))
        gc.collect()
        libc.malloc_trim(0)
        figures.append(resident_mb())
        print(f"{seed + 1:>4} {figures[-1]:>12.0f} {time.perf_counter() - started:>8.1f}", flush=True)
    if len(figures) > 2:
        per_run = (figures[-1] - figures[1]) / (len(figures) - 2)
        print(
            f"growth after the first two runs: {per_run:.0f} MB per run "
            f"({figures[1]:.0f} MB after run 2, {figures[-1]:.0f} MB after run {len(figures)})"
        )


if __name__ == "__main__":
    main()
