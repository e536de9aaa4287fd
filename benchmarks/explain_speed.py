"""How fast the "explain a mistake" view can answer, on a ResNet-50 checkpoint (resnet/core/explain.py).

    .venv/bin/python benchmarks/explain_speed.py                 # 10,000 evaluation and 6,000 bank images
    .venv/bin/python benchmarks/explain_speed.py --features out.npy   # also save the 10,000 features

Saves a freshly built (untrained: only the speed is measured) ResNet-50 as a ``.keras`` checkpoint in a
temporary folder, then times, in one process:

- loading the checkpoint (``keras.models.load_model(..., safe_mode=True)``, as ``resnet.store.artefacts.load_model``);
- the first Grad-CAM (building the sub-model and tracing its ``tf.function``) and later ones (median
  of 10 images, two classes each: the true and the predicted class, as the view asks);
- penultimate features of the evaluation images (``penultimate_features``: a ``tf.function`` over
  batches of 256) and, for comparison, ``predict`` on the same sub-model;
- the bank of ``BANK_SIZE`` training images (what the first explanation of a run computes);
- the PCA projection of 10,000 x 2,048 features as the trainer does after every epoch (``project_2d``),
  and the exact SVD it avoids;
- a nearest-neighbour query in the 6,000-image float16 bank: the first (which converts the read-only
  bank to float32 once) and later ones (median of 100).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_text() -> str:
    """The CPU's model name, core count and the vector flags that matter for TensorFlow."""
    name, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown CPU":
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
    shown = [flag for flag in wanted if flag in flags]
    return f"{name}, {len(os.sched_getaffinity(0))} cores, flags {' '.join(shown) or 'none of ' + ' '.join(wanted)}"


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--images", type=int, default=10_000, help="evaluation images (features, PCA)")
    parser.add_argument("--features", help="save the evaluation images' features to this .npy file")
    args = parser.parse_args()

    import keras
    import numpy as np

    from data.fashion_mnist import load_fashion_mnist
    from data.pipeline import eval_dataset
    from resnet.config import TrainConfig
    from resnet.core import explain
    from resnet.core.model import build_compiled_model
    from resnet.store.artefacts import BANK_SIZE
    from resnet.training.trainer import EVAL_BATCH_SIZE

    dataset = load_fashion_mnist()
    images, labels = dataset.test_images[: args.images], dataset.test_labels[: args.images]
    rows: list[tuple[str, str]] = []

    def row(what: str, value: str) -> None:
        rows.append((what, value))
        print(f"  {what}: {value}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint-0001.keras"
        build_compiled_model(TrainConfig(depth=args.depth), "float32").save(path)
        keras.backend.clear_session()
        seconds, model = timed(lambda: keras.models.load_model(path, safe_mode=True))
        row(f"load a ResNet-{args.depth} checkpoint ({path.stat().st_size / 1e6:.0f} MB)", f"{seconds:.2f} s")

    seconds, _ = timed(lambda: explain.grad_cam(model, images[0], [int(labels[0]), (int(labels[0]) + 1) % 10]))
    row("first Grad-CAM (sub-model built, tf.function traced)", f"{seconds:.2f} s")
    later = [
        timed(lambda index=index: explain.grad_cam(model, images[index], [int(labels[index]), 3]))[0]
        for index in range(1, 11)
    ]
    row("later Grad-CAM, 2 classes (median of 10)", f"{statistics.median(later) * 1000:.0f} ms")
    later_stage = [
        timed(lambda index=index: explain.grad_cam(model, images[index], [1, 3], stage="conv2"))[0]
        for index in range(1, 11)
    ]
    row(
        "later Grad-CAM at conv2 (median of 10, after its own first)",
        f"{statistics.median(later_stage[1:]) * 1000:.0f} ms",
    )

    seconds, features = timed(lambda: explain.penultimate_features(model, images))
    row(
        f"penultimate features of {len(images):,} images (tf.function, batch 256)",
        f"{seconds:.1f} s = {len(images) / seconds:.0f} img/s",
    )
    if args.features:
        np.save(args.features, features)
    sub_model = explain._cached(model, "features-predict", lambda: explain._sub_model(model, [explain.FEATURES_LAYER]))
    pixels = images[..., np.newaxis].astype(np.float32)
    sub_model.predict(pixels[:256], batch_size=256, verbose=0)  # warm-up (tracing)
    seconds, _ = timed(lambda: sub_model.predict(pixels, batch_size=256, verbose=0))
    row("  the same with sub_model.predict (after its warm-up)", f"{seconds:.1f} s = {len(images) / seconds:.0f} img/s")
    data = eval_dataset(images, labels, batch_size=EVAL_BATCH_SIZE)
    explain.predict_with_features(model, data)  # warm-up
    seconds, _ = timed(lambda: explain.predict_with_features(model, data))
    plain = model.predict(data, verbose=0)  # warm-up
    plain_seconds, _ = timed(lambda: model.predict(data, verbose=0))
    row("evaluation pass with features vs without (the trainer's)", f"{seconds:.1f} s vs {plain_seconds:.1f} s")
    del plain

    bank_images = dataset.train_images[:BANK_SIZE]
    seconds, bank = timed(
        lambda: explain.normalise_rows(explain.penultimate_features(model, bank_images)).astype(np.float16)
    )
    row(f"the bank: features of {BANK_SIZE:,} training images", f"{seconds:.1f} s")

    seconds, projection = timed(lambda: explain.project_2d(features))
    again = [timed(lambda: explain.project_2d(features))[0] for _ in range(2)]
    shape = f"{features.shape[0]:,}x{features.shape[1]:,}"
    row(
        f"PCA of {shape} (project_2d, randomized)",
        f"{min([seconds, *again]):.2f} s (of {seconds:.2f}, {again[0]:.2f}, {again[1]:.2f})",
    )

    def exact():
        centred = features - features.mean(axis=0)
        return np.linalg.svd(centred, full_matrices=False)

    seconds, (_, singular, _) = timed(exact)
    total = (singular.astype(np.float64) ** 2).sum()
    exact_ratios = singular[:2].astype(np.float64) ** 2 / total
    row(f"  exact SVD of the same {shape} (float32)", f"{seconds:.2f} s")
    row(
        "  explained variance, randomized vs exact",
        f"{projection.explained[0]:.4f}, {projection.explained[1]:.4f} vs {exact_ratios[0]:.4f}, {exact_ratios[1]:.4f}",
    )

    bank.flags.writeable = False  # as resnet.store.artefacts.feature_bank hands it out: converted to float32 once
    queries = features[:101]
    seconds, _ = timed(lambda: explain.nearest_neighbours(bank, queries[0], 8))
    row("first nearest-neighbour query (bank converted to float32)", f"{seconds * 1000:.0f} ms")
    times = [timed(lambda query=query: explain.nearest_neighbours(bank, query, 8))[0] for query in queries[1:]]
    row(
        f"nearest-neighbour query, k=8, in {len(bank):,} x {bank.shape[1]:,} float16 (median of 100)",
        f"{statistics.median(times) * 1000:.1f} ms",
    )

    print()
    print(f"explain speed, ResNet-{args.depth}, {datetime.date.today().isoformat()}, {cpu_text()}")
    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")


if __name__ == "__main__":
    main()
