"""Per-layer statistics for the metrics file [PR 4.2]: activations (mean, std,
saturated and dead fractions), pre-activations (mean, std), the gradient of
the loss with respect to each layer's activations (its root mean square),
parameter and gradient norms, and the update-to-weight ratio (Bengio suggests
about 1e-3).

"Saturated" is relative to the unit's asymptotes, read off the layer's graph
(tanh: +-1, sigmoid: 0 and 1, a constant multiple or shift of those, a clip
such as hard_tanh: its bounds): the fraction of activations within 0.5% of the
range from either end, |tanh| > 0.99. Units without asymptotes (linear,
rectifiers, softmax) report none; `dead` covers rectifiers.

A run computes them on a sample, the first SAMPLE examples of the training
set, with one compiled function (`Probe`), at the first and the last epoch and
every `every(...)`-th between, so that they cost about a tenth of training at
most (on a small training set the sample is a large share of an epoch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from netc.compiler.differentiate import grad as _grad
from netc.compiler.errors import NetcError
from netc.compiler.node import Node
from netc.compiler.pipeline import Function, Program

SATURATED = 0.005  # within this fraction of the unit's range from an asymptote


def _activations(program: Program) -> tuple[Function | None, list[str]]:
    """The named layers' activations (memoized by the Program)."""
    spec = program.spec
    layers = _layers(program)
    acts = program.function([spec.named[k] for k in layers], list(spec.inputs.values()),
                            name="activations") if layers else None
    return acts, layers


def _layers(program: Program) -> list[str]:
    spec = program.spec
    return [k for k, n in spec.named.items() if n.ndim >= 2 and n.shape[0] is None and k != "loss"]


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


SAMPLE = 500  # the statistics' examples: the first of the training set
BUDGET = 0.1  # the statistics see at most about this share of the examples training does


def every(n_train: int, sample: int) -> int:
    """Epochs between two statistics rows: every epoch when the sample is at most a
    tenth of the training set, else often enough that the statistics cost about a
    tenth of training (1,347 examples, sample 500: every 4th). A function of the
    data's size alone, so a resumed run writes the same rows."""
    return max(1, math.ceil(sample / (BUDGET * max(n_train, 1))))


def due(epoch: int, epochs: int, stride: int) -> bool:
    """The first and the last epoch always, and every `stride`-th."""
    return epoch in (1, epochs) or epoch % stride == 0


