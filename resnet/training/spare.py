"""The spare training child: one ``python -m resnet.training.worker`` started ahead of need.

Without it, every Start waits for a fresh child to import TensorFlow before its first batch. The spare
has imported it (and read the dataset if it is on disk) and waits for its request. It holds no GPU
(TensorFlow initialises devices only once a job asks) and no lock (it knows no run yet), and it exits
when its input closes: when this process ends, or when it is given up because the settings it started
under changed (``IMPORT_TIME_VARIABLES``). Measured: Start to first batch 4.3 s with the spare against
6.4-6.8 s with a fresh child for a tiny run on two cores (docs/benchmarks.md, section 4).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading

from resnet.files import PROJECT_ROOT

# What a training child reads while it starts (TensorFlow's and the linker's settings, Python's paths, the
# verbosity of its start-up output): a spare started under other values is not used. Everything else of the
# environment travels with the request and is applied when the job arrives (resnet/training/worker.py).
IMPORT_TIME_VARIABLES = tuple("TF_ XLA_ CUDA NVIDIA LD_ PYTHON KERAS OMP_ MKL KMP_ RESNET_VERBOSE".split())


def worker_environment() -> dict[str, str]:
    """The environment of a training child: this process's, with the project on its Python path."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(PROJECT_ROOT), environment.get("PYTHONPATH")) if path
    )
    return environment


def _import_settings(environment: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith(IMPORT_TIME_VARIABLES)}


class SpareWorker:
    """One training child started ahead of need, shared by every JobManager of this process.

    ``take`` hands it out, or starts a
    child at once if there is none; the job manager asks for the next spare (``prepare``) when its job
    evaluates its last epoch (so a sweep's next trial finds it ready) and when the job's child exits.
    Not earlier: a spare importing TensorFlow beside a job that builds its model and traces its first
    step slowed that job's first batch from 4.6 to 7.5 s on two cores (docs/benchmarks.md, section 4),
    more than the spare saves.
    """

    def __init__(self, *, keep_spare: bool = True):
        self.keep_spare = keep_spare  # False: every job starts its own child (as before spares; benchmarks compare)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._settings: dict[str, str] | None = None
        self._closing_registered = False

    def take(self) -> tuple[subprocess.Popen, dict[str, str]]:
        """A training child waiting for its request, and the environment to send with it."""
        environment = worker_environment()
        with self._lock:
            process, settings = self._process, self._settings
            self._process = self._settings = None
        if process is not None and process.poll() is None and settings == _import_settings(environment):
            return process, environment
        if process is not None:
            _give_up(process)
        return self._start(environment), environment

    def prepare(self) -> None:
        """Start a spare unless a live one under the current settings is waiting."""
        if not self.keep_spare:
            return
        environment = worker_environment()
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None and self._settings == _import_settings(environment):
                return
            self._process, self._settings = None, None
        if process is not None:
            _give_up(process)
        spare = self._start(environment)
        with self._lock:
            if self._process is None:
                self._process, self._settings = spare, _import_settings(environment)
                return
        _give_up(spare)  # another thread prepared one meanwhile

    def close(self) -> None:
        """End the spare (at exit; it would also end on its own once this process is gone)."""
        with self._lock:
            process, self._process, self._settings = self._process, None, None
        if process is not None:
            _give_up(process)

    def _start(self, environment: dict[str, str]) -> subprocess.Popen:
        if not self._closing_registered:
            self._closing_registered = True
            atexit.register(self.close)
        return subprocess.Popen(
            [sys.executable, "-m", "resnet.training.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=environment,
            text=True,
        )


def _give_up(process: subprocess.Popen) -> None:
    """End a child that has no job yet: it holds nothing (no run, no lock, no device), so a kill loses nothing."""
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass


SPARE_WORKER = SpareWorker()  # this process's spare training child
