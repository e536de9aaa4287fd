"""The speed benchmark's quick mode runs and prints its side-by-side table (speed is not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_the_table():
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/train_speed.py",
            "--quick",
            "--only",
            "project",
            "keras-naive+onednn",
            "torch-fp32",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("contender"))
    rows = {line.split()[0]: line for line in lines[header + 1 : header + 4]}
    assert set(rows) == {"project", "keras-naive+onednn", "torch-fp32"}
    project = rows["project"].split()  # name, precision, median, best, peak MB, ratio, best ratio, windows
    assert float(project[2]) > 0 and float(project[3]) >= float(project[2])
    assert project[5:7] == ["1.00x", "1.00x"]
    assert rows["keras-naive+onednn"].split()[5].endswith("x")  # ratios against the project
    assert rows["keras-naive+onednn"].split()[6].endswith("x")
    assert "Per-epoch overhead on the full dataset" in result.stdout
