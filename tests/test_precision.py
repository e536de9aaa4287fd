"""``auto`` precision, measured (resnet/core/precision.py): the candidates per hardware, the margin rule, the
early stop, and a real measurement that is remembered, reused, and survives a damaged record."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from support import measurement_values

from resnet.config import TrainConfig
from resnet.core import precision
from resnet.core.hardware import Hardware
from resnet.core.precision import resolve, resolve_precision
from resnet.core.precision_record import (
    FLOAT32,
    MIXED_MARGIN,
    Measurement,
    Source,
    budget_seconds,
    candidates_for,
    decide,
    default_steps,
    read_record,
    record_path,
)
from resnet.core.precision_timing import _stop_rule, _Timing


def hardware(*, gpus=(), capability=None, bf16=False) -> Hardware:
    return Hardware(gpus=gpus, gpu_compute_capability=capability, cpu_name="Test CPU", cpu_bf16=bf16)


def test_the_candidates_are_float32_and_the_mixed_policy_the_hardware_claims():
    assert candidates_for(hardware()) == ("float32",)  # AVX2 only: bfloat16 would be emulated
    assert candidates_for(hardware(bf16=True)) == ("float32", "mixed_bfloat16")  # AVX512-BF16 or AMX
    assert candidates_for(hardware(gpus=("NVIDIA H200",), capability=(9, 0))) == ("float32", "mixed_float16")
    assert candidates_for(hardware(gpus=("Tesla K80",), capability=(3, 7))) == ("float32",)  # no tensor cores
    # A GPU machine with a bfloat16 CPU trains on the GPU: its claim is the GPU's.
    assert candidates_for(hardware(gpus=("NVIDIA H200",), capability=(9, 0), bf16=True))[1] == "mixed_float16"


def test_without_a_claim_auto_is_float32_and_says_there_is_nothing_to_measure(tmp_path):
    answer = resolve_precision("auto", hardware(), depth=50, batch_size=128, cache_dir=tmp_path)
    assert answer == "float32" and answer.source == Source.NOTHING_TO_MEASURE
    assert answer.text == "float32 (this CPU has no bfloat16/float16 hardware support; nothing to measure)"
    gpu = resolve_precision("auto", hardware(gpus=("Tesla K80",), capability=(3, 7)))
    assert gpu == "float32" and "no float16 tensor cores" in gpu.text
    assert not record_path(tmp_path).exists()


def test_a_claim_not_measured_yet_is_the_claimed_policy_marked_so(tmp_path):
    answer = resolve_precision("auto", hardware(bf16=True), depth=50, batch_size=128, cache_dir=tmp_path)
    assert answer == "mixed_bfloat16" and answer.source == Source.NOT_MEASURED
    assert "not measured yet for ResNet-50 at batch 128" in answer.text
    explicit = resolve_precision("float32", hardware(bf16=True))
    assert explicit == "float32" and explicit.source == Source.REQUESTED


@pytest.mark.parametrize(
    ("speeds", "chosen"),
    [
        ({"float32": 370.9, "mixed_bfloat16": 370.6}, "float32"),  # Zen 5 with AVX512-BF16: nothing gained
        ({"float32": 125.0, "mixed_bfloat16": 203.0}, "mixed_bfloat16"),  # AMX Xeon
        ({"float32": 100.0, "mixed_bfloat16": 8.3}, "float32"),  # AVX2: bfloat16 emulated, 12x slower
        ({"float32": 100.0, "mixed_float16": 109.9}, "float32"),  # faster, but less than 10%
        ({"float32": 100.0, "mixed_float16": 110.0}, "mixed_float16"),  # exactly 10% faster
        ({"float32": 100.0, "mixed_bfloat16": None}, "float32"),  # the mixed one could not be timed
        ({"float32": None, "mixed_bfloat16": 500.0}, "float32"),  # nothing to compare with
    ],
)
def test_a_mixed_policy_must_be_at_least_ten_percent_faster(speeds, chosen):
    assert MIXED_MARGIN == 1.10
    assert decide(speeds) == chosen


def test_a_hopeless_candidate_is_stopped_and_the_budget_is_kept():
    # float32: compiling step 5 s, one warm step and 8 timed steps of 1 s each (128 images: 128 img/s).
    baseline = _Timing(times=[6.0, 1.0] + [1.0] * 8)
    budget = budget_seconds(128.0)  # 5% of 60,000 images at 128 img/s
    assert budget == pytest.approx(0.05 * 60_000 / 128)

    def rule(times, spent_before=baseline.after_first, planned=10):
        timing = _Timing(times=list(times))
        return _stop_rule(timing, baseline, budget, spent_before, planned)()

    assert rule([6.5]) == ""  # compiling a little slower: go on
    assert "longer than float32's" in rule([6.0 + 12.0])  # emulated: one step is 12 of float32's
    assert "warm step took 3.0x" in rule([6.0, 3.0])
    assert rule([6.0, 1.5, 1.2]) == ""
    assert "longer than float32's whole timing" in rule([6.0, 1.5, 9.0])
    # The budget (23.4 s here): float32's steps took 9 s, so 14.4 s remain for the mixed one's steps.
    assert rule([6.0] + [1.0] * 13, planned=30) == ""  # 13 s spent, the next one fits
    assert "budget" in rule([6.0] + [1.0] * 14, planned=30)  # 14 s spent, the next one would pass it
    assert rule([6.0] + [1.0] * 14, planned=15) == ""  # the last planned step: nothing more to run


def test_float32_gets_at_most_forty_percent_of_the_budgets_images():
    assert default_steps(128) == 8  # (2 warm-up + 8) x 128 = 1,280 images, 1 of them compiling
    for batch in (8, 32, 64, 128, 256):
        steps = default_steps(batch)
        assert 2 <= steps <= 10 and (steps + 1) * batch <= 0.4 * 0.05 * 60_000  # the steps after compiling
    assert default_steps(2048) == 2  # a batch beyond the budget still gets 2 timed steps


def test_the_record_keeps_valid_entries_and_ignores_damaged_ones(tmp_path):
    path = record_path(tmp_path)
    entries = {
        "good": measurement_values(),
        "negative speed": measurement_values(speeds={"float32": -1.0, "mixed_bfloat16": 2.0}),
        "unknown precision": measurement_values(precision="float8"),
        "choice not measured": measurement_values(precision="mixed_float16"),
        "no date": measurement_values(measured_at=None),
        "bad date": measurement_values(measured_at="yesterday"),
        "not a dict": [1, 2],
    }
    path.write_text(json.dumps({"version": 1, "entries": entries}))
    record = read_record(path)
    assert list(record) == ["good"]
    assert record["good"].text() == "float32 371 img/s, mixed_bfloat16 371 img/s -> float32 (measured 2026-11-29, 14 s)"
    for damaged in (b"{not json", b"[]", json.dumps({"version": 99, "entries": entries}).encode(), b"\xff\xfe"):
        path.write_bytes(damaged)
        assert read_record(path) == {}


BUILT = "to time it"  # the log line of every model a measurement builds (resnet/core/precision_timing.py)


def models_built(caplog) -> int:
    return sum(BUILT in record.getMessage() for record in caplog.records)


@pytest.mark.slow  # real measurements: ResNets built and timed
def test_a_real_measurement_is_remembered_reused_and_rewrites_a_damaged_record(tmp_path, caplog):
    config = TrainConfig(depth=18, batch_size=16, train_subset=1000)
    candidates = ("float32", "mixed_bfloat16")
    path = record_path(tmp_path)
    path.write_text('{"version": 1, "entries": {"truncated')  # a damaged record: ignored, never fatal

    caplog.set_level(logging.DEBUG, logger="resnet.core.precision_timing")
    measurement = precision.measure_precision(config, cache_dir=tmp_path, candidates=candidates, steps=2)
    assert measurement.fresh and models_built(caplog) == 2
    assert set(measurement.speeds) == set(candidates) and measurement.speeds["float32"] > 0
    assert measurement.precision in candidates and (measurement.depth, measurement.batch_size) == (18, 16)
    assert measurement.seconds >= measurement.step_seconds > 0 and measurement.budget_seconds > 0
    assert measurement.budget_seconds == pytest.approx(budget_seconds(measurement.speeds["float32"]))
    if measurement.speeds["mixed_bfloat16"] is not None and "mixed_bfloat16" not in measurement.stopped:
        assert measurement.precision == decide(measurement.speeds)
    else:
        assert measurement.precision == FLOAT32

    stored = json.loads(path.read_text())  # rewritten whole, valid
    assert stored["version"] == 1 and len(stored["entries"]) == 1
    [(key, entry)] = stored["entries"].items()
    assert "ResNet-18 | batch 16 | float32 vs mixed_bfloat16" in key and "TensorFlow " in key
    assert Measurement.from_dict(entry) == measurement

    again = precision.measure_precision(config, cache_dir=tmp_path, candidates=candidates, steps=2)
    assert not again.fresh and again == measurement and models_built(caplog) == 2  # nothing built

    # A machine like this one whose CPU claimed bfloat16 would read this very measurement for auto.
    from resnet.core.hardware import detect_hardware

    claiming = dataclasses.replace(detect_hardware(), cpu_bf16=True)
    chosen = precision.choose_precision(config, cache_dir=tmp_path, hardware=claiming)
    assert chosen.source == Source.MEASURED and chosen == measurement.precision and chosen.measurement == measurement
    assert chosen.text.startswith("float32 ") and "(measured " in chosen.text
    assert resolve_precision("auto", claiming, depth=18, batch_size=16, cache_dir=tmp_path) == measurement.precision
    # Another batch size is not measured yet.
    assert (
        resolve_precision("auto", claiming, depth=18, batch_size=32, cache_dir=tmp_path).source == Source.NOT_MEASURED
    )
    # An explicit precision is never measured.
    explicit = precision.choose_precision(
        config.replace(precision="mixed_bfloat16"), cache_dir=tmp_path, hardware=claiming
    )
    assert explicit == "mixed_bfloat16" and explicit.source == Source.REQUESTED
    assert models_built(caplog) == 2


@pytest.mark.slow  # real trainings preparing with each precision
def test_preparing_a_run_with_an_explicit_precision_or_nothing_to_measure_measures_nothing(
    tmp_path, dataset_dir, caplog
):
    from resnet.store.runs import RunStore
    from resnet.training.trainer import prepare_training

    store = RunStore(tmp_path / "cache")  # no precision record yet
    caplog.set_level(logging.DEBUG, logger="resnet.core.precision_timing")
    config = TrainConfig(epochs=1, batch_size=32, train_subset=200, eval_subset=200, depth=18)
    explicit = prepare_training(config.replace(precision="mixed_bfloat16"), store=store)
    assert explicit.precision == "mixed_bfloat16" and explicit.run.state.precision == "mixed_bfloat16"
    assert models_built(caplog) == 0 and not record_path(store.root).exists()
    claim = resolve_precision("auto")
    auto = prepare_training(config, store=store, resume=False)
    assert auto.run.state.precision == auto.precision == resolve(config, cache_dir=store.root)
    if claim.source == Source.NOTHING_TO_MEASURE:  # this machine claims no mixed policy: nothing measured
        assert auto.precision == "float32" and models_built(caplog) == 0
        assert not record_path(store.root).exists()
    else:  # it claims one: this 200-image run is too short to measure; one of a full epoch's images measures
        assert auto.precision == "float32" and resolve(config, cache_dir=store.root).source == Source.TOO_SHORT
        assert models_built(caplog) == 0 and not record_path(store.root).exists()
        longer = config.replace(epochs=300)  # 300 x 200 = 60,000 images (only prepared here, not trained)
        measured = prepare_training(longer, store=store, resume=False)
        assert models_built(caplog) == 2 and record_path(store.root).exists()
        assert measured.precision == resolve(longer, cache_dir=store.root)
        assert resolve(longer, cache_dir=store.root).source == Source.MEASURED
        again = prepare_training(longer, store=store, resume=False)  # remembered: nothing built
        assert again.precision == measured.precision and models_built(caplog) == 2


def test_the_sidebar_says_what_auto_will_do_or_what_was_measured():
    from app.sidebar import precision_caption

    measured = Measurement.from_dict(measurement_values())
    caption = precision_caption(precision.Precision("float32", Source.MEASURED, measurement=measured))
    assert caption == (
        "Precision (auto): float32, measured on this machine on 2026-11-29: float32 371 img/s, "
        "mixed_bfloat16 371 img/s (the measurement took 14 s)."
    )
    claimed = resolve_precision("auto", hardware(bf16=True), depth=50, batch_size=128)
    assert precision_caption(claimed).startswith("Precision (auto): not measured yet for this depth and batch size.")
    assert "times float32 against mixed_bfloat16" in precision_caption(claimed)
    nothing = resolve_precision("auto", hardware())
    assert precision_caption(nothing) == (
        "Precision (auto): float32: this CPU has no bfloat16/float16 hardware support; nothing to measure."
    )
    assert precision_caption(resolve_precision("mixed_float16")) == "Precision: mixed_float16, as chosen."


def test_the_sidebar_and_the_sweep_estimate_agree_on_a_machine_with_a_remembered_measurement(cache_dir, monkeypatch):
    """Both ask ``precision.resolve`` for the config: on a CPU that claims bfloat16 where float32 measured
    faster, both estimate from the float32 run (the sweep estimate used to resolve without depth and batch
    size, took the unmeasured claim, mixed_bfloat16, and found no run to estimate from)."""
    from test_runs import make_run

    from app import services
    from resnet.core import precision as precision_module
    from resnet.core.precision_record import candidates_for, record_key, remember
    from resnet.store.estimate import estimate_time
    from resnet.store.runs import RunStore
    from resnet.sweeps.record import new_sweep
    from resnet.sweeps.report import estimate_text

    claiming = hardware(bf16=True)
    monkeypatch.setattr(precision_module, "detect_hardware", lambda: claiming)  # a machine whose CPU claims bf16
    config = TrainConfig(epochs=3, train_subset=200, batch_size=32, depth=18)
    key = record_key(claiming, depth=18, batch_size=32, candidates=candidates_for(claiming))
    remember(
        record_path(cache_dir), key, Measurement.from_dict(measurement_values(depth=18, batch_size=32))
    )  # float32 won
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2, depth=18)
    store.update_state(run, device=claiming.device_label)  # trained with float32 on this machine
    runs = store.list_runs()

    sidebar = services.concrete_precision("auto", config)
    assert sidebar == "float32" and sidebar.source == Source.MEASURED
    sidebar_estimate = estimate_time(config, runs, device=claiming.device_label, precision=sidebar)
    monkeypatch.setattr("resnet.sweeps.report.detect_hardware", lambda: claiming)
    sweep_text = estimate_text(new_sweep("agree", {"seed": (1,)}, base=config), runs, cache_dir)
    assert sidebar_estimate.epoch_seconds is not None and sweep_text.startswith("Estimated time on this machine"), (
        sweep_text
    )


def test_a_run_shorter_than_one_full_epoch_trains_float32_without_measuring(tmp_path, caplog):
    """On a CPU that claims bfloat16, the quick try (3 x 1,000 images) is not worth a measurement that builds
    two ResNet-18s (11-12 s here, half of the quick try): float32, said so, nothing built or written. A run of
    one full epoch's images is measured as before, and a remembered measurement serves short runs too."""
    from app.sidebar import precision_caption
    from resnet.config import RECIPES
    from resnet.core.precision_record import record_key, remember

    claiming = hardware(bf16=True)
    quick = TrainConfig().replace(**RECIPES["quick-try"].settings)
    caplog.set_level(logging.DEBUG, logger="resnet.core.precision_timing")

    short = precision.choose_precision(quick, cache_dir=tmp_path, hardware=claiming)
    assert (
        short == FLOAT32
        and short.source == Source.TOO_SHORT
        and short == resolve(quick, cache_dir=tmp_path, hardware=claiming)
    )
    assert "trains 3,000 images, less than one full epoch of 60,000" in short.text
    assert models_built(caplog) == 0 and not record_path(tmp_path).exists()
    assert precision_caption(short).startswith("Precision (auto): float32: this run trains 3,000 images")

    full = quick.replace(epochs=1, train_subset=60_000)
    unmeasured = resolve(full, cache_dir=tmp_path, hardware=claiming)
    assert unmeasured == "mixed_bfloat16" and unmeasured.source == Source.NOT_MEASURED
    assert resolve(quick.replace(epochs=60), cache_dir=tmp_path, hardware=claiming).source == Source.NOT_MEASURED

    key = record_key(claiming, depth=18, batch_size=64, candidates=candidates_for(claiming))
    remember(record_path(tmp_path), key, Measurement.from_dict(measurement_values(depth=18, batch_size=64)))
    known = resolve(quick, cache_dir=tmp_path, hardware=claiming)
    assert known.source == Source.MEASURED and known == "float32"
