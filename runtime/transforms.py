"""Transformed nonlinearities [RV]: Raiko, Valpola & LeCun (2012); Vatanen,
Raiko, Valpola & LeCun (2013). A `transformed` layer computes
gamma * (tanh(a) + alpha * a + beta); a refresh re-estimates, on a sample of
the training set (the pre-activations a are those of the noise-free network),

    alpha = -mean tanh'(a)                        (zero slope on average)
    beta  = -mean (tanh(a) + alpha a)             (zero output on average)
    gamma = (mean f^2 * mean f'^2 + 1e-4)^(-1/4)  (three transformations only;
            f = tanh(a) + alpha a + beta: the authors' gammatype 1, their default)

and re-expresses the network in the new coefficients so that its noise-free
function (what evaluation and prediction compute) is exactly the same: every
sum that reads the layer has its weight rows rescaled by gamma_old/gamma_new,
its shortcuts from the layer's inputs and its bias absorb the linear and
constant change (runtime/transform_topology.py finds them, or refuses the
spec). While dropout is on, the training step's function still changes: the
mask multiplies the layer's output but not the shortcuts' correction.

Momentum is kept, mapped through the re-expression's Jacobian so the motion it
carries is the same motion of the function (the authors keep it and found
zeroing it harmful); other optimizer state (AdaGrad sums, curvature) is kept
as it is. The same re-expression is applied to a Polyak average, which then
stays an average of one parametrization. Layers are refreshed in graph order,
each with the current values of the weights an earlier refresh changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netc.compiler.pipeline import Program

from .transform_topology import Layer, find_layers

GAMMA_EPS = 1e-4  # the authors' guard in gamma = (<f^2><f'^2> + 1e-4)^(-1/4)
_MOMENTS = ("t", "tt", "a", "aa", "ta", "d", "dd")  # t = tanh(a), d = 1 - t^2


@dataclass
class Coefficients:
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray


def sample_indices(examples: int, size: int, seed: int, step: int) -> np.ndarray:
    """A fresh random sample of the training set for the refresh at `step`: a function of
    the seed and the step alone, so a resumed run draws the same one."""
    rng = np.random.default_rng([seed, 0x7EF5, step])
    if size >= examples:
        return np.arange(examples)
    return np.sort(rng.choice(examples, size=size, replace=False))


def estimate(m: dict[str, np.ndarray], gamma: bool, old_gamma: np.ndarray) -> Coefficients:
    """The coefficients from the sample's moments of a (means over the sample, float64)."""
    alpha = -m["d"]
    beta = -(m["t"] + alpha * m["a"])
    if not gamma:
        return Coefficients(alpha, beta, old_gamma.astype(np.float64))
    ff = (m["tt"] + alpha ** 2 * m["aa"] + beta ** 2 + 2 * alpha * m["ta"] + 2 * beta * m["t"]
          + 2 * alpha * beta * m["a"])
    dd = m["dd"] + 2 * alpha * m["d"] + alpha ** 2
    return Coefficients(alpha, beta, (np.maximum(ff, 0) * np.maximum(dd, 0) + GAMMA_EPS) ** -0.25)


def moments(a: np.ndarray) -> dict[str, np.ndarray]:
    """Sums over the examples of the quantities the coefficients need."""
    a = a.astype(np.float64)
    t = np.tanh(a)
    d = 1 - t * t
    return {"t": t.sum(0), "tt": (t * t).sum(0), "a": a.sum(0), "aa": (a * a).sum(0), "ta": (t * a).sum(0),
            "d": d.sum(0), "dd": (d * d).sum(0)}


