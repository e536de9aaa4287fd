"""Headless command line: train into the run cache, list, show and delete runs.

    python -m resnet train --epochs 20 --batch-size 128 --subset 6000
    python -m resnet train --run-id RUN --epochs 30      # extend RUN to 30 epochs
    python -m resnet train --epochs auto [--max-epochs 100] [--returns-threshold 0.2]  # until returns diminish
    python -m resnet budget-curve --budgets 10,20,60,100,200 [training flags]  # one trunk, a cooldown per budget
    python -m resnet runs
    python -m resnet show RUN
    python -m resnet delete RUN
    python -m resnet sweep --name NAME --epochs 5,10,20 --batch-size 64,128 [--ray [ADDRESS]]
    python -m resnet sweeps
    python -m resnet export-tensorboard [RUN [--epoch N] [--projector]]  # then: tensorboard --logdir CACHE

Ctrl-C during training stops after the current batch and keeps every completed epoch (press it twice
to quit at once). The app shows every run written here. ``--verbose`` (train, sweep) also shows what
TensorFlow prints while it starts (hidden by default: data/quiet.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from data import quiet
from data.fashion_mnist import DatasetError
from resnet.config import AUTO, DEFAULT_MAX_EPOCHS, RECIPES, ConfigError, TrainConfig, param_specs, parse_bool
from resnet.core.hardware import training_placement, training_text
from resnet.store.runs import RunError, RunStore
from resnet.sweeps.budget_curve import budget_table, compute_text, curve_name, curve_report, run_budget_curve
from resnet.sweeps.budget_on_ray import run_budget_curve_on_ray  # Ray itself: only in import_ray
from resnet.sweeps.grid import MAX_TRIALS, PRESETS, parse_budgets
from resnet.sweeps.local import run_sweep
from resnet.sweeps.on_ray import connect, import_ray, run_sweep_on_ray  # Ray itself: only in import_ray
from resnet.sweeps.record import SweepStore, requested_sweep
from resnet.sweeps.report import (
    SweepPrinter,
    budget_sentence,
    estimate_text,
    format_history_table,
    format_sweep_table,
    log_epochs,
    pareto_front,
    progress_line,
    sweep_table,
)
from resnet.sweeps.trials import first_failure, sweep_progress
from resnet.training.jobs import JobManager


def _bool(text: str) -> bool:
    try:
        return parse_bool(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, config_class: type = TrainConfig, *, leave_out=()) -> None:
    """One flag per declared config field (``resnet.config.param``) but ``leave_out``, with its default, rule
    and help; a field left out keeps its default."""
    for spec in (spec for spec in param_specs(config_class) if spec.name not in leave_out):
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
            help=f"{spec.help} ({limits}default {spec.default})".replace("%", "%%"),  # argparse formats it
            **kind,
        )


def epochs_flag(text: str):
    """``--epochs``: a whole number, or ``auto`` (until returns diminish)."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs or 'auto', got {text!r}") from None


def add_auto_flags(parser: argparse.ArgumentParser) -> None:
    """``--epochs auto`` and ``--max-epochs`` on a parser with the config flags."""
    for action in parser._actions:
        if action.dest == "epochs":
            action.type = epochs_flag
            action.help = "a whole number, or auto: until returns diminish on a validation split. " + action.help
    parser.add_argument(
        "--max-epochs",
        type=int,
        help=f"with --epochs auto: the most epochs the run may take, cooldown included (default {DEFAULT_MAX_EPOCHS})",
    )
    # None: so that --epochs auto (and --run-id) can tell what was asked for from the defaults.
    parser.set_defaults(epochs=None, schedule=None, auto_resolved=False)


def resolve_auto_flags(args: argparse.Namespace) -> None:
    """Turn ``--epochs auto [--max-epochs N]`` into the config fields (``epochs_mode``, ``epochs``, ``schedule``)."""
    if getattr(args, "auto_resolved", True):  # no auto flags on this parser, or done already
        return
    args.auto_resolved = True
    auto = args.epochs == AUTO
    if args.max_epochs is not None and not auto:
        raise ConfigError("--max-epochs goes with --epochs auto (a fixed run trains --epochs epochs)")
    if auto and args.schedule not in (None, "wsd"):
        raise ConfigError(
            f"--epochs auto trains warm-up, a stable phase, then a cooldown (schedule wsd); it cannot follow "
            f"--schedule {args.schedule}, whose shape needs the length in advance: leave --schedule out"
        )
    if auto:
        args.epochs_mode, args.epochs = AUTO, args.max_epochs or DEFAULT_MAX_EPOCHS
        args.schedule = "wsd"
    else:
        args.epochs = TrainConfig().epochs if args.epochs is None else args.epochs
        args.schedule = TrainConfig().schedule if args.schedule is None else args.schedule


