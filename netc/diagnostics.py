"""Debugging commands from Bengio's "Practical Recommendations" §2.1 and §4:
the learning-rate probe and controlled overfitting."""
from __future__ import annotations

import math

import numpy as np

from netc.compiler.errors import SpecError
from netc.runtime.splits import load_source
from netc.runtime.divergence import Diverged

from .model import Model


def _train_set(model: Model, examples: int):
    if model.data_cfg.train is None:
        raise SpecError("this spec has no training data: add data { train = ... }",
                        model.program.spec.block_locs.get("data"), model.text)
    ds = load_source(model.data_cfg.train, model.base_dir)
    return ds.slice(0, min(examples, len(ds)))


def lr_probe(model_factory, x, t, start: float = 10.0, tries: int = 12, epochs: int = 1, log=print) -> float | None:
    """Start large and divide by 3 until training no longer diverges [PR 2.1]:
    returns the largest rate tried that trains without diverging (or None).
    `model_factory(train=...)` compiles the spec with those train-block keys set."""
    lr = start
    for _ in range(tries):
        m: Model = model_factory(train={"lr": lr, "recover": False, "stats": False})
        with np.errstate(all="ignore"):  # a non-finite loss is fit's to report (LossNotFinite)
            initial = float(m.function("loss")(*_feeds(m, x, t))[0])
        try:
            m.fit(x, t, epochs=epochs, progress=False)  # one trial of several: no bar
            with np.errstate(all="ignore"):
                final = float(m.function("loss")(*_feeds(m, x, t))[0])
            ok = math.isfinite(final) and final < initial
            verdict = "trains" if ok else f"no progress (loss {initial:.4g} -> {final:.4g})"
        except Diverged:
            ok, verdict = False, "diverges"
        log(f"  lr {lr:<10.4g} {verdict}")
        if ok:
            return lr
        lr /= 3
    return None


def _feeds(m: Model, x, t):
    xn = m.normalizer.apply(x).astype(m.program.spec.graph.float_dtype)
    return [xn] + ([t] if m.program.spec.targets else [])


def overfit(model: Model, examples: int = 100, max_epochs: int = 300, log=print) -> tuple[bool, float]:
    """Train on a small subset until it is learned by heart [PR 4.1]: a network that
    cannot reach ~zero training error there has a bug, too little capacity, or a bad rate."""
    ds = _train_set(model, examples)
    model.train_cfg.batch = min(model.train_cfg.batch, len(ds))
    model.train_cfg.stop = type(model.train_cfg.stop)() if model.train_cfg.stop.kind == "off" else model.train_cfg.stop
    classes = model.program.errors is not None
    initial = None
    done, score = 0, math.inf
    while done < max_epochs:
        s = model.fit(ds.x, ds.t, epochs=min(10, max_epochs - done), progress=False).summary_
        done += s["epochs"]
        score = 1 - model.score(ds.x, ds.t) if classes else s["train_loss"]
        initial = initial if initial is not None else s["train_loss"]
        log(f"  epoch {done:>4}: " + (f"training error {score * 100:.2f}%" if classes
                                       else f"training loss {score:.4g}"))
        if (classes and score <= 0.01) or (not classes and score <= 0.01 * initial):
            return True, score
    return False, score


