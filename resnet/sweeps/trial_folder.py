"""The private folder a trial's Ray task trains in, and the removal of folders whose task was killed.

A task trains in ``<tmp>/resnet-trial-XXXX/`` (the run's files, the dataset's four files: about 160 MB
for a tiny ResNet-18 run, over 300 MB for ResNet-50) and removes it when it returns or raises. Stopping
a sweep cancels its running task with ``ray.cancel(force=True)``, which kills the worker process: no
``finally`` runs, and every stopped trial used to leave its folder behind on the worker's disk.

So a task holds an ``flock`` on the folder's ``.in-use`` file while it lives (a lock dies with its
process, however it dies), and every task, before making its own folder, removes the folders in the
same temporary directory whose lock nobody holds. A folder is judged only once its lock file is
``SETTLE_SECONDS`` old: the instant between making a folder and locking it never reads as abandoned (so
a task killed less than a minute before the last trial on a machine leaves its folder until the next).
Folders without a lock file (not made by this code) are left alone, and a folder is removed with its lock
file last, so a task killed while removing its own folder leaves one that is still recognised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from resnet.files import lock_free, try_lock

PREFIX = "resnet-trial-"
IN_USE = ".in-use"
SETTLE_SECONDS = 60.0


@contextlib.contextmanager
def private_folder(parent: Path | None = None) -> Iterator[Path]:
    """A new folder under ``parent`` (the temporary directory), locked while in use and removed after;
    abandoned trial folders under ``parent`` are removed first."""
    parent = Path(parent or tempfile.gettempdir())
    remove_abandoned(parent)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    lock = None
    try:
        lock = try_lock(folder / IN_USE)  # a new folder: no one else holds its lock
        if lock is None:
            raise OSError(f"could not lock the trial folder {folder}")
        yield folder
    finally:
        _remove(folder)
        if lock is not None:
            lock.close()


def remove_abandoned(parent: Path) -> list[Path]:
    """Remove the trial folders under ``parent`` whose task is gone (lock file settled, lock free)."""
    removed = []
    for folder in sorted(parent.glob(PREFIX + "*")):
        if _abandoned(folder):
            _remove(folder)
            removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    marker = folder / IN_USE
    try:
        if folder.is_symlink() or time.time() - os.lstat(marker).st_mtime < SETTLE_SECONDS:
            return False
    except OSError:  # no lock file: not made here
        return False
    return lock_free(marker)  # a link or anything but a regular file is never free


def _remove(folder: Path) -> None:
    """Everything but the lock file first, the lock file last: a task killed while removing its folder
    (a stop as the trial ends) leaves a folder that the next task still recognises and removes."""
    with contextlib.suppress(OSError):
        for entry in list(folder.iterdir()):
            if entry.name == IN_USE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    with contextlib.suppress(OSError):
        (folder / IN_USE).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
