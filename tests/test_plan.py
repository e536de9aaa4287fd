"""The resume/extend decision (resnet.store.plan) and the learning-rate segments it plans (resnet.core.schedule)."""

from __future__ import annotations

import os

import pytest
from test_runs import make_run

from resnet.config import ConfigError, TrainConfig
from resnet.core.schedule import Segment, SegmentSchedule, continues_a_cycle, learning_rate_at, plan_segments
from resnet.store.plan import PlanKind, plan_training
from resnet.store.runs import RunError, RunStore

SETTINGS = {"train_subset": 200, "batch_size": 32}


def test_no_run_of_these_settings_plans_a_new_run(cache_dir):
    plan = plan_training(RunStore(cache_dir), TrainConfig(epochs=5, **SETTINGS))
    assert plan.kind is PlanKind.NEW and plan.run is None
    assert (plan.first_epoch, plan.target_epochs, plan.epochs_to_train) == (1, 5, 5)
    assert plan.segments == (Segment(1, 5),)
    assert plan.summary() == "Starts a new run: epochs 1-5."
    assert plan.started_text("R") == "Started run R: 5 epochs."


def test_a_stopped_run_continues_its_cycle(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)  # planned for 3 epochs, stopped after 2
    store.update_state(run, segments=(Segment(1, 3),))
    plan = plan_training(store, TrainConfig(epochs=6, **SETTINGS))
    assert plan.kind is PlanKind.CONTINUE and plan.run.run_id == run.run_id
    assert (plan.first_epoch, plan.target_epochs, plan.epochs_to_train) == (3, 6, 4)
    assert plan.segments == (Segment(1, 6),)  # stretched, no warm restart
    assert "Continues run" in plan.summary() and "unfinished learning-rate cycle goes on" in plan.summary()


def test_a_finished_run_is_extended_with_a_warm_restart(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    store.update_state(run, status="complete", segments=(Segment(1, 2),))
    plan = plan_training(store, TrainConfig(epochs=5, **SETTINGS), run_id=run.run_id)
    assert plan.kind is PlanKind.EXTEND
    assert plan.segments == (Segment(1, 2), Segment(3, 5))
    assert "warm restart" in plan.summary()
    assert plan.started_text(run.run_id).startswith(f"Extending run {run.run_id} from 2 to 5 epochs")


@pytest.mark.parametrize(
    ("change", "kind", "error", "message"),
    [
        ({"epochs": 2}, PlanKind.UP_TO_DATE, RunError, "already has 2 epochs \\(asked for 2\\)"),
        ({"epochs": 5, "batch_size": 64}, PlanKind.OTHER_SETTINGS, ConfigError, "only epochs can change"),
    ],
)
def test_what_cannot_be_trained_says_why(cache_dir, change, kind, error, message):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=2)
    plan = plan_training(store, TrainConfig(**SETTINGS).replace(**change), run_id=run.run_id)
    assert plan.kind is kind and not plan.trains and plan.epochs_to_train == 0
    with pytest.raises(error, match=message):
        raise plan.error()
    assert plan.summary() == str(plan.error())


def test_a_run_trained_elsewhere_or_damaged_is_not_planned(cache_dir):
    store = RunStore(cache_dir)
    run = make_run(store, epochs_done=1)
    store.update_state(run, status="running", pid=os.getpid(), host=os.uname().nodename)
    with store.locked(run):  # as its trainer holds it
        plan = plan_training(store, TrainConfig(epochs=4, **SETTINGS))
        assert plan.kind is PlanKind.BUSY and "being trained by another process" in plan.summary()
    (run.path / "history.csv").write_text("garbage")
    plan = plan_training(store, TrainConfig(epochs=4, **SETTINGS), run_id=run.run_id)
    assert plan.kind is PlanKind.DAMAGED and "is damaged" in plan.summary()
    # Without a run id, a damaged run of the same settings is passed over: Start begins a new run.
    assert plan_training(store, TrainConfig(epochs=4, **SETTINGS)).kind is PlanKind.NEW


def test_resume_off_always_plans_a_new_run_and_a_given_listing_is_used(cache_dir):
    store = RunStore(cache_dir)
    make_run(store, epochs_done=1)
    config = TrainConfig(epochs=4, **SETTINGS)
    assert plan_training(store, config, resume=False).kind is PlanKind.NEW
    assert plan_training(store, config, runs=[]).kind is PlanKind.NEW  # the caller's (empty) listing
    assert plan_training(store, config).kind is not PlanKind.NEW


def test_plan_segments_stretches_an_unfinished_cycle_and_restarts_a_finished_one():
    assert plan_segments([], epochs_done=0, target_epochs=10) == [Segment(1, 10)]
    assert plan_segments([Segment(1, 10)], epochs_done=4, target_epochs=10) == [Segment(1, 10)]
    assert plan_segments([Segment(1, 10)], epochs_done=4, target_epochs=6) == [Segment(1, 6)]
    assert plan_segments([Segment(1, 10)], epochs_done=10, target_epochs=15) == [Segment(1, 10), Segment(11, 15)]
    assert continues_a_cycle([Segment(1, 10)], epochs_done=4)
    assert not continues_a_cycle([Segment(1, 10)], epochs_done=10)


def test_segment_schedule_follows_each_segment_and_restarts_at_an_extension():
    schedule = SegmentSchedule("one_cycle", peak=0.1, segments=(Segment(1, 4), Segment(5, 6)), steps_per_epoch=10)
    rates = [schedule.learning_rate(epoch, batch) for epoch in range(1, 7) for batch in range(10)]
    expected_first = [
        learning_rate_at("one_cycle", peak=0.1, step=s, total_steps=40, steps_per_epoch=10) for s in range(40)
    ]
    assert rates[:40] == expected_first
    assert rates[39] < 0.001 and rates[40] < rates[45]  # decayed to ~0, then a new warm-up
    assert max(rates[40:]) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="epoch 7 lies in no training segment"):
        schedule.learning_rate(7, 0)
