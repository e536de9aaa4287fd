"""Shared fixtures.

The dataset: every test that reads Fashion-MNIST asks for ``dataset_dir`` (the folder) or ``dataset``
(the loaded arrays). The folder is found once per session with the product's own lookup
(``data.fashion_mnist.resolve_dataset_dir``): $FASHION_MNIST_DIR, then the Keras cache
(``~/.keras/datasets/fashion-mnist`` or ``$KERAS_HOME/...``), then Keras' download. CI points
$FASHION_MNIST_DIR at ../shared/data/fashion-mnist, and that folder is also the default here when it
exists. Tests are skipped only when no copy exists at all; a $FASHION_MNIST_DIR that names a missing or
incomplete folder is an error, not a skip.

Runs are written into a temporary cache folder (``cache_dir``), never into the project's cache/.
"""

from __future__ import annotations

import os
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


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty run cache, also exported as RESNET_CACHE_DIR for code that reads the default."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("RESNET_CACHE_DIR", str(folder))
    return folder
