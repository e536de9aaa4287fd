"""Altair chart builders: each takes plain DataFrames (or a run's history) and returns a chart.

No Streamlit here, so the charts can be built and inspected anywhere.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from resnet.analysis import DiminishingReturns
from resnet.wording import time_unit

SPLIT_COLORS = {"train": "#4c78a8", "validation": "#72b7b2", "test": "#f58518"}  # validation: an auto run's split
HEIGHT = 260
CELL_SELECTION = "cell"  # name of the confusion matrix's click selection (true, predicted)


def _long(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of (epoch, split, value) for ``train_<metric>``, ``test_<metric>`` and, for a run with a
    validation split (an auto run's), ``val_<metric>``."""
    columns = {f"train_{metric}": "train", f"test_{metric}": "test"}
    validation = f"val_{metric}"
    if validation in history and history[validation].notna().any():
        columns[validation] = "validation"
    frame = history[["epoch", *columns]].rename(columns=columns)
    return frame.melt("epoch", var_name="split", value_name=metric).dropna(subset=[metric])


def _split_scale(history: pd.DataFrame, metric: str) -> alt.Scale:
    """The colours of the splits this history has (a run without a validation split lists none)."""
    validation = f"val_{metric}" in history and history[f"val_{metric}"].notna().any()
    splits = [split for split in SPLIT_COLORS if split != "validation" or validation]
    return alt.Scale(domain=splits, range=[SPLIT_COLORS[split] for split in splits])


def _epoch_axis(history: pd.DataFrame) -> alt.X:
    last = int(history["epoch"].max()) if len(history) else 1
    return alt.X("epoch:Q", title="Epoch", scale=alt.Scale(domain=[1, max(2, last)]), axis=alt.Axis(tickMinStep=1))


def _train_test_chart(
    history: pd.DataFrame, metric: str, *, title: str, y_title: str, number_format: str, axis_format=None
):
    """Train and test ``metric`` per epoch, one coloured line each."""
    return (
        alt.Chart(_long(history, metric), title=title, height=HEIGHT)
        .mark_line(point=True)
        .encode(
            x=_epoch_axis(history),
            y=alt.Y(
                f"{metric}:Q",
                title=y_title,
                axis=alt.Axis(format=axis_format) if axis_format else alt.Axis(),
                scale=alt.Scale(zero=False),
            ),
            color=alt.Color("split:N", scale=_split_scale(history, metric), title=None),
            tooltip=["epoch:Q", "split:N", alt.Tooltip(f"{metric}:Q", format=number_format)],
        )
    )


def accuracy_chart(history: pd.DataFrame) -> alt.Chart:
    return _train_test_chart(
        history,
        "accuracy",
        title="Train and test accuracy per epoch",
        y_title="Accuracy",
        number_format=".2%",
        axis_format=".0%",
    )


LOSS_SERIES = {
    "train_cross_entropy": "train",
    "test_loss": "test",
    "train_loss": "train, label-smoothed (optimised)",
}


def loss_chart(history: pd.DataFrame, *, label_smoothing: float = 0.0) -> alt.Chart:
    """Plain cross-entropy of train and test per epoch, so they compare like with like.

    With label smoothing the optimised training loss cannot fall near zero (about 0.5 nats at 0.1), so
    it is drawn faintly beside them as its own series, never in place of the plain training loss. Runs
    recorded before the plain training cross-entropy was kept show the optimised loss, labelled so.
    """
    plain = history["train_cross_entropy"].notna().all() if "train_cross_entropy" in history else False
    names = dict(LOSS_SERIES)
    if not plain:
        names.pop("train_cross_entropy")
        names["train_loss"] = "train, label-smoothed (optimised)" if label_smoothing else "train"
    elif not label_smoothing:
        names.pop("train_loss")  # identical to the plain cross-entropy
    frame = history[["epoch", *names]].rename(columns=names).melt("epoch", var_name="split", value_name="loss")
    domain = list(names.values())
    colors = {"train": "#4c78a8", "test": "#f58518", "train, label-smoothed (optimised)": "#9ecae9"}
    return (
        alt.Chart(frame, title="Train and test cross-entropy per epoch", height=HEIGHT)
        .mark_line(point=True)
        .encode(
            x=_epoch_axis(history),
            y=alt.Y("loss:Q", title="Cross-entropy (nats)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "split:N", scale=alt.Scale(domain=domain, range=[colors[name] for name in domain]), title=None
            ),
            strokeDash=alt.condition(
                alt.datum.split == "train, label-smoothed (optimised)", alt.value([4, 3]), alt.value([1, 0])
            ),
            tooltip=["epoch:Q", "split:N", alt.Tooltip("loss:Q", format=".4f")],
        )
    )


