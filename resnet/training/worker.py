"""The training child: ``python -m resnet.training.worker``, started and driven by ``resnet.training.jobs``.

Why a child process: TensorFlow keeps roughly one run's variables and optimizer slots alive inside the
process after every training, even after ``keras.backend.clear_session()`` (about 200 MB per ResNet-18
run; ``benchmarks/memory_runs.py``). A long-lived app server that trains in its own process therefore
grows with every run. A child that exits after its run gives all of it back.

What it reads and writes is ``resnet.training.protocol``: the request, then ``stop`` (or the end of its
input: the parent closed the pipe or died) to stop after the current batch, keeping completed epochs as
the Stop button does; progress lines, then one ``finished`` or ``failed`` line. End of input before any
request ends it at once, having done nothing. Everything else it or TensorFlow prints goes to stderr,
so it cannot corrupt that stream: TensorFlow's start-up chatter is captured there (data/quiet.py, shown
with ``RESNET_VERBOSE=1``), and an error's traceback is printed there too.

It imports TensorFlow and the trainer (and reads the dataset, if it is on disk) *before* it reads its
request, so a child started ahead of need (``resnet.training.spare.SpareWorker``) starts training the
moment a job arrives. Until then it holds no run, no lock and no device. The request's ``environment``
(the parent's when it sent the job) replaces the one the child was started with: the cache and dataset
folders may have changed meanwhile; what TensorFlow read at import may not (the parent checks that).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback

from data.fashion_mnist import DatasetError, load_fashion_mnist
from resnet.config import TrainConfig
from resnet.store.runs import RunStore
from resnet.training import protocol  # no TensorFlow: the child imports that next, before its request


def _protocol_stream():
    """A private copy of stdout for the protocol; file descriptor 1 itself is pointed at stderr."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def _watch_input(cancel: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == protocol.STOP:
            cancel.set()
    cancel.set()  # end of input: the parent is gone or gave up on us


def _import_training() -> BaseException | None:
    """Import what training needs before the request comes; the error, if that fails (told with the job)."""
    try:
        import resnet.training.trainer  # noqa: F401  (TensorFlow and Keras: the slow part of a start)
    except BaseException as error:  # told to the parent once it sends a job
        return error
    try:
        load_fashion_mnist(download=False)  # kept in memory for the job; never downloaded before one asks
    except (DatasetError, OSError):
        pass  # the job names its dataset and says what is wrong with it
    return None


class _Sender:
    """Writes ``resnet.training.protocol`` lines to the parent; if it is gone (broken pipe), the run stops
    after the current batch instead (``cancel``)."""

    def __init__(self, output, cancel: threading.Event):
        self.output, self.cancel, self.lock = output, cancel, threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            if self.output.closed:
                return
            try:
                self.output.write(line)
            except (OSError, ValueError):
                self.cancel.set()
                with contextlib.suppress(OSError):
                    self.output.close()

    def close(self) -> None:
        """Nothing more to say: a dead parent's pipe must not raise at exit."""
        self.lock.acquire()
        with contextlib.suppress(OSError):
            self.output.close()


def main() -> int:
    output = _protocol_stream()
    import_error = _import_training()
    cancel = threading.Event()
    send = _Sender(output, cancel)
    line = sys.stdin.readline()
    if not line:  # given up before any job (a spare no longer needed, or the parent is gone)
        return 0
    try:
        request = protocol.parse_request(line)
    except ValueError as error:
        send(protocol.failed_line(f"bad request to the training process: {error}", ""))
        return 2
    if isinstance(request.get("environment"), dict):
        os.environ.clear()
        os.environ.update({str(name): str(value) for name, value in request["environment"].items()})
    threading.Thread(target=_watch_input, args=(cancel,), name="stdin-watch", daemon=True).start()
    try:
        return _train(request, import_error, cancel, send)
    finally:
        send.close()


def _train(request: dict, import_error: BaseException | None, cancel: threading.Event, send: _Sender) -> int:
    """Train the request's run; the parent always hears how it ended."""
    prepared = None
    try:
        if import_error is not None:  # TensorFlow could not start: the parent hears why, not just an exit code
            raise import_error
        # Imported by _import_training already (TensorFlow, after stdout was pointed at stderr): named here.
        from resnet.training.trainer import prepare_training, train_prepared

        store = RunStore(request["store"])
        config = TrainConfig.from_dict(request["config"])
        prepared = prepare_training(
            config, store=store, run_id=request["run_id"], resume=False, dataset_dir=request.get("dataset_dir")
        )
        run = train_prepared(prepared, cancel=cancel, report=lambda progress: send(protocol.progress_line(progress)))
        send(protocol.finished_line(run.status.value, run.message))
        return 0
    except BaseException as error:  # the parent must always hear how the run ended
        if not isinstance(error, (FloatingPointError, KeyboardInterrupt)):  # a diverged run is an outcome
            traceback.print_exc()  # to stderr: the server's log keeps where it happened
        message = prepared.run.message if prepared is not None else ""
        send(protocol.failed_line(f"{type(error).__name__}: {error}", message))
        return 1


if __name__ == "__main__":
    sys.exit(main())
