"""Reverse-mode symbolic differentiation: gradients are graphs too.

`grad` walks the graph once from the output back to the leaves, calling each
op's derivative rule (which builds ordinary nodes), so the result can itself be
differentiated again.
"""
from __future__ import annotations

from .errors import SpecError
from .graph import Graph, Node, depends_on, shape_str, toposort
from .ops import OPS


def grad(G: Graph, y: Node, wrt: list[Node], seed: Node | None = None) -> list[Node]:
    """d y / d w for each w in `wrt` (y scalar unless a `seed` adjoint is given)."""
    if seed is None:
        if y.shape != ():
            raise SpecError(f"grad needs a scalar expression, got one of shape {shape_str(y.shape)}; "
                            f"take sum(...) or mean(...) first", y.loc)
        seed = G.const(1.0, y.dtype)
    order = toposort([y])
    on_path = depends_on(order, wrt)  # only nodes between a wrt leaf and y need adjoints
    adjoints: dict[int, list[Node]] = {y.id: [seed]}
    for n in reversed(order):
        parts = adjoints.get(n.id)
        if not parts or n.id not in on_path:
            continue
        g = _total(G, parts)
        adjoints[n.id] = [g]
        if not n.inputs:
            continue
        rule = OPS[n.op].grad
        if rule is None:
            raise SpecError(f"'{n.op}' has no derivative", n.loc)
        mark = len(G)
        parts_in = rule(G, n, g)
        G.locate_new(mark, n.loc)
        for inp, gi in zip(n.inputs, parts_in):
            if gi is not None and inp.id in on_path:
                adjoints.setdefault(inp.id, []).append(gi)
    return [adjoints[w.id][0] if w.id in adjoints
            else G("broadcast", G.const(0.0, w.dtype), shape=w.shape) for w in wrt]


def _total(G: Graph, parts: list[Node]) -> Node:
    total = parts[0]
    for p in parts[1:]:
        total = G("add", total, p)
    return total
