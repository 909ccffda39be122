"""Per-layer statistics for the metrics file [PR 4.2]: activations (mean, std,
saturated and dead fractions), parameter and gradient norms, and the
update-to-weight ratio (Bengio suggests about 1e-3)."""
from __future__ import annotations

import numpy as np

from netc.compiler.pipeline import Function, Program


def _functions(program: Program) -> tuple[Function | None, Function | None, list[str]]:
    """The named layers' activations and the parameters' gradients (memoized by the Program)."""
    spec = program.spec
    layers = [k for k, n in spec.named.items() if n.ndim >= 2 and n.shape[0] is None and k != "loss"]
    acts = program.function([spec.named[k] for k in layers], list(spec.inputs.values()),
                            name="activations") if layers else None
    names = list(spec.params)
    grads = program.function([program.grads[k] for k in names], spec.feeds, name="gradients") if names else None
    return acts, grads, layers


def layer_stats(program: Program, state: dict, x: np.ndarray, t: np.ndarray | None,
                before_last_step: dict | None = None) -> dict:
    acts_fn, grads_fn, layers = _functions(program)
    out: dict = {"layers": {}, "params": {}}
    with np.errstate(all="ignore"):
        if acts_fn is not None:
            for name, a in zip(layers, acts_fn(state, x)):
                a = a.astype(np.float64)
                bound = float(np.max(np.abs(a))) if a.size else 0.0
                out["layers"][name] = {
                    "mean": float(a.mean()), "std": float(a.std()),
                    "saturated": float(np.mean(np.abs(a) >= 0.97 * bound)) if bound > 0 else 0.0,
                    "dead": float(np.mean(np.all(a == 0, axis=0))),  # units never active on the batch
                }
        if grads_fn is not None and (t is not None or not program.spec.targets):
            feeds = [x] + ([t] if program.spec.targets else [])
            for name, g in zip(program.spec.params, grads_fn(state, *feeds)):
                w = state[name]
                norm = float(np.linalg.norm(w))
                row = {"norm": norm, "grad_norm": float(np.linalg.norm(g))}
                if before_last_step is not None and name in before_last_step:
                    row["update_ratio"] = float(np.linalg.norm(w - before_last_step[name]) / max(norm, 1e-30))
                out["params"][name] = row
    return out


def first_nonfinite_layer(program: Program, state: dict, x) -> str | None:
    """The first named layer, in spec order, with a NaN or an infinity on this batch,
    with its .net location: where a divergence shows first."""
    acts_fn, _, layers = _functions(program)
    if acts_fn is None:
        return None
    with np.errstate(all="ignore"):
        values = acts_fn(state, np.asarray(x))
    for name, a in zip(layers, values):
        if not np.all(np.isfinite(a)):
            node = program.spec.named[name]
            return f"layer '{name}'" + (f" ({node.loc})" if node.loc else "")
    return None
