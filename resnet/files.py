"""Writing files so that nothing is lost, locking them, and where the project and its cache live.

Leaf module: the run store, the sweep store and the precision record all write through here, so one
rule holds for every file the project writes: written beside its target under a temporary name, flushed
and renamed into place (``atomic_write``), with the permissions of any new file (0666 less the umask).
Locks are ``flock`` on a regular file that is never followed through a link (``try_lock``, ``lock_held``,
``lock_free``).
``file_signature`` is what a parse cache keys on: a file is parsed again only when it changed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV_VAR = "RESNET_CACHE_DIR"
LOCK_ATTEMPTS, LOCK_RETRY_SECONDS = 5, 0.01  # a listing's liveness probe holds a run's lock for microseconds


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once, at import (os.umask can only be read by setting it, which is not thread-safe later on).


# Read once, at import (os.umask can only be read by setting it, which is not thread-safe later on).
UMASK = _current_umask()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or PROJECT_ROOT / "cache")


def atomic_write(path: Path, write, *, suffix: str | None = None) -> None:
    """Write ``path`` through ``write(temporary_path)``, then rename it into place.

    The temporary file sits beside the target (same filesystem), is flushed to disk, and is removed if
    writing fails, so ``path`` is always either the old complete file or the new complete file. It gets
    the permissions of any new file (0666 less the umask), not mkstemp's private 0600, so another user
    sharing the cache folder can read it. Its name is ``.tmp-`` + random + ``suffix`` (default: the
    target's name).
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=".tmp-", suffix=path.name if suffix is None else suffix
    )
    os.close(descriptor)
    try:
        os.chmod(temporary, 0o666 & ~UMASK)
        write(Path(temporary))
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_json(path: Path, values: dict) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n"))


def save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def try_lock(path: Path):
    """An exclusive flock on ``path`` (created if missing) as an open file, or None if another holds it.

    O_NOFOLLOW: a lock file that is a link (a copied or edited cache) is never followed out of its folder
    (OSError). A lock taken for an instant by a listing's probe (``lock_held``) is waited out: a few
    tries over ``LOCK_ATTEMPTS * LOCK_RETRY_SECONDS``.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # O_NONBLOCK: a named pipe must not block the open
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    lock = os.fdopen(descriptor, "a")
    for attempt in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if attempt + 1 < LOCK_ATTEMPTS:
                time.sleep(LOCK_RETRY_SECONDS)
        except BaseException:
            lock.close()
            raise
    lock.close()
    return None


def lock_held(path: Path) -> bool:
    """Whether some process holds an exclusive ``flock`` on the lock file ``path`` (a trainer of the run,
    or a sweep's runner); probed without waiting and without creating the file.

    The probe asks for a shared lock, so two listings probing at once never see each other. A missing
    lock file, a link or anything but a regular file is held by no one (trainers never follow links).
    Unlike a pid, a lock dies with its process: a state left ``running`` by a killed trainer whose pid
    now belongs to another process reads as interrupted.
    """
    return _probe(path) is True


def lock_free(path: Path) -> bool:
    """Whether the lock file ``path`` exists and no process holds it: the probe got its shared lock.

    The question to ask before removing what the lock guards: unlike ``not lock_held``, a probe that
    could not tell (no file, a link, a file that cannot be opened, no descriptors left) is not free.
    """
    return _probe(path) is False


def _probe(path: Path) -> bool | None:
    """True: held by another process; False: free (the shared lock was taken and released); None: could
    not tell (missing, a link, not a regular file, or an error opening or locking it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(descriptor)  # releases the probe's shared lock
    return False


def path_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def file_signature(path) -> tuple[int, int, int] | None:
    """(modification time, size, inode) of ``path``, or None if it cannot be read: what changes with it."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)
