"""The scores of a run's final parameters, evaluated once when training ends.

The test set is read here and, by default, nowhere else (train key
`test_every = end`): early stopping, schedules and searches select on the
validation set only, so the test error stays an estimate of unseen data
[PR 3.4]. `test_every = epoch` adds per-epoch test rows to metrics.jsonl for
those who want the curve; the summary's test score is still this one.

Real targets also get R^2 (scikit-learn's r2_score) and the mean squared error,
both in the target's own units (normalize_target's inverse applied first).
"""
from __future__ import annotations

import numpy as np

from netc.compiler.pipeline import Program

from .data import Dataset
from .evaluation import evaluate, predict, r2

TEST_ONCE, TEST_EACH_EPOCH = "end", "epoch"


def per_epoch(cfg, name: str) -> bool:
    """Whether the split `name` is evaluated at each epoch's end (validation always is)."""
    return name != "test" or cfg.test_every == TEST_EACH_EPOCH


def split_scores(program: Program, state: dict, ds: Dataset, batch: int, name: str, unscale=None) -> dict:
    """{name}_loss and {name}_error (None without classes), plus {name}_r2 and
    {name}_mse where the output and the targets are real arrays of one shape;
    `unscale` (normalize_target's inverse) puts those two in the target's own units."""
    loss, error = evaluate(program, state, ds, batch)
    out = {f"{name}_loss": loss, f"{name}_error": error}
    if error is None and ds.t is not None and program.predict is not None and ds.t.dtype.kind == "f":
        y = predict(program, state, ds.x, batch)
        if y.shape == ds.t.shape:
            t = ds.t if unscale is None else unscale(ds.t)
            y = y if unscale is None else unscale(y)
            diff = y.astype(np.float64) - t
            out[f"{name}_r2"] = r2(y, t)
            out[f"{name}_mse"] = float(np.mean(diff * diff))
    return out


def final_scores(program: Program, state: dict, splits: dict[str, Dataset | None], batch: int,
                 unscale=None) -> dict:
    """split_scores of every split given (valid, test), on the final parameters."""
    out: dict = {}
    for name, ds in splits.items():
        if ds is not None:
            out.update(split_scores(program, state, ds, batch, name, unscale))
    return out
