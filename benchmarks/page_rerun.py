"""How long one rerun of the app's page takes with many cached runs (the page reruns on every click).

    .venv/bin/python benchmarks/page_rerun.py --runs 300

Fills a temporary cache with ``--runs`` runs of 10 committed epochs each (real state, config and history
files; small zip files stand in for the checkpoints and predictions), then prints side by side:

- ``list_runs`` of a fresh store (every run folder parsed) and of the same store again (parsed runs
  cached by file times, as the app's one store per server does on every rerun);
- the sidebar's time estimate from all runs' histories;
- a whole page rerun through Streamlit's AppTest (first run, then reruns), which includes AppTest's own
  overhead of running the script and collecting its elements.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def fill_cache(root: Path, runs: int, epochs: int) -> None:
    import numpy as np

    from resnet.config import TrainConfig
    from resnet.store.runs import HISTORY_COLUMNS, RunStore

    store = RunStore(root)

    def fake_checkpoint(path):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", "{}")

    for index in range(runs):
        config = TrainConfig(epochs=epochs, train_subset=1000, eval_subset=1000, depth=18, seed=index)
        run = store.create(config, precision="float32", device="CPU: benchmark", train_images=1000, eval_images=10)
        for epoch in range(1, epochs + 1):
            row = {column: 0.5 for column in HISTORY_COLUMNS} | {
                "epoch": epoch,
                "epoch_seconds": 10.0,
                "cumulative_seconds": 10.0 * epoch,
                "images_per_second": 100.0,
            }
            files = store.write_epoch_files(
                run,
                epoch,
                save_checkpoint=fake_checkpoint,
                probabilities=np.full((10, 10), 0.1),
                eval_indices=np.arange(10),
                eval_labels=np.zeros(10),
            )
            store.record_epoch(run, row, files)
        store.update_state(run, status="complete")


def timed(function, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``function``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def measure(runs: int, epochs: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each measured step with a cache of ``runs`` runs."""
    from streamlit.testing.v1 import AppTest

    from resnet.config import TrainConfig
    from resnet.store.estimate import estimate_time
    from resnet.store.runs import RunStore

    root = Path(tempfile.mkdtemp(prefix=f"page-rerun-{runs}-"))
    started = time.perf_counter()
    fill_cache(root, runs, epochs)
    print(f"cache: {runs} runs x {epochs} epochs in {root} (filled in {time.perf_counter() - started:.1f} s)")
    store = RunStore(root)
    results = {"list_runs, fresh store": timed(lambda: RunStore(root).list_runs(), repeats)}
    store.list_runs()
    results["list_runs, same store"] = timed(store.list_runs, repeats)
    listing = store.list_runs()
    results["time estimate"] = timed(
        lambda: estimate_time(TrainConfig(depth=18), listing, device="CPU: benchmark", precision="float32"), repeats
    )
    os.environ["RESNET_CACHE_DIR"] = str(root)
    at = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=120)
    results["page, first run (AppTest)"] = timed(at.run, 1)
    if at.exception:
        raise SystemExit(f"the page raised: {at.exception[0].message}")
    results["page, rerun (AppTest)"] = timed(at.run, repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    small = measure(1, args.epochs, args.repeats)
    large = measure(args.runs, args.epochs, args.repeats)
    print(f"\nmedian (best) seconds{'':<9} {'1 run':>15} {f'{args.runs} runs':>15} {'ratio':>7}")
    for name in small:
        one, many = statistics.median(small[name]), statistics.median(large[name])
        print(
            f"{name:<30} {one:>7.3f} ({min(small[name]):.3f}) {many:>7.3f} ({min(large[name]):.3f}) {many / one:>6.1f}x"
        )
    extra = statistics.median(large["page, rerun (AppTest)"]) - statistics.median(small["page, rerun (AppTest)"])
    print(f"a rerun with {args.runs} runs costs {extra:.3f} s more than with 1 run")


if __name__ == "__main__":
    main()
