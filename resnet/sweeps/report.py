"""What a sweep found, for the CLI and the app: the table, the Pareto front, the budget sentence, the time.

``sweep_table`` has one row per trial, ``pareto_front`` keeps the finished trials no other finished trial
beats in both time and final test accuracy, ``budget_sentence`` says what a training budget buys, and
``estimate_text`` how long the remaining epochs would take here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import numpy as np
import pandas as pd

from resnet.config import PARAMS
from resnet.core.hardware import detect_hardware
from resnet.core.precision import resolve
from resnet.store.estimate import estimate_time
from resnet.store.runs import Run
from resnet.sweeps.record import Sweep, Trial
from resnet.sweeps.trials import trial_end
from resnet.wording import format_duration, plural

# --- analysis ------------------------------------------------------------------------------------------
TABLE_COLUMNS = (
    "trial",
    "run_id",
    "status",
    # the varying settings come here
    "epochs",
    "epochs_done",
    "done",
    "train_accuracy",
    "test_accuracy",
    "best_test_accuracy",
    "best_epoch",
    "total_seconds",
)


def sweep_table(sweep: Sweep, runs: Iterable[Run] | dict) -> pd.DataFrame:
    """One row per trial, in order: its run, status, the settings that vary, epochs done of the trial's
    ``epochs``, final train and test accuracy, best test accuracy and its epoch, training seconds.

    A run trained past the trial's epochs (extended later) is read up to them. Status is the run's, or
    ``not started`` / ``missing`` (the record names a run that is gone). Numbers are NaN where no epoch
    is done; ``done`` is True once the trial has all its epochs.
    """
    by_id = runs if isinstance(runs, dict) else {run.run_id: run for run in runs}
    rows = []
    for number, trial in enumerate(sweep.trials, start=1):
        row = {"trial": number, "run_id": trial.run_id}
        row |= {name: getattr(trial.config, name) for name in sweep.varying if name != "epochs"}
        row |= _trial_results(trial, by_id.get(trial.run_id))
        rows.append(row)
    columns = list(TABLE_COLUMNS[:3]) + [name for name in sweep.varying if name != "epochs"] + list(TABLE_COLUMNS[3:])
    return pd.DataFrame(rows, columns=columns)


def _trial_results(trial: Trial, run: Run | None) -> dict:
    nothing = {
        "train_accuracy": np.nan,
        "test_accuracy": np.nan,
        "best_test_accuracy": np.nan,
        "best_epoch": pd.NA,
        "total_seconds": np.nan,
    }
    epochs = trial.config.epochs
    if run is None:
        status = "not started" if trial.run_id is None else "missing"
        return {"status": status, "epochs": epochs, "epochs_done": 0, "done": False} | nothing
    history = run.history if run.history is not None else pd.DataFrame()
    history = history[history["epoch"] <= epochs] if not history.empty else history
    done = len(history)
    row = {
        "status": run.status.value,
        "epochs": epochs,
        "epochs_done": done,
        "done": not run.damaged and done >= trial_end(trial, run),  # an auto trial: where it decided to end
    }
    if history.empty:
        return row | nothing
    best = int(history["test_accuracy"].to_numpy().argmax())
    last = history.iloc[-1]
    return row | {
        "train_accuracy": float(last["train_accuracy"]),
        "test_accuracy": float(last["test_accuracy"]),
        "best_test_accuracy": float(history["test_accuracy"].iloc[best]),
        "best_epoch": int(history["epoch"].iloc[best]),
        "total_seconds": float(last["cumulative_seconds"]),
    }


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats: none is at least as fast and as accurate and strictly better in one.

    Uses ``total_seconds`` and final ``test_accuracy``; rows without both are left out, and so are
    unfinished trials when the table has a ``done`` column (a half-trained run is not a budget's
    result). Exact ties in both are all kept (neither beats the other); a row as fast but less accurate,
    or as accurate but slower, than another is dominated. Sorted fastest first.
    """
    usable = table[
        np.isfinite(table["total_seconds"].astype(float)) & np.isfinite(table["test_accuracy"].astype(float))
    ]
    if "done" in usable.columns:
        usable = usable[usable["done"].astype(bool)]
    seconds = usable["total_seconds"].to_numpy(float)
    accuracy = usable["test_accuracy"].to_numpy(float)
    keep = []
    for i in range(len(usable)):
        at_least = (seconds <= seconds[i]) & (accuracy >= accuracy[i])
        strictly = (seconds < seconds[i]) | (accuracy > accuracy[i])
        keep.append(not np.any(at_least & strictly))
    front = usable[np.array(keep, dtype=bool)] if len(usable) else usable
    return front.sort_values(["total_seconds", "test_accuracy"], ascending=[True, False], kind="stable")


