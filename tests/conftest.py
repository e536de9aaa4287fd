"""Shared fixtures.

The dataset: every test that reads Fashion-MNIST asks for ``dataset_dir`` (the folder) or ``dataset``
(the loaded arrays). The folder is found once per session with the product's own lookup
(``data.fashion_mnist.resolve_dataset_dir``): $FASHION_MNIST_DIR, then the Keras cache
(``~/.keras/datasets/fashion-mnist`` or ``$KERAS_HOME/...``), then Keras' download. CI points
$FASHION_MNIST_DIR at ../shared/data/fashion-mnist, and that folder is also the default here when it
exists. Tests are skipped only when no copy exists at all; a $FASHION_MNIST_DIR that names a missing or
incomplete folder is an error, not a skip.

Runs are written into a temporary cache folder (``cache_dir``), never into the project's cache/.

Train once, use often: ``trained(config)`` trains each distinct tiny run the suite needs once per session
(into a session-wide cache) and returns it; tests copy it into their own cache with
``support.copy_run``. The session cache also keeps the session's precision record: on a machine whose
CPU or GPU claims a mixed policy, ``auto`` precision is measured the first time a depth and batch size
is trained by a run of at least one full epoch's images (resnet/core/precision.py; the tests' tiny runs
are shorter and train float32 unmeasured), and every test's ``cache_dir`` starts with what the tests
before it measured, as a user's cache does after its first run; what a test measures is kept for the next.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "data" / "fashion-mnist"

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
if not os.environ.get("FASHION_MNIST_DIR") and SHARED_DATASET.is_dir():
    os.environ["FASHION_MNIST_DIR"] = str(SHARED_DATASET)


@pytest.fixture(scope="session")
def dataset_dir() -> Iterator[Path]:
    """The folder holding the four Fashion-MNIST files, found once with the product's lookup.

    It is also exported as $FASHION_MNIST_DIR for the rest of the session, so the product code and the
    processes the tests start (CLI, training worker, benchmark) read exactly this folder.
    """
    from data.fashion_mnist import ENV_VAR, DatasetError, resolve_dataset_dir

    if os.environ.get(ENV_VAR):
        folder = resolve_dataset_dir()  # a named folder that is wrong fails loudly: no silent skip
    else:
        try:
            folder = resolve_dataset_dir()  # the Keras cache, else Keras' download
        except DatasetError as error:
            pytest.skip(f"no copy of Fashion-MNIST on this machine and none could be downloaded: {error}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(folder))
        yield folder


@pytest.fixture(scope="session")
def dataset(dataset_dir):
    from data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(dataset_dir)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """The session's run cache: the runs ``trained`` trains once, and the session's precision record."""
    return tmp_path_factory.mktemp("session") / "cache"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch, session_cache):
    """A fresh run cache, exported as RESNET_CACHE_DIR for code that reads the default.

    It holds no runs; it starts with the session's precision record (if anything was measured), and what
    this test measures is added to that record afterwards.
    """
    from resnet.core.precision_record import read_record, record_path, remember

    folder = tmp_path / "cache"
    folder.mkdir()
    shared = record_path(session_cache)
    if shared.is_file():
        shutil.copy2(shared, record_path(folder))
    monkeypatch.setenv("RESNET_CACHE_DIR", str(folder))
    yield folder
    known = read_record(shared)
    for key, measurement in read_record(record_path(folder)).items():
        if key not in known:
            remember(shared, key, measurement)


@pytest.fixture(scope="session")
def trained(session_cache, dataset_dir):
    """``trained(config)``: the Run of ``config`` trained to its epochs, once per session (in this process).

    The run's folder is the session's: copy it into a test's cache (``support.copy_run``) before changing
    anything in it.
    """
    from resnet.store.runs import RunStore
    from resnet.training.trainer import prepare_training, train_prepared

    store, runs = RunStore(session_cache), {}

    def train(config):
        key = tuple(sorted(config.to_dict().items()))
        if key not in runs:
            run = train_prepared(prepare_training(config, store=store, resume=False, dataset_dir=dataset_dir))
            assert run.status == "complete", run.message
            runs[key] = run
        return store.load(runs[key].run_id)

    return train
