"""The graph IR: immutable, hash-consed nodes.

A Graph is the intern table: asking it for the same (op, inputs, attrs) twice
returns the same Node, so structurally equal expressions are one node
(common-subexpression elimination for free) and node equality is identity.
Before interning, the op's build-stage rewrite rules put the node in its
canonical form. The node type and the walks live in `node.py` (re-exported
here); the op table does not know this module, so it imports only `node.py`.
"""
from __future__ import annotations

from typing import Iterable

from .errors import Loc
from .node import BATCH, Node, depends_on, shape_str, toposort
from .ops import OPS
from .rewrite import by_op

__all__ = ["BATCH", "Graph", "Node", "depends_on", "shape_str", "toposort"]

_CANONICAL = by_op("build")  # root op -> its canonical-form rules (filled as the table registers them)


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
        spec = OPS.get(op)
        if spec is None:
            raise KeyError(f"unknown op {op!r}")
        ins = tuple(self.const(i) if isinstance(i, (int, float)) else i for i in inputs)
        frozen = tuple(sorted((k, _freeze(v)) for k, v in attrs.items() if v is not None))
        key = (op, tuple(i.id for i in ins), frozen)
        node = self._table.get(key)
        if node is not None:
            return node
        for case in _CANONICAL.get(op, ()):
            canonical = case.fn(self, op, ins, dict(frozen), loc)
            if canonical is not None:
                return canonical
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


