"""How the page shows an outcome: one message box per level, in one place."""

from __future__ import annotations

import streamlit as st

from app.actions import Outcome

BOXES = {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}


def show_outcome(outcome: Outcome | None) -> None:
    if outcome is not None:
        BOXES[outcome.level](outcome.text)
