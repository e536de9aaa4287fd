"""Each chart built once: Altair charts turned into Vega-Lite specifications, kept by what they show.

``st.altair_chart`` converts and schema-validates its chart on every rerun, which cost most of a page
rerun (docs/benchmarks.md section 8: ~0.9 s of ~1.2 s in ``altair/utils/schemapi.py``). Here a chart is
built and converted only when its content is new: ``content`` names the chart and what it draws (e.g.
``("accuracy", history_token(history))``), so the same content is never converted twice and new content
never shows an old chart. The conversion skips validation (``to_dict(validate=False)``); every builder's
output is validated against the Vega-Lite schema in ``tests/test_chart_specs.py``.

A specification holds its data as named pandas DataFrames under ``datasets``, which ``st.vega_lite_chart``
sends as Arrow, exactly as ``st.altair_chart`` does, and is converted under Altair's theme ``none``, as
Streamlit converts it, so a chart looks as it did. Specifications are shared by every session of the server:
``st.vega_lite_chart`` copies a specification's top level before it takes its data out, and its one change
inside (an empty legend title written as " ") is the same on every draw.

Altair's theme and data transformer are global. The lock here serialises this module's conversions; the app
draws no chart through ``st.altair_chart`` (whose conversion takes Streamlit's own lock) or Streamlit's
built-in charts, and ``tests/test_chart_specs.py`` keeps it so.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import altair as alt
import numpy as np
import pandas as pd

MAX_SPECS = 128  # specifications kept, least recently drawn dropped first (a page draws about 15)
_specs: OrderedDict[Hashable, dict] = OrderedDict()
_lock = threading.Lock()  # sessions rerun in threads; Altair's theme and data transformer are global
builds = 0  # charts built and converted since the server started (read by the tests)


def _to_frames(data, datasets: dict) -> dict:
    """Altair data transformer: keep a chart's data as a DataFrame named by its content."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    name = "data-" + frame_token(frame)
    datasets[name] = frame
    return {"name": name}


alt.data_transformers.register("app_frames", _to_frames)


def to_spec(chart: alt.TopLevelMixin) -> dict:
    """``chart`` as a Vega-Lite specification with its data as named DataFrames, not validated."""
    datasets: dict[str, pd.DataFrame] = {}
    with _lock, alt.theme.enable("none"), alt.data_transformers.enable("app_frames", datasets=datasets):
        spec = chart.to_dict(validate=False)
    spec["datasets"] = {**spec.get("datasets", {}), **datasets}
    return spec


def spec(content: Hashable, build: Callable[[], alt.TopLevelMixin]) -> dict:
    """The specification of the chart ``build()`` makes for ``content`` (the chart's name and what it
    draws): built and converted when ``content`` is new."""
    global builds
    with _lock:
        if content in _specs:
            _specs.move_to_end(content)
            return _specs[content]
    made = to_spec(build())
    with _lock:
        builds += 1
        _specs[content] = made
        while len(_specs) > MAX_SPECS:
            _specs.popitem(last=False)
    return made


def kept() -> list[Hashable]:
    """The contents whose specifications are kept, least recently drawn first."""
    with _lock:
        return list(_specs)


def clear() -> None:
    """Forget every kept specification (the next draw of each chart builds it again)."""
    global builds
    with _lock:
        _specs.clear()
        builds = 0


def draw(target, content: Hashable, build: Callable[[], alt.TopLevelMixin], **options):
    """Draw the chart of ``content`` into ``target`` (``st`` or a container); ``options`` as for
    ``st.vega_lite_chart`` (``width``, ``key``, ``on_select``, ``selection_mode``, ``alt``)."""
    options.setdefault("width", "stretch")
    return target.vega_lite_chart(spec(content, build), **options)


def frame_token(frame: pd.DataFrame) -> str:
    """A short digest of a DataFrame's columns and values: equal content, equal token."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr(list(frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def array_token(*arrays) -> str:
    """A short digest of NumPy arrays (shape, type and values)."""
    digest = hashlib.blake2b(digest_size=12)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