@dataclass
class Probe:
    """What the statistics compute, compiled once for a run as one function: the
    layers' activations, pre-activations, d loss / d activations and the parameters'
    gradients share one forward and one backward pass. On the native backend the
    function is native too (compiled in the background from `of` on; NumPy's
    if that fails), so the statistics follow the step's thread plan."""
    program: Program
    layers: list[str]
    pre_layers: list[str]
    acts: list[Node]  # the activations, then the pre-activations
    outs: list[Node]  # acts, then d loss / d activations and the parameters' gradients ([] without them)
    backend: str = "numpy"

    @staticmethod
    def of(program: Program, backend: str = "numpy") -> "Probe":
        """`backend`: numpy, or the program's native one (its arrays are NumPy's too)."""
        spec = program.spec
        layers = _layers(program)
        pres = {k: p for k in layers if (p := pre_activation(spec.named[k])) is not None}
        acts = [spec.named[k] for k in layers] + list(pres.values())
        agrads = _grad(spec.graph, spec.loss, [spec.named[k] for k in layers]) \
            if spec.loss is not None and layers else []
        pgrads = [program.grads[k] for k in spec.params] if spec.loss is not None else []
        probe = Probe(program, layers, list(pres), acts, acts + agrads + pgrads if agrads or pgrads else [], backend)
        if backend != "numpy":
            probe.function(True)  # start compiling now: training's first epoch hides it
        return probe

    def function(self, with_t: bool) -> Function | None:
        """All four groups (`with_t`: the targets a spec has are given), else activations only."""
        spec = self.program.spec
        nodes, feeds = (self.outs, spec.feeds) if with_t else (self.acts, list(spec.inputs.values()))
        if not nodes:
            return None
        return self.program.function(nodes, feeds, name="layer_statistics", backend=self.backend)

    def __call__(self, state: dict, x: np.ndarray, t: np.ndarray | None,
                 before_last_step: dict | None = None) -> dict:
        spec = self.program.spec
        out: dict = {"layers": {}, "params": {}}
        with_t = bool(self.outs) and (t is not None or not spec.targets)
        if not (self.outs if with_t else self.acts):
            return out
        feeds = [x] + ([t] if with_t and spec.targets else [])
        try:
            values = list(self.function(with_t)(state, *feeds))
        except NetcError:
            if self.backend == "numpy":
                raise
            self.backend = "numpy"  # the native build failed: the statistics need not
            values = list(self.function(with_t)(state, *feeds))
        n_l, n_p = len(self.layers), len(self.pre_layers)
        acts, pres, rest = values[:n_l], values[n_l:n_l + n_p], values[n_l + n_p:]
        with np.errstate(all="ignore"):
            for name, a in zip(self.layers, acts):  # float64 sums of the float32 values, no float64 copies
                a = np.asarray(a)
                out["layers"][name] = {"mean": float(a.mean(dtype=np.float64)), "std": float(a.std(dtype=np.float64)),
                                       "saturated": saturated(a, unit_range(spec.named[name])),
                                       "dead": float(np.mean(np.all(a == 0, axis=0)))}  # never active on the batch
            for name, p in zip(self.pre_layers, pres):
                p = np.asarray(p)
                out["layers"][name].update(pre_mean=float(p.mean(dtype=np.float64)),
                                           pre_std=float(p.std(dtype=np.float64)))
            if not with_t:
                return out
            agrads = rest[:len(rest) - len(spec.params)] if spec.loss is not None else []
            for name, g in zip(self.layers, agrads):
                g = np.asarray(g)
                out["layers"][name]["grad_rms"] = float(np.sqrt(np.mean(np.square(g, dtype=np.float64)))) \
                    if g.size else 0.0
            for name, g in zip(spec.params, rest[len(agrads):]):
                w = state[name]
                norm = float(np.linalg.norm(w))
                row = {"norm": norm, "grad_norm": float(np.linalg.norm(g))}
                if before_last_step is not None and name in before_last_step:
                    row["update_ratio"] = float(np.linalg.norm(w - before_last_step[name]) / max(norm, 1e-30))
                out["params"][name] = row
        return out


def layer_stats(program: Program, state: dict, x: np.ndarray, t: np.ndarray | None,
                before_last_step: dict | None = None) -> dict:
    """The statistics of one batch (a run keeps its Probe instead of compiling it each epoch)."""
    return Probe.of(program)(state, x, t, before_last_step)


def saturated(a: np.ndarray, bounds: tuple[float, float] | None) -> float | None:
    """The fraction of activations within SATURATED of the range from an asymptote."""
    if bounds is None:
        return None
    lo, hi = bounds
    margin = SATURATED * (hi - lo)
    below, above = lo + margin, hi - margin
    if a.dtype == np.float32:  # the float32 thresholds that compare exactly as the float64 ones do
        below, above = _float32_at_most(below), -_float32_at_most(-above)
    return float(np.mean((a <= below) | (a >= above))) if a.size else 0.0


def _float32_at_most(v: float) -> np.float32:
    """The largest float32 <= v: for a float32 x, x <= v exactly when x <= this."""
    f = np.float32(v)
    return np.nextafter(f, np.float32(-np.inf)) if float(f) > v else f


def first_nonfinite_layer(program: Program, state: dict, x) -> str | None:
    """The first named layer, in spec order, with a NaN or an infinity on this batch,
    with its .net location: where a divergence shows first."""
    acts_fn, layers = _activations(program)
    if acts_fn is None:
        return None
    with np.errstate(all="ignore"):
        values = acts_fn(state, np.asarray(x))
    for name, a in zip(layers, values):
        if not np.all(np.isfinite(a)):
            node = program.spec.named[name]
            return f"layer '{name}'" + (f" ({node.loc})" if node.loc else "")
    return None
