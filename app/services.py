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
from resnet.config import TrainConfig
from resnet.core.hardware import detect_hardware
from resnet.core.precision import resolve, resolve_precision
from resnet.core.precision_record import Precision
from resnet.files import default_cache_dir
from resnet.store.runs import RunStore
from resnet.training.jobs import JobManager


@st.cache_resource(show_spinner=False)
def _manager_for(cache_dir: str) -> JobManager:
    manager = JobManager(RunStore(cache_dir))
    manager.prepare_spare()  # a training child that has imported TensorFlow before the first Start
    return manager


def get_manager() -> JobManager:
    """The JobManager of this server process for the current cache folder."""
    return _manager_for(str(default_cache_dir().resolve()))


def device_label() -> str:
    return detect_hardware().device_label


def device_text() -> str:
    """The device in the sidebar's words: the label runs record, with a CPU's cores and features."""
    return detect_hardware().device_text


def uses_gpu() -> bool:
    return bool(detect_hardware().gpus)


def concrete_precision(requested: str, config: TrainConfig | None = None) -> Precision:
    """What ``requested`` trains with here, for ``config``'s depth and batch size when it is valid.

    ``auto``: the measurement remembered in the cache folder (read from its small JSON file, parsed
    again only when the file changes), or what a Start would do. Nothing is measured in this process.
    """
    if config is None:
        return resolve_precision(requested)
    return resolve(config.replace(precision=requested), cache_dir=default_cache_dir())


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
