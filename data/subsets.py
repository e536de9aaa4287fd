"""Class-balanced subsets of Fashion-MNIST's images, chosen by seed (NumPy only: no TensorFlow).

The trainer picks a run's training and evaluation images with it, the run store its nearest-neighbour
bank, so a page that shows a run needs no TensorFlow to know which images it trained on.
"""

from __future__ import annotations

import numpy as np


def stratified_subset(labels: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Indices of ``size`` examples with the same per-class balance as ``labels``.

    Each class gets ``size // classes`` examples, and the remainder goes one each to the first classes.
    The choice within a class is random but fixed by ``seed``; the indices come back sorted.
    """
    labels = np.asarray(labels)
    if not 1 <= size <= len(labels):
        raise ValueError(f"subset size must be between 1 and {len(labels)}, got {size}")
    if size == len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    base, remainder = divmod(size, len(classes))
    chosen = []
    for position, klass in enumerate(classes):
        members = np.flatnonzero(labels == klass)
        take = min(len(members), base + (1 if position < remainder else 0))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))
