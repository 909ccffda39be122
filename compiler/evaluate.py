"""A reference interpreter over the op table's `impl`s: allocation-happy and
slow, but obviously right. Used for constant folding and as the ground truth
the generated code is tested against."""
from __future__ import annotations

import numpy as np

from .graph import Node, toposort
from .ops import OPS


def evaluate(outputs: list[Node], feeds: dict[str, np.ndarray], batch: int | None = None) -> list[np.ndarray]:
    """Values of `outputs`; leaves are looked up by name in `feeds`."""
    if batch is None:
        batch = next((v.shape[0] for v in feeds.values() if np.ndim(v) > 0), 1)
    values: dict[int, np.ndarray] = {}
    for n in toposort(outputs):
        spec = OPS[n.op]
        if spec.impl is None:  # a fed leaf: input, param, state, hyper
            v = np.asarray(feeds[n.name])
            values[n.id] = v.astype(n.dtype) if v.dtype != np.dtype(n.dtype) else v
        else:
            with np.errstate(all="ignore"):
                v = spec.impl([values[i.id] for i in n.inputs], n.a, batch)
            values[n.id] = np.asarray(v).astype(n.dtype, copy=False)
    return [values[o.id] for o in outputs]
