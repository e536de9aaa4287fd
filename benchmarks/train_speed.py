"""Training speed of the project's trainer beside its peers, measured in one run, printed side by side.

    .venv/bin/python benchmarks/train_speed.py              # full: ResNet-50, batch 128 (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/train_speed.py --quick      # smoke run: ResNet-18, tiny windows (about 2 minutes)
    .venv/bin/pip install -r requirements-bench.txt         # adds PyTorch (CPU) for the PyTorch rows

Each contender runs in its own subprocess (so peak memory is its own and TensorFlow's start-up settings
apply), trains the same architecture on the same images, discards a warm-up window (tracing, caches),
then reports the median training images/s over ``--repeats`` timed windows of ``--steps`` batches:

- ``project``: the trainer exactly as the app uses it: its tf.data pipeline (augmenting if the default configuration does), its precision choice (``auto``), its
  per-batch callback (learning rate, progress, cancel check); per-epoch evaluation and checkpointing
  are timed separately and reported as overhead;
- ``keras-naive``: the same model, ``model.fit`` on NumPy arrays, float32,
  Keras/TensorFlow defaults (TensorFlow's own oneDNN default: off on AMD CPUs);
- ``keras-naive+onednn``: the same with oneDNN switched on, to separate that one setting from the rest;
- ``torch-fp32`` / ``torch-bf16``: PyTorch eager, identical architecture, channels_last, Adam,
  float32 and bfloat16 autocast (skipped when torch is not installed).
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
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

CONTENDERS = ("project", "keras-naive", "keras-naive+onednn", "torch-fp32", "torch-bf16")


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
def bench_project(args) -> dict:
    import numpy as np

    from data.pipeline import train_dataset
    from resnet.config import TrainConfig
    from resnet.hardware import resolve_precision
    from resnet.runs import atomic_write
    from resnet.trainer import ProgressCallback, build_compiled_model, evaluate

    images_count = args.steps * args.batch_size
    images, labels, dataset = training_images(images_count)
    config = TrainConfig(depth=args.depth, batch_size=args.batch_size, train_subset=max(100, images_count))
    precision = resolve_precision("auto")
    model = build_compiled_model(config, precision)
    epoch = [0]

    def window():
        epoch[0] += 1
        callback = ProgressCallback(
            threading.Event(),
            lambda progress: None,
            epoch=epoch[0],
            target_epochs=99,
            batches=args.steps,
            batch_size=args.batch_size,
            images=images_count,
            learning_rate_for_batch=lambda batch: config.learning_rate,
        )
        data = train_dataset(images, labels, batch_size=args.batch_size, augment=config.augment, seed=0, epoch=epoch[0])
        model.fit(data, epochs=epoch[0], initial_epoch=epoch[0] - 1, verbose=0, callbacks=[callback], shuffle=False)

    rates = timed_windows(window, repeats=args.repeats, images=images_count)
    eval_indices = np.arange(args.eval_images)
    evaluate(model, dataset, eval_indices)  # warm-up
    started = time.perf_counter()
    probabilities, _, _ = evaluate(model, dataset, eval_indices)
    eval_seconds = time.perf_counter() - started
    started = time.perf_counter()
    checkpoint = Path(args.scratch) / "checkpoint.keras"
    atomic_write(checkpoint, model.save)
    np.savez(Path(args.scratch) / "predictions.npz", probabilities=probabilities.astype(np.float16))
    save_seconds = time.perf_counter() - started
    return {
        "images_per_second": statistics.median(rates),
        "windows": rates,
        "precision": precision,
        "inference_images_per_second": args.eval_images / eval_seconds,
        "eval_seconds": eval_seconds,
        "save_seconds": save_seconds,
        "checkpoint_mb": checkpoint.stat().st_size / 2**20,
    }


def bench_keras_naive(args) -> dict:
    import keras

    from resnet.model import build_resnet

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
    """The same architecture as resnet/model.py, in PyTorch (stride on the first 1x1 conv, as Keras does)."""
    import torch
    from torch import nn

    from resnet.model import ARCHITECTURES, PIXEL_MEAN, PIXEL_STD

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
        "--scratch",
        args.scratch,
    ]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"skipped": f"failed (exit {completed.returncode}): {completed.stderr.strip().splitlines()[-1:]}"}


def print_table(results: dict, args) -> None:
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
        "(best: the fastest window. On a shared VM whose speed swings between two levels, the medians of "
        "separately timed contenders can compare different machine states; compare both.)"
    )
    if project:
        details = project
        epoch_train = 60_000 / project["images_per_second"]
        overhead = details["eval_seconds"] * 10_000 / args.eval_images + details["save_seconds"]
        print(
            f"\nInference: {details['inference_images_per_second']:.0f} images/s "
            f"({args.eval_images} test images). Checkpoint {details['checkpoint_mb']:.0f} MB saved in "
            f"{details['save_seconds']:.1f} s."
        )
        print(
            f"Per-epoch overhead on the full dataset (evaluating 10,000 test images + checkpoint + predictions): "
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
    parser.add_argument("--eval-images", type=int, default=10_000)
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
        results = {}
        for name in args.only or CONTENDERS:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results[name] = measure(name, args)
        print_table(results, args)


if __name__ == "__main__":
    main()
