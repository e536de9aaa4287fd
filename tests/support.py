"""What many tests share: the tiny runs they train (once per session, conftest's ``trained``), copying a
trained run into a test's own cache, and reading what a cache holds.

The canonical runs are the smallest that still show what the tests check: ResNet-18 on 256 training
images in batches of 64 (4 steps an epoch) and 200 evaluation images. ``FINISHED`` is "a finished run"
for every test that only needs one (its checkpoint, predictions, maps and history); ``STARTED`` is its
first epoch alone, for tests that continue, extend or damage a run. ``EXPLAINED`` has learned enough
(2 epochs of 24 steps on 768 images) for its heatmaps, neighbours and maps to mean something: the
explanation tests, the explanation page and the browser's explanation share it. What so small a model
learns varies with its data order, and Grad-CAM's "heat moves with the object" check with it: over 48
test images, pairs with evidence in both corners / share moving down-right were 13/0.92 for 512 images,
31/0.81 for 768, 36/0.69 for 896 and 30/0.37 for 1,024 (2026-12-01, this order): 768 passes with margin.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from resnet.config import TrainConfig
from resnet.core.precision_record import RECORD_NAME

# float32, not auto: these runs serve tests whose point is not precision, and on a CPU that claims bfloat16
# auto's measurement can pick either policy on a loaded machine (seen here: mixed_bfloat16 at 391 against
# float32 at 238 images/s while other work shared the cores), which changes what a run learns.
FINISHED = TrainConfig(
    epochs=2, batch_size=64, train_subset=256, eval_subset=200, depth=18, augment=False, precision="float32"
)
STARTED = FINISHED.replace(epochs=1)
EXPLAINED = FINISHED.replace(batch_size=32, train_subset=768)


def copy_run(source: Path, cache: Path) -> Path:
    """The run folder ``source`` copied into ``cache`` (same run id); returns the copy.

    Checkpoints are hard links (a ResNet-18 checkpoint is 130 MB): the product never edits a file in
    place, it writes a new one and renames it over the old, so the original stays as it was. A test that
    damages a checkpoint in place must first give its copy its own file (``own_file``).
    """
    source, target = Path(source), Path(cache) / Path(source).name
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name == ".lock" or not path.is_file():
            continue
        if path.suffix == ".keras":
            os.link(path, target / path.name)
        else:
            shutil.copy2(path, target / path.name)
    return target


def own_file(path: Path) -> Path:
    """Replace a hard link by a private copy of its contents, so editing it in place leaves the original alone."""
    path = Path(path)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def run_folders(cache: Path) -> list[str]:
    """The run folders in ``cache``, sorted (the cache also holds ``.sweeps`` and the precision record)."""
    return sorted(path.name for path in Path(cache).iterdir() if path.is_dir() and not path.name.startswith("."))


def written(cache: Path) -> list[str]:
    """Everything in ``cache`` but the precision record that conftest gives every test's cache (sorted)."""
    return sorted(path.name for path in Path(cache).iterdir() if path.name != RECORD_NAME)


def commit_epoch(store, run, row: dict, **files) -> None:
    """Write and commit one epoch as the trainer does: its files (``RunStore.write_epoch_files``: checkpoint,
    predictions, feature map), then its history row and state (``record_epoch``)."""
    store.record_epoch(run, row, store.write_epoch_files(run, int(row["epoch"]), **files))


def measurement_values(**changes) -> dict:
    """A valid entry of the precision record (``Measurement.from_dict``): the issue's Zen 5 ResNet-50
    measurement at batch 128, float32 chosen, with ``changes``."""
    values = {
        "precision": "float32",
        "speeds": {"float32": 370.9, "mixed_bfloat16": 370.6},
        "stopped": {},
        "seconds": 14.0,
        "step_seconds": 6.0,
        "setup_seconds": {"float32": 3.0, "mixed_bfloat16": 5.0},
        "budget_seconds": 8.1,
        "measured_at": "2026-11-29T12:00:00+00:00",
        "depth": 50,
        "batch_size": 128,
        "steps": 8,
    }
    return values | changes
