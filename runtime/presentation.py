"""The order in which training examples are presented [EB 4.2]: shuffled,
classes interleaved, or emphasized by the errors last seen."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def interleaved(labels: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """A permutation in which consecutive examples come from different classes:
    each class shuffled, then dealt round-robin (a class that runs out drops out)."""
    classes = np.unique(labels)
    queues = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        queues.append(rng.permutation(idx) if rng is not None else idx)
    longest = max(len(q) for q in queues)
    table = np.full((longest, len(queues)), -1, dtype=np.int64)
    for j, q in enumerate(queues):
        table[:len(q), j] = q
    if rng is not None:  # vary which class leads each round
        for row in table:
            rng.shuffle(row)
    flat = table.reshape(-1)
    return flat[flat >= 0]


def emphasized(missed: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """n draws with replacement, a missed example `ratio` times as likely as the others."""
    w = np.where(missed, ratio, 1.0)
    return rng.choice(len(missed), size=len(missed), replace=True, p=w / w.sum())


def epoch_order(n: int, batch: int, rng: np.random.Generator, *, shuffle: bool, labels: np.ndarray | None,
                interleave: bool, missed: np.ndarray | None, ratio: float) -> Iterator[np.ndarray]:
    if missed is not None:
        order = emphasized(missed, ratio, rng)
    elif interleave and labels is not None:
        order = interleaved(labels, rng if shuffle else None)
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
    for lo in range(0, n, batch):
        yield order[lo:lo + batch]
