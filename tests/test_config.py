"""TrainConfig: its declared fields and validation; learning-rate schedules and the precision choice."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from resnet.config import (
    CHOICES,
    FIELD_HELP,
    LIMITS,
    PARAMS,
    ConfigError,
    TrainConfig,
    check_fields,
    coerce_values,
    param,
    param_specs,
    parse_bool,
)
from resnet.core.hardware import Hardware
from resnet.core.precision import resolve_precision
from resnet.core.schedule import Segment, learning_rate_at, plan_segments


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be between 1 and 500; got 0"),
        ({"batch_size": 4096}, "batch_size must be between 8 and 2048"),
        ({"learning_rate": -0.1}, "learning_rate must be between"),
        ({"optimizer": "lion"}, "optimizer must be one of adamw, adam, sgd; got 'lion'"),
        ({"depth": 101}, "depth must be one of 18, 34, 50"),
        ({"precision": "float8"}, "precision must be one of auto"),
        ({"train_subset": 70_000}, "train_subset must be between 100 and 60000"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"epochs": 10.0}, "epochs must be a whole number"),
        ({"learning_rate": float("nan")}, "learning_rate must be between"),
        ({"batch_size": True}, "batch_size must be a number"),
        ({"epochs": "ten"}, "epochs must be a number"),
        ({"augment": "yes"}, "augment must be true or false"),
        ({"train_subset": 200, "batch_size": 256}, "train_subset \\(200\\) must be at least batch_size \\(256\\)"),
    ],
)
def test_invalid_values_name_the_field_and_the_range(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


def test_defaults_are_valid():
    assert TrainConfig().validate() == TrainConfig()


def test_from_dict_rejects_unknown_fields_and_accepts_whole_floats():
    with pytest.raises(ConfigError, match="unknown configuration field\\(s\\): dropout"):
        TrainConfig.from_dict({"epochs": 3, "dropout": 0.5})
    assert TrainConfig.from_dict({"epochs": 3.0}).epochs == 3
    assert TrainConfig.from_dict({"depth": 18.0}).fingerprint() == TrainConfig(depth=18).fingerprint()


def test_fingerprint_ignores_epochs_only():
    base = TrainConfig()
    assert base.fingerprint() == base.replace(epochs=99).fingerprint()
    assert base.fingerprint() != base.replace(batch_size=64).fingerprint()


def test_fingerprints_of_existing_configs_are_unchanged():
    # Computed before the fields declared their rules in place (commit edbbf43): cached runs keep their ids.
    assert TrainConfig().fingerprint() == "0a7a7a24ee"
    assert TrainConfig(depth=18, batch_size=64, augment=True, learning_rate=0.01).fingerprint() == "8e4503bfa8"
    assert TrainConfig().to_dict() == {
        "epochs": 10,
        "batch_size": 128,
        "learning_rate": 0.003,
        "optimizer": "adamw",
        "weight_decay": 0.0005,
        "schedule": "one_cycle",
        # Added with auto runs and budget curves: at these defaults, left out of the fingerprint.
        "epochs_mode": "fixed",
        "returns_threshold": 0.2,
        "cooldown_fraction": 0.2,
        "validation_images": 0,
        "augment": False,
        "label_smoothing": 0.1,
        "train_subset": 60000,
        "eval_subset": 10000,
        "depth": 50,
        "precision": "auto",
        "seed": 42,
        "gpus": "1",  # where it trains: not in the fingerprint (tests/test_distributed.py)
    }


def test_every_field_declares_its_help_and_its_rule():
    for spec in param_specs(TrainConfig):
        assert spec.help.strip(), spec.name
        if spec.type is bool:
            assert spec.limits is None and spec.choices is None, spec.name
        else:
            assert (spec.limits is None) != (spec.choices is None), f"{spec.name} needs limits or choices"
        assert spec.default == getattr(TrainConfig(), spec.name)
    assert tuple(PARAMS) == tuple(field.name for field in dataclasses.fields(TrainConfig))


def test_the_module_views_are_read_from_the_declarations():
    assert LIMITS["epochs"] == (1, 500) and LIMITS["train_subset"] == (100, 60000) and LIMITS["seed"] == (0, 2**31 - 1)
    assert CHOICES["depth"] == (18, 34, 50) and CHOICES["optimizer"] == ("adamw", "adam", "sgd")
    assert set(LIMITS) | set(CHOICES) | {"augment"} == set(FIELD_HELP) == set(PARAMS)
    assert FIELD_HELP["batch_size"] == "Training images per optimisation step."
    assert PARAMS["train_subset"].flag == "--subset" and PARAMS["eval_subset"].flag == "--eval-subset"
    with pytest.raises(TypeError):
        LIMITS["epochs"] = (1, 5)  # a view: change the declaration instead


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True)]
    + [("0", False), ("false", False), ("No", False), ("off", False)],
)
def test_parse_bool_reads_the_usual_words(text, value):
    assert parse_bool(text) is value


def test_parse_bool_rejects_anything_else_naming_the_field():
    with pytest.raises(ConfigError, match="augment must be true or false; got 'maybe'"):
        parse_bool("maybe", "augment")
    with pytest.raises(ConfigError, match="value must be true or false; got ' yes'"):
        parse_bool(" yes")  # callers strip what they read; this function does not guess


@dataclass(frozen=True)
class SketchConfig:
    """A config with hypothetical new hyperparameters, each declared once."""

    dropout: float = param(0.1, limits=(0.0, 0.9), help="Fraction of activations dropped.")
    width: int = param(64, choices=(32, 64, 128), help="Channels of the first stage.")
    blocks: int = param(3, limits=(1, 8), flag="stages", help="Residual blocks per stage.")
    mixup: bool = param(False, help="Mix pairs of training images.")

    def validate(self):
        check_fields(self)
        return self


def test_a_new_field_declared_once_is_validated_and_coerced():
    assert [spec.name for spec in param_specs(SketchConfig)] == ["dropout", "width", "blocks", "mixup"]
    assert [spec.type for spec in param_specs(SketchConfig)] == [float, int, int, bool]
    check_fields(SketchConfig())
    for changes, message in [
        ({"dropout": 0.95}, "dropout must be between 0.0 and 0.9; got 0.95"),
        ({"width": 48}, "width must be one of 32, 64, 128; got 48"),
        ({"blocks": 2.5}, "blocks must be a whole number; got 2.5"),
        ({"blocks": "3"}, "blocks must be a number; got '3'"),
        ({"mixup": 1}, "mixup must be true or false; got 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_fields(SketchConfig(**changes))
    assert coerce_values(SketchConfig, {"blocks": 4.0, "dropout": 1.0}) == {"blocks": 4, "dropout": 1.0}
    with pytest.raises(ConfigError, match="unknown configuration field\\(s\\): depth"):
        coerce_values(SketchConfig, {"depth": 18})


def test_an_incomplete_declaration_is_refused():
    @dataclass(frozen=True)
    class Undeclared:
        dropout: float = 0.1

    @dataclass(frozen=True)
    class NoRule:
        dropout: float = param(0.1, help="Fraction dropped.")

    @dataclass(frozen=True)
    class BothRules:
        width: int = param(64, limits=(1, 128), choices=(32, 64), help="Channels.")

    @dataclass(frozen=True)
    class RuledBool:
        mixup: bool = param(False, choices=(False, True), help="Mix pairs.")

    @dataclass(frozen=True)
    class FloatLimitsOfAnInt:
        blocks: int = param(3, limits=(1.0, 8.0), help="Blocks per stage.")

    for config_class, message in [
        (Undeclared, "Undeclared.dropout is not declared with param"),
        (NoRule, "dropout needs either limits"),
        (BothRules, "width needs either limits"),
        (RuledBool, "mixup is true or false"),
        (FloatLimitsOfAnInt, "blocks: its limits or choices must be of its type, int"),
    ]:
        with pytest.raises(TypeError, match=message):
            param_specs(config_class)


def test_url_values_are_parsed_as_the_declared_types():
    from app.params import parse_value

    assert parse_value("epochs", " 12 ") == 12 and parse_value("depth", "18.0") == 18
    assert parse_value("learning_rate", "1e-3") == pytest.approx(0.001)
    assert parse_value("augment", "Yes") is True and parse_value("optimizer", "sgd") == "sgd"
    with pytest.raises(ConfigError, match="seed must be a whole number; got '1.5'"):
        parse_value("seed", "1.5")
    with pytest.raises(ConfigError, match="augment must be true or false; got 'maybe'"):
        parse_value("augment", " maybe")


def test_one_cycle_warms_up_then_decays_to_zero():
    rates = [learning_rate_at("one_cycle", peak=1.0, step=s, total_steps=100, steps_per_epoch=10) for s in range(101)]
    peak_step = max(range(101), key=rates.__getitem__)
    assert 10 <= peak_step <= 15 and rates[peak_step] == pytest.approx(1.0)
    assert rates[0] < 0.2 and rates[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(rates[peak_step:], rates[peak_step + 1 :], strict=False))


def test_cosine_and_constant_schedules():
    assert learning_rate_at("cosine", peak=0.5, step=0, total_steps=10, steps_per_epoch=5) == pytest.approx(0.5)
    assert learning_rate_at("cosine", peak=0.5, step=5, total_steps=10, steps_per_epoch=5) == pytest.approx(0.25)
    assert learning_rate_at("constant", peak=0.5, step=7, total_steps=10, steps_per_epoch=5) == 0.5


def test_segments_new_run_resume_and_extension():
    assert plan_segments([], epochs_done=0, target_epochs=10) == [Segment(1, 10)]
    # Stopped at epoch 4 of 10 and resumed: the same cycle continues.
    assert plan_segments([Segment(1, 10)], epochs_done=4, target_epochs=10) == [Segment(1, 10)]
    # Finished 10, extended to 15: a warm restart over epochs 11-15.
    assert plan_segments([Segment(1, 10)], epochs_done=10, target_epochs=15) == [Segment(1, 10), Segment(11, 15)]


def hardware(gpus=(), capability=None, bf16=False):
    return Hardware(gpus=gpus, gpu_compute_capability=capability, cpu_name="test cpu", cpu_bf16=bf16)


def test_auto_precision_follows_the_hardware():
    assert resolve_precision("auto", hardware()) == "float32"
    assert resolve_precision("auto", hardware(bf16=True)) == "mixed_bfloat16"
    assert resolve_precision("auto", hardware(gpus=("H100",), capability=(9, 0))) == "mixed_float16"
    assert resolve_precision("auto", hardware(gpus=("K80",), capability=(3, 7))) == "float32"
    assert resolve_precision("float32", hardware(bf16=True)) == "float32"


def test_every_recipe_is_a_valid_configuration_and_flags_override_it():
    from resnet.__main__ import build_parser, config_from_flags
    from resnet.config import RECIPES, recipe_config

    for name, recipe in RECIPES.items():
        config = recipe_config(name)
        for field, value in recipe.settings.items():
            assert getattr(config, field) == value, (name, field)
    argv = ["train", "--recipe", "ten-epochs", "--epochs", "12"]
    args = build_parser(build_parser().parse_args(argv).recipe).parse_args(argv)
    config = config_from_flags(args)
    assert (config.epochs, config.augment, config.depth) == (12, True, 50)  # the flag given wins
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_config("fastest")