def epoch_time_chart(history: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(history, title="Seconds per epoch", height=HEIGHT)
        .mark_bar(color="#54a24b")
        .encode(
            x=alt.X("epoch:O", title="Epoch", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("epoch_seconds:Q", title="Seconds"),
            tooltip=[
                "epoch:Q",
                alt.Tooltip("epoch_seconds:Q", format=".1f", title="seconds"),
                alt.Tooltip("images_per_second:Q", format=".0f", title="training images/s"),
            ],
        )
    )


def cumulative_time_chart(history: pd.DataFrame) -> alt.Chart:
    unit, scale = time_unit(float(history["cumulative_seconds"].max()) if len(history) else 0.0)
    data = history.assign(cumulative=history["cumulative_seconds"] / scale)
    return (
        alt.Chart(data, title="Cumulative training time", height=HEIGHT)
        .mark_line(point=True, color="#54a24b")
        .encode(
            x=_epoch_axis(history),
            y=alt.Y("cumulative:Q", title=unit.capitalize()),
            tooltip=["epoch:Q", alt.Tooltip("cumulative:Q", format=".1f", title=unit)],
        )
    )


def returns_chart(
    history: pd.DataFrame, point: DiminishingReturns | None, *, cooldown: tuple[int, int] | None = None
) -> alt.Chart:
    """Test accuracy against cumulative training time, with the diminishing-returns point marked, and for
    an auto run (``cooldown``: its stable phase's last epoch, the cooldown's last) where its cooldown ran."""
    unit, scale = time_unit(float(history["cumulative_seconds"].max()) if len(history) else 0.0)
    data = history.assign(time=history["cumulative_seconds"] / scale)
    line = (
        alt.Chart(data)
        .mark_line(point=True, color="#f58518")
        .encode(
            x=alt.X(
                "time:Q",
                title=f"Cumulative training time ({unit})",
                scale=alt.Scale(zero=True),
                axis=alt.Axis(tickCount=8),
            ),
            y=alt.Y("test_accuracy:Q", title="Test accuracy", axis=alt.Axis(format=".0%"), scale=alt.Scale(zero=False)),
            tooltip=[
                "epoch:Q",
                alt.Tooltip("time:Q", format=".1f", title=unit),
                alt.Tooltip("test_accuracy:Q", format=".2%", title="test accuracy"),
            ],
        )
    )
    layers = [line]
    if cooldown is not None:
        layers = [*_cooldown_layers(data, *cooldown), line]
    if point is not None:
        row = data[data["epoch"] <= point.epoch].tail(1)
        at = float(row["time"].iloc[0]) if len(row) else 0.0
        marker = pd.DataFrame(
            {"time": [at], "label": [f"diminishing returns after epoch {point.epoch}"], "epoch": [point.epoch]}
        )
        layers.append(alt.Chart(marker).mark_rule(color="#e45756", strokeDash=[6, 4], size=2).encode(x="time:Q"))
        layers.append(
            alt.Chart(marker)
            .mark_text(align="left", dx=6, dy=-6, color="#e45756", fontWeight="bold")
            .encode(x="time:Q", y=alt.value(12), text="label:N")
        )
    return alt.layer(*layers).properties(title="Test accuracy against training time", height=HEIGHT)


def overlay_chart(frame: pd.DataFrame) -> alt.Chart:
    """Test accuracy per epoch of several runs: columns run, epoch, test_accuracy."""
    return (
        alt.Chart(frame, title="Test accuracy of the selected runs", height=HEIGHT + 40)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="Epoch", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("test_accuracy:Q", title="Test accuracy", axis=alt.Axis(format=".0%"), scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="Run", legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
            tooltip=["run:N", "epoch:Q", alt.Tooltip("test_accuracy:Q", format=".2%", title="test accuracy")],
        )
    )


def confusion_chart(frame: pd.DataFrame, *, normalised: bool, class_order) -> alt.Chart:
    """Heatmap of ``analysis.confusion_frame``: counts, or each true class's share (row-normalised)."""
    value = "share" if normalised else "count"
    value_format = ".0%" if normalised else "d"
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="Predicted class", sort=list(class_order), axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("true:N", title="True class", sort=list(class_order)),
    )
    cell = alt.selection_point(name=CELL_SELECTION, fields=["true", "predicted"], on="click")
    cells = (
        base.mark_rect()
        .encode(
            color=alt.Color(
                f"{value}:Q", title="Share of true class" if normalised else "Images", scale=alt.Scale(scheme="blues")
            ),
            tooltip=[
                "true:N",
                "predicted:N",
                "count:Q",
                alt.Tooltip("share:Q", format=".1%", title="share of true class"),
            ],
        )
        .add_params(cell)
    )
    maximum = float(frame[value].max()) if len(frame) else 0.0
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text(f"{value}:Q", format=value_format),
        color=alt.condition(alt.datum[value] > maximum / 2, alt.value("white"), alt.value("#1f2d3d")),
    )
    title = "Confusion matrix (share of each true class)" if normalised else "Confusion matrix (image counts)"
    return alt.layer(cells, labels).properties(title=title, height=420)


