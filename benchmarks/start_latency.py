"""Start to first batch: how long a press of Start waits before its training takes its first step.

    .venv/bin/python benchmarks/start_latency.py                 # 3 rounds, through the job manager
    .venv/bin/python benchmarks/start_latency.py --app           # and through the app's Start button (AppTest)

Each round starts a tiny new run (ResNet-18, 256 images, batch 64, 1 epoch; a new seed each time, so a
new run) and times, from the call that Start makes, the job's first finished batch (the child has
imported TensorFlow, loaded the data, built the model and traced its first step). Two rows side by side,
in one process:

- ``fresh child``: every Start spawns ``python -m resnet.training.worker``, which imports TensorFlow after it is
  asked (``SpareWorker(keep_spare=False)``: what the app did before spares);
- ``spare child``: the job manager's spare (``resnet.training.spare.SpareWorker``) has imported TensorFlow ahead;
  the benchmark waits until the spare is idle before each Start, as a user's next press would find it.

``--app`` runs the same through the real page: AppTest presses the sidebar's Start button; the time is
from the click to the job's first finished batch. Precision is float32 so that nothing is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet.config import TrainConfig  # noqa: E402
from resnet.store.runs import RunStore  # noqa: E402
from resnet.training.jobs import JobManager  # noqa: E402
from resnet.training.spare import SpareWorker  # noqa: E402

TINY = TrainConfig(epochs=1, batch_size=64, train_subset=256, eval_subset=200, depth=18, precision="float32")
SETTLE_SECONDS = 15.0  # a spare started after the previous job is idle by then (its import is done)


def first_batch_seconds(manager: JobManager, start) -> float:
    """Seconds from ``start()`` to the job's first finished batch; then waits for the job to end."""
    began = time.perf_counter()
    start()
    while manager.snapshot().batch < 1:
        if not manager.snapshot().active:
            raise RuntimeError(f"the job ended before its first batch: {manager.snapshot()}")
        time.sleep(0.01)
    seconds = time.perf_counter() - began
    manager.wait()
    return seconds


def through_manager(keep_spare: bool, rounds: int, cache: Path) -> list[float]:
    spares = SpareWorker(keep_spare=keep_spare)
    manager = JobManager(RunStore(cache), spares=spares)
    manager.prepare_spare()
    times = []
    for round_ in range(rounds):
        time.sleep(SETTLE_SECONDS)  # the spare (if any) has imported TensorFlow by now; the machine is quiet
        times.append(first_batch_seconds(manager, lambda seed=100 + round_: manager.start(TINY.replace(seed=seed))))
    spares.close()
    return times


def through_app(keep_spare: bool, rounds: int, cache: Path) -> list[float]:
    import os

    from streamlit.testing.v1 import AppTest

    from app import services
    from resnet.training import spare

    os.environ["RESNET_CACHE_DIR"] = str(cache)
    spare.SPARE_WORKER.close()
    spare.SPARE_WORKER.keep_spare = keep_spare
    services._manager_for.clear()  # a new server's manager: it prepares the spare as the app starts
    times = []
    for round_ in range(rounds):
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=120)
        for name, value in {**TINY.to_dict(), "seed": 100 + round_}.items():
            at.query_params[name] = str(value)
        at.run()
        time.sleep(SETTLE_SECONDS)
        times.append(first_batch_seconds(services.get_manager(), lambda at=at: at.button(key="start").click().run()))
    spare.SPARE_WORKER.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app", action="store_true", help="also press Start on the real page (AppTest)")
    args = parser.parse_args()
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}; CPU flags include: "
        + " ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in flags)
    )
    ways = [("manager", through_manager)] + ([("app", through_app)] if args.app else [])
    print(f"{'path':8} {'child':12} {'Start to first batch, s: median':32} all rounds")
    for path, measure in ways:
        for keep_spare in (False, True):
            with tempfile.TemporaryDirectory() as cache:
                times = measure(keep_spare, args.rounds, Path(cache))
            label = "spare child" if keep_spare else "fresh child"
            print(f"{path:8} {label:12} {statistics.median(times):32.2f} {[round(t, 2) for t in times]}")


if __name__ == "__main__":
    main()
