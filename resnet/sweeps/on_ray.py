"""Sweeps on a Ray cluster: each trial a Ray task, every finished epoch committed on the driver.

    python -m resnet sweep --name study --epochs 5,10,20 --ray                 # a local Ray, started here
    python -m resnet sweep --name study --epochs 5,10,20 --ray HOST:6379       # an existing cluster

Ray is an optional extra (``pip install -r requirements-cluster.txt``), imported only here. Ray core
tasks are enough: a trial is one function call that trains one run; the grid, the order and the
record are this project's (``resnet/sweeps/``), so Ray Tune's search algorithms, schedulers and
trial checkpoints would add a second notion of a run and a storage that must be shared (NFS or cloud)
on multi-node clusters, for nothing a grid sweep needs.

How a trial runs, and why the cache needs no shared filesystem:

1. The driver (this module's ``run_sweep_on_ray``) prepares the trial's run in its own run store, exactly as a trial here
   does (``resnet.sweeps.start_trial`` -> ``prepare_training``), records it in the sweep and holds
   the run's lock; once the task trains, the run is marked running with the driver's pid, so the app
   shows it like a local training.
2. The task receives the run's config, id and committed files (``config.json``, ``state.json``,
   ``history.csv`` and, when continuing, the checkpoint and predictions of its last epoch), and the
   dataset's four files (put once in the object store). It writes them into a private temporary run
   store and calls ``prepare_training`` + ``train_prepared``, the same trainer as everywhere, with
   TensorFlow's threads set to the CPUs the task was given.
3. The private store relays every commit: after each epoch the task sends the history row, the
   checkpoint, predictions and feature-map bytes to an inbox actor (placed on the driver's node when it
   can be), and its state changes (running, complete, failed...). The driver takes them in order and
   commits each epoch with the run store's own atomic writes (``write_epoch_files`` +
   ``record_epoch``), so ``state.json`` is written last, as always.

The task never waits on Ray while it trains: a task blocked in ``ray.get`` (``ray.util.queue``'s
``put`` does that) lends its CPUs to the next task, and a two-core machine would train three trials
at once. So messages are sent without waiting (a Ray actor runs one caller's calls in order), and a
stop is the driver's: it ends the tasks' workers (the partial epoch is lost, as with a stop here),
commits what they had sent, and marks their runs stopped.

A worker killed mid-epoch loses only that epoch: the driver marks the run failed with every epoch it
committed, and running the sweep again continues from there. Tasks are not retried by Ray (a retry
would restart from the files sent with the first attempt); ``max_calls=1`` gives every trial a fresh
worker process, so TensorFlow's memory goes back after each and its threads can be set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from data.fashion_mnist import FILE_NAMES, load_fashion_mnist, resolve_dataset_dir
from resnet.core.precision_record import Measurement, read_record, record_path, remember
from resnet.files import PROJECT_ROOT
from resnet.store.runs import RunError, RunStatus, RunStore
from resnet.sweeps.ray_task import Inbox, train_trial_task
from resnet.sweeps.record import Sweep, SweepError, SweepStore
from resnet.sweeps.trials import Report, SweepEvent, TrialOutcome, TrialResult, start_trial
from resnet.wording import failed_message, stopped_message

INSTALL_HINT = "pip install -r requirements-cluster.txt"
# The project's own packages travel with the job to a remote cluster (Ray uploads them once), so its
# machines need only the runtime packages of requirements.txt, not a copy of this folder.
RUNTIME_ENV = {"py_modules": [str(PROJECT_ROOT / "resnet"), str(PROJECT_ROOT / "data")]}


def import_ray():
    """The ``ray`` module, or SweepError saying how to install the optional extra."""
    try:
        import ray  # Ray: the optional extra, only for sweeps on Ray
    except ImportError as error:
        raise SweepError(f"Ray is not installed ({error}); for --ray, run: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Start a local Ray (``address`` None or ``local``) or join a cluster; True if this call did it.

    A cluster gets this project's packages with the job (``RUNTIME_ENV``); a local Ray's workers start
    in this folder and import them from here. A Ray already initialised in this process is used as it
    is (on a remote cluster, initialise it with ``runtime_env=RUNTIME_ENV``).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False)
    else:
        ray.init(address=address, runtime_env=RUNTIME_ENV)
    return True


# --- on the driver -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Running:
    """A submitted trial, as the driver follows it."""

    index: int
    prepared: object  # resnet.training.trainer.PreparedTraining, in the driver's store
    lock: contextlib.ExitStack  # holds the run's lock until the task ends
    submitted: float
    worker: str = ""
    final: bool = False  # the task relayed its final status


def run_sweep_on_ray(
    sweep: Sweep,
    store: RunStore,
    *,
    cpus_per_trial: int = 1,
    gpus_per_trial: float | None = None,
    cancel: threading.Event | None = None,
    report: Report | None = None,
    dataset_dir=None,
    poll_seconds: float = 0.2,
) -> list[TrialResult]:
    """Train the sweep's trials as Ray tasks (Ray must be connected: ``connect``); results in trial order.

    All trials that train are submitted at once and run as the cluster's resources allow: each task
    asks for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs (default: 1 when the cluster has
    GPUs, else 0). ``cancel`` stops every trial (its partial epoch is lost) and the queued ones. The record is saved (with its run ids) as trials are submitted; the caller holds
    ``SweepStore.locked``.
    """
    ray = connected_ray()
    if sweep.branches:  # its branches start from the trunk's checkpoints: trained here, in turn
        raise SweepError(
            f"sweep {sweep.name} is a budget curve: it trains here, not on Ray (python -m resnet budget-curve "
            f"--name {sweep.name} --budgets {','.join(map(str, sweep.budgets))})"
        )
    driver = RayDriver(ray, store, cpus_per_trial, gpus_per_trial, report, dataset_dir)
    cancel = cancel or threading.Event()
    sweeps = SweepStore(store.root)
    if not sweeps.exists(sweep.name):
        sweep = sweeps.save(sweep)
    try:
        for index in range(len(sweep.trials)):
            if cancel.is_set():
                break
            sweep = driver.submit(sweeps, sweep, index)
        driver.follow(cancel, poll_seconds)
    finally:
        driver.close()
    return driver.results_for(sweep, "the sweep was stopped before this trial began")


def connected_ray():
    """The ``ray`` module, connected (``connect``); SweepError if it is not."""
    ray = import_ray()
    if not ray.is_initialized():
        raise SweepError("Ray is not connected: call resnet.sweeps.on_ray.connect() first")
    return ray


_OUTCOMES = {"complete": TrialOutcome.TRAINED, "stopped": TrialOutcome.STOPPED}  # a task's final status


class RayDriver:
    """Submits trials, commits what their tasks send, and leaves every run in a true state."""

    def __init__(self, ray, store: RunStore, cpus_per_trial: int, gpus_per_trial, report, dataset_dir):
        self.ray, self.store = ray, store
        self.cpus = cpus_per_trial
        self.gpus = _check_resources(ray, cpus_per_trial, gpus_per_trial)
        self.report = report or (lambda event: None)
        self.dataset_dir, self.dataset = _ship_dataset(ray, dataset_dir)
        self.inbox = _inbox(ray)
        self.stopping = False
        self.task = ray.remote(max_calls=1, max_retries=0)(train_trial_task)
        self.results: dict[int, TrialResult] = {}
        self.running: dict[object, _Running] = {}  # task reference -> trial
        self.total = 0

    def _event(self, kind: str, index: int, run_id: str | None, text: str = "", **fields) -> None:
        self.report(SweepEvent(kind, index, self.total, run_id, text, **fields))

    def results_for(self, sweep: Sweep, not_run: str) -> list[TrialResult]:
        """One result per trial, in order; a trial with none ended before it began (``not_run`` says why)."""
        return [
            self.results.get(index) or TrialResult(index, trial.run_id, TrialOutcome.NOT_RUN, not_run)
            for index, trial in enumerate(sweep.trials)
        ]

    def _end(self, result: TrialResult) -> None:
        self.results[result.index] = result
        self._event("end", result.index, result.run_id, result.message, result=result)

    # --- submitting ---------------------------------------------------------------------------------
    def submit(self, sweeps: SweepStore, sweep: Sweep, index: int) -> Sweep:
        """Prepare trial ``index`` in the driver's store (as a trial here does) and submit its task."""
        from resnet.training.trainer import prepare_training  # Keras: only once a trial is submitted

        self.total, trial, prepared = len(sweep.trials), sweep.trials[index], {}

        def prepare(plan) -> str:
            run_id = plan.run.run_id if plan.run else None
            prepared["run"] = prepare_training(  # the task measures auto precision, on its machine
                trial.config, store=self.store, run_id=run_id, resume=False, dataset_dir=self.dataset_dir, measure=False
            )
            return prepared["run"].run.run_id

        submitted = time.perf_counter()
        try:
            start = start_trial(self.store, sweeps, sweep, index, prepare=prepare)
        except RunError as error:  # this trial's run only; a missing dataset stops the sweep
            self._end(TrialResult(index, trial.run_id, TrialOutcome.REFUSED, str(error)))
            return sweep
        if start.result is not None:  # already trained, or refused
            self._end(start.result)
            return start.sweep
        try:
            self.launch(index, trial.config, prepared["run"], submitted)
        except RunError as error:
            self._end(TrialResult(index, start.run_id, TrialOutcome.REFUSED, str(error)))
        return start.sweep

    def launch(self, index: int, config, prepared, submitted: float):
        """Submit the task that trains ``prepared`` (holding its run's lock until it ends); its reference.
        RunError if another process trains the run."""
        lock = contextlib.ExitStack()  # the run's lock, held until the task ends: no one else trains the run
        lock.enter_context(self.store.locked(prepared.run))
        ref = self.task.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
            index, config.to_dict(), prepared.run.run_id, _committed_files(prepared.run), self.dataset,
            self.inbox, self.cpus, _measurements(self.store.root),
        )  # fmt: skip
        self.running[ref] = _Running(index, prepared, lock, submitted)
        self._event("queued", index, prepared.run.run_id, f"queued: {prepared.plan.summary()}")
        return ref

    # --- following ----------------------------------------------------------------------------------
    def follow(self, cancel: threading.Event, poll_seconds: float, *, until=None) -> None:
        """Commit what the tasks send until every one has ended (or, ``until``, that task has).

        ``cancel`` stops them all: their workers are ended (a partial epoch is lost either way), what
        they sent before is committed, and their runs are marked stopped by this process.
        """
        while self.running and (until is None or until in self.running):
            if cancel.is_set() and not self.stopping:
                self.stopping = True
                for ref in self.running:
                    self.ray.cancel(ref, force=True)
            ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=poll_seconds)
            for message in self.ray.get(self.inbox.take.remote()):  # a task's messages arrive before it ends
                self._handle(message)
            for ref in ready:
                self._end(self._finish(ref, self.running.pop(ref)))

    def _handle(self, message: tuple) -> None:
        kind, index, *payload = message
        trial = next((trial for trial in self.running.values() if trial.index == index), None)
        if trial is None:
            return
        run = trial.prepared.run
        target = run.target_epochs  # the driver's state: an auto run's end once it has decided
        if kind == "hello":
            trial.worker = f"pid {payload[0]['pid']} on {payload[0]['host']}"
            text = f"{trial.prepared.plan.started_text(run.run_id)} ({trial.worker})"
            self._event("start", index, run.run_id, text, target_epochs=target, pid=payload[0]["pid"])
        elif kind == "state":
            self._apply_state(trial, payload[0])
        elif kind == "precision":
            _remember_measurements(self.store.root, payload[0])
        elif kind == "epoch":
            row, checkpoint, predictions, feature_map = payload
            if int(row["epoch"]) != run.epochs_done + 1:  # after a lost message of a killed worker
                return
            _commit_epoch(self.store, run, row, checkpoint, predictions, feature_map)
            self._event("epoch", index, run.run_id, epoch=int(row["epoch"]), target_epochs=target, row=row)
        elif kind == "progress":
            progress = payload[0]
            batches = progress.get("batches_per_epoch") or 0
            self._event(
                "progress",
                index,
                run.run_id,
                phase=str(progress["phase"]),
                epoch=progress["epoch"],
                target_epochs=progress["target_epochs"],
                fraction=progress["batch"] / batches if batches else 0.0,
            )

    def _apply_state(self, trial: _Running, changes: dict) -> None:
        run = trial.prepared.run
        status = RunStatus(changes["status"]) if "status" in changes else None
        if status is RunStatus.RUNNING:  # running here: this process holds the run's lock
            changes = {**changes, "pid": os.getpid(), "host": socket.gethostname()}
        self.store.update_state(run, **changes)
        if status is not None and status is not RunStatus.RUNNING:
            trial.final = True

    def _finish(self, ref, trial: _Running) -> TrialResult:
        """The trial's result once its task ended. A task this process stopped leaves its run stopped,
        one whose worker died leaves it failed; either way with every epoch committed here."""
        run, error = trial.prepared.run, None
        try:
            answer = self.ray.get(ref)
        except Exception as failure:  # the task raised, was cancelled, or its worker died
            answer, error = {}, _first_line(failure)
        outcome, message = _OUTCOMES.get(answer.get("status"), TrialOutcome.FAILED), answer.get("message")
        if not trial.final and self.stopping:  # ended by this process's stop, as a stop here ends a training
            outcome = TrialOutcome.STOPPED if trial.worker else TrialOutcome.NOT_RUN
            message = stopped_message(run.epochs_done + 1, run.epochs_done)
            if run.state.status is RunStatus.RUNNING:
                self.store.update_state(run, status=RunStatus.STOPPED, message=message)
            elif not trial.worker:
                message = "the sweep was stopped before this trial began"
        elif not trial.final and run.state.status is RunStatus.RUNNING:
            reason = f"the Ray worker died ({error})"
            self.store.update_state(run, status=RunStatus.FAILED, message=failed_message(run.epochs_done, reason))
        trial.lock.close()
        return TrialResult(
            trial.index,
            run.run_id,
            outcome,
            message or run.message,
            time.perf_counter() - trial.submitted,
            run.epochs_done,
            run.target_epochs,
            trial.worker,
        )

    def close(self) -> None:
        """Leaving (done, or Ctrl-C twice, or an error): cancel what still runs, its runs failed with
        their epochs kept, and remove the inbox."""
        for ref, trial in list(self.running.items()):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
            run = trial.prepared.run
            with contextlib.suppress(Exception):
                if run.state.status is RunStatus.RUNNING:
                    reason = "the sweep's driver stopped following it"
                    self.store.update_state(
                        run, status=RunStatus.FAILED, message=failed_message(run.epochs_done, reason)
                    )
            with contextlib.suppress(Exception):
                trial.lock.close()
            self.results[trial.index] = TrialResult(
                trial.index, run.run_id, TrialOutcome.FAILED, "abandoned by the driver"
            )
        self.running.clear()
        with contextlib.suppress(Exception):
            self.ray.kill(self.inbox)


