"""Per-layer statistics for the metrics file [PR 4.2]: activations (mean, std,
saturated and dead fractions), pre-activations (mean, std), the gradient of
the loss with respect to each layer's activations (its root mean square),
parameter and gradient norms, and the update-to-weight ratio (Bengio suggests
about 1e-3).

"Saturated" is relative to the unit's asymptotes, read off the layer's graph
(tanh: +-1, sigmoid: 0 and 1, a constant multiple or shift of those, a clip
such as hard_tanh: its bounds): the fraction of activations within 0.5% of the
range from either end, |tanh| > 0.99. Units without asymptotes (linear,
rectifiers, softmax) report none; `dead` covers rectifiers."""
from __future__ import annotations

import numpy as np

from netc.compiler.differentiate import grad as _grad
from netc.compiler.node import Node
from netc.compiler.pipeline import Function, Program

SATURATED = 0.005  # within this fraction of the unit's range from an asymptote


def _functions(program: Program) -> tuple[Function | None, Function | None, list[str]]:
    """The named layers' activations and the parameters' gradients (memoized by the Program)."""
    spec = program.spec
    layers = _layers(program)
    acts = program.function([spec.named[k] for k in layers], list(spec.inputs.values()),
                            name="activations") if layers else None
    names = list(spec.params)
    grads = program.function([program.grads[k] for k in names], spec.feeds, name="gradients") if names else None
    return acts, grads, layers


def _layers(program: Program) -> list[str]:
    spec = program.spec
    return [k for k, n in spec.named.items() if n.ndim >= 2 and n.shape[0] is None and k != "loss"]


def _extra_functions(program: Program, layers: list[str]):
    """Pre-activations (layers that have one) and d loss / d activation (memoized by the Program)."""
    spec = program.spec
    pres = {k: p for k in layers if (p := pre_activation(spec.named[k])) is not None}
    pre_fn = program.function(list(pres.values()), list(spec.inputs.values()),
                              name="pre_activations") if pres else None
    grad_fn = None
    if spec.loss is not None and layers:
        gs = _grad(spec.graph, spec.loss, [spec.named[k] for k in layers])
        grad_fn = program.function(gs, spec.feeds, name="activation_gradients")
    return pre_fn, list(pres), grad_fn


def pre_activation(layer: Node) -> Node | None:
    """The affine input of a layer's units: the first `... @ W (+ b)` under the
    elementwise ops that make the unit (None for a layer that is itself affine)."""
    if _affine(layer):
        return None
    seen, todo = set(), [layer]
    while todo:
        n = todo.pop(0)
        if n.id in seen:
            continue
        seen.add(n.id)
        if n is not layer and _affine(n) and tuple(n.shape) == tuple(layer.shape):
            return n
        todo.extend(i for i in n.inputs if i.ndim == layer.ndim)
    return None


def _affine(n: Node) -> bool:
    return n.op == "matmul" or (n.op == "add" and any(i.op == "matmul" for i in n.inputs))


def unit_range(n: Node) -> tuple[float, float] | None:
    """The asymptotes (low, high) of an elementwise unit, from its graph; None if unbounded."""
    c = [i for i in n.inputs if i.op == "const"]
    rest = [i for i in n.inputs if i.op != "const"]
    if n.op == "tanh":
        return (-1.0, 1.0)
    if n.op == "sigmoid":
        return (0.0, 1.0)
    if n.op in ("mul", "add") and len(c) == 1 and len(rest) == 1:
        r, k = unit_range(rest[0]), float(c[0].attr("value"))
        if r is None:
            return None
        lo, hi = (r[0] * k, r[1] * k) if n.op == "mul" else (r[0] + k, r[1] + k)
        return (min(lo, hi), max(lo, hi)) if lo != hi else None
    if n.op == "add" and len(n.inputs) == 2:  # f + 0 * a (lecun_tanh's twist at 0)
        for a, b in (n.inputs, n.inputs[::-1]):
            if b.op == "mul" and any(i.op == "const" and float(i.attr("value")) == 0 for i in b.inputs):
                return unit_range(a)
        return None
    if n.op in ("minimum", "maximum") and len(c) == 1 and len(rest) == 1:  # a clip
        k = float(c[0].attr("value"))
        inner = rest[0]
        if inner.op in ("minimum", "maximum") and inner.op != n.op:
            ck = [i for i in inner.inputs if i.op == "const"]
            if len(ck) == 1:
                k2 = float(ck[0].attr("value"))
                return (min(k, k2), max(k, k2))
    return None


def layer_stats(program: Program, state: dict, x: np.ndarray, t: np.ndarray | None,
                before_last_step: dict | None = None) -> dict:
    acts_fn, grads_fn, layers = _functions(program)
    out: dict = {"layers": {}, "params": {}}
    has_t = t is not None or not program.spec.targets
    feeds = [x] + ([t] if program.spec.targets else [])
    with np.errstate(all="ignore"):
        if acts_fn is not None:
            for name, a in zip(layers, acts_fn(state, x)):
                a = a.astype(np.float64)
                row = {"mean": float(a.mean()), "std": float(a.std()),
                       "saturated": saturated(a, unit_range(program.spec.named[name])),
                       "dead": float(np.mean(np.all(a == 0, axis=0)))}  # units never active on the batch
                out["layers"][name] = row
            pre_fn, pre_layers, agrad_fn = _extra_functions(program, layers)
            if pre_fn is not None:
                for name, p in zip(pre_layers, pre_fn(state, x)):
                    p = np.asarray(p, np.float64)
                    out["layers"][name].update(pre_mean=float(p.mean()), pre_std=float(p.std()))
            if agrad_fn is not None and has_t:
                for name, g in zip(layers, agrad_fn(state, *feeds)):
                    g = np.asarray(g, np.float64)
                    out["layers"][name]["grad_rms"] = float(np.sqrt(np.mean(g * g))) if g.size else 0.0
        if grads_fn is not None and has_t:
            for name, g in zip(program.spec.params, grads_fn(state, *feeds)):
                w = state[name]
                norm = float(np.linalg.norm(w))
                row = {"norm": norm, "grad_norm": float(np.linalg.norm(g))}
                if before_last_step is not None and name in before_last_step:
                    row["update_ratio"] = float(np.linalg.norm(w - before_last_step[name]) / max(norm, 1e-30))
                out["params"][name] = row
    return out


def saturated(a: np.ndarray, bounds: tuple[float, float] | None) -> float | None:
    """The fraction of activations within SATURATED of the range from an asymptote."""
    if bounds is None:
        return None
    lo, hi = bounds
    margin = SATURATED * (hi - lo)
    return float(np.mean((a <= lo + margin) | (a >= hi - margin))) if a.size else 0.0


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
