"""A quiet TensorFlow start-up: its C++ chatter is captured, kept, and shown only when asked for.

Every start of TensorFlow on a machine without CUDA prints lines such as::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... UNKNOWN ERROR (303)
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU ...

They come from C++ before TensorFlow's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` (even 3) does not
hide them, and a user reads them as failures. They are written to file descriptor 2 directly, so the
only way to catch them is to point descriptor 2 at a temporary file while they are printed: during
the first ``import tensorflow`` (wherever it happens: ``install()`` puts an import hook in front of
Python's finders, which the ``data`` package does before anything can import TensorFlow) and during the
first device probe (``captured()`` around ``tf.config.list_physical_devices``, in ``resnet.core.hardware``).

What was captured is kept (``captured_text()``) and written to stderr when ``RESNET_VERBOSE`` is set
(``python -m resnet ... --verbose`` sets it, and child processes inherit it). If the captured code
raises, the text is written to stderr before the exception goes on: a failing import is never silent.
Lines that are none of the known start-up chatter are not shown either, but a one-line note says how
many there were and how to see them.

Known limit: a crash that kills the process while descriptor 2 is redirected (a segfault, or
TensorFlow's fatal ``F`` log followed by abort) loses the captured text; rerun with ``RESNET_VERBOSE=1``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
import threading

VERBOSE_ENV = "RESNET_VERBOSE"

# Start-up lines known to be harmless (matched anywhere in the line).
BENIGN_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"cudart_stub\.cc.*Could not find cuda drivers",
        r"cuda_platform\.cc.*failed call to cuInit",
        r"failed call to cuInit",
        r"cuda_diagnostics\.cc",  # follows a failed cuInit on some machines: host name, driver version
        r"oneDNN custom operations are on",
        r"cpu_feature_guard\.cc",
        r"rebuild TensorFlow with the appropriate compiler flags",  # cpu_feature_guard's second line
        r"Unable to register cu(DNN|FFT|BLAS) factory",
        r"computation placer already registered",
        r"TF-TRT Warning: Could not find TensorRT",
        r"gpu_device\.cc.*Created device",
        r"cuda_executor\.cc.*(NUMA node|could not open file to read NUMA)",
        # Timing mixed_bfloat16 on a CPU without it (resnet/core/precision.py): the measurement says so itself.
        r"oneDNN supports DT_BFLOAT16 only on platforms with AVX-512",
    )
)

_lock = threading.RLock()
_depth = 0  # nesting of captured() in the thread holding _lock
_captured: list[tuple[str, str]] = []  # (what, text) of every capture, in order


def verbose() -> bool:
    """True when start-up output should be shown (``RESNET_VERBOSE`` set to 1/true/yes/on)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(on: bool = True) -> None:
    """Show (or hide) captured start-up output from now on, here and in child processes started later.

    Output captured earlier in this process is written at once when turning it on.
    """
    if on:
        was = verbose()
        os.environ[VERBOSE_ENV] = "1"
        if not was:
            for what, text in _captured:
                _write(f"[{what}]\n{text}")
    else:
        os.environ.pop(VERBOSE_ENV, None)


def unexpected_lines(text: str) -> list[str]:
    """The lines of ``text`` that are none of the known, harmless start-up lines."""
    return [
        line
        for line in text.splitlines()
        if line.strip() and not any(pattern.search(line) for pattern in BENIGN_PATTERNS)
    ]


def captured_text() -> str:
    """Everything captured in this process so far, each part headed by what was running."""
    return "".join(f"[{what}]\n{text}" for what, text in _captured)


def _write(text: str) -> None:
    try:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def captured(what: str):
    """Point file descriptor 2 at a temporary file while the block runs, then restore it.

    ``what`` names the block in the kept text. Nested or concurrent uses share the outermost capture
    (descriptor 2 belongs to the whole process); output of other threads meanwhile is captured too.
    """
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 at all: nothing to hide
            yield
            return
        sink = tempfile.TemporaryFile()
        _flush_stderr()
        os.dup2(sink.fileno(), 2)
        _depth = 1
        failed = True
        try:
            yield
            failed = False
        finally:
            _depth = 0
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            sink.close()
            if text:
                _captured.append((what, text))
                _report(what, text, failed)


def _report(what: str, text: str, failed: bool) -> None:
    if failed:
        _write(f"{what} failed; TensorFlow printed meanwhile:\n{text}")
    elif verbose():
        _write(text)
    else:
        others = unexpected_lines(text)
        if others:
            _write(
                f"({what}: TensorFlow printed {len(others)} line{'s' if len(others) > 1 else ''} beyond the usual "
                f"start-up notes; run with --verbose or {VERBOSE_ENV}=1 to see them)"
            )


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders, then runs its first import inside ``captured()``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        # A file loader is made for this one spec, so wrapping its exec_module touches nothing else.
        loader = spec.loader
        if type(loader) is importlib.machinery.SourceFileLoader:
            exec_module = loader.exec_module

            def quiet_exec_module(module):
                with captured("import tensorflow"):
                    exec_module(module)

            loader.exec_module = quiet_exec_module
        return spec


_finder = _QuietTensorFlowImport()


def install() -> None:
    """Make the first ``import tensorflow`` of this process quiet (a no-op once TensorFlow is imported)."""
    if "tensorflow" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
