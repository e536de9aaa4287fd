"""The command line, run as a user would: a subprocess writing into a temporary cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["epoch", "train", "acc", "test"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    assert "complete: trained 2 epochs" in result.stdout
    (run_folder,) = [path for path in cache_dir.iterdir()]
    assert (run_folder / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_accuracy")

    listing = run_cli("runs", cache_dir=cache_dir)
    assert run_folder.name in listing.stdout and "complete" in listing.stdout and "2/2" in listing.stdout


def test_bad_parameters_are_rejected_with_a_message(cache_dir):
    result = run_cli("train", "--epochs", "0", cache_dir=cache_dir)
    assert result.returncode == 2
    assert "error: epochs must be between 1 and 500; got 0" in result.stderr
    result = run_cli("train", "--batch-size", "many", cache_dir=cache_dir)
    assert result.returncode == 2 and "invalid int value: 'many'" in result.stderr
    assert list(cache_dir.iterdir()) == []


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
