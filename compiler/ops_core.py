"""The op table's entry types, its registry, the helpers entries share (shape
and attribute rules, forward-mode and curvature helpers, the canonical-form
rule), and the leaves every graph has.

The entries live in the family modules (ops_elementwise, ops_reduce,
ops_softmax, ops_linalg, ops_layout, ops_random); `ops.py` assembles the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import SpecError
from .node import Node, shape_str


@dataclass(frozen=True)
class Op:
    """One primitive op: everything the compiler knows about it (ops.py says how
    the fields are used)."""
    name: str
    kind: str  # leaf | elementwise | reduce | matmul | view | other
    infer: Callable  # (G, inputs, attrs, loc) -> (shape, dtype)
    impl: Callable | None = None  # (arrays, attrs, B) -> ndarray   reference semantics
    emit: Callable | None = None  # (Emit) -> None                   NumPy lowering
    grad: Callable | None = None  # (G, node, gy) -> tuple[Node|None]  reverse mode
    jvp: Callable | None = None  # (G, node, tangents: list[Node|None]) -> Node|None  forward mode
    lang: tuple | None = None  # how the language calls it: (params, defaults dict)
    scratch: Callable | None = None  # node -> [(shape, dtype)] temporaries for emit
    cuda: str | None = None  # elementwise C expression over {0}, {1}, ..., {T} and {attr}
    canonical: Callable | None = None  # (inputs, attrs, loc) -> canonical attrs (rule canonical_attrs)
    noop: Callable | None = None  # (inputs, canonical attrs) -> True where the node is its first input
    curvature: Callable | None = None  # (G, node, h, g | None) -> [h per input]  bbprop (curvature.py)
    jacobian: Callable | None = None  # (G, node, input 0's (kind, J), n, loc) -> J  (jacobian.py)
    expect: Callable | None = None  # (G, node) -> Node  a random op's expected value
    doc: str = ""
    # facts the planner and the fused renderers read (compiler/fuse.py)
    alias: int | None = None  # a view that *is* one of its inputs: that input's position
    index_map: Callable | None = None  # fusible index arithmetic, see `index_map` below
    reducer: Reduction | None = None  # how a fused kernel computes this reduction


@dataclass(frozen=True)
class Reduction:
    """How a fused kernel computes a reduction: accumulations over the reduced
    axes, in order, then the result. Step kinds: sum | max | min | argmax (the
    first maximum's index) | sumexp (sum of exp(x - the first step's value)).
    C templates read {0}, {1}, ... the steps' results, {n} the number of entries
    reduced, {T} the result's C type; `row` (softmax-like ops, whose result has
    the source's shape) reads {x}, the input at the point."""
    steps: tuple[str, ...]
    value: str = "{0}"
    row: str | None = None
    space: Callable | None = None  # node -> (reduced axes, result dim -> source dim); default: `axes` attr

    def axes_map(self, n: Node) -> tuple[tuple, tuple]:
        """(the reduced axes of the source, for each dim of the result the source
        dim it indexes or None)."""
        if self.space is not None:
            return self.space(n)
        src, axes = n.inputs[0].shape, tuple(n.attr("axes"))
        if n.attr("keepdims") or self.row is not None:
            return axes, tuple(None if d in axes or src[d] == 1 else d for d in range(len(src)))
        return axes, tuple(None if src[d] == 1 else d for d in range(len(src)) if d not in axes)


# index_map(node, idx) -> [(k, index into input k) | (None, d)]: the op at iteration
# point `idx` (a tuple over its dims of iteration-dim numbers, None for a size-1 dim)
# reads input k at that index, or the loop index of iteration dim d; its value is
# its `cuda` template over those arguments, or the one argument when it has none.


@dataclass
class Emit:
    """What an emitter gets: argument expressions, the output buffer, scratch
    buffers, the node, and a list for one-time setup lines."""
    args: list[str]
    out: str
    node: Node
    scratch: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    OPS[op.name] = op
    return op


# ---------------------------------------------------------------------------
# shape and attribute helpers


def broadcast_shapes(a: tuple, b: tuple, loc=None, what: str = "") -> tuple:
    n = max(len(a), len(b))
    a2, b2 = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a2, b2):
        if x == y:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            raise SpecError(f"shapes {shape_str(a)} and {shape_str(b)} do not broadcast"
                            + (f" in {what}" if what else ""), loc)
    return tuple(out)


