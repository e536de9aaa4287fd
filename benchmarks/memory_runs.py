"""Memory of consecutive short trainings, as a long-lived app server does them: in-process vs child process.

    .venv/bin/python benchmarks/memory_runs.py --runs 20

Trains ``--runs`` tiny ResNet-18 runs one after another twice and prints this process's resident memory
after each run (after gc and malloc_trim), side by side:

- ``job``: through ``resnet.training.jobs.JobManager`` as the app does (each run in a ``python -m resnet.training.worker``
  child process);
- ``in-process``: ``train_prepared`` called in this process (what the app did before; TensorFlow keeps
  about one run's weights and optimizer slots alive after each run).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import shutil
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
    from resnet.store.runs import RunStore
    from resnet.training.jobs import JobManager
    from resnet.training.trainer import prepare_training, train_prepared

    libc = ctypes.CDLL("libc.so.6")
    store = RunStore(tempfile.mkdtemp(prefix="memory-runs-"))
    manager = JobManager(store)

    def config(seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=1, batch_size=64, train_subset=128, eval_subset=100, depth=args.depth, augment=False, seed=seed
        )

    def in_job(seed: int) -> None:
        manager.start(config(seed))
        manager.wait()
        if manager.snapshot().state != "complete":
            raise SystemExit(f"run failed: {manager.snapshot()}")

    def in_process(seed: int) -> None:
        train_prepared(prepare_training(config(1000 + seed), store=store))

    figures: dict[str, list[float]] = {"job": [], "in-process": []}
    seconds: dict[str, list[float]] = {"job": [], "in-process": []}
    try:
        for mode, train in (("job", in_job), ("in-process", in_process)):  # job first: its process starts clean
            for seed in range(args.runs):
                started = time.perf_counter()
                train(seed)
                gc.collect()
                libc.malloc_trim(0)
                seconds[mode].append(time.perf_counter() - started)
                figures[mode].append(resident_mb())
                print(
                    f"{mode:>10} run {seed + 1:>2}: {figures[mode][-1]:7.0f} MB  {seconds[mode][-1]:5.1f} s", flush=True
                )
    finally:
        shutil.rmtree(store.root, ignore_errors=True)  # each run's checkpoint: 134 MB for ResNet-18

    print(
        f"\nResNet-{args.depth}, {args.runs} one-epoch runs of 128 images; resident MB of this process after each run"
    )
    print(f"{'run':>4} {'job (child process)':>20} {'in-process':>12}")
    for index in range(args.runs):
        print(f"{index + 1:>4} {figures['job'][index]:>20.0f} {figures['in-process'][index]:>12.0f}")
    if args.runs > 2:
        growth = {mode: (values[-1] - values[1]) / (args.runs - 2) for mode, values in figures.items()}
        print(
            f"growth per run after run 2: job {growth['job']:.1f} MB, in-process {growth['in-process']:.1f} MB; "
            f"seconds per run: job {sum(seconds['job']) / args.runs:.1f}, "
            f"in-process {sum(seconds['in-process']) / args.runs:.1f}"
        )


if __name__ == "__main__":
    main()