def config_from_flags(args: argparse.Namespace, config_class: type = TrainConfig):
    """The validated config the flags of ``add_config_flags`` describe."""
    resolve_auto_flags(args)
    values = {spec.name: getattr(args, spec.name, spec.default) for spec in param_specs(config_class)}
    return config_class(**values).validate()


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show what TensorFlow prints while it starts (CUDA probing, oneDNN and CPU notes); "
        "the same as RESNET_VERBOSE=1",
    )


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with a ``recipe`` its settings are the train flags' defaults (flags given still win)."""
    parser = argparse.ArgumentParser(prog="python -m resnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", help="run cache folder (default: $RESNET_CACHE_DIR or cache/)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a run (or continue one) and print the per-epoch table")
    add_config_flags(train, leave_out=("epochs_mode",))  # --epochs auto; a trunk is budget-curve's own
    add_auto_flags(train)
    train.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help="start from named settings; flags given as well override them. "
        + " ".join(f"{name}: {recipe.description}" for name, recipe in RECIPES.items()),
    )
    if recipe is not None:
        train.set_defaults(**RECIPES[recipe].settings)
    train.add_argument("--run-id", help="continue this run to --epochs (its other settings are reused)")
    train.add_argument("--new", action="store_true", help="start a new run even if the same configuration exists")
    train.add_argument(
        "--dataset-dir",
        help="folder with the Fashion-MNIST files (default: $FASHION_MNIST_DIR, the Keras cache, or download)",
    )
    add_verbose_flag(train)
    commands.add_parser("runs", help="list cached runs")
    show = commands.add_parser("show", help="print one run's configuration and per-epoch table")
    show.add_argument("run_id")
    delete = commands.add_parser("delete", help="delete one run")
    delete.add_argument("run_id")
    export = commands.add_parser("export-tensorboard", help="write TensorBoard files for every run (or RUN)")
    export.add_argument("run_id", nargs="?")
    export.add_argument("--epoch", type=int, help="the epoch --projector exports (default: the last)")
    export.add_argument("--projector", action="store_true", help="also the feature map for the Projector")
    export.add_argument("--dataset-dir", help="folder with the Fashion-MNIST files (for --projector's images)")
    add_sweep_commands(commands)
    add_budget_curve_command(commands)
    return parser


def command_train(args, store: RunStore) -> int:
    own = store.load(args.run_id).config if args.run_id else None  # continuing: the run's own settings
    if own is not None and own.epochs_mode == AUTO and args.epochs in (AUTO, None):
        args.epochs, args.max_epochs = AUTO, args.max_epochs or own.epochs  # its maximum, unless raised
    elif own is not None and args.epochs == AUTO:
        raise ConfigError(
            f"run {args.run_id} trains a fixed number of epochs; --epochs auto starts a new run (leave out "
            "--run-id), or continue this one with --epochs N"
        )
    resolve_auto_flags(args)
    config = config_from_flags(args)
    if args.run_id:
        config = (own or config).replace(epochs=args.epochs, gpus=args.gpus)  # where to train may change, not what

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

    logged = snapshot.first_epoch - 1  # epochs already printed (a log prints each committed epoch once)
    # The handler only sets an event: stop() takes the manager's lock, which this thread may hold when
    # the signal arrives (in snapshot()); the loop below asks for the stop within half a second.
    stop_asked, stopping = threading.Event(), False
    with _StopOnInterrupt(stop_asked.set):
        while not manager.wait(timeout=0.5):
            if stop_asked.is_set() and not stopping:
                manager.stop()
                stopping = True
            snapshot = manager.snapshot()
            if sys.stderr.isatty():
                print(progress_line(snapshot), end="", file=sys.stderr, flush=True)
            elif snapshot.epoch - 1 > logged:  # a later epoch began: the one before it is committed
                logged = log_epochs(store.find(run_id), logged, snapshot.target_epochs, sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    else:
        log_epochs(store.find(run_id), logged, snapshot.target_epochs, sys.stderr)
    snapshot = manager.snapshot()
    run = store.load(run_id)
    if run.history is not None and not run.history.empty:
        print(format_history_table(run.history))
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
        if run.config.epochs_mode == AUTO:
            settings["epochs"] = f"auto (at most {run.config.epochs})"
        print("  " + "  ".join(f"{key}={value}" for key, value in settings.items()))
    print(f"  length: {run.length_text()}")
    if run.history is not None and not run.history.empty:
        print(format_history_table(run.history))
    return 0


# --- sweeps (resnet/sweeps/; on Ray: resnet/sweeps/on_ray.py) ------------------------------------------------
def add_sweep_commands(commands) -> None:
    """``sweep`` (train a grid of runs) and ``sweeps`` (list them); each config field takes a comma list."""
    sweep = commands.add_parser(
        "sweep",
        help="train a grid of runs (a sweep), one after another here or as Ray tasks",
        description=f"Every parameter takes comma-separated values; their combinations (at most {MAX_TRIALS}) "
        "are trained as ordinary runs, in order. Running a sweep again continues it: finished trials are "
        "skipped, a partial one continues. Ctrl-C stops after the current batch (completed epochs kept).",
    )
    sweep.add_argument("--name", required=True, help="the sweep's name (its record: <cache>/.sweeps/NAME.json)")
    sweep.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="seed-study: epochs 10,20,60,100,200 at batch size 128 (other flags override it)",
    )
    for spec in param_specs(TrainConfig):  # the train flags, each taking a comma list
        if spec.choices is not None:
            allowed = ",".join(map(str, spec.choices))
        else:
            allowed = "true,false" if spec.type is bool else f"{spec.limits[0]}-{spec.limits[1]}"
        sweep.add_argument(
            spec.flag,
            dest=spec.name,
            metavar="V1,V2",
            help=f"{spec.help} ({allowed}; default {spec.default})".replace("%", "%%"),
        )
    add_ray_flags(sweep)
    sweep.add_argument("--dataset-dir", help="folder with the Fashion-MNIST files (as for train)")
    add_verbose_flag(sweep)
    commands.add_parser("sweeps", help="list sweeps with their progress")


