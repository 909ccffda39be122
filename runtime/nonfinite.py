"""A loss or gradient that is not finite at the starting parameters, and why.

Why a module of its own: the divergence watch recovers from a run that went
wrong by cutting the rate, but a loss (or gradient) that is already NaN or
infinite before the first update is a bug in the spec, which no rate cures
(`nll(y, t)` on raw scores, `sqrt` of a layer that can be 0). That is said
once, at the first step, with the likely cause: the first named layer with
non-finite values, and the first operation that turns finite values into
non-finite ones, with its .net location.
"""
from __future__ import annotations

import math

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.node import Node, toposort
from netc.compiler.pipeline import Program

from .state import hosted
from .stats import first_nonfinite_layer


class LossNotFinite(NetcError):
    """The loss or its gradient is NaN or infinite at the initial parameters,
    before any update: a bug in the spec (or the data), no learning rate helps."""


# what makes a finite input non-finite, by op
_DOMAIN = {"log": "log of values <= 0", "log1p": "log1p of values <= -1", "sqrt": "sqrt of negative values",
           "div": "a division by zero", "reciprocal": "a division by zero", "pow": "a power of negative values",
           "exp": "exp overflows"}


def check_start(program: Program, state: dict, feeds: list, loss: float, grads: list | None = None) -> None:
    """LossNotFinite when `loss`, computed on `feeds` at the starting parameters
    `state`, is not finite, or the gradient there is not (`grads` when the
    caller has them, else computed here on the same batch)."""
    state = hosted(state)
    if not math.isfinite(loss):
        raise LossNotFinite(f"the loss is not finite at the initial parameters ({loss:g}, before any "
                            f"update): not a divergence, and no learning rate helps. Likely cause: "
                            f"{likely_cause(program, state, feeds)}")
    names = list(program.spec.params)
    if grads is None:
        with np.errstate(all="ignore"):
            grads = program.function([program.grads[k] for k in names], program.spec.feeds,
                                     name="gradients")(state, *_host(feeds)[:len(program.spec.feeds)])
    bad = [k for k, g in zip(names, grads) if not np.all(np.isfinite(g))]
    if bad:
        found = _first_bad_op(program, [program.grads[k] for k in bad], state, _host(feeds))
        what, loc = found or ("an infinite derivative", None)
        raise LossNotFinite(f"the gradient of the loss is not finite at the initial parameters (for "
                            f"{', '.join(bad)}), though the loss is ({loss:g}): no learning rate helps. Likely "
                            f"cause: {what} in the derivative of the expression"
                            + (f" at {loc}" if loc else "") + " (sqrt, log, 1/x and x^p have an infinite derivative at 0)")


def likely_cause(program: Program, state: dict, feeds: list) -> str:
    """Why the loss is not finite on this batch at these parameters; for a log
    of values <= 0 with a class target, the classic slip of unnormalized scores."""
    feeds = _host(feeds)
    layer = first_nonfinite_layer(program, state, feeds[0])
    spec = program.spec
    found = _first_bad_op(program, [program.loss] if program.loss is not None else [], state, feeds)
    found = None if found is None else f"{found[0]} at {found[1]}" if found[1] else found[0]
    if found is not None and layer:
        return f"the first non-finite values are in {layer}: {found}"
    if found is not None and found.startswith("log of") and any(t.attr("classes") for t in spec.targets.values()):
        return (f"{found}: a log-likelihood of unnormalized scores? nll and cross_entropy take "
                f"probabilities: apply softmax (or sigmoid) first, e.g. nll(softmax(y), t)")
    if found is not None:
        return found
    if layer:
        return f"the first non-finite values are in {layer}"
    return "check the loss expression and the data"


def _first_bad_op(program: Program, roots: list[Node], state: dict, feeds: list) -> tuple[str, object] | None:
    """The first operation under `roots` (inputs first) whose inputs are finite
    and whose value is not: what it does wrong, and its .net location (or None)."""
    order = [n for n in toposort(roots) if n.inputs]
    if not order:
        return None
    spec = program.spec
    try:
        with np.errstate(all="ignore"):
            values = program.function(order, spec.feeds, name="loss_terms")(state, *feeds[:len(spec.feeds)])
    except Exception:  # noqa: BLE001 - a diagnosis on the way to an error must not hide that error
        return None
    finite = {n.id: bool(np.all(np.isfinite(v))) for n, v in zip(order, values)}
    value = {n.id: v for n, v in zip(order, values)}
    for n in order:
        if finite[n.id] or not all(finite.get(i.id, True) for i in n.inputs):
            continue
        what = _DOMAIN.get(n.op, f"{n.op} gives non-finite values")
        arg = value.get(n.inputs[0].id)
        if n.op == "log" and arg is not None and np.size(arg):
            what += f" (smallest {float(np.min(arg)):.4g})"
        return what, n.loc
    return None


def _host(feeds: list) -> list:
    return [np.asarray(f) for f in feeds]
