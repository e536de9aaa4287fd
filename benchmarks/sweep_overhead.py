"""What running a sweep's trials as Ray tasks costs over running them here, per trial.

    .venv/bin/python benchmarks/sweep_overhead.py                  # 2x2 tiny ResNet-18 trials
    .venv/bin/python benchmarks/sweep_overhead.py --parallel       # and once more, trials side by side

Trains the same tiny sweep twice, into two temporary caches, and prints per-trial seconds side by side:

- ``here``: ``resnet.sweeps.run_sweep``, what ``python -m resnet sweep`` does (each trial a child
  process through ``resnet.training.jobs``);
- ``ray``: ``resnet.sweeps.on_ray.run_sweep_on_ray`` on a local Ray started by this script, each trial
  asking for every CPU so that trials run one at a time, like ``here`` (TensorFlow gets as many threads).

For each trial, *wall* is the time the user waits for it (here: the trial's own wall time; Ray: from
the previous trial's end, since all are queued at once), *train* is what the run's history records
(its epochs: training, evaluation and writing the files), and *overhead* = wall - train: starting a
process, importing TensorFlow, loading the data, building the model and, for Ray, shipping the run and
dataset to the worker and each epoch's files back. ``ray.init`` is timed separately (once per sweep).
With ``--parallel`` the Ray sweep runs again with one CPU per trial (as many trials at once as cores).

Needs the cluster extra: ``.venv/bin/pip install -r requirements-cluster.txt``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def timed_ends(results, ends: dict, started: float) -> list[float]:
    """Per-trial wall seconds of trials queued at once: from the previous end (or the start) to its end."""
    walls, previous = [], started
    for result in results:
        end = ends[result.index]
        walls.append(end - previous)
        previous = end
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", default="1,2")
    parser.add_argument("--batch-size", default="64,32")
    parser.add_argument("--subset", default="256")
    parser.add_argument("--depth", default="18")
    parser.add_argument("--parallel", action="store_true", help="also run the Ray sweep with one CPU per trial")
    args = parser.parse_args()

    import ray

    from resnet.store.runs import RunStore
    from resnet.sweeps.local import run_sweep
    from resnet.sweeps.on_ray import connect, run_sweep_on_ray
    from resnet.sweeps.record import SweepStore, requested_sweep
    from resnet.sweeps.trials import TrialOutcome

    grid = {"epochs": args.epochs, "batch_size": args.batch_size, "train_subset": args.subset, "depth": args.depth}
    grid["eval_subset"] = "200"
    cpus = len(os.sched_getaffinity(0))

    def fresh_sweep():
        store = RunStore(tempfile.mkdtemp(prefix="sweep-overhead-"))
        atexit.register(shutil.rmtree, store.root, True)  # every trial's checkpoint: 134 MB for ResNet-18
        return store, requested_sweep(SweepStore(store.root), "bench", grid)

    def trained_seconds(store, results) -> list[float]:
        return [store.load(result.run_id).total_seconds for result in results]

    def check(results, what: str) -> None:
        if any(result.outcome != TrialOutcome.TRAINED for result in results):
            raise SystemExit(f"{what}: not every trial trained: {results}")

    store, sweep = fresh_sweep()
    here = run_sweep(sweep, store)
    check(here, "here")
    here_wall, here_train = [result.seconds for result in here], trained_seconds(store, here)

    started = time.perf_counter()
    connect(num_cpus=cpus)
    init_seconds = time.perf_counter() - started

    def on_ray(cpus_per_trial: int):
        store, sweep = fresh_sweep()
        ends = {}

        def report(event):
            if event.kind == "end":
                ends[event.index] = time.perf_counter()

        started = time.perf_counter()
        results = run_sweep_on_ray(sweep, store, cpus_per_trial=cpus_per_trial, report=report)
        total = time.perf_counter() - started
        check(results, f"ray, {cpus_per_trial} CPUs per trial")
        return results, timed_ends(results, ends, started), trained_seconds(store, results), total

    ray_results, ray_wall, ray_train, ray_total = on_ray(cpus)
    parallel = on_ray(1) if args.parallel else None
    ray.shutdown()

    print(
        f"Sweep overhead: {len(sweep.trials)} trials ({sweep.describe_grid()}), {time.strftime('%Y-%m-%d')}, "
        f"{cpu_name()}, {cpus} cores, Ray {ray.__version__}"
    )
    print(
        f"{'trial':>5}  {'settings':<22}  {'here wall':>9}  {'train':>6}  {'ray wall':>8}  {'train':>6}  {'ray adds':>8}"
    )
    added = []
    for index, trial in enumerate(sweep.trials):
        settings = f"epochs {trial.config.epochs}, batch {trial.config.batch_size}"
        extra = (ray_wall[index] - ray_train[index]) - (here_wall[index] - here_train[index])
        added.append(extra)
        print(
            f"{index + 1:>5}  {settings:<22}  {here_wall[index]:>8.1f}s  {here_train[index]:>5.1f}s  "
            f"{ray_wall[index]:>7.1f}s  {ray_train[index]:>5.1f}s  {extra:>+7.1f}s"
        )
    count = len(sweep.trials)
    here_overhead = sum(w - t for w, t in zip(here_wall, here_train, strict=True)) / count
    ray_overhead = sum(w - t for w, t in zip(ray_wall, ray_train, strict=True)) / count
    print(
        f"overhead per trial (wall - train): here {here_overhead:.1f} s, Ray {ray_overhead:.1f} s; "
        f"Ray adds {sum(added) / count:+.1f} s per trial, plus ray.init {init_seconds:.1f} s once"
    )
    print(f"sweep wall: here {sum(here_wall):.1f} s, Ray one trial at a time {ray_total:.1f} s (+ init)")
    if parallel is not None:
        print(f"sweep wall: Ray with 1 CPU per trial ({cpus} at once) {parallel[3]:.1f} s (+ init)")


if __name__ == "__main__":
    main()
