"""The command line: its flags, built from the config's declarations, and runs as a user would start
them (a subprocess writing into a temporary cache)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import run_folders, written
from test_config import SketchConfig  # hypothetical new hyperparameters, each declared once

from resnet.__main__ import add_config_flags, build_parser, config_from_flags
from resnet.config import ConfigError, TrainConfig
from resnet.store.runs import RunStatus, RunStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cache_dir, timeout=600):
    environment = {**os.environ, "RESNET_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "resnet", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_flags(*argv) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_every_config_field_has_its_flag():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    flags = [action.option_strings[0] for action in parser._actions if action.dest in TrainConfig.__dataclass_fields__]
    assert flags == [
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--optimizer",
        "--weight-decay",
        "--schedule",
        "--epochs-mode",
        "--returns-threshold",
        "--cooldown-fraction",
        "--validation-images",
        "--augment",
        "--label-smoothing",
        "--subset",
        "--eval-subset",
        "--depth",
        "--precision",
        "--seed",
        "--gpus",
    ]
    assert config_from_flags(train_flags()) == TrainConfig()
    config = config_from_flags(
        train_flags("--subset", "500", "--depth", "18", "--augment", "YES", "--learning-rate", "0.01")
    )
    assert (config.train_subset, config.depth, config.augment, config.learning_rate) == (500, 18, True, 0.01)
    assert config_from_flags(train_flags("--gpus", "all")).gpus == "all"
    help_text = " ".join(parser.format_help().split())
    assert "Training images per optimisation step. (8-2048, default 128)" in help_text
    assert "--depth {18,34,50} ResNet-18/34 use basic blocks" in help_text and "--augment true|false" in help_text


def test_flag_values_are_checked_with_the_configs_words_and_limits(capsys):
    with pytest.raises(SystemExit):
        train_flags("--augment", "maybe")
    assert "argument --augment: expected true or false, got 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_flags("--optimizer", "lion")
    assert "invalid choice: 'lion'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="epochs must be between 1 and 500; got 0"):
        config_from_flags(train_flags("--epochs", "0"))


def test_a_new_field_declared_once_becomes_a_checked_flag(capsys):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SketchConfig)
    assert config_from_flags(parser.parse_args([]), SketchConfig) == SketchConfig()
    args = parser.parse_args(["--dropout", "0.5", "--width", "128", "--stages", "4", "--mixup", "on"])
    assert config_from_flags(args, SketchConfig) == SketchConfig(dropout=0.5, width=128, blocks=4, mixup=True)
    help_text = " ".join(parser.format_help().split())
    assert "--dropout DROPOUT Fraction of activations dropped. (0.0-0.9, default 0.1)" in help_text
    assert "--stages BLOCKS Residual blocks per stage. (1-8, default 3)" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--width", "48"])
    assert "invalid choice: 48" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="dropout must be between 0.0 and 0.9; got 1.5"):
        config_from_flags(parser.parse_args(["--dropout", "1.5"]), SketchConfig)


@pytest.mark.slow  # a fresh CLI process imports TensorFlow and trains
def test_a_tiny_training_prints_the_table_and_writes_a_run(cache_dir):
    result = run_cli(
        "train",
        "--epochs",
        "2",
        "--subset",
        "256",
        "--eval-subset",
        "200",
        "--batch-size",
        "64",
        "--depth",
        "18",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    # stderr is a pipe, not a terminal: one line per committed epoch, no progress bar.
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], result.stderr
    assert "test acc" in epochs[0] and "[#" not in result.stderr and "\r" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["epoch", "train", "acc", "test"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    assert "complete: trained 2 epochs" in result.stdout
    (run_id,) = run_folders(cache_dir)
    run_folder = cache_dir / run_id
    assert (run_folder / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_accuracy")

    listing = run_cli("runs", cache_dir=cache_dir)
    assert run_folder.name in listing.stdout and "complete" in listing.stdout and "2/2" in listing.stdout


def _wait_for_epoch(process, cache_dir, epochs: int, timeout: float = 300):
    """The one run's committed epochs once at least ``epochs`` (the process must still be training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the training ended before it was interrupted"
        for run in RunStore(cache_dir).list_runs():
            if run.epochs_done >= epochs:
                return run.epochs_done
        time.sleep(0.2)
    raise AssertionError(f"no epoch {epochs} within {timeout} s")


@pytest.mark.slow  # fresh CLI processes import TensorFlow and train
def test_ctrl_c_stops_after_the_batch_keeping_completed_epochs(cache_dir, tmp_path):
    """Ctrl-C in ``train``: the epoch in progress is discarded, the completed ones are kept, the run is stopped.
    (A second Ctrl-C quits at once; it cannot be timed reliably against a tiny run's last batch.)"""
    flags = ("train", "--epochs", "40", "--subset", "256", "--eval-subset", "200", "--batch-size", "64")
    flags += ("--depth", "18", "--precision", "float32")
    environment = {**os.environ, "RESNET_CACHE_DIR": str(cache_dir)}

    log = open(tmp_path / "train.log", "w+")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "resnet", *flags], cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=log
    )
    done = _wait_for_epoch(process, cache_dir, 1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    log.seek(0)
    output = log.read()
    log.close()
    assert "stopping after the current batch" in output and "stopped:" in output, output
    (run,) = RunStore(cache_dir).list_runs()
    assert run.status is RunStatus.STOPPED and done <= run.epochs_done < 40, run


def test_bad_parameters_are_rejected_with_a_message(cache_dir):
    result = run_cli("train", "--epochs", "0", cache_dir=cache_dir)
    assert result.returncode == 2
    assert "error: epochs must be between 1 and 500; got 0" in result.stderr
    result = run_cli("train", "--batch-size", "many", cache_dir=cache_dir)
    assert result.returncode == 2 and "invalid int value: 'many'" in result.stderr
    assert written(cache_dir) == []


def test_a_missing_dataset_is_explained(cache_dir, tmp_path):
    environment_dir = tmp_path / "no-dataset"
    environment_dir.mkdir()
    result = run_cli("train", "--epochs", "1", "--dataset-dir", str(environment_dir), cache_dir=cache_dir)
    assert result.returncode == 2
    assert "lacks train-images-idx3-ubyte.gz" in result.stderr and "FASHION_MNIST_DIR" in result.stderr


def test_show_and_delete_unknown_runs(cache_dir):
    assert "no run 'nope'" in run_cli("show", "nope", cache_dir=cache_dir).stderr
    result = run_cli("delete", "../etc", cache_dir=cache_dir)
    assert result.returncode == 2 and "invalid run id" in result.stderr


def test_show_prints_the_runs_current_target_after_an_extension(cache_dir, capsys):
    from test_runs import make_run

    from resnet.__main__ import main

    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)  # planned for 3 epochs (config.json says epochs=3)
    store.update_state(run, target_epochs=8)  # then extended to 8
    assert main(["--cache-dir", str(cache_dir), "show", run.run_id]) == 0
    shown = capsys.readouterr().out
    assert " epochs=8 " in shown and "epochs=3" not in shown
