"""Disk the test suite needs: the peak and final size of its temporary folders while pytest runs.

    .venv/bin/python benchmarks/suite_disk.py [pytest options, e.g. -m "not slow" or tests/test_trainer.py]

Runs the suite (the project's own tests, as scripts/test.sh does) with its base temporary folder in a
fresh folder, samples that folder and the Ray trial folders (``/tmp/resnet-trial-*``) every few seconds,
and prints the peak, the final size and the largest test folders seen. Every tiny ResNet-18 run a test
trains holds a 134 MB checkpoint, so what the suite keeps is what decides whether a CI disk fills.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 5.0


def folder_mb(folder: Path) -> float:
    """MB of disk the files under ``folder`` use, each file once: tests hard-link the runs' checkpoints
    (``tests/support.py`` ``copy_run``), so sizes summed per name would count one checkpoint many times."""
    seen, total = set(), 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed while walked
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total / 2**20


def trial_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("resnet-trial-*"))


def trial_folders_mb(before: set[Path]) -> float:
    """MB of the Ray trial folders made since ``before`` (a trial may remove older, abandoned ones)."""
    return sum(folder_mb(folder) for folder in trial_folders() - before)


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="suite-disk-"))
    basetemp = scratch / "basetemp"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *sys.argv[1:]]
    trials_before = trial_folders()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT)
    peak, peak_at, largest = 0.0, 0.0, {}
    try:
        while process.poll() is None:
            time.sleep(SAMPLE_SECONDS)
            if not basetemp.is_dir():
                continue
            for child in basetemp.iterdir():
                if child.is_symlink():  # pytest's <name>current links
                    continue
                largest[child.name] = max(largest.get(child.name, 0.0), folder_mb(child))
            size = folder_mb(basetemp) + trial_folders_mb(trials_before)
            if size > peak:
                peak, peak_at = size, time.perf_counter() - started
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait()
    final = folder_mb(basetemp) if basetemp.is_dir() else 0.0
    trials_left = trial_folders_mb(trials_before)
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    print(f"\n{time.strftime('%Y-%m-%d')} · {os.cpu_count()} cores · {' '.join(f for f in wanted if f' {f}' in flags)}")
    print(
        f"pytest {' '.join(sys.argv[1:]) or '(whole suite)'}: exit {process.returncode} in {time.perf_counter() - started:.0f} s"
    )
    print(f"temporary folders: peak {peak:.0f} MB at {peak_at:.0f} s, kept at the end {final:.0f} MB")
    print(f"Ray trial folders left in {tempfile.gettempdir()}: {trials_left:+.0f} MB")
    print(
        "largest folders seen: "
        + ", ".join(f"{name} {mb:.0f} MB" for name, mb in sorted(largest.items(), key=lambda item: -item[1])[:5])
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