def whole(v) -> bool:
    return (not isinstance(v, bool) and isinstance(v, (int, float, np.integer))
            and float(v).is_integer())


def norm_axes(axis, ndim: int, loc=None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    out = []
    for ax in axes:
        if not whole(ax):
            raise SpecError(f"an axis must be a whole number, got {ax!r}", loc)
        ax = int(ax)
        if not -ndim <= ax < ndim:
            raise SpecError(f"axis {ax} is out of range for a tensor of rank {ndim}", loc)
        out.append(ax % ndim)
    return tuple(sorted(set(out)))


def reduced_shape(shape, axes, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def dim_expr(d) -> str:
    return "B" if d is None else str(d)


def shape_expr(shape) -> str:
    return "(" + "".join(dim_expr(d) + ", " for d in shape) + ")"


def concrete(shape, B: int) -> tuple:
    return tuple(B if d is None else d for d in shape)


def float_of(G, ins) -> str:
    for i in ins:
        if i.dtype.startswith("float"):
            return i.dtype
    return G.float_dtype


def number_attr(op: str, a: dict, key: str, loc) -> float:
    v = a.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        got = "nothing" if v is None else "a tensor" if isinstance(v, Node) else type(v).__name__
        raise SpecError(f"{op}: `{key}` must be a number, got {got}", loc)
    return float(v)


def integer_attr(op: str, a: dict, key: str, loc) -> int:
    v = a.get(key)
    if not whole(v):
        raise SpecError(f"{op}: `{key}` must be a whole number, got "
                        f"{'a tensor' if isinstance(v, Node) else repr(v)}", loc)
    return int(v)


def arity(op: str, ins, k: int, loc, usage: str) -> None:
    if len(ins) != k:
        raise SpecError(f"{op} takes {k} tensor{'s' * (k != 1)}, got {len(ins)}: {usage}", loc)


def py_float(v: float) -> str:
    """A float as a Python literal in generated code."""
    v = float(v)
    return repr(v) if np.isfinite(v) else ("np.inf" if v > 0 else "-np.inf" if v < 0 else "np.nan")


def _c(v: float) -> str:
    """A number as a C literal (double)."""
    v = float(v)
    if np.isfinite(v):
        return repr(v)
    return "(1.0/0.0)" if v > 0 else "(-1.0/0.0)" if v < 0 else "(0.0/0.0)"


def cuda_expr(node: Node, args: list[str], T: str = "double") -> str:
    """The elementwise C expression for `node`: its op's `cuda` template with
    {0}, {1}, ... the argument expressions, {T} the result's C type and {attr}
    the node's numeric attributes as C literals of type T."""
    attrs = {k: f"(({T}){_c(v)})" for k, v in node.attrs
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return OPS[node.op].cuda.format(*args, T=T, **attrs)


def canonical_attrs(G, op: str, ins, a: dict, loc=None) -> Node | None:
    """The node under its op's canonical attributes, or its input where the op is a no-op.

    A build-stage rewrite rule (registered for every op with a `canonical` or a
    `noop` at the end of the table). `canonical(inputs, attrs, loc)` is also
    what `infer` calls, so it raises SpecError for bad attributes; the rule
    leaves those to `infer`, which reports them with the source location."""
    spec = OPS[op]
    try:
        b = spec.canonical(ins, a, loc) if spec.canonical is not None else a
    except SpecError:
        return None
    if spec.noop is not None and spec.noop(ins, b):
        return ins[0]
    if repr(sorted(b.items())) == repr(sorted(a.items())):
        return None
    return G(op, *ins, loc=loc, **b)


def axes_attrs(op: str, default, single: bool = False, keepdims: bool = True) -> Callable:
    """Canonical reduction-style attributes: sorted `axes` (from `axis`, or
    `default` when absent) and `keepdims` only when true."""
    def normalize(ins, a, loc):
        arity(op, ins, 1, loc, f"{op}(x, axis) with the axis a number or a list")
        x = ins[0]
        axes = norm_axes(a["axes"] if "axes" in a else a.get("axis", default), x.ndim, loc)
        if single and len(axes) != 1:
            raise SpecError(f"{op} works along one axis, got {len(axes)}", loc)
        b = {k: v for k, v in a.items() if k not in ("axis", "axes", "keepdims")}
        b["axes"] = axes
        if keepdims and a.get("keepdims"):
            b["keepdims"] = True
        return b
    return normalize


def axis_shape_infer(normalize, dtype=None):
    def infer(G, ins, a, loc):
        b = normalize(ins, a, loc)
        x = ins[0]
        return reduced_shape(x.shape, b["axes"], b.get("keepdims")), dtype or x.dtype
    return infer


def index_expr(ndim_before: int, part: str) -> str:
    """An index expression selecting `part` along axis `ndim_before`."""
    return "[" + ":, " * ndim_before + part + "]"


# ---------------------------------------------------------------------------
# derivative helpers: forward-mode tangents (nodes; None means zero), adjoints
# summed or broadcast back to an operand's shape, bbprop through 0/1 Jacobians


def zeros_like(G, n: Node) -> Node:
    dtype = n.dtype if n.dtype.startswith("float") else G.float_dtype
    return G("broadcast", G.const(0.0, dtype), shape=n.shape)


def fit_tangent(G, t: Node | None, shape) -> Node | None:
    """A tangent broadcast up to the node's shape (a broadcasting operand's term)."""
    if t is None or tuple(t.shape) == tuple(shape):
        return t
    return G("broadcast", t, shape=tuple(shape))


def tangent_sum(G, n: Node, *terms) -> Node | None:
    """The sum of the non-zero terms, shaped like `n`."""
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = G("add", total, t)
    return fit_tangent(G, total, n.shape)


def tangent_times(G, t: Node | None, d) -> Node | None:
    return None if t is None else G("mul", t, d)


def sum_to(G, g: Node, shape) -> Node:
    return G("sum_to", g, shape=tuple(shape))


def unreduce(G, n: Node, g: Node) -> Node:
    """A reduction's adjoint `g` broadcast back over the input's shape."""
    x = n.inputs[0]
    return G("broadcast", g, shape=x.shape, axes=None if n.attr("keepdims") else n.attr("axes"))


def linear_jvp(G, n: Node, ts) -> Node | None:
    """For an op linear in its first input (the others not differentiable):
    the same op applied to the tangent."""
    return None if ts[0] is None else G.rebuild(n, [ts[0], *n.inputs[1:]])


def curv_selecting(G, z: Node, h: Node, g: Node | None) -> list:
    """bbprop through an op whose Jacobian entries are 0 or 1 (sums, broadcasts,
    layout, gathers): squaring them changes nothing, so h flows like a gradient."""
    return list(OPS[z.op].grad(G, z, h))


def self_adjoint(grad: Callable) -> Callable:
    """For an op with a symmetric Jacobian (unary elementwise ops, softmax):
    J t is the reverse rule applied to t."""
    return lambda G, n, ts: grad(G, n, ts[0])[0]


def no_jvp(G, n, ts):
    return None


# ---------------------------------------------------------------------------
# leaves: inputs fed per step, parameters and optimizer state, runtime scalars


def _leaf_infer(G, ins, a, loc):
    return tuple(a.get("shape", ())), a.get("dtype", G.float_dtype)


for _name, _doc in [
    ("input", "data fed each step (inputs and targets)"),
    ("param", "a trainable tensor, initialized from its `init` attribute"),
    ("state", "optimizer state kept between steps (velocities, running averages)"),
    ("hyper", "a scalar fed each step (learning rate, momentum, the step number): "
              "changing it never recompiles"),
]:
    register(Op(_name, "leaf", _leaf_infer, doc=_doc))

register(Op(
    "const", "leaf", lambda G, ins, a, loc: ((), a["dtype"]),
    impl=lambda xs, a, B: np.asarray(a["value"], dtype=a["dtype"]),
    doc="a scalar constant"))


def _count_value(a, B):
    n = 1
    for d in a["dims"]:
        n *= B if d is None else d
    return n


register(Op(
    "count", "other", lambda G, ins, a, loc: ((), G.float_dtype),
    impl=lambda xs, a, B: np.asarray(_count_value(a, B), dtype=a["dtype"]),
    emit=lambda e: e(f"{e.out}[...] = {'*'.join(dim_expr(d) for d in e.node.attr('dims')) or '1'}"),
    doc="the number of elements in some dimensions (the batch size is only known at run time)"))
