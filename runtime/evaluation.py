"""A compiled program applied to data: the feeds for a batch, the mean loss and
error rate over a dataset, predictions in batches, and the one-line epoch
report."""
from __future__ import annotations

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import Program, to_host

from .data import Dataset


def feeds_for(program: Program, x, t) -> list:
    spec = program.spec
    out = [x]
    if spec.targets:
        if t is None:
            raise NetcError("this spec has a target but the data has no targets")
        out.append(t)
    return out


def call(fn, state: dict, program: Program, x, t=None):
    """`fn` on the feeds it reads, chosen by name (a function reads only the feeds its
    outputs depend on: an evaluation whose loss does not read x takes t alone); one
    that reads none (a constant output) is still sized for len(x) examples."""
    spec = program.spec
    fed = dict(zip(list(spec.inputs)[:1], [x]))
    if t is not None:
        fed.update(zip(list(spec.targets)[:1], [t]))
    missing = [name for name in fn.feeds if name not in fed]
    if missing:
        raise NetcError(f"this spec reads '{missing[0]}' but the data has none")
    args = [fed[name] for name in fn.feeds]
    return fn(state, *args) if args else fn.bind(state, len(x))()


def evaluate(program: Program, state: dict, ds: Dataset, batch: int) -> tuple[float, float | None]:
    """Mean loss and error rate (class targets) over a dataset."""
    fn = program.evaluate
    total, errors, n = 0.0, 0.0, len(ds)
    with np.errstate(all="ignore"):
        for lo in range(0, n, batch):
            x = ds.x[lo:lo + batch]
            t = None if ds.t is None else ds.t[lo:lo + batch]
            outs = call(fn, state, program, x, t)
            total += float(outs[0]) * len(x)
            if len(outs) > 1:
                errors += float(outs[1])
    return total / n, (errors / n if program.errors is not None else None)


def predict(program: Program, state: dict, x: np.ndarray, batch: int) -> np.ndarray:
    fn = program.predict
    out = None
    for lo in range(0, len(x), batch):
        (y,) = call(fn, state, program, x[lo:lo + batch])
        if out is None:
            out = np.empty((len(x),) + y.shape[1:], y.dtype)
        out[lo:lo + len(y)] = to_host(y)
    return out


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"age {row['age']}", f"train_loss {row['train_loss']:.4f}"]
    for k in ("valid_error", "test_error"):
        if row.get(k) is not None:
            parts.append(f"{k} {row[k] * 100:.2f}%")
    for k in ("valid_loss",):
        if row.get(k) is not None and row.get("valid_error") is None:
            parts.append(f"{k} {row[k]:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