def add_ray_flags(parser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the trials as Ray tasks: on a local Ray started here, or on the cluster at ADDRESS "
        "(needs: pip install -r requirements-cluster.txt)",
    )
    parser.add_argument(
        "--cpus-per-trial",
        type=int,
        default=1,
        help="with --ray: CPUs each trial asks for; TensorFlow uses that many threads (default 1)",
    )


def add_budget_curve_command(commands) -> None:
    curve = commands.add_parser(
        "budget-curve",
        help="one stable-phase run with a cooldown branch at every budget: the seed study at a fraction of its cost",
        description="Train one warmup-stable run (the trunk); at each budget B branch off a run that cools down over "
        "a fraction of B (resnet/sweeps/budget_curve.py). Rerun it to continue; Ctrl-C stops after the batch.",
    )
    curve.add_argument("--budgets", required=True, help="increasing whole numbers of epochs, e.g. 10,20,60,100,200")
    curve.add_argument("--name", help="the curve's record name (default: from its budgets and settings)")
    add_config_flags(curve, leave_out=("epochs", "epochs_mode", "schedule"))  # the curve sets them
    curve.add_argument("--dataset-dir", help="folder with the Fashion-MNIST files (as for train)")
    add_ray_flags(curve)
    add_verbose_flag(curve)


def command_budget_curve(args, store: RunStore) -> int:
    budgets = parse_budgets(args.budgets)
    args.schedule, args.epochs = "wsd", budgets[-1]
    base = config_from_flags(args)
    name = args.name or curve_name(base, budgets)
    sweeps = SweepStore(store.root)
    sweep = requested_sweep(sweeps, name, {"epochs": ",".join(map(str, budgets))}, base=base, branches=True)
    if args.ray is not None:
        import_ray()  # the optional extra: say how to install it before anything is written
    print(f"budget curve {name}: budgets {', '.join(map(str, budgets))}", file=sys.stderr)
    print(compute_text(sweep, budget_table(sweep, []), None), file=sys.stderr)
    stop = threading.Event()
    with sweeps.locked(name), _StopOnInterrupt(stop.set):
        if args.ray is None:
            results = run_budget_curve(sweep, store, cancel=stop, report=SweepPrinter(), dataset_dir=args.dataset_dir)
        else:
            results = _sweep_on_ray(args, sweep, store, cancel=stop, report=SweepPrinter())
    sweep = sweeps.load(name)
    print(curve_report(sweep, store.list_runs()))
    failed = first_failure(results)
    if failed is not None:
        print(f"budget {sweep.budgets[failed.index]}: {failed.outcome}: {failed.message}", file=sys.stderr)
        return 1
    return 0