def reexpress(layer: Layer, state: dict, new: Coefficients) -> None:
    """Set the layer's coefficients to `new`, changing the sums that read it so the
    noise-free function is the same; velocities in `state` follow (Jacobian of the change)."""
    f64 = {}

    def get(name):
        if name not in f64:
            f64[name] = np.array(state[name], dtype=np.float64)
        return f64[name]

    def vel(name):
        return get(f"{name}.velocity") if f"{name}.velocity" in state else None

    g_old = get(layer.key("gamma")).copy()
    delta = g_old * (new.alpha - get(layer.key("alpha")))
    kappa = g_old * (new.beta - get(layer.key("beta")))
    r = g_old / new.gamma
    bias = layer.inputs.bias
    b = get(bias[0]) * bias[1] if bias is not None else 0.0
    vb = vel(bias[0]) if bias is not None else None
    shift = delta * b + kappa  # the change of the constant part, per unit
    scalings = []  # (weight, rows): multiplied by r once every correction is computed from the old values
    updates = []  # (name, rows or None, increment)
    for c in layer.consumers:
        for term, seg in c.reads:
            A = get(term.weight)[seg.start:seg.stop]
            vA = vel(term.weight)
            vA = None if vA is None else vA[seg.start:seg.stop]
            M = term.scale * seg.scale * A  # the weight h meets in the sum
            vM = None if vA is None else term.scale * seg.scale * vA
            for (lt, ls), (st, ss) in zip(layer.input_segments, c.shortcuts):
                W = get(lt.weight)[ls.start:ls.stop]
                k = lt.scale * ls.scale / (st.scale * ss.scale)
                rows = slice(ss.start, ss.stop)
                updates.append((st.weight, rows, -k * (W * delta) @ M))
                if f"{st.weight}.velocity" in state:
                    vW = vel(lt.weight)
                    dv = 0.0 if vM is None else (W * delta) @ vM
                    if vW is not None:
                        dv = dv + (vW[ls.start:ls.stop] * delta) @ M
                    updates.append((f"{st.weight}.velocity", rows, -k * dv))
            name, scale = c.sum.bias
            updates.append((name, None, -(shift @ M) / scale))
            if f"{name}.velocity" in state:
                dv = 0.0 if vM is None else shift @ vM
                if vb is not None:
                    dv = dv + (delta * vb * bias[1]) @ M
                updates.append((f"{name}.velocity", None, -dv / scale))
            scalings.append((term.weight, slice(seg.start, seg.stop)))
    for name, rows, inc in updates:
        if rows is None:
            get(name)[...] += inc
        else:
            get(name)[rows] += inc
    for name, rows in scalings:
        get(name)[rows] *= r[:, None]
        if f"{name}.velocity" in state:
            get(f"{name}.velocity")[rows] *= r[:, None]
    get(layer.key("alpha"))[...] = new.alpha
    get(layer.key("beta"))[...] = new.beta
    get(layer.key("gamma"))[...] = new.gamma
    for name, value in f64.items():
        state[name][...] = value


def drift(before: np.ndarray, after: np.ndarray) -> float:
    """The largest change of the output relative to the output's largest magnitude."""
    scale = float(np.max(np.abs(before))) if before.size else 0.0
    return float(np.max(np.abs(after - before))) / scale if scale > 0 else 0.0


def check_topology(program: Program, loc=None, source: str | None = None) -> list[Layer]:
    """`transforms = every(...)`: the transformed layers, or a located SpecError (a refresh
    could not keep the function, or there is nothing to refresh)."""
    from netc.compiler.errors import SpecError
    layers = find_layers(program)
    if not layers:
        raise SpecError("transforms = every(...) needs `transformed` layers in the spec", loc, source)
    return layers


class Refresher:
    """The refresh of every transformed layer of a program; `refresh` re-estimates on
    examples `x` and returns the relative change of the output it caused (rounding)."""

    def __init__(self, program: Program, gamma: bool = False, chunk: int = 1000):
        self.program, self.gamma, self.chunk = program, gamma, max(1, int(chunk))
        self.layers = find_layers(program)
        spec = program.spec
        inputs = list(spec.inputs.values())
        out = program.output if program.output is not None else program.loss
        self.pre = program.function([layer.pre for layer in self.layers] + [out], inputs,
                                    name="transform_statistics")
        self.out = program.function([out], inputs, name="transform_output")

    def refresh(self, state: dict, x: np.ndarray, others: tuple[dict, ...] = ()) -> float:
        """Re-estimate on `x`, re-express `state` (and each of `others`: e.g. a Polyak
        average, parameters and buffers) in the new coefficients; the output's drift."""
        if not self.layers or len(x) == 0:
            return 0.0
        sums = [dict.fromkeys(_MOMENTS, 0.0) for _ in self.layers]
        before = []
        for i in range(0, len(x), self.chunk):
            outs = self.pre(state, x[i:i + self.chunk])
            for s, a in zip(sums, outs[:-1]):
                for k, v in moments(np.asarray(a)).items():
                    s[k] = s[k] + v
            before.append(np.array(outs[-1], dtype=np.float64))
        n = len(x)
        for layer, s in zip(self.layers, sums):
            new = estimate({k: v / n for k, v in s.items()}, self.gamma, np.asarray(state[layer.key("gamma")]))
            for target in (state, *others):
                reexpress(layer, target, new)
        after = [np.array(self.out(state, x[i:i + self.chunk])[0], dtype=np.float64)
                 for i in range(0, len(x), self.chunk)]
        return drift(np.concatenate(before), np.concatenate(after))
