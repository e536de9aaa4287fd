"""``python -m resnet export-tensorboard``: every run's TensorBoard files, and a run's feature map for the Projector.

Without a run id, every undamaged run of the cache gets its event files brought up to its records
(``resnet.store.event_files.sync``: idempotent, runs trained before event files existed get them; a
damaged run is named and skipped). With a run id, that run only; ``--projector`` also writes the Projector
files of ``--epoch`` (default: its last) (``resnet.store.projector.export``), computing the features from
the checkpoint only when they are not on disk. The last line is the command that opens them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from data import quiet
from data.fashion_mnist import load_fashion_mnist
from resnet.core import explain
from resnet.store import artefacts, event_files, projector
from resnet.store.runs import DamagedRun, RunError, RunStore
from resnet.wording import tensorboard_command


def command(args, store: RunStore, say: Callable[[str], None] = print) -> int:
    """The command with its parsed flags (``run_id``, ``epoch``, ``projector``, ``dataset_dir``)."""
    return export_tensorboard(
        store, args.run_id, epoch=args.epoch, with_projector=args.projector, dataset_dir=args.dataset_dir, say=say
    )


def export_tensorboard(
    store: RunStore,
    run_id: str | None = None,
    *,
    epoch: int | None = None,
    with_projector: bool = False,
    dataset_dir=None,
    say: Callable[[str], None] = print,
) -> int:
    """Write the event files (and, asked, the Projector files); 0 if every run asked for was written, else 2."""
    if run_id is None and (with_projector or epoch is not None):
        raise RunError("--projector and --epoch need a run id (the Projector shows one run's feature map)")
    if epoch is not None and not with_projector:
        raise RunError("--epoch is the epoch --projector exports: add --projector (event files cover every epoch)")
    runs = [store.load(run_id)] if run_id else store.list_runs()
    failed = 0
    for run in runs:
        if run.damaged:
            say(f"{run.run_id}: skipped, damaged ({run.problem})")
            failed += run_id is not None
            continue
        try:
            say(f"{run.run_id}: event files {event_files.sync(store, run).text()}")
            if with_projector:
                say(f"{run.run_id}: {_projector_text(store, run, epoch, dataset_dir)}")
        except (RunError, DamagedRun) as error:  # their messages name the run
            say(str(error))
            failed += 1
    if not runs:
        say(f"no runs in {store.root}")
    say(f"open them with: {tensorboard_command(store.root)}")
    return 2 if failed else 0


def _projector_text(store: RunStore, run, epoch: int | None, dataset_dir) -> str:
    """Export the Projector files of ``epoch``; the sentence that says what was written."""
    dataset = load_fashion_mnist(dataset_dir)

    def compute(current, indices):  # ``current``: the run as the export read it
        with quiet.captured("loading the checkpoint"):  # TensorFlow's start-up chatter (data/quiet.py)
            model = artefacts.load_model(store, current)
        return explain.penultimate_features(model, dataset.test_images[indices])

    started = time.perf_counter()
    exported = projector.export(
        store, run, epoch, compute=compute, test_images=dataset.test_images, test_labels=dataset.test_labels
    )
    source = "computed from the checkpoint" if exported.computed else "features already on disk"
    return (
        f"Projector files of epoch {exported.epoch} ({exported.images:,} test images x {exported.dimensions} "
        f"features, {source}) in {exported.folder} ({time.perf_counter() - started:.1f} s)"
    )