def per_class_chart(frame: pd.DataFrame) -> alt.Chart:
    """Bars of ``analysis.per_class_accuracy``."""
    return (
        alt.Chart(frame, title="Test accuracy per class", height=420)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X("accuracy:Q", title="Accuracy", axis=alt.Axis(format=".0%"), scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("class:N", title=None, sort="-x"),
            tooltip=["class:N", "images:Q", alt.Tooltip("accuracy:Q", format=".1%")],
        )
    )


FRONT_COLORS = alt.Scale(domain=["on the Pareto front", "dominated"], range=["#e45756", "#9eabb8"])


def pareto_chart(points: pd.DataFrame) -> alt.Chart:
    """Final test accuracy against total training time, one labelled point per run, the front as a line.

    ``points``: columns trial, label, total_seconds, test_accuracy and on_front (bool), one row per run.
    """
    unit, scale = time_unit(float(points["total_seconds"].max()) if len(points) else 0.0)
    data = points.assign(
        time=points["total_seconds"] / scale,
        where=points["on_front"].map({True: "on the Pareto front", False: "dominated"}),
    )
    x = alt.X("time:Q", title=f"Total training time ({unit})", scale=alt.Scale(zero=True))
    y = alt.Y("test_accuracy:Q", title="Final test accuracy", axis=alt.Axis(format=".1%"), scale=alt.Scale(zero=False))
    tooltip = [
        "trial:Q",
        "label:N",
        alt.Tooltip("time:Q", format=".1f", title=unit),
        alt.Tooltip("test_accuracy:Q", format=".2%", title="test accuracy"),
    ]
    front = data[data["on_front"]].sort_values("time")
    line = alt.Chart(front).mark_line(color="#e45756", strokeDash=[6, 3]).encode(x=x, y=y)
    dots = (
        alt.Chart(data)
        .mark_circle(size=90, opacity=0.9)
        .encode(x=x, y=y, color=alt.Color("where:N", scale=FRONT_COLORS, title=None), tooltip=tooltip)
    )
    labels = alt.Chart(data).mark_text(align="left", dx=7, dy=-7, fontSize=11).encode(x=x, y=y, text="label:N")
    return alt.layer(line, dots, labels).properties(
        title="Final test accuracy against total training time", height=HEIGHT + 60
    )


