"""Training speed of the project's trainer beside its peers, measured in one run, printed side by side.

    .venv/bin/python benchmarks/train_speed.py              # full: ResNet-50, batch 128 (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/train_speed.py --quick      # smoke run: ResNet-18, tiny windows (about 2 minutes)
    .venv/bin/pip install -r requirements-bench.txt         # adds PyTorch (CPU) for the PyTorch rows

Each contender runs in its own subprocess (so peak memory is its own and TensorFlow's start-up settings
apply), trains the same architecture on the same images, discards a warm-up window (tracing, caches),
then reports the median training images/s over ``--repeats`` timed windows of ``--steps`` batches:

- ``project``, ``project-steps``, ``project-epoch``: the product itself, measured in one run:
  ``resnet.training.trainer.train_prepared`` trains a run in a scratch cache for 1 + ``--repeats`` epochs of
  ``--steps`` batches on the benchmark's images (epoch 1 is the warm-up), every epoch as the app and
  the CLI train one: seeding, tf.data pipeline (augmenting if the default configuration does), the
  per-batch callback (learning rate, progress, cancel check), evaluation on ``--eval-images`` test
  images and the commit (checkpoint, predictions, map, history row, state). ``project`` is each
  epoch's training images/s as the run's history records it (its set-up included), ``project-steps``
  the same epochs' steps alone (from the first batch's end to the last's, as reported to the trainer's
  ``report`` callback), ``project-epoch`` the training images over the whole epoch's seconds;
- ``keras-naive``: the same model, ``model.fit`` on NumPy arrays, float32,
  Keras/TensorFlow defaults (TensorFlow's own oneDNN default: off on AMD CPUs);
- ``keras-naive+onednn``: the same with oneDNN switched on, to separate that one setting from the rest;
- ``torch-fp32`` / ``torch-bf16``: PyTorch eager, identical architecture, channels_last, Adam,
  float32 and bfloat16 autocast (skipped when torch is not installed).

The project trains in float32 unless ``--precision`` says otherwise (``auto``: measured in the run, as a
new run on this machine does), so that it compares with the float32 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

CONTENDERS = (
    "project",
    "project-steps",
    "project-epoch",
    "keras-naive",
    "keras-naive+onednn",
    "torch-fp32",
    "torch-bf16",
)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_images(count: int):
    from data.fashion_mnist import load_fashion_mnist

    dataset = load_fashion_mnist()
    return dataset.train_images[:count], dataset.train_labels[:count], dataset


def timed_windows(run_window, *, repeats: int, images: int) -> list[float]:
    run_window()  # warm-up: tracing, allocator and cache warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_window()
        rates.append(images / (time.perf_counter() - started))
    return rates


# --- contenders (each runs in its own subprocess) --------------------------------------------------------
PROJECT_ROWS = ("project", "project-steps", "project-epoch")  # measured together, in one run of the trainer


class EpochClock:
    """The trainer's ``report`` callback, keeping when each batch and phase of each epoch was reported."""

    def __init__(self):
        self.batches: dict[int, list[float]] = {}
        self.phases: dict[tuple[int, str], float] = {}

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        if progress.phase == "training":
            self.batches.setdefault(progress.epoch, []).append(now)
        else:
            self.phases.setdefault((progress.epoch, str(progress.phase)), now)

    def step_rate(self, epoch: int, batch_size: int) -> float:
        """Images/s of the epoch's steps alone: from its first batch's end to its last's (no set-up, no tear-down)."""
        ends = self.batches[epoch]
        return (len(ends) - 1) * batch_size / (ends[-1] - ends[0])

    def evaluation_seconds(self, epoch: int) -> float:
        return self.phases[(epoch, "saving")] - self.phases[(epoch, "evaluating")]


