"""Train until returns diminish and the budget curve against fixed one-cycle runs (issue 21's evidence).

    .venv/bin/python benchmarks/returns_evidence.py --cache /tmp/evidence            # trains, then reports
    .venv/bin/python benchmarks/returns_evidence.py --cache /tmp/evidence --report   # only the tables

Trains, with the product's own CLI (``python -m resnet train`` / ``budget-curve``, each a fresh process)
into ``--cache``: fixed one-cycle runs of 5, 10, 20 and 40 epochs, one ``--epochs auto`` run (at most 100,
threshold 0.2 points per 10 epochs, 600 of the 6,000 images held out), and a budget curve at 5, 10, 20;
ResNet-18 on a 6,000-image class-balanced subset, evaluated on all 10,000 test images, float32. Then it
prints (a) the auto run against the fixed runs: epochs, final test accuracy, time; and (b) the budget
curve per budget against the independent one-cycle run of that budget, with the total epochs and time of
both. Times are each run's recorded training time (training, evaluation and saving of every epoch).
A run already in the cache with the same settings is reused (nothing is trained twice).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet.store.runs import RunStore  # noqa: E402
from resnet.sweeps.budget_curve import budget_table  # noqa: E402
from resnet.sweeps.record import SweepStore  # noqa: E402

COMMON = ["--depth", "18", "--subset", "6000", "--eval-subset", "10000", "--precision", "float32"]
FIXED = (5, 10, 20, 40)
BUDGETS = (5, 10, 20)
CURVE = "evidence-curve"


def train_all(cache: Path) -> None:
    def cli(*argv):
        command = [sys.executable, "-m", "resnet", "--cache-dir", str(cache), *argv, *COMMON]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    for epochs in FIXED:
        if _fixed(RunStore(cache), epochs) is None:
            cli("train", "--schedule", "one_cycle", "--epochs", str(epochs), "--new")
    if _auto(RunStore(cache)) is None:
        cli("train", "--epochs", "auto", "--new")
    cli("budget-curve", "--budgets", ",".join(map(str, BUDGETS)), "--name", CURVE)


def _fixed(store: RunStore, epochs: int):
    return next(
        (
            run
            for run in store.list_runs()
            if run.config
            and run.config.schedule == "one_cycle"
            and run.status == "complete"
            and run.epochs_done == epochs
        ),
        None,
    )


def _auto(store: RunStore, threshold: float = 0.2):
    runs = store.list_runs()
    return next(
        (
            run
            for run in runs
            if run.config and run.config.epochs_mode == "auto" and run.config.returns_threshold == threshold
        ),
        None,
    )


def report(cache: Path) -> None:
    store = RunStore(cache)
    print("(a) until returns diminish against fixed one-cycle runs")
    print(f"{'run':<26} {'epochs':>6} {'test acc':>8} {'seconds':>8}")
    for epochs in FIXED:
        run = _fixed(store, epochs)
        if run is not None:
            print(
                f"{'one-cycle ' + str(epochs):<26} {run.epochs_done:>6} {_final(run):>8.4f} {run.total_seconds:>8.0f}"
            )
    auto = _auto(store)
    if auto is not None:
        print(f"{'auto (threshold 0.2)':<26} {auto.epochs_done:>6} {_final(auto):>8.4f} {auto.total_seconds:>8.0f}")
        print(f"  {auto.message}")
    curves = [item.sweep for item in SweepStore(cache).list_sweeps() if item.sweep and item.sweep.budgets == BUDGETS]
    if not curves:
        return
    sweep = curves[0]
    table = budget_table(sweep, store.list_runs())
    print("(b) budget curve against independent one-cycle runs")
    print(
        f"{'budget':>6} {'branch acc':>10} {'branch epochs':>13} {'branch s':>8} {'indep. acc':>10} {'difference':>10}"
    )
    independent_epochs = independent_seconds = 0.0
    for row in table.itertuples():
        run = _fixed(store, row.budget)
        accuracy = _final(run) if run is not None else float("nan")
        independent_epochs += row.budget
        independent_seconds += run.total_seconds if run is not None else float("nan")
        print(
            f"{row.budget:>6} {row.test_accuracy:>10.4f} {row.epochs:>13} {row.seconds:>8.0f} {accuracy:>10.4f} "
            f"{100 * (row.test_accuracy - accuracy):>+9.2f}p"
        )
    trunk = store.load(sweep.trunk_run_id)
    curve_seconds = trunk.total_seconds + float(table["cooldown_seconds"].sum())
    curve_epochs = trunk.epochs_done + int(table["cooldown_epochs"].sum())
    print(
        f"total: budget curve {curve_epochs} epochs, {curve_seconds:.0f} s; independent runs "
        f"{independent_epochs:.0f} epochs, {independent_seconds:.0f} s; ratio {curve_seconds / independent_seconds:.2f}"
    )


def _final(run) -> float:
    return float(run.history["test_accuracy"].iloc[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="the run cache to train into and report on")
    parser.add_argument("--report", action="store_true", help="only report on what the cache holds")
    args = parser.parse_args()
    if not args.report:
        train_all(args.cache)
    report(args.cache)


if __name__ == "__main__":
    main()
