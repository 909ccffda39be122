"""The op table: every primitive op, defined in one place.

An entry holds all there is to know about an op: how the language calls it,
its shape/dtype rule, its reverse-mode derivative and its forward-mode
derivative (rules that *build graph nodes*, so derivatives of derivatives work
and the two modes compose), its reference NumPy implementation (used for
constant folding and as ground truth in tests), and its NumPy code emitter (the
lowering writes into a preallocated `out`). Elementwise ops also carry a C
expression for the CUDA lowering (`cuda_expr` renders it for a node). An op
whose attributes have several spellings says which is canonical (`canonical`,
`noop`: the build-stage rule `canonical_attrs` applies them before a node is
interned); a non-elementwise op says how diagonal curvature flows through it
(`curvature`: LeCun's bbprop, see curvature.py); the planner reads `alias`,
`index_map` and `reducer`.

The entries are grouped by family, one module each: ops_core (the entry types,
the registry, shared helpers, the leaves), ops_elementwise, ops_reduce,
ops_linalg, ops_layout, ops_softmax, ops_random. Importing this module
registers them all; import the table from here.

Adding an op = adding one entry to its family module + its finite-difference
test (tests/test_ops.py checks that every op has one).
"""
from __future__ import annotations

# the family modules register their entries (and their build-stage rules) on import
from . import ops_elementwise, ops_layout, ops_linalg, ops_random, ops_reduce, ops_softmax  # noqa: F401
from .node import Node, toposort
from .ops_core import (
    OPS, Emit, Op, Reduction, broadcast_shapes, canonical_attrs, concrete, cuda_expr, dim_expr,
    norm_axes, reduced_shape, shape_expr)
from .ops_random import step_hyper
from .ops_reduce import _bcast_src, _sum_to_axes
from .rewrite import rule

__all__ = ["OPS", "Emit", "Op", "Reduction", "broadcast_shapes", "concrete", "cuda_expr", "dim_expr",
           "expected", "language_ops", "norm_axes", "reduced_shape", "shape_expr", "step_hyper",
           "_bcast_src", "_sum_to_axes"]

# every op whose entry names a canonical form: registered last, after the families
rule("canonical_attrs", [name for name, op in OPS.items() if op.canonical or op.noop],
     stage="build")(canonical_attrs)


def expected(G, roots: list[Node]) -> list[Node]:
    """`roots` with every random op replaced by its expected value: the graph
    to evaluate and predict with (inverted dropout x * mask / keep becomes x;
    zero-mean noise disappears), which needs no `step` feed."""
    new: dict[int, Node] = {}
    for n in toposort(roots):
        spec = OPS[n.op]
        m = G.rebuild(n, [new[i.id] for i in n.inputs])
        new[n.id] = spec.expect(G, m) if spec.expect is not None else m
    return [new[r.id] for r in roots]


def language_ops() -> dict[str, Op]:
    """The ops the language can call directly, by name."""
    return {name: op for name, op in OPS.items() if op.lang is not None}