def bench_project(args) -> dict:
    """The trainer as a user runs it: ``train_prepared`` on a run in a scratch cache, on the benchmark's images.

    Epoch 1 is the warm-up (tracing); epochs 2.. are the windows, each a real epoch of ``--steps`` batches
    with everything the trainer does (seeding, callbacks, evaluation, checkpoint, predictions, map, history,
    state). Three rows come from them: ``project`` is the history's own training images/s (the epoch's
    training as the trainer times it, set-up included), ``project-steps`` the steps alone (between the
    epoch's first and last batch), ``project-epoch`` the training images over the whole epoch's seconds.
    """
    import dataclasses

    import numpy as np

    from resnet.config import TrainConfig
    from resnet.store.runs import RunStore
    from resnet.training.trainer import prepare_training, train_prepared

    images_count = args.steps * args.batch_size
    config = TrainConfig(
        epochs=1 + args.repeats,
        depth=args.depth,
        batch_size=args.batch_size,
        train_subset=max(100, images_count),
        eval_subset=args.eval_images,
        precision=args.precision,
    )
    prepared = prepare_training(config, store=RunStore(Path(args.scratch) / "cache"))
    # The same images as the other contenders: the first ``images_count`` training images.
    prepared = dataclasses.replace(prepared, train_indices=np.arange(images_count))
    clock = EpochClock()
    run = train_prepared(prepared, report=clock)
    history = run.history.iloc[1:]  # epoch 1 traced and compiled: the warm-up
    epochs = history["epoch"].astype(int).tolist()
    training_seconds = images_count / history["images_per_second"]
    evaluation_seconds = [clock.evaluation_seconds(epoch) for epoch in epochs]
    after_training = history["epoch_seconds"] - training_seconds  # evaluation, then the commit
    rows = {
        "project": history["images_per_second"].tolist(),
        "project-steps": [clock.step_rate(epoch, args.batch_size) for epoch in epochs],
        "project-epoch": (images_count / history["epoch_seconds"]).tolist(),
    }
    precision = run.state.precision
    result = {name: {"images_per_second": statistics.median(rates), "windows": rates} for name, rates in rows.items()}
    for row in result.values():
        row["precision"] = precision
    result["details"] = {
        "inference_images_per_second": args.eval_images / statistics.median(evaluation_seconds),
        "eval_seconds": statistics.median(evaluation_seconds),
        "save_seconds": statistics.median(after_training.to_numpy() - np.array(evaluation_seconds)),
        "checkpoint_mb": run.checkpoint_path.stat().st_size / 2**20,
        "fit_overhead_seconds": statistics.median(
            training_seconds.to_numpy() - images_count / np.array(rows["project-steps"])
        ),
    }
    return result


def bench_keras_naive(args) -> dict:
    import keras

    from resnet.core.model import build_resnet

    images_count = args.steps * args.batch_size
    images, labels, _ = training_images(images_count)
    x = images[..., None].astype("float32")
    y = keras.utils.to_categorical(labels, 10)
    model = build_resnet(args.depth)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    rates = timed_windows(
        lambda: model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
        repeats=args.repeats,
        images=images_count,
    )
    return {"images_per_second": statistics.median(rates), "windows": rates, "precision": "float32"}


