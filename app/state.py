"""Every key this app keeps in ``st.session_state``, and which run a session is shown.

One place for the names, so that a widget, a callback and a view that share a value cannot spell it
differently. Widget keys of the settings are ``app.params.key(field)``.
"""

from __future__ import annotations

import time

import streamlit as st

from resnet.store.runs import Run
from resnet.training.jobs import JobSnapshot

SHOWN_RUN = "shown_run"  # the run this session chose to look at
FLASH = "flash"  # an actions.Outcome to show on the next run (set by buttons and callbacks)
CONFIRM_DELETE = "confirm_delete"  # the run whose deletion awaits confirmation
RUN_DELETED = "_run_deleted"  # set by the delete callback: the Runs tab's area reruns the whole page
RESUME = "resume"  # the "Continue a run with the same settings" checkbox
RETURNS_THRESHOLD = "returns_threshold"  # points of test accuracy per window for diminishing returns
PAIR_TRUE = "pair_true"  # the confused pair's true class (selectbox)
PAIR_PREDICTED = "pair_predicted"  # ... and its predicted class
PICKED_CELL = "_picked_cell"  # the confusion-matrix cell last clicked, (true, predicted)
TAB = "tab"  # the key of the tabs below the curves (switched in the browser alone, never rerun)
SWEEP_NAME = "sweep_name"  # the Sweep tab's name field
SWEEP_BRANCHES = "sweep_branches"  # the Sweep tab's choice: independent runs, or one run with cooldown branches
SWEEP_FLASH = "sweep_flash"  # an actions.Outcome to show in the Sweep tab on the next run
SWEEP_SHOWN = "sweep_shown"  # the sweep whose results this session looks at (selectbox)
SWEEP_COLOUR = "sweep_colour"  # the setting the sweep's curves are coloured by
SWEEP_X_AXIS = "sweep_x_axis"  # the curves' x axis: "epoch" or "time"
EXPLAIN = "explain"  # EXPLAIN_<grid>: the test index of the image whose explanation is open below that grid
EXPLAIN_STAGE = "explain_stage"  # EXPLAIN_STAGE_<grid>: the stage Grad-CAM is computed on below that grid
MAP_EPOCH = "map_epoch"  # the feature map's epoch
MAP_COMPARE = "map_compare"  # the epoch the feature map is compared with ("none" for one map)


def sweep_key(field: str) -> str:
    """The Sweep tab's comma-list field for a TrainConfig field."""
    return f"sweep_{field}"


def pick_shown_run(runs: list[Run], active_run_id: str | None) -> Run | None:
    """The run to show: the one this session chose, else the running one, else the newest readable one."""
    by_id = {run.run_id: run for run in runs}
    chosen = st.session_state.get(SHOWN_RUN)
    if chosen in by_id:
        return by_id[chosen]
    if active_run_id in by_id:
        return by_id[active_run_id]
    readable = [run for run in runs if not run.damaged]
    return (readable or runs or [None])[0]


def active_run_id(snapshot: JobSnapshot) -> str | None:
    return snapshot.run_id if snapshot.active else None


def show_run(run_id: str) -> None:
    st.session_state[SHOWN_RUN] = run_id


def forget_shown_run(run_id: str) -> None:
    if st.session_state.get(SHOWN_RUN) == run_id:
        st.session_state.pop(SHOWN_RUN)


FLASH_SECONDS = 15.0  # a message after a click survives the automatic reruns of this long


def flash(outcome, key: str = FLASH) -> None:
    """Show ``outcome`` (an actions.Outcome) from the next run on: at the top of the page, or where
    the owner of ``key`` (e.g. the Sweep tab's ``SWEEP_FLASH``) shows it."""
    st.session_state[key] = (outcome, time.monotonic())


def take_flash(key: str = FLASH):
    """The outcome to show now, or None. It stays for ``FLASH_SECONDS`` across reruns: the live view
    reruns the whole page when a job starts or commits an epoch, which must not wipe the message of
    the click that started it."""
    value = st.session_state.get(key)
    if value is None:
        return None
    outcome, shown_at = value
    if time.monotonic() - shown_at > FLASH_SECONDS:
        st.session_state.pop(key, None)
        return None
    return outcome


def explain_image(grid: str, test_index: int) -> None:
    """Open the explanation of a test image below ``grid`` (each grid has its own)."""
    st.session_state[f"{EXPLAIN}_{grid}"] = int(test_index)


def explained(grid: str) -> int | None:
    return st.session_state.get(f"{EXPLAIN}_{grid}")


def close_explanation(grid: str) -> None:
    st.session_state.pop(f"{EXPLAIN}_{grid}", None)