WORDS = {"batch_size": "batch", "train_subset": "training subset", "eval_subset": "evaluation subset"}


def describe_trial(row) -> str:
    """``batch 128 for 10 epochs``: the row's setting columns (TrainConfig fields), then its epochs."""
    parts = []
    for name in row.index:
        if name in PARAMS and name != "epochs":
            value, kind = row[name], PARAMS[name].type  # a row of mixed columns may hold 128 as 128.0
            value = (
                ("on" if value else "off")
                if kind is bool
                else int(value)
                if kind is int
                else f"{value:g}"
                if kind is float
                else value
            )
            parts.append(f"{WORDS.get(name, name.replace('_', ' '))} {value}")
    text = ", ".join(parts)
    if "epochs" in row.index:
        text = f"{text} for {plural(int(row['epochs']), 'epoch')}" if text else plural(int(row["epochs"]), "epoch")
    return text or f"trial {row.get('trial', '?')}"


def budget_sentence(table: pd.DataFrame, *, within_points: float = 1.0) -> str:
    """What a training budget buys, from the Pareto front of finished trials.

    The *budget* is the fastest Pareto trial whose test accuracy is within ``within_points`` points
    (percentage points) of the best finished trial's. The sentence gives its time and accuracy, then
    compares it with the most accurate trial that took at most twice its time: how many points that
    added, or that none within twice the time did better (and, if the best took longer, the best).
    """
    front = pareto_front(table)
    if front.empty:
        return "No trial has finished yet: nothing to compare."
    best = front.loc[front["test_accuracy"].idxmax()]
    budget = front[front["test_accuracy"] >= best["test_accuracy"] - within_points / 100].iloc[0]
    seconds, accuracy = float(budget["total_seconds"]), float(budget["test_accuracy"])
    text = (
        f"Within {format_duration(seconds)} of training, {describe_trial(budget)} reached {accuracy:.3f} test accuracy"
    )
    if len(front) == 1:
        return text + ", the best of the finished trials (no other trial was faster and as accurate)."
    doubled = front[(front["total_seconds"] <= 2 * seconds) & (front["test_accuracy"] > accuracy)]
    if not doubled.empty:
        better = doubled.loc[doubled["test_accuracy"].idxmax()]
        gain = 100 * (float(better["test_accuracy"]) - accuracy)
        return (
            f"{text}; doubling the budget ({describe_trial(better)}, {format_duration(float(better['total_seconds']))}) "
            f"added {gain:.1f} points."
        )
    if float(best["test_accuracy"]) > accuracy:
        gain = 100 * (float(best["test_accuracy"]) - accuracy)
        return (
            f"{text}; no trial within twice that time did better, and the best ({describe_trial(best)}, "
            f"{format_duration(float(best['total_seconds']))}) added {gain:.1f} points."
        )
    return f"{text}, the best of the finished trials; no trial within twice that time did better."