def torch_resnet(depth: int):
    """The same architecture as resnet/core/model.py, in PyTorch (stride on the first 1x1 conv, as Keras does)."""
    import torch
    from torch import nn

    from resnet.core.model import ARCHITECTURES, PIXEL_MEAN, PIXEL_STD

    def conv_bn(cin, cout, kernel, stride=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout, eps=1.001e-5),
        )

    class Block(nn.Module):
        def __init__(self, cin, filters, stride, bottleneck, projection):
            super().__init__()
            out = 4 * filters if bottleneck else filters
            if bottleneck:
                self.body = nn.Sequential(
                    conv_bn(cin, filters, 1, stride),
                    nn.ReLU(),
                    conv_bn(filters, filters, 3),
                    nn.ReLU(),
                    conv_bn(filters, out, 1),
                )
            else:
                self.body = nn.Sequential(conv_bn(cin, filters, 3, stride), nn.ReLU(), conv_bn(filters, filters, 3))
            self.shortcut = conv_bn(cin, out, 1, stride) if projection else nn.Identity()

        def forward(self, x):
            return torch.relu(self.shortcut(x) + self.body(x))

    block, blocks_per_stage = ARCHITECTURES[depth]
    bottleneck = block.__name__ == "bottleneck_block"
    layers, channels = [], 64
    for stage, blocks in enumerate(blocks_per_stage):
        filters, stride = 64 * 2**stage, 1 if stage == 0 else 2
        for index in range(blocks):
            projection = index == 0 and (bottleneck or stride != 1)
            layers.append(Block(channels, filters, stride if index == 0 else 1, bottleneck, projection))
            channels = 4 * filters if bottleneck else filters

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(1, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            self.stages = nn.Sequential(*layers)
            self.head = nn.Linear(channels, 10)

        def forward(self, x):
            x = (x / 255.0 - PIXEL_MEAN) / PIXEL_STD
            x = self.stages(self.stem(x))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def bench_torch(args, *, bf16: bool) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    images_count = args.steps * args.batch_size
    images, labels, _ = training_images(images_count)
    model = torch_resnet(args.depth).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(images[:, None].astype("float32")).contiguous(memory_format=torch.channels_last)
    y_all = torch.from_numpy(labels.astype("int64"))
    model.train()

    def window():
        for start in range(0, images_count, args.batch_size):
            x, y = x_all[start : start + args.batch_size], y_all[start : start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_function(model(x), y)
            loss.backward()
            optimizer.step()

    rates = timed_windows(window, repeats=args.repeats, images=images_count)
    return {
        "images_per_second": statistics.median(rates),
        "windows": rates,
        "precision": "bf16 autocast" if bf16 else "float32",
    }


def run_worker(args) -> None:
    if args.worker == "keras-naive":
        import tensorflow  # noqa: F401  (first, so TensorFlow's own oneDNN default applies, not the project's)
    elif args.worker == "keras-naive+onednn":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    runners = {
        "project": bench_project,
        "keras-naive": bench_keras_naive,
        "keras-naive+onednn": bench_keras_naive,
        "torch-fp32": lambda a: bench_torch(a, bf16=False),
        "torch-bf16": lambda a: bench_torch(a, bf16=True),
    }
    result = runners[args.worker](args)
    result["peak_memory_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(result))


# --- orchestration ------------------------------------------------------------------------------------------
def measure(name: str, args) -> dict:
    if name.startswith("torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"skipped": "torch not installed (pip install -r requirements-bench.txt)"}
    environment = dict(os.environ)
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)  # each worker decides (see run_worker)
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--steps",
        str(args.naive_steps if name == "keras-naive" and args.naive_steps else args.steps),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
        "--depth",
        str(args.depth),
        "--eval-images",
        str(args.eval_images),
        "--precision",
        args.precision,
        "--scratch",
        args.scratch,
    ]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"skipped": f"failed (exit {completed.returncode}): {completed.stderr.strip().splitlines()[-1:]}"}


def measure_all(names, args) -> tuple[dict, dict]:
    """Each requested row, in order; the project's rows from one run of the trainer. Also its details."""
    results, details = {}, {}
    project = None
    for name in names:
        if name in PROJECT_ROWS:
            if project is None:
                print("measuring project (train_prepared) ...", file=sys.stderr, flush=True)
                project = measure("project", args)
                if "skipped" not in project:  # with the project's training speed, for the full-dataset estimate
                    details = dict(project["details"], images_per_second=project["project"]["images_per_second"])
            row = project if "skipped" in project else dict(project[name], peak_memory_mb=project["peak_memory_mb"])
        else:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            row = measure(name, args)
        results[name] = row
    return results, details


def print_table(results: dict, details: dict, args) -> None:
    project = results.get("project", {})
    if "skipped" in project:
        project = {}
    naive_steps = f" ({args.naive_steps} for keras-naive)" if args.naive_steps else ""
    print(
        f"\nTraining images/s, ResNet-{args.depth}, batch {args.batch_size}, {args.repeats} windows of {args.steps} "
        f"batches{naive_steps} after a warm-up; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{'contender':<20} {'precision':<14} {'median':>7} {'best':>7} {'peak MB':>8} "
        f"{'project/this':>13} {'(best)':>7}  windows"
    )
    for name, result in results.items():
        if "skipped" in result:
            print(f"{name:<20} {'-':<14} {'-':>7} {'-':>7} {'-':>8} {'-':>13} {'-':>7}  skipped: {result['skipped']}")
            continue
        median, best = result["images_per_second"], max(result["windows"])
        ratio = f"{project['images_per_second'] / median:.2f}x" if project else "-"
        best_ratio = f"{max(project['windows']) / best:.2f}x" if project else "-"
        windows = ", ".join(f"{value:.1f}" for value in result["windows"])
        print(
            f"{name:<20} {result['precision']:<14} {median:>7.1f} {best:>7.1f} {result['peak_memory_mb']:>8.0f} "
            f"{ratio:>13} {best_ratio:>7}  {windows}"
        )
    print(
        "(project: the trainer's epochs, training images/s as its history records them; project-steps: the same "
        "epochs' steps alone; project-epoch: over the whole epoch, evaluation and commit included. best: the "
        "fastest window; on a shared VM whose speed swings, medians of separately timed contenders can compare "
        "different machine states: compare both.)"
    )
    if details:
        epoch_train = 60_000 / details["images_per_second"]
        overhead = details["eval_seconds"] * 10_000 / args.eval_images + details["save_seconds"]
        print(
            f"\nInference: {details['inference_images_per_second']:.0f} images/s "
            f"({args.eval_images} test images). Checkpoint {details['checkpoint_mb']:.0f} MB; committing an epoch "
            f"(checkpoint, predictions, map, history, state) took {details['save_seconds']:.1f} s."
        )
        print(
            f"Per-epoch training beyond its steps (set-up, first batch, tear-down): {details['fit_overhead_seconds']:.1f} s."
        )
        print(
            f"Per-epoch overhead on the full dataset (evaluating 10,000 test images + commit): "
            f"{overhead:.1f} s = {100 * overhead / (epoch_train + overhead):.1f}% of a {epoch_train + overhead:.0f} s epoch."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: ResNet-18, 2 small windows")
    parser.add_argument("--steps", type=int, default=12, help="batches per timed window")
    parser.add_argument(
        "--naive-steps",
        type=int,
        default=None,
        help="batches per window for keras-naive only (TensorFlow's defaults are ~8x slower on CPUs without oneDNN)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed windows after the warm-up")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50))
    parser.add_argument("--eval-images", type=int, default=10_000, help="test images the project evaluates per epoch")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help="the project's precision (auto: measured in the run, as a new run does); the others train in float32",
    )
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, help="measure only these")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.repeats, args.depth, args.eval_images = 2, 32, 2, 18, 500
    if args.worker:
        run_worker(args)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = scratch
        results, details = measure_all(args.only or CONTENDERS, args)
        print_table(results, details, args)


if __name__ == "__main__":
    main()
