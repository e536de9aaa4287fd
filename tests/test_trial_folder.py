"""A Ray trial's private folder: removed when its task ends, and by the next task when a stop killed it.

Real processes hold the folders (a stop kills the worker with SIGKILL: no ``finally`` runs); the lock
files' age is set back with ``os.utime`` instead of waiting ``SETTLE_SECONDS``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from resnet.files import lock_free, lock_held, try_lock
from resnet.sweeps.trial_folder import IN_USE, PREFIX, SETTLE_SECONDS, private_folder, remove_abandoned

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import sys, time
from pathlib import Path
from resnet.sweeps.trial_folder import private_folder
with private_folder(Path(sys.argv[1])) as folder:
    (folder / "checkpoint.keras").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(600)
"""


def hold_a_folder(parent: Path) -> tuple[subprocess.Popen, Path]:
    """A process that trains in a private folder (here: holds it) until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(parent)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    return process, Path(process.stdout.readline().strip())


def settle(folder: Path) -> None:
    old = time.time() - SETTLE_SECONDS - 5
    os.utime(folder / IN_USE, (old, old))


def test_a_folder_is_locked_while_in_use_and_gone_after(tmp_path):
    with private_folder(tmp_path) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(PREFIX)
        settle(folder)
        assert remove_abandoned(tmp_path) == [] and folder.is_dir()  # its own lock: in use
    assert not folder.exists()


def test_the_next_task_removes_a_killed_tasks_folder_and_keeps_a_live_ones(tmp_path):
    killed, killed_folder = hold_a_folder(tmp_path)
    live, live_folder = hold_a_folder(tmp_path)
    try:
        os.kill(killed.pid, signal.SIGKILL)  # what ray.cancel(force=True) does to a running trial
        killed.wait(timeout=30)
        assert (killed_folder / "checkpoint.keras").is_file()  # no finally ran: the folder stayed
        for folder in (killed_folder, live_folder):
            settle(folder)
        with private_folder(tmp_path) as mine:
            assert not killed_folder.exists()
            assert (live_folder / "checkpoint.keras").is_file()
            assert sorted(tmp_path.iterdir()) == sorted([live_folder, mine])
    finally:
        live.kill()
        live.wait(timeout=30)


def test_a_fresh_unlocked_folder_and_folders_not_made_here_are_left_alone(tmp_path):
    killed, just_killed = hold_a_folder(tmp_path)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    foreign = tmp_path / (PREFIX + "someone-elses")
    foreign.mkdir()  # no lock file: not made by a trial task
    linked = tmp_path / (PREFIX + "a-link")
    linked.symlink_to(just_killed)
    assert remove_abandoned(tmp_path) == []  # the lock file is younger than SETTLE_SECONDS
    settle(just_killed)
    assert remove_abandoned(tmp_path) == [just_killed]
    assert foreign.is_dir() and linked.is_symlink()


def test_only_a_lock_file_that_could_be_locked_reads_as_free(tmp_path):
    lock_file, link = tmp_path / "held", tmp_path / "link"
    lock = try_lock(lock_file)
    link.symlink_to(lock_file)
    try:
        assert lock_held(lock_file) and not lock_free(lock_file)
        for unknown in (tmp_path / "missing", link, tmp_path):  # could not tell: never free to remove
            assert not lock_free(unknown) and not lock_held(unknown)
    finally:
        lock.close()
    assert lock_free(lock_file) and not lock_held(lock_file)
