"""What a run's TensorBoard event files cost each commit, and on disk (issue 23).

    .venv/bin/python benchmarks/event_files.py --epochs 200

Commits ``--epochs`` epochs into two runs through the run store's own ``write_epoch_files`` and
``record_epoch`` (real state, config, history and predictions of 10,000 evaluated images, as a full-data run
evaluates; a small zip stands in for the checkpoint), one store writing event files after each commit (the
default) and one not (``writes_event_files = False``), epoch by epoch in turn, and prints side by side the
milliseconds of ``record_epoch`` at a few epochs, with and without, and the event files' bytes per epoch.
Then times ``export-tensorboard``'s ``sync`` of the longer run when up to date and from nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

EVALUATED = 10_000


def fake_checkpoint(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")


def commit_epochs(epochs: int, root: Path) -> tuple[dict[bool, list[float]], object, object]:
    """Seconds of each epoch's ``record_epoch`` with and without event files; the two stores' runs."""
    import numpy as np

    from resnet.config import TrainConfig
    from resnet.store.runs import HISTORY_COLUMNS, RunStore

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, EVALUATED)
    runs, seconds = {}, {True: [], False: []}
    for writes in (True, False):
        store = RunStore(root / ("with" if writes else "without"))
        store.writes_event_files = writes
        config = TrainConfig(epochs=epochs, depth=50, eval_subset=EVALUATED)
        runs[writes] = (
            store,
            store.create(config, precision="float32", device="CPU", train_images=60_000, eval_images=EVALUATED),
        )
    for epoch in range(1, epochs + 1):
        probabilities = rng.dirichlet(np.ones(10) * 0.3, EVALUATED).astype(np.float32)
        row = {column: float(rng.random()) for column in HISTORY_COLUMNS} | {
            "epoch": epoch,
            "epoch_seconds": 200.0,
            "cumulative_seconds": 200.0 * epoch,
            "val_loss": float("nan"),
            "val_accuracy": float("nan"),
        }
        for writes, (store, run) in runs.items():
            files = store.write_epoch_files(
                run,
                epoch,
                save_checkpoint=fake_checkpoint,
                probabilities=probabilities,
                eval_indices=np.arange(EVALUATED),
                eval_labels=labels,
            )
            started = time.perf_counter()
            store.record_epoch(run, dict(row), files)
            seconds[writes].append(time.perf_counter() - started)
    return seconds, runs[True], runs[False]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "CPU")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    from resnet.store import event_files

    print(f"{cpu_model()}, {os.cpu_count()} cores; {args.epochs} epochs of {EVALUATED:,} evaluated images")
    with tempfile.TemporaryDirectory() as folder:
        seconds, (store, run), _ = commit_epochs(args.epochs, Path(folder))
        print(f"{'epoch':>6}  {'record_epoch with event files':>30}  {'without':>9}  {'added':>8}")
        for epoch in sorted({1, 10, 50, 100, args.epochs} & set(range(1, args.epochs + 1))):
            window = slice(max(epoch - 5, 0), epoch)  # the median of the five epochs up to this one
            with_ = statistics.median(seconds[True][window]) * 1000
            without = statistics.median(seconds[False][window]) * 1000
            print(f"{epoch:>6}  {with_:>27.1f} ms  {without:>6.1f} ms  {with_ - without:>5.1f} ms")
        root = event_files.folder_of(run)
        size = folder_bytes(root)
        scalars = sum(path.stat().st_size for path in root.rglob("*.scalars"))
        images = sum(path.stat().st_size for path in root.rglob("*.confusion"))
        print(
            f"event files: {size:,} bytes for {args.epochs} epochs = {size / args.epochs:,.0f} bytes per epoch "
            f"({scalars / args.epochs:,.0f} scalars, {images / args.epochs:,.0f} confusion image)"
        )
        run = store.load(run.run_id)
        started = time.perf_counter()
        synced = event_files.sync(store, run)
        print(f"sync up to date: {time.perf_counter() - started:.3f} s ({synced.text()})")
        shutil.rmtree(root)
        started = time.perf_counter()
        synced = event_files.sync(store, run)
        print(f"sync from nothing: {time.perf_counter() - started:.3f} s ({synced.text()})")


if __name__ == "__main__":
    main()
