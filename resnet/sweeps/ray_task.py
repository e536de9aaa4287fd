"""A trial's Ray task, on the worker: train the run in a private store and relay every commit to the driver.

The task receives the run's config, id and committed files and the dataset's four files, writes them into
a private temporary run store and calls ``prepare_training`` + ``train_prepared``, the same trainer as
everywhere, with TensorFlow's threads set to the CPUs the task was given (the store lives in a folder of
``resnet.sweeps.trial_folder``, removed even when a stop kills the task). The private store
(``RelayingRunStore``) sends every epoch's commit and every state change to the driver's inbox actor
without waiting (a task blocked in ``ray.get`` lends its CPUs to other tasks); the driver
(``resnet.sweeps.on_ray``) commits them into the real cache.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from resnet.config import TrainConfig
from resnet.core.hardware import detect_hardware
from resnet.core.precision import resolve
from resnet.core.precision_record import Measurement, read_record, record_path, remember
from resnet.store.runs import RunError, RunStore
from resnet.sweeps.trial_folder import private_folder

RELAYED_STATE = ("status", "target_epochs", "segments", "message", "precision", "device", "stop")
PROGRESS_SECONDS = 1.0  # a task reports batch progress at most this often


class RelayingRunStore(RunStore):
    """A private run store on a Ray worker that sends every commit and state change to the driver."""

    writes_event_files = False  # the driver's store writes them as it commits each epoch into the real cache

    def __init__(self, root, *, send):
        super().__init__(root)
        self.send = send

    def update_state(self, run, **changes) -> None:
        """A state change (running, complete, failed...) travels to the driver; an epoch's commit, which
        writes the state through ``write_state``, travels with the epoch (``record_epoch``)."""
        super().update_state(run, **changes)
        relayed = {key: value for key, value in changes.items() if key in RELAYED_STATE}
        if relayed:
            self.send("state", relayed)

    def record_epoch(self, run, row, files) -> None:
        super().record_epoch(run, row, files)
        feature_map = (run.path / files.feature_map).read_bytes() if files.feature_map else None
        self.send(
            "epoch",
            row,
            (run.path / files.checkpoint).read_bytes(),
            (run.path / files.predictions).read_bytes(),
            feature_map,
        )


def _set_threads(cpus: int) -> None:
    import tensorflow as tf  # here: in the Ray worker only

    try:  # only possible before TensorFlow's runtime starts (a fresh worker: max_calls=1)
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:
        pass


def train_trial_task(index, config_values, run_id, files, dataset_files, inbox, cpus, measurements=None) -> dict:
    """The body of a trial's Ray task: train ``run_id`` in a private store, relaying every commit.

    Messages go to the driver's ``inbox`` actor without waiting for them (a task blocked in ``ray.get``
    lends its CPUs to other tasks, which would put more trials on a machine than it has cores); they
    are awaited once, at the end, so none is lost when the task returns.
    """
    import ray  # the optional extra: in the Ray worker and driver only

    _set_threads(cpus)
    sent = []

    def send(kind, *payload):
        sent.append(inbox.put.remote((kind, index, *payload)))

    send("hello", {"pid": os.getpid(), "host": socket.gethostname()})
    try:
        with private_folder() as folder:  # removed after; a killed task's is removed by the next task here
            return _train_in_private_store(folder, config_values, run_id, files, dataset_files, send, measurements)
    finally:
        ray.get(sent)


def _train_in_private_store(folder, config_values, run_id, files, dataset_files, send, measurements=None) -> dict:
    from resnet.training.trainer import prepare_training, train_prepared  # Keras: in the Ray worker only

    config = TrainConfig.from_dict(config_values)
    data = folder / "data"
    data.mkdir()
    for name, content in dataset_files.items():
        (data / name).write_bytes(content)
    store = RelayingRunStore(folder / "cache", send=send)
    (store.root / run_id).mkdir(parents=True)
    known = dict(measurements or {})  # the driver's auto-precision measurements: a machine like it measures none
    for key, values in known.items():
        measurement = Measurement.from_dict(values)
        if measurement is not None:
            remember(record_path(store.root), key, measurement)
    for name, content in files.items():
        (store.root / run_id / name).write_bytes(content)
    run = store.load(run_id)
    if run.damaged:
        raise RunError(f"run {run_id} arrived damaged on the worker ({run.problem})")
    if not run.epochs_done:  # no checkpoint fixes the precision yet: this machine decides (prepare_training measures)
        store.update_state(
            run, precision=str(resolve(config, cache_dir=store.root)), device=detect_hardware().device_label
        )
    prepared = prepare_training(config, store=store, run_id=run_id, dataset_dir=data)
    measured = {key: value.to_dict() for key, value in read_record(record_path(store.root)).items() if key not in known}
    if measured:  # a measurement made here: the driver remembers it for the next trial on such a machine
        send("precision", measured)
    run = train_prepared(prepared, report=_progress_sender(send))
    return {"status": run.status.value, "message": run.message}


def _progress_sender(send):
    last = {"phase": None, "time": 0.0}

    def report(progress) -> None:
        now = time.monotonic()
        if progress.phase != last["phase"] or now - last["time"] >= PROGRESS_SECONDS:
            last.update(phase=progress.phase, time=now)
            send("progress", dataclasses.asdict(progress))

    return report


class Inbox:
    """What the tasks send the driver, in the order each task sent it (a Ray actor on the driver's node)."""

    def __init__(self):
        self.items = []

    def put(self, item) -> None:
        self.items.append(item)

    def take(self) -> list:
        items, self.items = self.items, []
        return items