def command_sweep(args, store: RunStore) -> int:
    texts = {spec.name: getattr(args, spec.name) for spec in param_specs(TrainConfig)}
    sweeps = SweepStore(store.root)
    sweep = requested_sweep(sweeps, args.name, texts, preset=args.preset)  # checked: nothing written yet
    if args.ray is not None:
        import_ray()  # the optional extra: say how to install it before anything is written
    runs = store.list_runs()
    done, total = sweep_progress(sweep, runs)
    print(f"sweep {sweep.name}: {total} trials ({sweep.describe_grid()}), {done} done", file=sys.stderr)
    if args.ray is None or args.preset:
        print(estimate_text(sweep, runs, store.root), file=sys.stderr)
    if args.ray is None and sweep.trials:  # trained here: say on what, once
        print(training_text(training_placement(sweep.trials[0].config.gpus)), file=sys.stderr)
    cancel = threading.Event()
    printer = SweepPrinter()
    with sweeps.locked(sweep.name), _StopOnInterrupt(cancel.set):
        if args.ray is None:
            results = run_sweep(sweep, store, cancel=cancel, report=printer, dataset_dir=args.dataset_dir)
        else:
            results = _sweep_on_ray(args, sweep, store, cancel=cancel, report=printer)
    table = sweep_table(sweeps.load(sweep.name), store.list_runs())
    print(format_sweep_table(table))
    front = pareto_front(table)
    if not front.empty:
        print(
            "Pareto front (no other trial both at least as fast and as accurate): trials "
            + ", ".join(map(str, front["trial"]))
        )
    print(budget_sentence(table))
    if cancel.is_set():
        print(f"stopped: run `python -m resnet sweep --name {sweep.name}` again to continue", file=sys.stderr)
    failed = first_failure(results)
    if failed is not None:
        print(f"trial {failed.index + 1} {failed.outcome}: {failed.message}", file=sys.stderr)
    return 1 if failed is not None else 0


def _sweep_on_ray(args, sweep, store, *, cancel, report):
    started = connect(None if args.ray == "local" else args.ray)
    run = run_budget_curve_on_ray if sweep.branches else run_sweep_on_ray
    try:
        return run(
            sweep, store, cpus_per_trial=args.cpus_per_trial, cancel=cancel, report=report, dataset_dir=args.dataset_dir
        )
    finally:
        if started:
            import_ray().shutdown()


class _StopOnInterrupt:
    """While a training or a sweep runs in the main thread: the first Ctrl-C calls ``stop`` (after the
    current batch, completed epochs kept), the second quits at once."""

    def __init__(self, stop):
        self.stop, self.asked, self.previous = stop, False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def _interrupt(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        self.stop()
        print(
            "\nstopping after the current batch (completed epochs are kept; Ctrl-C again to quit now)", file=sys.stderr
        )

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def command_sweeps(store: RunStore) -> int:
    sweeps = SweepStore(store.root)
    listings = sweeps.list_sweeps()
    if not listings:
        print(f"no sweeps in {sweeps.folder}")
        return 0
    runs = store.list_runs()
    print(f"{'sweep':<30}  {'done':>7}  {'status':<9}  grid")
    for item in listings:
        if item.sweep is None:
            print(f"{item.name:<30}  {'-':>7}  {'damaged':<9}  {item.problem}")
            continue
        done, total = sweep_progress(item.sweep, runs)
        status = "running" if item.running else "complete" if done == total else "partial" if done else "new"
        print(f"{item.name:<30}  {done:>3}/{total:<3}  {status:<9}  {item.sweep.describe_grid()}")
    return 0


def _show_engine_messages() -> None:
    """Where a run trains and how its precision was chosen (the engine logs them) go to stderr as lines."""
    logger = logging.getLogger("resnet")
    if not any(getattr(handler, "resnet_cli", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.resnet_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "recipe", None):
        args = build_parser(args.recipe).parse_args(argv)
    if getattr(args, "verbose", False):
        quiet.set_verbose(True)  # before TensorFlow is imported; child processes inherit it
    if args.command in ("train", "budget-curve"):  # a sweep says where it trains once, not per trial
        _show_engine_messages()
    store = RunStore(args.cache_dir)
    started = time.time()
    try:
        if args.command == "train":
            return command_train(args, store)
        if args.command == "runs":
            return command_runs(store)
        if args.command == "show":
            return command_show(args, store)
        if args.command == "sweep":
            return command_sweep(args, store)
        if args.command == "sweeps":
            return command_sweeps(store)
        if args.command == "budget-curve":
            return command_budget_curve(args, store)
        if args.command == "export-tensorboard":
            from resnet.training.tensorboard_export import command  # tensorboard: imported here, not for train

            return command(args, store)
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
