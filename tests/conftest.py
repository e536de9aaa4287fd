"""Shared fixtures. Tests read the real Fashion-MNIST files from $FASHION_MNIST_DIR (CI points it at
../shared/data/fashion-mnist; that folder is also the default here when it exists) and write runs into a
temporary cache folder, never into the project's cache/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "data" / "fashion-mnist"

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
if not os.environ.get("FASHION_MNIST_DIR") and SHARED_DATASET.is_dir():
    os.environ["FASHION_MNIST_DIR"] = str(SHARED_DATASET)


@pytest.fixture(scope="session")
def dataset():
    from data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty run cache, also exported as RESNET_CACHE_DIR for code that reads the default."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("RESNET_CACHE_DIR", str(folder))
    return folder