def _check_resources(ray, cpus_per_trial: int, gpus_per_trial: float | None) -> float:
    if not isinstance(cpus_per_trial, int) or cpus_per_trial < 1:
        raise SweepError(f"cpus per trial must be a whole number of at least 1; got {cpus_per_trial!r}")
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if cpus_per_trial > largest:
        raise SweepError(f"no machine of the Ray cluster has {cpus_per_trial} CPUs (the largest has {largest:g})")
    if gpus_per_trial is None:
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return gpus_per_trial


def _ship_dataset(ray, dataset_dir):
    """The dataset folder here (checked) and an object holding its four files for the workers."""
    folder = resolve_dataset_dir(dataset_dir)
    load_fashion_mnist(folder)  # every file checked before anything starts
    return folder, ray.put({name: (folder / name).read_bytes() for name in FILE_NAMES})


def _inbox(ray):
    """The actor the tasks report through, on this node when it can be (a sync actor: in order)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # Ray: the optional extra

    options = {"num_cpus": 0}
    try:  # through Ray Client (ray://) the driver may have no node of its own: then anywhere will do
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        )
    except Exception:
        pass
    return ray.remote(Inbox).options(**options).remote()


def _measurements(cache_root) -> dict[str, dict]:
    """The auto-precision measurements remembered in the driver's cache (``resnet.core.precision``), for a task."""
    return {key: measurement.to_dict() for key, measurement in read_record(record_path(cache_root)).items()}


