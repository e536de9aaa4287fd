"""Headless command line: train into the run cache, list, show and delete runs.

    python -m resnet train --epochs 20 --batch-size 128 --subset 6000
    python -m resnet train --run-id RUN --epochs 30      # extend RUN to 30 epochs
    python -m resnet runs
    python -m resnet show RUN
    python -m resnet delete RUN

Ctrl-C during training stops after the current batch and keeps every completed epoch (press it twice
to quit at once). The app shows every run written here.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from data.fashion_mnist import DatasetError
from resnet.config import ConfigError, TrainConfig, param_specs, parse_bool
from resnet.runs import RunError, RunStore


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, config_class: type = TrainConfig) -> None:
    """One flag per declared config field (``resnet.config.param``), with its default, rule and help."""
    for spec in param_specs(config_class):
        kind, limits = {"type": spec.type}, ""
        if spec.choices is not None:
            kind["choices"] = spec.choices
        elif spec.type is bool:
            kind = {"type": _bool, "metavar": "true|false"}
        else:
            limits = f"{spec.limits[0]}-{spec.limits[1]}, "
        parser.add_argument(
            spec.flag,
            dest=spec.name,
            default=spec.default,
            help=f"{spec.help} ({limits}default {spec.default})",
            **kind,
        )


def config_from_flags(args: argparse.Namespace, config_class: type = TrainConfig):
    """The validated config the flags of ``add_config_flags`` describe."""
    return config_class(**{spec.name: getattr(args, spec.name) for spec in param_specs(config_class)}).validate()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m resnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", help="run cache folder (default: $RESNET_CACHE_DIR or cache/)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a run (or continue one) and print the per-epoch table")
    add_config_flags(train)
    train.add_argument("--run-id", help="continue this run to --epochs (its other settings are reused)")
    train.add_argument("--new", action="store_true", help="start a new run even if the same configuration exists")
    train.add_argument(
        "--dataset-dir",
        help="folder with the Fashion-MNIST files (default: $FASHION_MNIST_DIR, the Keras cache, or download)",
    )
    commands.add_parser("runs", help="list cached runs")
    show = commands.add_parser("show", help="print one run's configuration and per-epoch table")
    show.add_argument("run_id")
    delete = commands.add_parser("delete", help="delete one run")
    delete.add_argument("run_id")
    return parser


def format_table(history) -> str:
    """The seed's results table: epoch, train accuracy, test accuracy, seconds."""
    lines = [
        f"{'epoch':>5}  {'train acc':>9}  {'test acc':>8}  {'test loss':>9}  {'seconds':>8}  {'total s':>8}  {'img/s':>7}"
    ]
    for row in history.itertuples():
        lines.append(
            f"{row.epoch:>5}  {row.train_accuracy:>9.4f}  {row.test_accuracy:>8.4f}  {row.test_loss:>9.4f}  "
            f"{row.epoch_seconds:>8.1f}  {row.cumulative_seconds:>8.1f}  {row.images_per_second:>7.1f}"
        )
    return "\n".join(lines)


def _progress_line(snapshot) -> str:
    width = 30
    filled = int(width * snapshot.epoch_fraction)
    eta = snapshot.epoch_eta_seconds
    detail = (
        f"batch {snapshot.batch}/{snapshot.batches_per_epoch}  {snapshot.images_per_second:6.1f} img/s  ETA {eta:5.0f} s"
        if snapshot.phase == "training" and eta is not None
        else snapshot.phase
    )
    return f"\repoch {snapshot.epoch}/{snapshot.target_epochs} [{'#' * filled}{'.' * (width - filled)}] {detail:<48}"


def command_train(args, store: RunStore) -> int:
    config = config_from_flags(args)
    if args.run_id:  # continuing: the run's own settings, with the new epoch count
        config = store.load(args.run_id).config or config
        config = config.replace(epochs=args.epochs)

    from resnet.jobs import JobManager  # imports TensorFlow: only once the request is valid

    # In this process (not a child): the CLI process itself ends with the run.
    manager = JobManager(store, dataset_dir=args.dataset_dir, isolated=False)
    run_id = manager.start(config, run_id=args.run_id, resume=not args.new)
    snapshot = manager.snapshot()
    print(
        f"run {run_id}: epochs {snapshot.first_epoch}-{snapshot.target_epochs} -> {store.path_for(run_id)}",
        file=sys.stderr,
    )
    if snapshot.plan is not None:  # what the app's sidebar would say of the same request
        print(snapshot.plan.started_text(run_id), file=sys.stderr)

    interrupts = 0

    def on_interrupt(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        manager.stop()
        print(
            "\nstopping after the current batch (completed epochs are kept; Ctrl-C again to quit now)", file=sys.stderr
        )

    previous = signal.signal(signal.SIGINT, on_interrupt)
    last_logged = None
    try:
        while not manager.wait(timeout=0.5):
            snapshot = manager.snapshot()
            if sys.stderr.isatty():
                print(_progress_line(snapshot), end="", file=sys.stderr, flush=True)
            else:  # a log file: one line per phase change and per tenth of an epoch
                mark = (snapshot.epoch, snapshot.phase, int(10 * snapshot.epoch_fraction))
                if mark != last_logged:
                    print(_progress_line(snapshot).strip(), file=sys.stderr, flush=True)
                    last_logged = mark
    finally:
        signal.signal(signal.SIGINT, previous)
    print(file=sys.stderr)
    snapshot = manager.snapshot()
    run = store.load(run_id)
    if run.history is not None and not run.history.empty:
        print(format_table(run.history))
    print(f"{snapshot.state}: {snapshot.message}" + (f" ({snapshot.error})" if snapshot.error else ""))
    return 0 if snapshot.state in ("complete", "stopped") else 1


def command_runs(store: RunStore) -> int:
    runs = store.list_runs()
    if not runs:
        print(f"no runs in {store.root}")
        return 0
    print(f"{'run id':<40}  {'status':<11}  {'epochs':>7}  {'best test':>9}  {'time':>8}  note")
    for run in runs:
        row = run.summary()
        best = f"{row['best_test_accuracy']:.4f}" if row["best_test_accuracy"] is not None else "-"
        note = run.problem if run.status == "damaged" else ""
        print(
            f"{row['run_id']:<40}  {row['status']:<11}  {row['epochs_done']:>3}/{row['target_epochs']:<3}  "
            f"{best:>9}  {row['total_seconds']:>7.0f}s  {note}"
        )
    return 0


def command_show(args, store: RunStore) -> int:
    run = store.load(args.run_id)
    print(f"run {run.run_id}: {run.status}" + (f" ({run.problem})" if run.problem else f" - {run.message}"))
    if run.config:  # epochs: the run's current target (raised by every extension), not the first plan
        settings = run.config.to_dict() | {"epochs": run.target_epochs}
        print("  " + "  ".join(f"{key}={value}" for key, value in settings.items()))
    if run.history is not None and not run.history.empty:
        print(format_table(run.history))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = RunStore(args.cache_dir)
    started = time.time()
    try:
        if args.command == "train":
            return command_train(args, store)
        if args.command == "runs":
            return command_runs(store)
        if args.command == "show":
            return command_show(args, store)
        store.delete(args.run_id)
        print(f"deleted run {args.run_id}")
        return 0
    except (ConfigError, DatasetError, RunError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.time() - started:.0f} s; the last completed epoch is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
