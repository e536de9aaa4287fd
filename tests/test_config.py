"""TrainConfig validation, learning-rate schedules and the precision choice."""

from __future__ import annotations

import pytest

from resnet.config import ConfigError, TrainConfig
from resnet.hardware import Hardware, resolve_precision
from resnet.schedule import learning_rate_at
from resnet.trainer import plan_segments


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
    assert plan_segments([], epochs_done=0, target_epochs=10) == [{"start_epoch": 1, "end_epoch": 10}]
    # Stopped at epoch 4 of 10 and resumed: the same cycle continues.
    assert plan_segments([{"start_epoch": 1, "end_epoch": 10}], epochs_done=4, target_epochs=10) == [
        {"start_epoch": 1, "end_epoch": 10}
    ]
    # Finished 10, extended to 15: a warm restart over epochs 11-15.
    assert plan_segments([{"start_epoch": 1, "end_epoch": 10}], epochs_done=10, target_epochs=15) == [
        {"start_epoch": 1, "end_epoch": 10},
        {"start_epoch": 11, "end_epoch": 15},
    ]


def hardware(gpus=(), capability=None, bf16=False):
    return Hardware(gpus=gpus, gpu_compute_capability=capability, cpu_name="test cpu", cpu_bf16=bf16)


def test_auto_precision_follows_the_hardware():
    assert resolve_precision("auto", hardware()) == "float32"
    assert resolve_precision("auto", hardware(bf16=True)) == "mixed_bfloat16"
    assert resolve_precision("auto", hardware(gpus=("H100",), capability=(9, 0))) == "mixed_float16"
    assert resolve_precision("auto", hardware(gpus=("K80",), capability=(3, 7))) == "float32"
    assert resolve_precision("float32", hardware(bf16=True)) == "float32"
