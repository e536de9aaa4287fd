"""The page's areas under AppTest: charts are built once and drawn again from their specification, and
each area is an ``st.fragment``.

AppTest reruns the whole script on every interaction (streamlit 1.67: ``LocalScriptRunner.run`` takes no
fragment to run), so what a click inside an area reruns on a real server is checked in the browser
(``tests/test_browser.py``, through the server's rerun log); here, the count of charts built.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest
from test_app_state import run_with_predictions  # noqa: F401  (a fixture)

from app import areas, chart_specs

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"


def test_a_rerun_builds_no_chart_again_and_a_toggle_builds_only_the_chart_it_changes(run_with_predictions):  # noqa: F811
    chart_specs.clear()
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    drawn = chart_specs.builds
    names = sorted(content[0] for content in chart_specs.kept())
    assert {"accuracy", "loss", "epoch_time", "cumulative_time", "returns", "confusion", "per_class"} <= set(names)

    at.run()
    assert chart_specs.builds == drawn  # the same content: every chart drawn from its kept specification

    before = set(chart_specs.kept())
    at.toggle(key="confusion_normalised").set_value(True).run()
    assert not at.exception
    assert chart_specs.builds == drawn + 1
    (new,) = set(chart_specs.kept()) - before
    assert new[0] == "confusion" and new[-1] is True  # the row-normalised matrix, nothing else

    at.toggle(key="confusion_normalised").set_value(False).run()
    assert chart_specs.builds == drawn + 1  # back to the counts: kept from the first run


def test_the_page_logs_its_runs_only_when_asked(tmp_path, monkeypatch):
    """With ``$RESNET_RERUN_LOG`` set, a run of the page appends one line (areas drawn inside it are part of
    it); unset, nothing is written."""
    log = tmp_path / "reruns.jsonl"
    script = tmp_path / "page.py"
    script.write_text(
        "import streamlit as st\n"
        "from app import areas\n"
        "@areas.area('counter')\n"
        "def counter():\n"
        "    st.button('again', key='again')\n"
        "@areas.page\n"
        "def main():\n"
        "    st.title('page')\n"
        "    counter()\n"
        "main()\n"
    )
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    monkeypatch.delenv(areas.RERUN_LOG, raising=False)
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert not at.exception and not log.exists()

    monkeypatch.setenv(areas.RERUN_LOG, str(log))
    at.button(key="again").click().run()
    assert not at.exception
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["area"], line["alone"]) for line in lines] == [("page", False)]
    assert lines[0]["seconds"] >= 0
