"""The graph IR: immutable, hash-consed nodes.

A Graph is the intern table: asking it for the same (op, inputs, attrs) twice
returns the same Node, so structurally equal expressions are one node
(common-subexpression elimination for free) and node equality is identity.
Shapes are tuples of ints where the batch dimension is None (symbolic).
"""
from __future__ import annotations

from typing import Any, Iterable

from .errors import Loc

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


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


class Graph:
    """Intern table and node factory. One per compilation; no global state."""

    def __init__(self, float_dtype: str = "float32"):
        self.float_dtype = float_dtype
        self._table: dict = {}
        self._count = 0
        self._nodes: list[Node] = []  # in creation order

    def __len__(self) -> int:
        return self._count

    def __call__(self, op: str, *inputs, loc: Loc | None = None, **attrs) -> Node:
        """Build (or find) the node `op(inputs; attrs)`; numbers become constants."""
        from .ops import OPS  # the table imports this module for Node

        spec = OPS.get(op)
        if spec is None:
            raise KeyError(f"unknown op {op!r}")
        ins = tuple(self.const(i) if isinstance(i, (int, float)) else i for i in inputs)
        frozen = tuple(sorted((k, _freeze(v)) for k, v in attrs.items() if v is not None))
        key = (op, tuple(i.id for i in ins), frozen)
        node = self._table.get(key)
        if node is not None:
            return node
        shortcut = spec.simplify_on_build(self, ins, dict(frozen), loc) if spec.simplify_on_build else None
        if shortcut is not None:
            return shortcut
        shape, dtype = spec.infer(self, ins, dict(frozen), loc)
        node = Node(op, ins, frozen, tuple(shape), dtype, loc, self._count)
        self._count += 1
        self._table[key] = node
        self._nodes.append(node)
        return node

    def locate_new(self, since: int, loc: Loc | None, replacing: str | None = None) -> None:
        """Give the nodes created since `since` (a len(G) mark) that have no source
        location, or one in the file `replacing`, this one: a derivative's nodes point
        at the line they differentiate, a prelude function's at the user's call."""
        if loc is None:
            return
        for n in self._nodes[since:]:
            if n.loc is None or (replacing is not None and n.loc.file == replacing):
                n.loc = loc

    def const(self, value: float, dtype: str | None = None) -> Node:
        return self("const", value=float(value), dtype=dtype or self.float_dtype)

    def rebuild(self, node: Node, inputs: Iterable[Node]) -> Node:
        """The same op and attributes over new inputs (keeps the source location)."""
        inputs = tuple(inputs)
        if inputs == node.inputs:
            return node
        return self(node.op, *inputs, loc=node.loc, **dict(node.attrs))


def toposort(roots: Iterable[Node]) -> list[Node]:
    """Inputs before users, in depth-first order from the roots (iterative: graphs are deep)."""
    order, seen = [], set()
    for root in roots:
        if root.id in seen:
            continue
        stack = [(root, 0)]
        while stack:
            n, i = stack.pop()
            if i == 0 and n.id in seen:
                continue
            if i < len(n.inputs):
                stack.append((n, i + 1))
                child = n.inputs[i]
                if child.id not in seen:
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
