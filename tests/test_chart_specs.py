"""Charts built once (``app.chart_specs``): every chart the app draws is valid Vega-Lite, is what
``st.altair_chart`` would have drawn, and is built again only when what it shows changes."""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import pytest
from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

from app import chart_specs, charts
from data.fashion_mnist import CLASS_NAMES
from resnet.analysis import confusion_frame, confusion_matrix, per_class_accuracy, returns_verdict
from resnet.store.run_state import HISTORY_COLUMNS


def history(epochs: int = 12, *, validation: bool = False) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    accuracy = 0.9 - 0.3 * np.exp(-epoch / 3)
    frame = pd.DataFrame({column: np.full(epochs, 0.5) for column in HISTORY_COLUMNS})
    frame = frame.assign(
        epoch=epoch,
        train_accuracy=accuracy + 0.02,
        test_accuracy=accuracy,
        train_loss=1 - accuracy,
        train_cross_entropy=0.9 - accuracy,
        test_loss=1.1 - accuracy,
        epoch_seconds=10.0,
        cumulative_seconds=10.0 * epoch,
        images_per_second=100.0,
        val_loss=(1.05 - accuracy) if validation else np.nan,
        val_accuracy=(accuracy - 0.01) if validation else np.nan,
    )
    return frame


def every_chart() -> dict[str, alt.TopLevelMixin]:
    """One of each chart the app draws, on small but realistic data."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    predicted = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 10, 500))
    counts = confusion_matrix(labels, predicted)
    curve = history(24)
    verdict = returns_verdict(curve["epoch"], curve["test_accuracy"], curve["cumulative_seconds"], threshold=0.002)
    assert verdict.point is not None
    overlay = pd.concat([history(5)[["epoch", "test_accuracy"]].assign(run=name) for name in ("a", "b")])
    points = pd.DataFrame(
        {
            "trial": [1, 2, 3],
            "label": ["1: epochs 5", "2: epochs 10", "3: epochs 20"],
            "total_seconds": [50.0, 100.0, 200.0],
            "test_accuracy": [0.85, 0.88, 0.87],
            "on_front": [True, True, False],
        }
    )
    sweep = history(5)[["epoch", "cumulative_seconds", "test_accuracy"]].assign(run="1: seed 1", colour="1")
    feature_map = pd.DataFrame(
        {
            "x": rng.normal(size=300),
            "y": rng.normal(size=300),
            "test_index": np.arange(300),
            "true": np.asarray(CLASS_NAMES)[labels[:300]],
            "predicted": np.asarray(CLASS_NAMES)[predicted[:300]],
            "confidence": rng.random(300),
            "outcome": np.where(labels[:300] == predicted[:300], "correct", "mistake"),
        }
    )
    return {
        "accuracy": charts.accuracy_chart(curve),
        "accuracy with validation": charts.accuracy_chart(history(6, validation=True)),
        "loss": charts.loss_chart(curve),
        "loss, label-smoothed": charts.loss_chart(curve, label_smoothing=0.1),
        "epoch time": charts.epoch_time_chart(curve),
        "cumulative time": charts.cumulative_time_chart(curve),
        "returns": charts.returns_chart(curve, verdict.point),
        "returns with cooldown": charts.returns_chart(curve, None, cooldown=(20, 24)),
        "overlay": charts.overlay_chart(overlay),
        "confusion": charts.confusion_chart(confusion_frame(counts), normalised=False, class_order=CLASS_NAMES),
        "confusion, row-normalised": charts.confusion_chart(
            confusion_frame(counts), normalised=True, class_order=CLASS_NAMES
        ),
        "per class": charts.per_class_chart(per_class_accuracy(labels, predicted)),
        "pareto": charts.pareto_chart(points),
        "sweep curves": charts.sweep_curves_chart(sweep, color_title="Seeds", x_axis="epoch"),
        "sweep curves in time": charts.sweep_curves_chart(sweep, color_title="Seeds", x_axis="time"),
        "feature map": charts.feature_map_chart(
            feature_map, class_order=CLASS_NAMES, title="Epoch 1", axis_titles=("PC 1", "PC 2")
        ),
    }


def with_data_named_in_order(spec: dict, datasets: dict) -> tuple[str, list]:
    """The specification without its datasets, each dataset's name replaced by its order of appearance,
    and the datasets' rows in that order: two specifications that draw the same compare equal."""
    text = json.dumps({key: value for key, value in spec.items() if key != "datasets"}, sort_keys=True)
    rows = []
    for number, (name, data) in enumerate(datasets.items()):
        text = text.replace(f'"{name}"', f'"dataset-{number}"')
        rows.append(json.loads(pd.DataFrame(data).to_json(orient="records")))
    return text, rows


