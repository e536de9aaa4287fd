"""The training settings: sidebar widgets, and their mirror in the URL's query parameters.

Every ``TrainConfig`` field has one widget (key ``cfg_<field>``) and one query parameter (``<field>``).
The widgets' ranges, options and help, and the type each query value is parsed as, come from the field's
declaration in ``resnet/config.py`` (``PARAMS``); only each widget's kind, label and step are chosen here.
On a session's first run the query parameters are read once: each value is parsed, checked against the
widget's range and ``TrainConfig.validate()``, and a bad one is reported and replaced by its default.
After the widgets are drawn, the query parameters are rewritten from their values, so the URL always
holds the current configuration and can be shared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import streamlit as st

from resnet.config import (
    AUTO,
    AUTO_MIN_MAX_EPOCHS,
    DEFAULT_MAX_EPOCHS,
    FIXED,
    PARAMS,
    ConfigError,
    TrainConfig,
    check_value,
    parse_bool,
)
from resnet.core.hardware import detect_hardware
from resnet.wording import plural

DEFAULTS = TrainConfig()
FIELDS = tuple(PARAMS)  # every TrainConfig field, in declaration order
EPOCH_RANGE = PARAMS["epochs"].limits  # the widgets offer what the config declares, no narrower range of their own
# The batch-size slider offers the powers of two within the declared limits (8 to 2,048).
BATCH_SIZES = tuple(
    2**power for power in range(16) if PARAMS["batch_size"].limits[0] <= 2**power <= PARAMS["batch_size"].limits[1]
)
DEPTH_NAMES = {18: "ResNet-18", 34: "ResNet-34", 50: "ResNet-50"}
GPUS_NAMES = {"1": "1 (one device)", "all": "all (data-parallel)"}
# The sidebar's two ways to set a run's length (a budget curve's trunk is made by the Sweep tab alone).
EPOCHS_MODES = {FIXED: "a fixed number of epochs", AUTO: "until returns diminish"}
INIT_FLAG = "_settings_from_url"


def key(field: str) -> str:
    return f"cfg_{field}"


# --- parsing query values ------------------------------------------------------------------------------
def parse_value(field: str, text: str):
    """Turn one query-parameter string into a value of the field's declared type; ConfigError says what is wrong."""
    text = str(text).strip()
    value_type = PARAMS[field].type
    if value_type is bool:
        return parse_bool(text, field)
    if value_type is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{field} must be a whole number; got {text!r}") from None
        if not math.isfinite(number) or not number.is_integer():
            raise ConfigError(f"{field} must be a whole number; got {text!r}")
        return int(number)
    if value_type is float:
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{field} must be a number; got {text!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{field} must be a finite number; got {text!r}")
        return number
    return text


def check_widget_range(field: str, value) -> None:
    """The batch-size slider shows powers of two only; reject another size (the config checks the limits)."""
    if (
        field == "batch_size"
        and isinstance(value, int)
        and value not in BATCH_SIZES
        and PARAMS[field].limits[0] <= value <= PARAMS[field].limits[1]
    ):
        sizes = ", ".join(str(size) for size in BATCH_SIZES)
        raise ConfigError(f"batch_size must be a power of two here, one of {sizes}; got {value!r}")


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def settings_from_query(query: Mapping[str, str]) -> tuple[dict, list[str]]:
    """The valid configuration values in ``query`` and one message per rejected value.

    Unknown parameters are left alone (they may belong to something else); a known one that does not
    parse, is out of range, or is inconsistent with the others is dropped, so its default is used.
    """
    values, problems = {}, []
    for field in FIELDS:
        if field not in query:
            continue
        try:
            value = parse_value(field, query[field])
            check_widget_range(field, value)
            if field in ("epochs_mode", "schedule"):  # their consistency is checked with the others below
                check_value(PARAMS[field], value)
                if field == "epochs_mode" and value not in EPOCHS_MODES:
                    raise ConfigError(f"epochs_mode {value} is a budget curve's trunk, made by the Sweep tab")
            else:
                DEFAULTS.replace(**{field: value})  # validates the field against the config's limits
        except ConfigError as error:
            default = getattr(DEFAULTS, field)
            problems.append(f"Ignored the URL's {field}={query[field]!r}: {error}. Using the default {default!r}.")
            continue
        values[field] = value
    try:
        DEFAULTS.replace(**values)
    except ConfigError as error:
        dropped = [field for field in ("batch_size", "train_subset", "epochs_mode", "schedule") if field in values]
        for field in dropped:
            values.pop(field)
        problems.append(f"Ignored the URL's {' and '.join(dropped) or 'settings'}: {error}. Using the defaults.")
        try:
            DEFAULTS.replace(**values)
        except ConfigError:
            values = {}
    return values, problems


def load_settings_from_url() -> list[str]:
    """On a session's first run, put the URL's settings into the widgets; returns the rejections."""
    if st.session_state.get(INIT_FLAG):
        return []
    values, problems = settings_from_query(st.query_params.to_dict())
    for field in FIELDS:
        st.session_state[key(field)] = values.get(field, getattr(DEFAULTS, field))
    st.session_state[INIT_FLAG] = True
    return problems


def mirror_to_url(values: Mapping) -> None:
    """Write the current settings into the query parameters (only those that changed)."""
    for field in FIELDS:
        text = format_value(values[field])
        if st.query_params.get(field) != text:
            st.query_params[field] = text


# --- the sidebar widgets ----------------------------------------------------------------------------------
def _help(field: str, extra: str = "") -> str:
    """The field's declared help, its limits (but batch size's: its slider lists the sizes), ``extra``."""
    limits = PARAMS[field].limits
    allowed = f" Allowed: {limits[0]:g} to {limits[1]:g}." if limits and field != "batch_size" else ""
    return PARAMS[field].help + allowed + (f" {extra}" if extra else "")


def _bounds(field: str) -> dict:
    """The declared limits as a number widget's min_value and max_value, of the field's type."""
    spec = PARAMS[field]
    return {"min_value": spec.type(spec.limits[0]), "max_value": spec.type(spec.limits[1])}


def _options(field: str) -> tuple:
    """The declared choices of a field, for a selectbox."""
    return PARAMS[field].choices


def settings_ui() -> dict:
    """Draw the settings widgets in the sidebar; returns the field values (not yet validated together)."""
    sidebar = st.sidebar
    values = {}
    values["epochs_mode"] = sidebar.radio(
        "Train for",
        tuple(EPOCHS_MODES),
        format_func=EPOCHS_MODES.get,
        horizontal=True,
        key=key("epochs_mode"),
        on_change=_epochs_mode_changed,
        help=_help("epochs_mode"),
    )
    auto = values["epochs_mode"] == AUTO
    values["epochs"] = sidebar.slider(
        "Maximum epochs" if auto else "Epochs",
        *EPOCH_RANGE,
        step=1,
        key=key("epochs"),
        help=_help(
            "epochs", f"Until returns diminish, this is the most the run may take (at least {AUTO_MIN_MAX_EPOCHS})."
        ),
    )
    values["returns_threshold"] = sidebar.number_input(
        "Stop below (points of validation accuracy per 10 epochs)",
        **_bounds("returns_threshold"),
        step=0.05,
        key=key("returns_threshold"),
        help=_help("returns_threshold"),
        disabled=not auto,
    )
    values["batch_size"] = sidebar.select_slider(
        "Batch size", options=BATCH_SIZES, key=key("batch_size"), help=_help("batch_size", "Powers of two, 8 to 2048.")
    )
    values["learning_rate"] = sidebar.number_input(
        "Learning rate",
        **_bounds("learning_rate"),
        step=0.0005,
        format="%.6f",
        key=key("learning_rate"),
        help=_help("learning_rate"),
    )
    values["optimizer"] = sidebar.selectbox(
        "Optimizer", _options("optimizer"), key=key("optimizer"), help=_help("optimizer")
    )
    values["augment"] = sidebar.toggle("Data augmentation", key=key("augment"), help=_help("augment"))
    values["label_smoothing"] = sidebar.slider(
        "Label smoothing",
        **_bounds("label_smoothing"),
        step=0.01,
        key=key("label_smoothing"),
        help=_help("label_smoothing"),
    )
    values["train_subset"] = sidebar.number_input(
        "Training images",
        **_bounds("train_subset"),
        step=1000,
        key=key("train_subset"),
        help=_help("train_subset", "Try 200-1,000 for a quick look; 60,000 is the full set."),
    )
    values["eval_subset"] = sidebar.number_input(
        "Test images evaluated",
        **_bounds("eval_subset"),
        step=1000,
        key=key("eval_subset"),
        help=_help("eval_subset"),
    )
    values["depth"] = sidebar.selectbox(
        "Model depth", _options("depth"), format_func=DEPTH_NAMES.get, key=key("depth"), help=_help("depth")
    )
    values["precision"] = sidebar.selectbox(
        "Precision", _options("precision"), key=key("precision"), help=_help("precision")
    )
    gpu_count = len(detect_hardware().gpus)
    values["gpus"] = sidebar.selectbox(
        "GPUs",
        _options("gpus"),
        format_func=GPUS_NAMES.get,
        key=key("gpus"),
        # Nothing to choose with fewer than 2 GPUs; a shared link's "all" stays changeable back to 1.
        disabled=gpu_count < 2 and st.session_state.get(key("gpus")) == DEFAULTS.gpus,
        help=_help(
            "gpus",
            f"This machine has {plural(gpu_count, 'GPU') if gpu_count else 'no GPU'}"
            + (", so either choice trains on one device." if gpu_count < 2 else "."),
        ),
    )
    values["seed"] = sidebar.number_input("Seed", **_bounds("seed"), step=1, key=key("seed"), help=_help("seed"))
    with sidebar.expander("More settings"):
        values["weight_decay"] = st.number_input(
            "Weight decay",
            **_bounds("weight_decay"),
            step=0.0001,
            format="%.5f",
            key=key("weight_decay"),
            help=_help("weight_decay"),
        )
        values["schedule"] = st.selectbox(
            "Learning-rate schedule",
            _options("schedule"),
            key=key("schedule"),
            help=_help("schedule", "Until returns diminish always trains wsd."),
            disabled=auto,
        )
        if auto:  # the only schedule whose shape does not need the length in advance
            values["schedule"] = "wsd"
        values["cooldown_fraction"] = st.number_input(
            "Cooldown fraction",
            **_bounds("cooldown_fraction"),
            step=0.05,
            key=key("cooldown_fraction"),
            help=_help("cooldown_fraction"),
        )
        values["validation_images"] = st.number_input(
            "Validation images (0: automatic)",
            **_bounds("validation_images"),
            step=500,
            key=key("validation_images"),
            help=_help("validation_images"),
            disabled=not auto,
        )
    return {field: values[field] for field in FIELDS}


def _epochs_mode_changed() -> None:
    """Switching to "until returns diminish" with a short epoch count offers the default maximum instead."""
    if (
        st.session_state.get(key("epochs_mode")) == AUTO
        and st.session_state.get(key("epochs"), 0) < AUTO_MIN_MAX_EPOCHS
    ):
        st.session_state[key("epochs")] = DEFAULT_MAX_EPOCHS


def config_from_values(values: Mapping) -> tuple[TrainConfig | None, str | None]:
    """The validated config, or None and the reason it is not valid."""
    try:
        return TrainConfig.from_dict(dict(values)), None
    except ConfigError as error:
        return None, str(error)
