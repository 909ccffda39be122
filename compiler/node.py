"""Graph nodes: immutable values (op, inputs, attributes, shape, dtype, source
location), and the walks over them.

A node never changes once built (the factory in `graph.py` interns them), so
a walk is a pure function of its roots. Shapes are tuples of ints where the
batch dimension is None (symbolic).
"""
from __future__ import annotations

from typing import Any, Container, Iterable

BATCH = None  # the symbolic batch dimension in a shape


class Node:
    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "loc", "id", "__weakref__")

    def __init__(self, op, inputs, attrs, shape, dtype, loc, id_):
        self.op, self.inputs, self.attrs = op, inputs, attrs
        self.shape, self.dtype, self.loc, self.id = shape, dtype, loc, id_

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def a(self) -> dict:
        return dict(self.attrs)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str | None:
        return self.attr("name")

    def __repr__(self) -> str:
        label = self.name or ", ".join(f"{k}={v}" for k, v in self.attrs if k != "init")
        return f"%{self.id}:{self.op}({label}) {shape_str(self.shape)} {self.dtype}"


def shape_str(shape) -> str:
    return "[" + ", ".join("B" if d is None else str(d) for d in shape) + "]"



def toposort(roots: Iterable[Node], known: Container[int] = ()) -> list[Node]:
    """Inputs before users, in depth-first order from the roots (iterative: graphs
    are deep). Nodes whose id is in `known` are taken as already placed: they and
    what lies only under them are left out (the simplifier walks just what is new)."""
    order, seen = [], set()
    for root in roots:
        if root.id in seen or root.id in known:
            continue
        stack = [(root, 0)]
        while stack:
            n, i = stack.pop()
            if i == 0 and (n.id in seen or n.id in known):
                continue
            if i < len(n.inputs):
                stack.append((n, i + 1))
                child = n.inputs[i]
                if child.id not in seen and child.id not in known:
                    stack.append((child, 0))
            else:
                seen.add(n.id)
                order.append(n)
    return order


def depends_on(order: list[Node], leaves) -> set[int]:
    """Ids of the nodes in `order` (inputs first) that are or depend on one of `leaves`."""
    wanted = {n.id for n in leaves}
    found: set[int] = set()
    for n in order:
        if n.id in wanted or any(i.id in found for i in n.inputs):
            found.add(n.id)
    return found
