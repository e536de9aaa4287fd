"""The page's areas: each one an ``st.fragment``, so a click inside it reruns that area alone.

An area is a part of the screen whose widgets change nothing outside it (the confusion matrix with its
pair picker, the sample grid with its filters, an explanation, the feature maps, the overlay of runs, a
sweep's answer). A click there reruns only its function, with the arguments of the last whole-page run;
the rest of the page stays as drawn. A click whose effect crosses areas (show another run, delete one,
start a training) asks for the whole page with ``st.rerun(scope="app")``.

With ``$RESNET_RERUN_LOG`` set to a file, every whole-page run and every area rerun alone appends one
JSON line, ``{"area": "confusion", "alone": true, "seconds": 0.041, "at": 1764614400.1}``: what
``benchmarks/click_latency.py`` reports as server time per click and what the browser tests read to
see which areas a click reran. Unset (the default), nothing is timed or written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator

import streamlit as st

RERUN_LOG = "RESNET_RERUN_LOG"
PAGE = "page"  # the area name of a whole-page run
_running = threading.local()  # .depth: how many timed runs (the page, an area) this thread is inside


@contextlib.contextmanager
def _timed(area: str, *, alone: bool) -> Iterator[None]:
    """Time what runs inside, unless this thread is already timing the page or an area around it."""
    depth = getattr(_running, "depth", 0)
    path = os.environ.get(RERUN_LOG) if depth == 0 else None
    started = time.perf_counter()
    _running.depth = depth + 1
    try:
        yield
    finally:
        _running.depth = depth
        if path:
            line = {"area": area, "alone": alone, "seconds": round(time.perf_counter() - started, 5), "at": time.time()}
            with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")


def page(function: Callable[[], None]) -> Callable[[], None]:
    """The whole page's script (``streamlit_app.main``): timed as area ``page``; areas inside it are part of it."""

    @functools.wraps(function)
    def run() -> None:
        with _timed(PAGE, alone=False):
            function()

    return run


def area(name: str, *, run_every: float | None = None) -> Callable[[Callable], Callable]:
    """``function`` as an ``st.fragment`` named ``name`` (``run_every``: rerun it alone that often, in seconds)."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def body(*args, **kwargs):
            with _timed(name, alone=True):  # inside the page's run (or an area's), timed with that
                return function(*args, **kwargs)

        return st.fragment(body, run_every=run_every)

    return decorate