def sweep_curves_chart(frame: pd.DataFrame, *, color_title: str, x_axis: str) -> alt.Chart:
    """Test accuracy per epoch of every run of a sweep, overlaid, coloured by one setting.

    ``frame``: columns run (a label per run), epoch, cumulative_seconds, test_accuracy and colour (that
    setting's value as text); ``x_axis`` is ``"epoch"`` or ``"time"`` (cumulative training time).
    """
    if x_axis == "time":
        unit, scale = time_unit(float(frame["cumulative_seconds"].max()) if len(frame) else 0.0)
        data = frame.assign(x=frame["cumulative_seconds"] / scale)
        x = alt.X("x:Q", title=f"Cumulative training time ({unit})", scale=alt.Scale(zero=True))
        x_tooltip = alt.Tooltip("x:Q", format=".1f", title=unit)
    else:
        data = frame.assign(x=frame["epoch"])
        x = alt.X("x:Q", title="Epoch", axis=alt.Axis(tickMinStep=1))
        x_tooltip = alt.Tooltip("x:Q", title="epoch")
    return (
        alt.Chart(data, title="Test accuracy per epoch of every run", height=HEIGHT + 40)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("test_accuracy:Q", title="Test accuracy", axis=alt.Axis(format=".0%"), scale=alt.Scale(zero=False)),
            color=alt.Color("colour:N", title=color_title, legend=alt.Legend(orient="bottom")),
            detail="run:N",
            tooltip=["run:N", x_tooltip, alt.Tooltip("test_accuracy:Q", format=".2%", title="test accuracy")],
        )
    )


MAP_REGION = "region"  # name of the feature map's brush selection (a rectangle in projection space)
MISTAKE_SHAPES = alt.Scale(domain=["correct", "mistake"], range=["circle", "cross"])


def feature_map_chart(frame: pd.DataFrame, *, class_order, title: str, axis_titles: tuple[str, str]) -> alt.Chart:
    """Scatter of a feature-space projection: colour = true class, a cross = a mistake, a brush to select.

    ``frame`` has x, y, true, predicted, confidence, test_index and outcome ("correct"/"mistake").
    """
    region = alt.selection_interval(name=MAP_REGION, encodings=["x", "y"])
    return (
        alt.Chart(frame, title=title, height=420)
        .mark_point(filled=True, size=22)
        .encode(
            x=alt.X("x:Q", title=axis_titles[0], axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title=axis_titles[1], axis=alt.Axis(labels=False, ticks=False)),
            color=alt.Color("true:N", title="True class", sort=list(class_order), scale=alt.Scale(scheme="tableau10")),
            shape=alt.Shape("outcome:N", title=None, scale=MISTAKE_SHAPES),
            opacity=alt.condition(region, alt.value(0.75), alt.value(0.15)),
            tooltip=[
                alt.Tooltip("test_index:Q", title="test image"),
                "true:N",
                "predicted:N",
                alt.Tooltip("confidence:Q", format=".0%"),
            ],
        )
        .add_params(region)
        # Thousands of points: drawn on a canvas, without a label per point for screen readers (the chart's
        # own label says what it is), as Streamlit does for large inline data; SVG took a second per map.
        .properties(usermeta={"embedOptions": {"renderer": "canvas"}})
        .configure_mark(aria=False)
    )


def _cooldown_layers(data: pd.DataFrame, stable_end: int, cooldown_end: int) -> list:
    """A shaded band over the cooldown's time and a rule where the stable phase ended."""
    start = data[data["epoch"] <= stable_end].tail(1)
    if start.empty:
        return []
    began = float(start["time"].iloc[0])
    ended = float(data["time"].iloc[-1])
    done = int(data["epoch"].iloc[-1])
    label = f"cooldown, epochs {stable_end + 1}-{cooldown_end}" + ("" if done >= cooldown_end else " (running)")
    band = pd.DataFrame({"start": [began], "end": [max(ended, began)], "label": [label]})
    rule = pd.DataFrame({"time": [began], "label": [f"stable phase ended after epoch {stable_end}"]})
    return [
        alt.Chart(band).mark_rect(color="#72b7b2", opacity=0.18).encode(x="start:Q", x2="end:Q"),
        alt.Chart(rule).mark_rule(color="#3b8b86", size=2).encode(x="time:Q", tooltip=["label:N"]),
        alt.Chart(band)
        .mark_text(align="left", baseline="top", dx=4, dy=2, color="#3b8b86")
        .encode(x="start:Q", y=alt.value(0), text="label:N"),
    ]