@pytest.mark.parametrize("name", list(every_chart()))
def test_every_chart_is_valid_vega_lite_and_what_streamlit_would_draw(name):
    chart = every_chart()[name]
    ours = chart_specs.to_spec(chart)
    # Valid: the schema check that drawing skips, done here once for every chart the app draws.
    records = {key: json.loads(frame.to_json(orient="records")) for key, frame in ours["datasets"].items()}
    alt.Chart.from_dict({**ours, "datasets": records}, validate=True)
    # The same to the eye: what st.altair_chart sends for the chart (its data read back from Arrow).
    import pyarrow as pa

    theirs = _convert_altair_to_vega_lite_spec(chart)
    their_frames = {key: pa.ipc.open_stream(data).read_pandas() for key, data in theirs["datasets"].items()}
    assert with_data_named_in_order(ours, ours["datasets"]) == with_data_named_in_order(theirs, their_frames)


def test_a_chart_is_built_once_per_content_and_again_when_it_changes():
    chart_specs.clear()
    built = []

    def build(frame):
        built.append(len(frame))
        return charts.accuracy_chart(frame)

    first, longer = history(3), history(4)
    spec = chart_specs.spec(("accuracy", chart_specs.frame_token(first)), lambda: build(first))
    again = chart_specs.spec(("accuracy", chart_specs.frame_token(history(3))), lambda: build(history(3)))
    assert again is spec and built == [3]  # equal content, the same specification, not built again
    grown = chart_specs.spec(("accuracy", chart_specs.frame_token(longer)), lambda: build(longer))
    assert grown is not spec and built == [3, 4]
    assert chart_specs.builds == 2


def test_the_kept_specifications_are_bounded_and_least_recently_drawn_go_first(monkeypatch):
    chart_specs.clear()
    monkeypatch.setattr(chart_specs, "MAX_SPECS", 3)
    frame = history(2)
    for number in range(3):
        chart_specs.spec(("n", number), lambda: charts.accuracy_chart(frame))
    chart_specs.spec(("n", 0), lambda: pytest.fail("0 is kept"))  # drawn again: now the most recent
    chart_specs.spec(("n", 3), lambda: charts.accuracy_chart(frame))  # a fourth: 1 goes
    assert chart_specs.kept() == [("n", 2), ("n", 0), ("n", 3)]


def test_tokens_follow_content_not_identity():
    frame = history(5)
    assert chart_specs.frame_token(frame) == chart_specs.frame_token(frame.copy())
    changed = frame.copy()
    changed.loc[2, "test_accuracy"] += 1e-6
    assert chart_specs.frame_token(changed) != chart_specs.frame_token(frame)
    assert chart_specs.frame_token(frame) != chart_specs.frame_token(frame.rename(columns={"epoch": "step"}))
    counts = np.eye(10, dtype=np.int64)
    assert chart_specs.array_token(counts) == chart_specs.array_token(counts.copy())
    assert chart_specs.array_token(counts) != chart_specs.array_token(counts.astype(np.int32))
    assert chart_specs.array_token(counts) != chart_specs.array_token(counts.T[::-1])


def test_the_app_draws_every_chart_through_its_specifications():
    """Altair's theme and data transformer are global: a chart converted by ``st.altair_chart`` (or one of
    Streamlit's built-in charts) at the same time as ``chart_specs.to_spec`` could take the other's. So the
    app draws no chart that way, and draws every chart once per content."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [root / "streamlit_app.py", *sorted((root / "app").glob("*.py"))]
    pattern = re.compile(r"\.(altair_chart|line_chart|area_chart|bar_chart|scatter_chart)\(|\bst\.map\(")
    found = [f"{path.name}: {match.group(0)}" for path in sources for match in pattern.finditer(path.read_text())]
    assert found == []
