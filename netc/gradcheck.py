"""`netc gradcheck`: the compiled symbolic gradients against centered finite
differences (f(w+e) - f(w-e)) / 2e in float64, on a few examples [PR 4.1]."""
from __future__ import annotations

import numpy as np

from netc.runtime.splits import load_source


def sample_batch(model, examples: int, rng: np.random.Generator):
    """A few training examples (normalized) if the spec has data, else random ones."""
    spec = model.program.spec
    dtype = spec.graph.float_dtype
    x = t = None
    if model.data_cfg.train is not None:
        ds = load_source(model.data_cfg.train, model.base_dir)
        idx = rng.choice(len(ds), size=min(examples, len(ds)), replace=False)
        from netc.runtime import normalize
        norm = normalize.fit(model.data_cfg.normalize, ds.x[: min(len(ds), 5000)])
        x = norm.apply(ds.x[idx]).astype(dtype)
        t = None if ds.t is None else ds.t[idx]
    else:
        (xn,) = list(spec.inputs.values())[:1]
        x = rng.normal(size=(examples,) + tuple(xn.shape[1:])).astype(dtype)
    feeds = [x]
    for tn in spec.targets.values():
        if t is None or (tn.dtype != "int64" and t.ndim == 1):
            n = tn.attr("classes")
            t = rng.integers(0, n, size=len(x)) if n else rng.uniform(size=(len(x),) + tuple(tn.shape[1:]))
        feeds.append(t.astype(tn.dtype))
    return feeds


def gradcheck(model, examples: int = 4, entries: int = 20, seed: int = 0, eps: float = 1e-6) -> list[dict]:
    prog = model.program
    spec = prog.spec
    rng = np.random.default_rng(seed)
    feeds = sample_batch(model, examples, rng)
    names = list(spec.params)
    fn = prog.function([prog.loss] + [prog.grads[n] for n in names], spec.feeds, name="loss_and_grads")
    state = {k: v.copy() for k, v in model.state.items()}
    analytic = [g.copy() for g in fn(state, *feeds)[1:]]
    loss = prog.function([prog.loss], spec.feeds, name="loss")

    def f() -> float:
        return float(loss(state, *feeds)[0])

    rows = []
    for name, g in zip(names, analytic):
        w = state[name]
        flat = w.reshape(-1)
        picks = rng.choice(flat.size, size=min(entries, flat.size), replace=False)
        worst, where = 0.0, None
        for i in picks:
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            ana = g.reshape(-1)[i]
            # round-off in f(w +- eps) sets a floor below which differences mean nothing
            noise = 10 * np.finfo(np.float64).eps * max(1.0, abs(fp), abs(fm)) / eps
            diff = abs(num - ana)
            err = 0.0 if diff <= noise else diff / max(abs(num), abs(ana), 1e-7)
            if err >= worst:
                worst, where = err, np.unravel_index(i, w.shape)
        rows.append({"name": name, "shape": w.shape, "checked": len(picks), "error": float(worst),
                     "index": tuple(int(k) for k in where) if where is not None else ()})
    return rows
