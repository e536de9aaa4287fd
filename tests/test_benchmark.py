"""The speed benchmark's quick mode runs and prints a side-by-side table that is consistent with itself.

Speed itself is not asserted (it depends on the machine), but every number that can be checked is: each
contender was really measured (positive speed and memory, its windows behind its median and best), and
each ratio is the ratio of the speeds printed beside it. The only row allowed to be skipped is PyTorch's,
and only with the reason "torch not installed", and only when torch is indeed not installed here.
"""

from __future__ import annotations

import importlib.util
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ["project", "project-steps", "project-epoch", "keras-naive+onednn", "torch-fp32"]
QUICK_REPEATS = 2  # timed windows per contender in --quick mode

# name, precision (may hold a space: "bf16 autocast"), median, best, peak MB, ratio, best ratio, windows
MEASURED = re.compile(
    r"^(?P<name>\S+)\s+(?P<precision>\S+(?: \S+)?)\s+(?P<median>\d+\.\d)\s+(?P<best>\d+\.\d)\s+(?P<peak>\d+)\s+"
    r"(?P<ratio>\d+\.\d\d)x\s+(?P<best_ratio>\d+\.\d\d)x\s+(?P<windows>\d+\.\d(?:, \d+\.\d)*)$"
)
SKIPPED = re.compile(r"^(?P<name>\S+)(?:\s+-){6}\s+skipped: (?P<reason>.+)$")


def ratio_tolerance(ratio: float, numerator: float, denominator: float) -> float:
    """How far a printed ratio (2 decimals) may lie from the ratio of two printed speeds (1 decimal)."""
    return 0.005 + 1.01 * ratio * (0.05 / numerator + 0.05 / denominator) + 1e-9


@pytest.mark.slow  # a benchmark run
def test_quick_benchmark_prints_a_consistent_table(dataset_dir):
    result = subprocess.run(
        [sys.executable, "benchmarks/train_speed.py", "--quick", "--only", *CONTENDERS],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    check_table(result.stdout, torch_installed=importlib.util.find_spec("torch") is not None)


def check_table(output: str, *, torch_installed: bool) -> None:
    """Assert that the benchmark's printed table is complete and consistent with itself."""
    lines = output.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("contender"))
    table = lines[header + 1 : header + 1 + len(CONTENDERS)]
    assert [line.split()[0] for line in table] == CONTENDERS, output

    measured, skipped = {}, {}
    for line in table:
        if match := MEASURED.match(line):
            measured[match["name"]] = match
        elif match := SKIPPED.match(line):
            skipped[match["name"]] = match["reason"]
        else:
            pytest.fail(f"a table row in neither the measured nor the skipped form: {line!r}")

    # Only PyTorch's row may be skipped, only for want of torch, and only when torch is really missing.
    expected_skips = {} if torch_installed else {"torch-fp32": "torch not installed"}
    assert {name: reason.split(" (")[0] for name, reason in skipped.items()} == expected_skips, skipped

    project_median, project_best = float(measured["project"]["median"]), float(measured["project"]["best"])
    for name, row in measured.items():
        median, best, peak = float(row["median"]), float(row["best"]), float(row["peak"])
        windows = [float(value) for value in row["windows"].split(", ")]
        assert median > 0 and peak > 0, row.group(0)
        assert len(windows) == QUICK_REPEATS and min(windows) > 0, row.group(0)
        assert median == pytest.approx(statistics.median(windows), abs=0.1 + 1e-9), row.group(0)
        assert best == max(windows) >= median, row.group(0)
        ratio, best_ratio = float(row["ratio"]), float(row["best_ratio"])
        assert ratio == pytest.approx(project_median / median, abs=ratio_tolerance(ratio, project_median, median)), (
            f"{name}: ratio {ratio} is not project/this = {project_median}/{median}"
        )
        assert best_ratio == pytest.approx(project_best / best, abs=ratio_tolerance(best_ratio, project_best, best)), (
            f"{name}: best ratio {best_ratio} is not project/this = {project_best}/{best}"
        )
    assert "Per-epoch overhead on the full dataset" in output
