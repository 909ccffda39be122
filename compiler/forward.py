"""Forward-mode symbolic differentiation (the R-op) and Hessian-vector products.

`jvp` walks the graph once, inputs before users, carrying a tangent for every
node that depends on the `wrt` nodes; each op's `jvp` rule builds ordinary
nodes, so a tangent graph can itself be differentiated either way. `hvp` is
forward-over-reverse: the directional derivative of the reverse-mode gradient
graph, H v, never the Hessian itself (its cost is a small multiple of one
gradient, and no node is larger than the graph's largest value).
"""
from __future__ import annotations

from .differentiate import grad
from .errors import SpecError
from .graph import Graph, Node, shape_str, toposort
from .ops import OPS


def jvp(G: Graph, outputs: list[Node], wrt: list[Node], tangents: list[Node | None]) -> list[Node]:
    """d outputs[i] in the direction (wrt -> tangents): sum_j J_ij tangents[j].

    A tangent of None is zero. Each result has its output's shape; an output
    that does not depend on `wrt` (or only through non-differentiable ops such
    as comparisons, argmax or random draws) gets zeros.
    """
    if len(wrt) != len(tangents):
        raise ValueError(f"jvp: {len(wrt)} nodes but {len(tangents)} tangents")
    tan: dict[int, Node | None] = {}
    for w, t in zip(wrt, tangents):
        if t is not None and tuple(t.shape) != tuple(w.shape):
            raise SpecError(f"a tangent of shape {shape_str(t.shape)} for a node of shape "
                            f"{shape_str(w.shape)}", w.loc)
        tan[w.id] = t
    for n in toposort(outputs):
        if n.id in tan:
            continue
        ts = [tan.get(i.id) for i in n.inputs]
        if all(t is None for t in ts):
            tan[n.id] = None
            continue
        rule = OPS[n.op].jvp
        if rule is None:
            raise SpecError(f"'{n.op}' has no forward-mode derivative", n.loc)
        t = rule(G, n, ts)
        if t is not None and tuple(t.shape) != tuple(n.shape):
            raise AssertionError(f"the jvp rule of {n!r} built a tangent of shape {shape_str(t.shape)}")
        tan[n.id] = t
    return [tan[o.id] if tan[o.id] is not None else zeros_like(G, o) for o in outputs]


def hvp(G: Graph, loss: Node, wrt: list[Node], vectors: list[Node | None]) -> list[Node]:
    """Hessian-vector products H v of the scalar `loss` with respect to `wrt`:
    for each w, sum_j d^2 loss / (dw dwrt_j) vectors[j], computed as the
    forward-mode derivative of the reverse-mode gradient (forward-over-reverse)."""
    return jvp(G, grad(G, loss, wrt), wrt, vectors)


def zeros_like(G: Graph, n: Node) -> Node:
    dtype = n.dtype if n.dtype.startswith("float") else G.float_dtype
    return G("broadcast", G.const(0.0, dtype), shape=n.shape)