def _remember_measurements(cache_root, measured: dict) -> None:
    """Keep what a task measured in the driver's record (valid entries it does not have yet)."""
    path = record_path(cache_root)
    known = read_record(path)
    for key, values in measured.items() if isinstance(measured, dict) else ():
        measurement = Measurement.from_dict(values) if isinstance(values, dict) else None
        if measurement is not None and key not in known:
            remember(path, key, measurement)


def _committed_files(run) -> dict[str, bytes]:
    """The run's committed files, with a state that names no live process (the worker must not see it busy)."""
    state = run.state.replace(pid=None, host=None)
    files = {
        "config.json": (run.path / "config.json").read_bytes(),
        "history.csv": (run.path / "history.csv").read_bytes(),
        "state.json": (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode(),
    }
    for name in (state.checkpoint, state.predictions):
        if run.epochs_done and name:
            files[name] = (run.path / name).read_bytes()
    return files


def _commit_epoch(
    store: RunStore, run, row: dict, checkpoint: bytes, predictions: bytes, feature_map: bytes | None = None
) -> None:
    """Commit one epoch a worker trained: its files first, then history and state (the commit)."""
    with np.load(io.BytesIO(predictions), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    map_arrays = None
    if feature_map is not None:  # the epoch's map (resnet/core/explain.py), checked again as the store writes it
        with np.load(io.BytesIO(feature_map), allow_pickle=False) as archive:
            map_arrays = {key: archive[key] for key in archive.files if key != "epoch"}
    files = store.write_epoch_files(
        run,
        int(row["epoch"]),
        save_checkpoint=lambda path: Path(path).write_bytes(checkpoint),
        probabilities=arrays["probabilities"],
        eval_indices=arrays["indices"],
        eval_labels=arrays["labels"],
        feature_map=map_arrays,
    )
    store.record_epoch(run, row, files)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
