"""The process-wide job manager, and cheap checks of the machine and the dataset.

``get_manager()`` is the only ``st.cache_resource`` in the app: every session and browser tab of one
server process gets the same ``JobManager``, so at most one training runs and every tab sees it. The
cache is keyed on the run-cache folder, so a process whose ``RESNET_CACHE_DIR`` changes (the tests do)
gets a manager writing to the right place.
"""

from __future__ import annotations

import os

import streamlit as st

from app.actions import Outcome
from data.fashion_mnist import DatasetError, resolve_dataset_dir
from resnet.hardware import detect_hardware, resolve_precision
from resnet.jobs import JobManager
from resnet.runs import RunStore, default_cache_dir


@st.cache_resource(show_spinner=False)
def _manager_for(cache_dir: str) -> JobManager:
    return JobManager(RunStore(cache_dir))


def get_manager() -> JobManager:
    """The JobManager of this server process for the current cache folder."""
    return _manager_for(str(default_cache_dir().resolve()))


def device_label() -> str:
    return detect_hardware().device_label


def uses_gpu() -> bool:
    return bool(detect_hardware().gpus)


def concrete_precision(requested: str) -> str:
    return resolve_precision(requested)


def dataset_problem() -> Outcome | None:
    """None if Fashion-MNIST is on disk; else what to tell the user, without downloading anything.

    With ``FASHION_MNIST_DIR`` set, a missing file is an error. Without it, the files may still be
    downloaded by Keras on the first Start, so that is only worth a note.
    """
    try:
        resolve_dataset_dir(download=False)
    except DatasetError as error:
        if os.environ.get("FASHION_MNIST_DIR"):
            return Outcome("error", str(error))
        return Outcome("info", f"Fashion-MNIST is not on this machine yet: Start downloads it through Keras. {error}")
    return None