def format_sweep_table(table: pd.DataFrame) -> str:
    """The seed's table for a sweep: run, settings that vary, epochs, train/test accuracy, best, time."""
    settings = [name for name in table.columns if name in PARAMS and name != "epochs"]
    header = [f"{'#':>2}", f"{'run':<34}"] + [f"{_short(name):>10}" for name in settings]
    header += [
        f"{'epochs':>7}",
        f"{'train acc':>9}",
        f"{'test acc':>8}",
        f"{'best (epoch)':>14}",
        f"{'time':>8}",
        "status",
    ]
    lines = ["  ".join(header)]
    for row in table.itertuples(index=False):
        values = row._asdict()
        cells = [f"{values['trial']:>2}", f"{values['run_id'] or '-':<34}"]
        cells += [f"{str(values[name]):>10}" for name in settings]
        best = "-" if pd.isna(values["best_epoch"]) else f"{values['best_test_accuracy']:.4f} ({values['best_epoch']})"
        cells += [
            f"{values['epochs_done']:>3}/{values['epochs']:<3}",
            f"{_number(values['train_accuracy']):>9}",
            f"{_number(values['test_accuracy']):>8}",
            f"{best:>14}",
            f"{format_duration(values['total_seconds']) if np.isfinite(values['total_seconds']) else '-':>8}",
            values["status"],
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _short(name: str) -> str:
    return WORDS.get(name, name)[:10]


def _number(value) -> str:
    return "-" if not np.isfinite(value) else f"{value:.4f}"


# --- time ----------------------------------------------------------------------------------------------
def estimate_text(sweep: Sweep, runs: list[Run], cache_dir=None) -> str:
    """How long the trials' remaining epochs would take on this machine, from earlier runs' speed.

    Each trial's precision is what Start would train it with (``resnet.core.precision.resolve``: for ``auto``, the
    measurement remembered in ``cache_dir`` for its depth and batch size), as the sidebar's estimate uses.
    """
    device = detect_hardware().device_label
    by_id = {run.run_id: run for run in runs}
    total, unknown, bases = 0.0, [], set()
    for number, trial in enumerate(sweep.trials, start=1):
        done = by_id[trial.run_id].epochs_done if trial.run_id in by_id else 0
        remaining = max(0, trial.config.epochs - done)
        if not remaining:
            continue
        precision = resolve(trial.config, cache_dir=cache_dir)
        estimate = estimate_time(trial.config, runs, device=device, precision=precision)
        if estimate.epoch_seconds is None:
            unknown.append(number)
            continue
        total += estimate.epoch_seconds * remaining
        bases.add(estimate.basis)
    if unknown and not total:
        return "Time on this machine: unknown until an earlier run of these settings gives a speed."
    text = f"Estimated time on this machine: {format_duration(total)} ({'; '.join(sorted(bases))})"
    return text + (f"; trials {', '.join(map(str, unknown))} not included (no speed measured yet)." if unknown else ".")


def format_history_table(history) -> str:
    """The seed's results table: epoch, train accuracy, test accuracy, seconds."""
    validation = "val_accuracy" in history and history["val_accuracy"].notna().any()  # an auto run's split
    head = f"{'val acc':>8}  " if validation else ""
    lines = [
        f"{'epoch':>5}  {'train acc':>9}  {head}{'test acc':>8}  {'test loss':>9}  {'seconds':>8}  {'total s':>8}  "
        f"{'img/s':>7}  {'lr':>9}"
    ]
    for row in history.itertuples():
        value = f"{row.val_accuracy:>8.4f}  " if validation else ""
        lines.append(
            f"{row.epoch:>5}  {row.train_accuracy:>9.4f}  {value}{row.test_accuracy:>8.4f}  {row.test_loss:>9.4f}  "
            f"{row.epoch_seconds:>8.1f}  {row.cumulative_seconds:>8.1f}  {row.images_per_second:>7.1f}  "
            f"{row.learning_rate:>9.2e}"
        )
    return "\n".join(lines)


def epoch_text(epoch: int, target_epochs: int, row) -> str:
    """One committed epoch in a line: what a log (not a terminal) prints per epoch."""
    validation = row.get("val_accuracy")
    value = f"  val acc {validation:.4f}" if validation is not None and validation == validation else ""  # not NaN
    return (
        f"epoch {epoch}/{target_epochs}: train acc {row['train_accuracy']:.4f}{value}  "
        f"test acc {row['test_accuracy']:.4f}  {row['epoch_seconds']:.1f} s"
    )


def progress_line(snapshot) -> str:
    """A training job's live progress bar on a terminal (``JobSnapshot``), starting with a carriage return."""
    width = 30
    filled = int(width * snapshot.epoch_fraction)
    eta = snapshot.epoch_eta_seconds
    detail = (
        f"batch {snapshot.batch}/{snapshot.batches_per_epoch}  {snapshot.images_per_second:6.1f} img/s  ETA {eta:5.0f} s"
        if snapshot.phase == "training" and eta is not None
        else snapshot.phase
    )
    return f"\repoch {snapshot.epoch}/{snapshot.target_epochs} [{'#' * filled}{'.' * (width - filled)}] {detail:<48}"


def log_epochs(run, logged: int, target_epochs: int, stream) -> int:
    """For a log (a ``stream`` that is no terminal: CI, nohup, a pipe): one line per epoch of ``run`` committed
    since ``logged``, none per progress update. Returns the epochs printed so far."""
    if run is None or run.history is None:
        return logged
    for row in run.history[run.history["epoch"] > logged].to_dict("records"):
        print(epoch_text(int(row["epoch"]), target_epochs, row), file=stream, flush=True)
        logged = int(row["epoch"])
    return logged


class SweepPrinter:
    """Prints a running sweep's events: a live line on a terminal, one line per epoch and trial in a log."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def __call__(self, event) -> None:
        trial = f"trial {event.index + 1}/{event.total}"
        if event.kind == "progress":
            if self.live:
                bar = "#" * int(20 * event.fraction)
                line = f"\r{trial} epoch {event.epoch}/{event.target_epochs} [{bar:<20}] {event.phase:<10}"
                print(line, end="", file=self.stream, flush=True)
            return
        if event.kind == "epoch":
            text = epoch_text(event.epoch, event.target_epochs, event.row)
        elif event.kind == "end":
            result = event.result
            text = f"{result.outcome}: {result.message} [run {result.run_id or '-'}, {result.seconds:.0f} s]"
        else:  # start, queued
            text = event.text
        print(("\r" if self.live else "") + f"{trial} {text}", file=self.stream, flush=True)
