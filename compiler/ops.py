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
interned), and a non-elementwise op says how diagonal curvature flows through it
(`curvature`: LeCun's bbprop, see curvature.py).

Adding an op = adding one entry here + its finite-difference test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import SpecError
from .node import Node, shape_str, toposort
from .rewrite import rule

# ---------------------------------------------------------------------------
# the entry


@dataclass(frozen=True)
class Op:
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


def _register(op: Op) -> Op:
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


def _whole(v) -> bool:
    return (not isinstance(v, bool) and isinstance(v, (int, float, np.integer))
            and float(v).is_integer())


def norm_axes(axis, ndim: int, loc=None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    out = []
    for ax in axes:
        if not _whole(ax):
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


def _float_of(G, ins) -> str:
    for i in ins:
        if i.dtype.startswith("float"):
            return i.dtype
    return G.float_dtype


def _number(op: str, a: dict, key: str, loc) -> float:
    v = a.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{op}: `{key}` must be a number, got "
                        f"{'nothing' if v is None else type(v).__name__ if not isinstance(v, Node) else 'a tensor'}",
                        loc)
    return float(v)


def _integer(op: str, a: dict, key: str, loc) -> int:
    v = a.get(key)
    if not _whole(v):
        raise SpecError(f"{op}: `{key}` must be a whole number, got "
                        f"{'a tensor' if isinstance(v, Node) else repr(v)}", loc)
    return int(v)


def _arity(op: str, ins, k: int, loc, usage: str) -> None:
    if len(ins) != k:
        raise SpecError(f"{op} takes {k} tensor{'s' * (k != 1)}, got {len(ins)}: {usage}", loc)


def _py(v: float) -> str:
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


def _axes_attrs(op: str, default, single: bool = False, keepdims: bool = True) -> Callable:
    """Canonical reduction-style attributes: sorted `axes` (from `axis`, or
    `default` when absent) and `keepdims` only when true."""
    def normalize(ins, a, loc):
        _arity(op, ins, 1, loc, f"{op}(x, axis) with the axis a number or a list")
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


def _axis_shape_infer(normalize, dtype=None):
    def infer(G, ins, a, loc):
        b = normalize(ins, a, loc)
        x = ins[0]
        return reduced_shape(x.shape, b["axes"], b.get("keepdims")), dtype or x.dtype
    return infer


def _index(ndim_before: int, part: str) -> str:
    """An index expression selecting `part` along axis `ndim_before`."""
    return "[" + ":, " * ndim_before + part + "]"


# ---------------------------------------------------------------------------
# forward-mode helpers: tangents are nodes, None means zero


def _zeros(G, n: Node) -> Node:
    dtype = n.dtype if n.dtype.startswith("float") else G.float_dtype
    return G("broadcast", G.const(0.0, dtype), shape=n.shape)


def _fit(G, t: Node | None, shape) -> Node | None:
    """A tangent broadcast up to the node's shape (a broadcasting operand's term)."""
    if t is None or tuple(t.shape) == tuple(shape):
        return t
    return G("broadcast", t, shape=tuple(shape))


def _terms(G, n: Node, *terms) -> Node | None:
    """The sum of the non-zero terms, shaped like `n`."""
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = G("add", total, t)
    return _fit(G, total, n.shape)


def _times(G, t: Node | None, d) -> Node | None:
    return None if t is None else G("mul", t, d)


def _linear_jvp(G, n: Node, ts) -> Node | None:
    """For an op linear in its first input (the others not differentiable):
    the same op applied to the tangent."""
    return None if ts[0] is None else G.rebuild(n, [ts[0], *n.inputs[1:]])


def _curv_selecting(G, z: Node, h: Node, g: Node | None) -> list:
    """bbprop through an op whose Jacobian entries are 0 or 1 (sums, broadcasts,
    layout, gathers): squaring them changes nothing, so h flows like a gradient."""
    return list(OPS[z.op].grad(G, z, h))


def _self_adjoint(grad: Callable) -> Callable:
    """For an op with a symmetric Jacobian (unary elementwise ops, softmax):
    J t is the reverse rule applied to t."""
    return lambda G, n, ts: grad(G, n, ts[0])[0]


def _no_jvp(G, n, ts):
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
    _register(Op(_name, "leaf", _leaf_infer, doc=_doc))

_register(Op(
    "const", "leaf", lambda G, ins, a, loc: ((), a["dtype"]),
    impl=lambda xs, a, B: np.asarray(a["value"], dtype=a["dtype"]),
    doc="a scalar constant"))


def _count_value(a, B):
    n = 1
    for d in a["dims"]:
        n *= B if d is None else d
    return n


_register(Op(
    "count", "other", lambda G, ins, a, loc: ((), G.float_dtype),
    impl=lambda xs, a, B: np.asarray(_count_value(a, B), dtype=a["dtype"]),
    emit=lambda e: e(f"{e.out}[...] = {'*'.join(dim_expr(d) for d in e.node.attr('dims')) or '1'}"),
    doc="the number of elements in some dimensions (the batch size is only known at run time)"))

# ---------------------------------------------------------------------------
# elementwise


def _ew_infer(G, ins, a, loc):
    shape = ins[0].shape
    for other in ins[1:]:
        shape = broadcast_shapes(shape, other.shape, loc)
    return shape, _float_of(G, ins)


def _cmp_infer(G, ins, a, loc):
    return _ew_infer(G, ins, a, loc)[0], G.float_dtype


def _sum_to(G, g: Node, shape) -> Node:
    return G("sum_to", g, shape=tuple(shape))


def _ufunc_emit(ufunc: str):
    def emit(e: Emit):
        e(f"np.{ufunc}({', '.join(e.args)}, out={e.out})")
    return emit


def unary(name, fn, grad, cuda, ufunc=None, emit=None, doc="", scratch=None):
    """A unary elementwise op; its Jacobian is diagonal, so forward mode reuses `grad`."""
    return _register(Op(
        name, "elementwise", _ew_infer, impl=lambda xs, a, B: fn(xs[0]),
        emit=emit or _ufunc_emit(ufunc or name), grad=grad, jvp=_self_adjoint(grad),
        lang=(("x",), {}), cuda=cuda, doc=doc, scratch=scratch))


def binary(name, fn, grad, jvp, cuda, ufunc=None, infer=_ew_infer, doc=""):
    return _register(Op(
        name, "elementwise", infer, impl=lambda xs, a, B: fn(xs[0], xs[1]),
        emit=_ufunc_emit(ufunc or name), grad=grad, jvp=jvp, lang=(("x", "y"), {}), cuda=cuda,
        doc=doc))


def _sigmoid_emit(e: Emit):
    x, o = e.args[0], e.out
    e(f"np.negative({x}, out={o}); np.exp({o}, out={o}); np.add({o}, 1.0, out={o}); "
      f"np.reciprocal({o}, out={o})")


def _softplus_emit(e: Emit):
    # max(x, 0) first: `out` may be x's own storage (an in-place update)
    x, o, s = e.args[0], e.out, e.scratch[0]
    e(f"np.maximum({x}, 0.0, out={s}); np.abs({x}, out={o}); np.negative({o}, out={o}); "
      f"np.exp({o}, out={o}); np.log1p({o}, out={o}); np.add({o}, {s}, out={o})")


def _softplus_ref(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


unary("neg", np.negative, lambda G, n, g: (G("neg", g),), "(-{0})", ufunc="negative")
unary("exp", np.exp, lambda G, n, g: (G("mul", g, n),), "exp({0})")
unary("log", np.log, lambda G, n, g: (G("div", g, n.inputs[0]),), "log({0})")
unary("tanh", np.tanh, lambda G, n, g: (G("mul", g, G("sub", 1, G("mul", n, n))),), "tanh({0})")
unary("sigmoid", _sigmoid_ref, lambda G, n, g: (G("mul", g, G("mul", n, G("sub", 1, n))),),
      "(1/(1+exp(-{0})))", emit=_sigmoid_emit, doc="logistic sigmoid 1/(1+exp(-x))")
unary("abs", np.abs, lambda G, n, g: (G("mul", g, G("sign", n.inputs[0])),), "fabs({0})",
      ufunc="abs")
unary("sign", np.sign, lambda G, n, g: (None,), "(({0}>0)-({0}<0))",
      doc="-1, 0 or 1; its derivative is zero")
unary("sqrt", np.sqrt, lambda G, n, g: (G("div", G("mul", g, 0.5), n),), "sqrt({0})")
unary("square", np.square, lambda G, n, g: (G("mul", g, G("mul", n.inputs[0], 2)),),
      "({0}*{0})")
unary("log1p", np.log1p, lambda G, n, g: (G("div", g, G("add", n.inputs[0], 1)),), "log1p({0})")
unary("expm1", np.expm1, lambda G, n, g: (G("mul", g, G("add", n, 1)),), "expm1({0})")
unary("softplus", _softplus_ref, lambda G, n, g: (G("mul", g, G("sigmoid", n.inputs[0])),),
      "(log1p(exp(-fabs({0})))+fmax({0},({T})0))", emit=_softplus_emit,
      scratch=lambda n: [(n.shape, n.dtype)], doc="log(1 + exp(x)), computed stably")


def _g_add(G, n, g):
    a, b = n.inputs
    return _sum_to(G, g, a.shape), _sum_to(G, g, b.shape)


def _g_sub(G, n, g):
    a, b = n.inputs
    return _sum_to(G, g, a.shape), _sum_to(G, G("neg", g), b.shape)


def _g_mul(G, n, g):
    a, b = n.inputs
    return _sum_to(G, G("mul", g, b), a.shape), _sum_to(G, G("mul", g, a), b.shape)


def _g_div(G, n, g):
    a, b = n.inputs
    return (_sum_to(G, G("div", g, b), a.shape),
            _sum_to(G, G("neg", G("div", G("mul", g, n), b)), b.shape))


def _g_pow(G, n, g):
    a, b = n.inputs
    da = G("mul", g, G("mul", b, G("pow", a, G("sub", b, 1))))
    db = None if b.op == "const" else G("mul", g, G("mul", n, G("log", a)))
    return _sum_to(G, da, a.shape), None if db is None else _sum_to(G, db, b.shape)


def _j_pow(G, n, ts):
    a, b = n.inputs
    ta, tb = ts
    return _terms(G, n, _times(G, ta, G("mul", b, G("pow", a, G("sub", b, 1)))),
                  _times(G, tb, G("mul", n, G("log", a))))


def _pow_emit(e: Emit):
    b = e.node.inputs[1]
    special = {2.0: "square", 0.5: "sqrt", -1.0: "reciprocal", 1.0: "positive"}
    if b.op == "const" and b.attr("value") in special:
        e(f"np.{special[b.attr('value')]}({e.args[0]}, out={e.out})")
    else:
        e(f"np.power({e.args[0]}, {e.args[1]}, out={e.out})")


def _g_max(G, n, g):
    a, b = n.inputs
    return (_sum_to(G, G("mul", g, G("ge", a, b)), a.shape),
            _sum_to(G, G("mul", g, G("lt", a, b)), b.shape))


def _g_min(G, n, g):
    a, b = n.inputs
    return (_sum_to(G, G("mul", g, G("le", a, b)), a.shape),
            _sum_to(G, G("mul", g, G("gt", a, b)), b.shape))


def _j_extremum(first: str, second: str):
    def jvp(G, n, ts):
        a, b = n.inputs
        return _terms(G, n, _times(G, ts[0], G(first, a, b)), _times(G, ts[1], G(second, a, b)))
    return jvp


binary("add", np.add, _g_add, lambda G, n, ts: _terms(G, n, *ts), "({0}+{1})")
binary("sub", np.subtract, _g_sub,
       lambda G, n, ts: _terms(G, n, ts[0], None if ts[1] is None else G("neg", ts[1])),
       "({0}-{1})", ufunc="subtract")
binary("mul", np.multiply, _g_mul,
       lambda G, n, ts: _terms(G, n, _times(G, ts[0], n.inputs[1]), _times(G, ts[1], n.inputs[0])),
       "({0}*{1})", ufunc="multiply")
binary("div", np.divide, _g_div,
       lambda G, n, ts: _terms(G, n, None if ts[0] is None else G("div", ts[0], n.inputs[1]),
                               None if ts[1] is None else
                               G("neg", G("div", G("mul", ts[1], n), n.inputs[1]))),
       "({0}/{1})", ufunc="divide")
OPS["pow"] = Op("pow", "elementwise", _ew_infer, impl=lambda xs, a, B: np.power(xs[0], xs[1]),
                emit=_pow_emit, grad=_g_pow, jvp=_j_pow, lang=(("x", "y"), {}),
                cuda="pow({0},{1})")
binary("maximum", np.maximum, _g_max, _j_extremum("ge", "lt"), "fmax({0},{1})",
       doc="elementwise maximum; the derivative goes to the first argument on ties")
binary("minimum", np.minimum, _g_min, _j_extremum("le", "gt"), "fmin({0},{1})")
_no_grad = lambda G, n, g: (None,) * len(n.inputs)  # noqa: E731
for _n, _uf, _c_op in [("gt", "greater", ">"), ("ge", "greater_equal", ">="), ("lt", "less", "<"),
                       ("le", "less_equal", "<="), ("eq", "equal", "=="), ("ne", "not_equal", "!=")]:
    binary(_n, getattr(np, _uf), _no_grad, _no_jvp, f"(({{0}}{_c_op}{{1}})?1:0)", ufunc=_uf,
           infer=_cmp_infer, doc=f"1 where x {_c_op} y, else 0 (no derivative)")


# -- clip(x, lo, hi) --------------------------------------------------------


def _clip_attrs(ins, a, loc):
    _arity("clip", ins, 1, loc, "clip(x, lo, hi) with lo and hi numbers")
    lo, hi = _number("clip", a, "lo", loc), _number("clip", a, "hi", loc)
    if lo > hi:
        raise SpecError(f"clip: lo = {lo:g} is above hi = {hi:g}", loc)
    return {**a, "lo": lo, "hi": hi}


def _clip_infer(G, ins, a, loc):
    _clip_attrs(ins, a, loc)
    return ins[0].shape, _float_of(G, ins)


def _clip_mask(G, n) -> Node | None:
    """1 where x is inside [lo, hi] (the derivative passes), else 0."""
    x, lo, hi = n.inputs[0], n.attr("lo"), n.attr("hi")
    lo_ok = G("ge", x, lo) if lo > -np.inf else None
    hi_ok = G("le", x, hi) if hi < np.inf else None
    if lo_ok is None or hi_ok is None:
        return lo_ok if hi_ok is None else hi_ok
    return G("mul", lo_ok, hi_ok)


def _g_clip(G, n, g):
    m = _clip_mask(G, n)
    return (g if m is None else G("mul", g, m),)


def _j_clip(G, n, ts):
    m = _clip_mask(G, n)
    return ts[0] if m is None else G("mul", ts[0], m)


_register(Op(
    "clip", "elementwise", _clip_infer,
    impl=lambda xs, a, B: np.clip(xs[0], a["lo"], a["hi"]),
    emit=lambda e: e(f"np.clip({e.args[0]}, {_py(e.node.attr('lo'))}, {_py(e.node.attr('hi'))}, "
                     f"out={e.out})"),
    grad=_g_clip, jvp=_j_clip, cuda="fmin(fmax({0},{lo}),{hi})",
    lang=(("x", "lo", "hi"), {"lo": -np.inf, "hi": np.inf}),
    canonical=_clip_attrs, noop=lambda ins, b: b["lo"] == -np.inf and b["hi"] == np.inf,
    doc="clip(x, lo, hi): x limited to [lo, hi] (numbers); the derivative is 1 inside, "
        "0 outside"))


# -- where(c, x, y) ---------------------------------------------------------


def _where_infer(G, ins, a, loc):
    if len(ins) != 3:
        raise SpecError("where(c, x, y) takes a condition and two tensors", loc)
    shape = _ew_infer(G, ins, a, loc)[0]
    return shape, _float_of(G, ins[1:])


def _where_emit(e: Emit):
    # alias-safe: `out` may be x's or y's own storage (an in-place update)
    (c, x, y), o, (s,) = e.args, e.out, e.scratch
    e(f"np.not_equal({c}, 0, out={s}); np.copyto({o}, {x}, where={s}); "
      f"np.logical_not({s}, out={s}); np.copyto({o}, {y}, where={s})")


def _g_where(G, n, g):
    c, x, y = n.inputs
    return (None, _sum_to(G, G("where", c, g, 0.0), x.shape),
            _sum_to(G, G("where", c, 0.0, g), y.shape))


def _j_where(G, n, ts):
    _, tx, ty = ts
    if tx is None and ty is None:
        return None
    c = n.inputs[0]
    return _fit(G, G("where", c, 0.0 if tx is None else tx, 0.0 if ty is None else ty), n.shape)


_register(Op(
    "where", "elementwise", _where_infer,
    impl=lambda xs, a, B: np.where(xs[0] != 0, xs[1], xs[2]),
    emit=_where_emit, grad=_g_where, jvp=_j_where, cuda="(({0}!=0)?({1}):({2}))",
    scratch=lambda n: [(n.inputs[0].shape, "bool")], lang=(("c", "x", "y"), {}),
    doc="where(c, x, y): x where c is nonzero, else y (broadcasting); no derivative through c"))

# ---------------------------------------------------------------------------
# reductions and broadcasting

_sum_attrs = _axes_attrs("sum", None)
_mean_attrs = _axes_attrs("mean", None)


def _sum_emit(e: Emit):
    a = e.node.a
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out})")


def _mean_emit(e: Emit):
    a = e.node.a
    dims = [e.node.inputs[0].shape[i] for i in a["axes"]]
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out}); "
      f"np.multiply({e.out}, 1.0 / ({'*'.join(dim_expr(d) for d in dims) or '1'}), out={e.out})")


def _unreduce(G, n: Node, g: Node) -> Node:
    """A reduction's adjoint `g` broadcast back over the input's shape."""
    x = n.inputs[0]
    return G("broadcast", g, shape=x.shape, axes=None if n.attr("keepdims") else n.attr("axes"))


def _g_sum(G, n, g):
    return (_unreduce(G, n, g),)


def _g_mean(G, n, g):
    x = n.inputs[0]
    dims = tuple(x.shape[i] for i in n.attr("axes"))
    (b,) = _g_sum(G, n, g)
    return (G("div", b, G("count", dims=dims, dtype=n.dtype)),)


def _curv_mean(G, z, h, g):
    """bbprop: the mean's Jacobian entries are 1/n, squared 1/n^2."""
    dims = tuple(z.inputs[0].shape[i] for i in z.attr("axes"))
    n = G("count", dims=dims, dtype=z.dtype)
    return list(_g_sum(G, z, G("div", h, G("mul", n, n))))


_REDUCE_LANG = (("x", "axis", "keepdims"), {"axis": None, "keepdims": False})

_register(Op("sum", "reduce", _axis_shape_infer(_sum_attrs),
             impl=lambda xs, a, B: np.sum(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
             emit=_sum_emit, grad=_g_sum, jvp=_linear_jvp, lang=_REDUCE_LANG, reducer=Reduction(("sum",)),
             canonical=_sum_attrs,
             curvature=_curv_selecting, doc="sum over `axis` (all axes by default)"))


def _mean_infer(G, ins, a, loc):
    shape, _ = _axis_shape_infer(_mean_attrs)(G, ins, a, loc)
    return shape, _float_of(G, ins)


_register(Op("mean", "reduce", _mean_infer,
             impl=lambda xs, a, B: np.mean(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
             emit=_mean_emit, grad=_g_mean, jvp=_linear_jvp, lang=_REDUCE_LANG,
             reducer=Reduction(("sum",), "{0} * (({T})1 / ({T}){n})"),
             canonical=_mean_attrs,
             curvature=_curv_mean, doc="mean over `axis` (all axes by default)"))


# -- max and min reductions ---------------------------------------------------


def _extreme_weights(G, n: Node) -> Node:
    """Where the extreme value is attained, 1/(number of ties); else 0. The
    derivative of max (min) is the derivative of that weighted average."""
    x, axes = n.inputs[0], n.attr("axes")
    hit = G("eq", x, _unreduce(G, n, n))
    return G("div", hit, G("sum", hit, axis=axes, keepdims=True))


def _g_extreme(G, n, g):
    return (G("mul", _unreduce(G, n, g), _extreme_weights(G, n)),)


def _j_extreme(G, n, ts):
    return G("sum", G("mul", ts[0], _extreme_weights(G, n)), axes=n.attr("axes"),
             keepdims=n.attr("keepdims"))


for _name, _fn in (("max", "max"), ("min", "min")):
    _attrs = _axes_attrs(_name, None)
    _register(Op(
        _name, "reduce", _axis_shape_infer(_attrs),
        impl=lambda xs, a, B, _fn=_fn: getattr(np, _fn)(xs[0], axis=a["axes"],
                                                        keepdims=bool(a.get("keepdims"))),
        emit=lambda e, _fn=_fn: e(f"np.{_fn}({e.args[0]}, axis={e.node.attr('axes')}, "
                                  f"keepdims={bool(e.node.attr('keepdims'))}, out={e.out})"),
        grad=_g_extreme, jvp=_j_extreme, lang=_REDUCE_LANG, reducer=Reduction((_fn,)),
        canonical=_attrs,
        doc=f"{_name}(x, axis, keepdims): the {'largest' if _name == 'max' else 'smallest'} entry "
            f"over `axis` (all axes by default); the derivative goes to the {_name}imal entries, "
            f"split evenly between ties"))


_argmax_attrs = _axes_attrs("argmax", -1, single=True, keepdims=False)

_register(Op("argmax", "reduce", _axis_shape_infer(_argmax_attrs, dtype="int64"),
             impl=lambda xs, a, B: np.argmax(xs[0], axis=a["axes"][0]),
             emit=lambda e: e(f"np.argmax({e.args[0]}, axis={e.node.attr('axes')[0]}, out={e.out})"),
             grad=lambda G, n, g: (None,), jvp=_no_jvp, lang=(("x", "axis"), {"axis": -1}),
             canonical=_argmax_attrs, reducer=Reduction(("argmax",)),
             doc="index of the largest entry along `axis`"))


def _sum_to_axes(src, dst):
    """Axes of `src` to sum so it broadcasts back to `dst`: (leading, kept-as-1)."""
    lead = len(src) - len(dst)
    kept = tuple(i + lead for i, d in enumerate(dst) if d == 1 and src[i + lead] != 1)
    return tuple(range(lead)), kept


def _sum_to_impl(xs, a, B):
    x, shape = xs[0], a["shape"]
    lead, kept = _sum_to_axes(x.shape, concrete(shape, B))
    y = np.sum(x, axis=lead + kept, keepdims=True) if lead + kept else x
    return y.reshape(concrete(shape, B))


def _sum_to_emit(e: Emit):
    src, dst = e.node.inputs[0].shape, e.node.attr("shape")
    lead, kept = _sum_to_axes(src, dst)
    if not kept:
        e(f"np.sum({e.args[0]}, axis={lead}, out={e.out})")
    elif not lead:
        e(f"np.sum({e.args[0]}, axis={kept}, keepdims=True, out={e.out})")
    else:
        e(f"np.sum({e.args[0]}, axis={lead + kept}, keepdims=True, "
          f"out={e.out}.reshape({shape_expr((1,) * len(lead) + tuple(dst))}))")


def _sum_to_space(n: Node) -> tuple[tuple, tuple]:
    src, dst = n.inputs[0].shape, n.attr("shape")
    lead, kept = _sum_to_axes(src, dst)
    axes, off = tuple(sorted(lead + kept)), len(src) - len(dst)
    return axes, tuple(None if d + off in axes or src[d + off] == 1 else d + off for d in range(len(dst)))


def _sum_to_infer(G, ins, a, loc):
    src, dst = ins[0].shape, a["shape"]
    if len(dst) > len(src) or broadcast_shapes(src, dst, loc) != tuple(src):
        raise SpecError(f"cannot sum {shape_str(src)} down to {shape_str(dst)}", loc)
    return tuple(dst), ins[0].dtype


_register(Op("sum_to", "reduce", _sum_to_infer, impl=_sum_to_impl, emit=_sum_to_emit,
             grad=lambda G, n, g: (G("broadcast", g, shape=n.inputs[0].shape),), jvp=_linear_jvp,
             noop=lambda ins, a: tuple(ins[0].shape) == tuple(a["shape"]), reducer=Reduction(("sum",), space=_sum_to_space),
             curvature=_curv_selecting, doc="sum a broadcast result back down to an operand's shape (derivative of broadcasting)"))


def _bcast_src(x_shape, axes):
    """The input shape with reduced axes re-inserted as 1s."""
    if not axes:
        return tuple(x_shape)
    out, it = [], iter(x_shape)
    for i in range(len(x_shape) + len(axes)):
        out.append(1 if i in axes else next(it))
    return tuple(out)


def _bcast_infer(G, ins, a, loc):
    shape = tuple(a["shape"])
    src = _bcast_src(ins[0].shape, a.get("axes"))
    if broadcast_shapes(src, shape, loc) != shape:
        raise SpecError(f"cannot broadcast {shape_str(ins[0].shape)} to {shape_str(shape)}", loc)
    return shape, ins[0].dtype


def _bcast_emit(e: Emit):
    axes = e.node.attr("axes")
    src = f"np.expand_dims({e.args[0]}, {axes})" if axes else e.args[0]
    e(f"np.copyto({e.out}, {src})")


def _bcast_impl(xs, a, B):
    x = np.expand_dims(xs[0], a["axes"]) if a.get("axes") else xs[0]
    return np.broadcast_to(x, concrete(a["shape"], B)).copy()


def _bcast_index(n: Node, idx: tuple) -> list:
    """Fusion: broadcast(x) at `idx` reads x at the right-aligned projection."""
    axes = n.attr("axes") or ()
    src = _bcast_src(n.inputs[0].shape, axes)
    off = len(n.shape) - len(src)
    at = [None if src[d] == 1 else idx[d + off] for d in range(len(src))]
    return [(0, tuple(s for d, s in enumerate(at) if d not in axes))]


def _g_bcast(G, n, g):
    axes = n.attr("axes")
    if axes:
        g = G("sum", g, axis=axes)
    return (_sum_to(G, g, n.inputs[0].shape),)


_register(Op("broadcast", "other", _bcast_infer, impl=_bcast_impl, emit=_bcast_emit, grad=_g_bcast,
             jvp=_linear_jvp, index_map=_bcast_index,
             noop=lambda ins, a: not a.get("axes") and tuple(ins[0].shape) == tuple(a["shape"]),
             curvature=_curv_selecting, doc="broadcast to a shape (with reduced `axes` re-inserted first)"))

# ---------------------------------------------------------------------------
# linear algebra


def _matmul_infer(G, ins, a, loc):
    x, w = ins
    if x.ndim != 2 or w.ndim != 2:
        raise SpecError(f"@ needs two matrices, got {shape_str(x.shape)} @ {shape_str(w.shape)}", loc)
    if x.shape[1] != w.shape[0]:
        raise SpecError(f"shapes {shape_str(x.shape)} and {shape_str(w.shape)} do not match in @ "
                        f"(inner dimensions {dim_expr(x.shape[1])} and {dim_expr(w.shape[0])})", loc)
    return (x.shape[0], w.shape[1]), _float_of(G, ins)


def _j_matmul(G, n, ts):
    x, w = n.inputs
    tx, tw = ts
    return _terms(G, n, None if tx is None else G("matmul", tx, w),
                  None if tw is None else G("matmul", x, tw))


def _curv_matmul(G, z, h, g):
    """bbprop: backward sums with squared weights (the product is linear in each input)."""
    u, w = z.inputs
    return [G("matmul", h, G("transpose", G("mul", w, w))), G("matmul", G("transpose", G("mul", u, u)), h)]


def _jac_matmul(G, z, jac_u, n, loc):
    """Per-example Jacobian of u @ W through u (jacobian.py): W' broadcast over the
    batch, times u's diagonal Jacobian."""
    kind, j = jac_u
    w = z.inputs[1]
    if kind != "diag":
        raise SpecError("jacobian through two matrix products is not supported yet", z.loc or loc)
    shape = (None, w.shape[1], n)
    wt = G("broadcast", G("transpose", w), shape=shape)
    return wt if j is None else G("mul", wt, G("broadcast", j, shape=shape, axes=(1,)))


_register(Op("matmul", "matmul", _matmul_infer, impl=lambda xs, a, B: xs[0] @ xs[1],
             emit=lambda e: e(f"np.matmul({e.args[0]}, {e.args[1]}, out={e.out})"),
             grad=lambda G, n, g: (G("matmul", g, G("transpose", n.inputs[1])),
                                   G("matmul", G("transpose", n.inputs[0]), g)),
             jvp=_j_matmul, lang=(("x", "y"), {}), curvature=_curv_matmul, jacobian=_jac_matmul, doc="matrix product (`@`)"))


def _transpose_infer(G, ins, a, loc):
    x = ins[0]
    if x.ndim != 2:
        raise SpecError(f"transpose needs a matrix, got {shape_str(x.shape)}", loc)
    return (x.shape[1], x.shape[0]), x.dtype


_register(Op("transpose", "view", _transpose_infer, impl=lambda xs, a, B: xs[0].T,
             emit=lambda e: f"{e.args[0]}.T", grad=lambda G, n, g: (G("transpose", g),),
             jvp=_linear_jvp, index_map=lambda n, idx: [(0, (idx[1], idx[0]))],
             lang=(("x",), {}), curvature=_curv_selecting, doc="matrix transpose (`W'` or `W.T`)"))


@rule("transpose_twice", ("transpose",), stage="build")
def _transpose_twice(G, op, ins, a, loc=None):
    """x'' is x."""
    return ins[0].inputs[0] if ins[0].op == "transpose" else None

# ---------------------------------------------------------------------------
# shape manipulation: reshape, slice, pad, concat


def _reshape_attrs(ins, a, loc):
    _arity("reshape", ins, 1, loc, "reshape(x, shape) with the shape a list of sizes")
    x, shape = ins[0], a.get("shape")
    if _whole(shape):
        shape = (shape,)
    if not isinstance(shape, tuple):
        raise SpecError("reshape needs a shape, a list of sizes as in reshape(x, [4, 7])", loc)
    batch = bool(x.shape) and x.shape[0] is None
    if None in x.shape[1:]:
        raise SpecError(f"reshape needs the batch dimension first, got {shape_str(x.shape)}", loc)
    dims = list(shape)
    if batch and (not dims or dims[0] is not None):
        dims = [None] + dims  # the batch dimension is kept; `shape` gives the rest
    rest = dims[1:] if batch else dims
    if None in rest or (not batch and None in dims):
        raise SpecError(f"reshape cannot move the batch dimension: {shape_str(x.shape)} to "
                        f"{shape_str(shape)}", loc)
    if not all(_whole(d) and (d > 0 or d == -1) for d in rest) or sum(d == -1 for d in rest) > 1:
        raise SpecError(f"reshape's sizes must be positive whole numbers (with at most one -1), "
                        f"got {list(shape)}", loc)
    rest = [int(d) for d in rest]
    size = int(np.prod([d for d in x.shape if d is not None], dtype=np.int64))
    known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
    if -1 in rest:
        if known == 0 or size % known:
            raise SpecError(f"cannot reshape {shape_str(x.shape)} to {list(shape)}", loc)
        rest[rest.index(-1)] = size // known
    if int(np.prod(rest, dtype=np.int64)) != size:
        raise SpecError(f"cannot reshape {shape_str(x.shape)} ({size} entries"
                        f"{' per example' if batch else ''}) to {shape_str(rest)}", loc)
    return {"shape": tuple(([None] if batch else []) + rest)}


_register(Op(
    "reshape", "view",
    lambda G, ins, a, loc: (_reshape_attrs(ins, a, loc)["shape"], ins[0].dtype),
    impl=lambda xs, a, B: np.reshape(xs[0], concrete(a["shape"], B)),
    emit=lambda e: f"np.reshape({e.args[0]}, {shape_expr(e.node.attr('shape'))})",
    grad=lambda G, n, g: (G("reshape", g, shape=n.inputs[0].shape),), jvp=_linear_jvp,
    lang=(("x", "shape"), {"shape": None}),
    canonical=_reshape_attrs, noop=lambda ins, b: tuple(b["shape"]) == tuple(ins[0].shape),
    curvature=_curv_selecting, doc="reshape(x, shape): the same entries in a new shape; the batch dimension is kept, so "
        "`shape` lists the others (one may be -1). A view where the storage allows"))


def _one_axis(op, x: Node, a, loc) -> int:
    axes = norm_axes(a["axes"] if "axes" in a else a.get("axis", -1), x.ndim, loc)
    if len(axes) != 1:
        raise SpecError(f"{op} works along one axis, got {len(axes)}", loc)
    return axes[0]


def _slice_axis(op, ins, a, loc) -> tuple[int, int]:
    _arity(op, ins, 1, loc, f"{op}(x, ...) with the sizes and the axis numbers")
    x = ins[0]
    if x.ndim == 0:
        raise SpecError(f"{op} needs a tensor with at least one axis", loc)
    ax = _one_axis(op, x, a, loc)
    d = x.shape[ax]
    if d is None:
        raise SpecError(f"{op} cannot work along the batch dimension", loc)
    return ax, d


def _slice_attrs(ins, a, loc):
    ax, d = _slice_axis("slice", ins, a, loc)
    lo = _integer("slice", a, "lo", loc) if "lo" in a else 0
    hi = _integer("slice", a, "hi", loc) if "hi" in a else d
    lo2, hi2 = lo + d if lo < 0 else lo, hi + d if hi < 0 else hi
    if not 0 <= lo2 < hi2 <= d:
        raise SpecError(f"slice [{lo}:{hi}] is empty or out of range for an axis of size {d}", loc)
    return {"axes": (ax,), "lo": lo2, "hi": hi2}


def _slice_infer(G, ins, a, loc):
    b = _slice_attrs(ins, a, loc)
    (ax,) = b["axes"]
    shape = list(ins[0].shape)
    shape[ax] = b["hi"] - b["lo"]
    return tuple(shape), ins[0].dtype


def _slice_impl(xs, a, B):
    (ax,) = a["axes"]
    return xs[0][(slice(None),) * ax + (slice(a["lo"], a["hi"]),)]


def _g_slice(G, n, g):
    (ax,), x = n.attr("axes"), n.inputs[0]
    return (G("pad", g, axis=ax, before=n.attr("lo"), after=x.shape[ax] - n.attr("hi")),)


_register(Op(
    "slice", "view", _slice_infer, impl=_slice_impl,
    emit=lambda e: e.args[0] + _index(e.node.attr("axes")[0], f"{e.node.attr('lo')}:{e.node.attr('hi')}"),
    grad=_g_slice, jvp=_linear_jvp, lang=(("x", "lo", "hi", "axis"), {"lo": None, "hi": None, "axis": -1}),
    canonical=_slice_attrs, noop=lambda ins, b: b["hi"] - b["lo"] == ins[0].shape[b["axes"][0]],
    curvature=_curv_selecting, doc="slice(x, lo, hi, axis = -1): entries lo <= i < hi along `axis` (negative counts from "
        "the end; not the batch axis). A view"))


def _pad_attrs(ins, a, loc):
    ax, _ = _slice_axis("pad", ins, a, loc)
    before, after = (_integer("pad", a, k, loc) if k in a else 0 for k in ("before", "after"))
    if before < 0 or after < 0:
        raise SpecError(f"pad needs sizes >= 0, got before = {before}, after = {after}", loc)
    return {"axes": (ax,), "before": before, "after": after}


def _pad_infer(G, ins, a, loc):
    b = _pad_attrs(ins, a, loc)
    (ax,) = b["axes"]
    shape = list(ins[0].shape)
    shape[ax] += b["before"] + b["after"]
    return tuple(shape), ins[0].dtype


def _pad_impl(xs, a, B):
    (ax,), x = a["axes"], xs[0]
    widths = [(0, 0)] * x.ndim
    widths[ax] = (a["before"], a["after"])
    return np.pad(x, widths)


def _pad_emit(e: Emit):
    n, o = e.node, e.out
    (ax,), b = n.attr("axes"), n.attr("before")
    d = n.inputs[0].shape[ax]
    if b:
        e(f"{o}{_index(ax, f':{b}')} = 0")
    if n.attr("after"):
        e(f"{o}{_index(ax, f'{b + d}:')} = 0")
    e(f"{o}{_index(ax, f'{b}:{b + d}')} = {e.args[0]}")


_register(Op(
    "pad", "other", _pad_infer, impl=_pad_impl, emit=_pad_emit,
    grad=lambda G, n, g: (G("slice", g, axis=n.attr("axes")[0], lo=n.attr("before"),
                            hi=n.attr("before") + n.inputs[0].shape[n.attr("axes")[0]]),),
    jvp=_linear_jvp, lang=(("x", "before", "after", "axis"), {"before": 0, "after": 0, "axis": -1}),
    canonical=_pad_attrs, noop=lambda ins, b: not b["before"] and not b["after"],
    curvature=_curv_selecting, doc="pad(x, before, after, axis = -1): x with `before` zeros in front and `after` zeros "
        "behind along `axis` (not the batch axis)"))


def _concat_attrs(ins, a, loc):
    if len(ins) != 2:
        raise SpecError("concat(x, y, axis) joins two tensors; nest it for more", loc)
    x, y = ins
    if x.ndim != y.ndim or x.ndim == 0:
        raise SpecError(f"concat needs two tensors of the same rank (at least 1), got "
                        f"{shape_str(x.shape)} and {shape_str(y.shape)}", loc)
    ax = _one_axis("concat", x, a, loc)
    if x.shape[ax] is None or y.shape[ax] is None:
        raise SpecError("concat cannot join along the batch dimension", loc)
    if any(i != ax and dx != dy for i, (dx, dy) in enumerate(zip(x.shape, y.shape))):
        raise SpecError(f"concat along axis {ax}: shapes {shape_str(x.shape)} and "
                        f"{shape_str(y.shape)} differ in another axis", loc)
    return {"axes": (ax,)}


def _concat_infer(G, ins, a, loc):
    (ax,) = _concat_attrs(ins, a, loc)["axes"]
    x, y = ins
    shape = list(x.shape)
    shape[ax] = x.shape[ax] + y.shape[ax]
    return tuple(shape), x.dtype if x.dtype == y.dtype else _float_of(G, ins)


def _g_concat(G, n, g):
    (ax,), dx = n.attr("axes"), n.inputs[0].shape[n.attr("axes")[0]]
    return (G("slice", g, axis=ax, lo=0, hi=dx),
            G("slice", g, axis=ax, lo=dx, hi=n.shape[ax]))


def _j_concat(G, n, ts):
    x, y = n.inputs
    return G("concat", _zeros(G, x) if ts[0] is None else ts[0],
             _zeros(G, y) if ts[1] is None else ts[1], axes=n.attr("axes"))


_register(Op(
    "concat", "other", _concat_infer,
    impl=lambda xs, a, B: np.concatenate(xs, axis=a["axes"][0]),
    emit=lambda e: e(f"np.concatenate(({e.args[0]}, {e.args[1]}), axis={e.node.attr('axes')[0]}, "
                     f"out={e.out})"),
    grad=_g_concat, jvp=_j_concat, lang=(("x", "y", "axis"), {"axis": -1}),
    canonical=_concat_attrs,
    curvature=_curv_selecting, doc="concat(x, y, axis = -1): x and y joined along `axis` (not the batch axis); the other "
        "sizes must agree"))

# ---------------------------------------------------------------------------
# gathering rows: embeddings


def _take_infer(G, ins, a, loc):
    _arity("take", ins, 2, loc, "take(table, idx)")
    table, idx = ins
    if table.ndim == 0:
        raise SpecError("take(table, idx) needs a table with at least one axis", loc)
    if idx.dtype != "int64":
        raise SpecError(f"take(table, idx) needs integer indices, got {idx.dtype} "
                        f"{shape_str(idx.shape)}", loc)
    return tuple(idx.shape) + tuple(table.shape[1:]), table.dtype


def _scatter_add_infer(G, ins, a, loc):
    _arity("scatter_add", ins, 2, loc, "scatter_add(rows, idx; shape)")
    g, idx = ins
    shape = tuple(a.get("shape", ()))
    if idx.dtype != "int64" or not shape or tuple(g.shape) != tuple(idx.shape) + shape[1:]:
        raise SpecError(f"scatter_add: cannot add rows {shape_str(g.shape)} at indices "
                        f"{idx.dtype} {shape_str(idx.shape)} into {shape_str(shape)}", loc)
    return shape, g.dtype


def _scatter_add_impl(xs, a, B):
    g, idx = xs
    out = np.zeros(concrete(a["shape"], B), dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


def _take_emit(e: Emit):
    # np.take(out=..., mode="raise") buffers the whole result internally; check the
    # bounds with two scalar reductions instead and gather with mode="wrap"
    (table, idx), rows = e.args, e.node.inputs[0].shape[0]
    n = dim_expr(rows)
    e(f"if {idx}.size and ({idx}.max() >= {n} or {idx}.min() < -{n}): "
      f"raise IndexError(f'take: an index is out of range for a table of {{{n}}} rows')")
    e(f"np.take({table}, {idx}, axis=0, out={e.out}, mode='wrap')")


_register(Op(
    "take", "other", _take_infer, impl=lambda xs, a, B: np.take(xs[0], xs[1], axis=0),
    emit=_take_emit,
    grad=lambda G, n, g: (G("scatter_add", g, n.inputs[1], shape=n.inputs[0].shape), None),
    jvp=_linear_jvp, lang=(("table", "idx"), {}),
    curvature=_curv_selecting, doc="take(table, idx): rows of `table` at the integer indices `idx` (an embedding lookup); "
        "the result has shape idx.shape + table.shape[1:]"))
_register(Op(
    "scatter_add", "other", _scatter_add_infer, impl=_scatter_add_impl,
    emit=lambda e: e(f"{e.out}[...] = 0; np.add.at({e.out}, {e.args[1]}, {e.args[0]})"),
    grad=lambda G, n, g: (G("take", g, n.inputs[1]), None), jvp=_linear_jvp,
    curvature=_curv_selecting, doc="rows added into a zero tensor of `shape` at the indices (the derivative of take)"))

# ---------------------------------------------------------------------------
# normalized exponentials: stable by construction


def _keep_scratch(n):
    x = n.inputs[0]
    return [(reduced_shape(x.shape, n.attr("axes"), True), n.dtype), (x.shape, n.dtype)]


def _log_softmax_ref(xs, a, B):
    x, ax = xs[0], a["axes"][0]
    z = x - np.max(x, axis=ax, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=ax, keepdims=True))


def _log_softmax_emit(e: Emit):
    x, o, (s, t), ax = e.args[0], e.out, e.scratch, e.node.attr("axes")[0]
    e(f"np.max({x}, axis={ax}, keepdims=True, out={s}); np.subtract({x}, {s}, out={o})")
    e(f"np.exp({o}, out={t}); np.sum({t}, axis={ax}, keepdims=True, out={s}); "
      f"np.log({s}, out={s}); np.subtract({o}, {s}, out={o})")


def _softmax_emit(e: Emit):
    x, o, (s, _), ax = e.args[0], e.out, e.scratch, e.node.attr("axes")[0]
    e(f"np.max({x}, axis={ax}, keepdims=True, out={s}); np.subtract({x}, {s}, out={o}); "
      f"np.exp({o}, out={o})")
    e(f"np.sum({o}, axis={ax}, keepdims=True, out={s}); np.divide({o}, {s}, out={o})")


def _g_log_softmax(G, n, g):
    ax = n.attr("axes")
    return (G("sub", g, G("mul", G("exp", n), G("sum", g, axis=ax, keepdims=True))),)


def _j_log_softmax(G, n, ts):
    t = ts[0]
    return G("sub", t, G("sum", G("mul", G("exp", n), t), axis=n.attr("axes"), keepdims=True))


def _g_softmax(G, n, g):
    ax = n.attr("axes")
    return (G("mul", n, G("sub", g, G("sum", G("mul", g, n), axis=ax, keepdims=True))),)


def _curv_log_softmax(G, z, h, g):
    """bbprop: J_kj = delta_kj - p_j, so sum_k J_kj^2 h_k = h_j (1 - 2 p_j) + p_j^2 sum_k h_k;
    exactly (g given), d2 z_k / d y_j^2 = -p_j (1 - p_j) for every k."""
    ax = z.attr("axes")
    p = G("exp", z)
    hu = G("add", G("mul", h, G("sub", 1.0, G("mul", 2.0, p))),
           G("mul", G("mul", p, p), G("sum", h, axis=ax, keepdims=True)))
    if g is not None:
        hu = G("sub", hu, G("mul", G("mul", p, G("sub", 1.0, p)), G("sum", g, axis=ax, keepdims=True)))
    return [hu]


def _curv_softmax(G, z, h, g):
    """bbprop: J_kj = p_k (delta_kj - p_j), so sum_k J_kj^2 h_k =
    p_j^2 [(1 - 2 p_j) h_j + sum_k p_k^2 h_k]; exactly (g given), plus
    sum_k g_k d2 p_k / d y_j^2 = p_j (1 - 2 p_j) (g_j - sum_k g_k p_k)."""
    ax, p = z.attr("axes"), z
    hu = G("mul", G("mul", p, p), G("add", G("mul", G("sub", 1.0, G("mul", 2.0, p)), h),
                                   G("sum", G("mul", G("mul", p, p), h), axis=ax, keepdims=True)))
    if g is not None:
        hu = G("add", hu, G("mul", G("mul", p, G("sub", 1.0, G("mul", 2.0, p))),
                            G("sub", g, G("sum", G("mul", g, p), axis=ax, keepdims=True))))
    return [hu]


_softmax_attrs = _axes_attrs("softmax", -1, single=True, keepdims=False)
_log_softmax_attrs = _axes_attrs("log_softmax", -1, single=True, keepdims=False)


def _same_shape_infer(normalize):
    def infer(G, ins, a, loc):
        normalize(ins, a, loc)
        return ins[0].shape, ins[0].dtype
    return infer


_register(Op("log_softmax", "other", _same_shape_infer(_log_softmax_attrs),
             impl=_log_softmax_ref, emit=_log_softmax_emit, grad=_g_log_softmax,
             jvp=_j_log_softmax, scratch=_keep_scratch,
             reducer=Reduction(("max", "sumexp"), row="({x} - {0} - log({1}))"),
             canonical=_log_softmax_attrs,
             lang=(("x", "axis"), {"axis": -1}), curvature=_curv_log_softmax, doc="log(softmax(x)), computed stably"))
_register(Op("softmax", "other", _same_shape_infer(_softmax_attrs),
             impl=lambda xs, a, B: np.exp(_log_softmax_ref(xs, a, B)), emit=_softmax_emit,
             grad=_g_softmax, jvp=_self_adjoint(_g_softmax), scratch=_keep_scratch,
             reducer=Reduction(("max", "sumexp"), row="(exp({x} - {0}) / {1})"),
             canonical=_softmax_attrs,
             lang=(("x", "axis"), {"axis": -1}), curvature=_curv_softmax, doc="normalized exponential along `axis`"))


_logsumexp_attrs = _axes_attrs("logsumexp", -1, single=True)


def _logsumexp_ref(xs, a, B):
    x, ax, kd = xs[0], a["axes"][0], bool(a.get("keepdims"))
    m = np.max(x, axis=ax, keepdims=True)
    y = m + np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True))
    return y if kd else np.squeeze(y, axis=ax)


def _logsumexp_emit(e: Emit):
    n = e.node
    x, o, (s, t), ax, kd = e.args[0], e.out, e.scratch, n.attr("axes")[0], bool(n.attr("keepdims"))
    m = s if kd else f"{s}.reshape({o}.shape)"  # a view: the max with the axis dropped
    e(f"np.max({x}, axis={ax}, keepdims=True, out={s}); np.subtract({x}, {s}, out={t}); "
      f"np.exp({t}, out={t})")
    e(f"np.sum({t}, axis={ax}, keepdims={kd}, out={o}); np.log({o}, out={o}); "
      f"np.add({o}, {m}, out={o})")


def _g_logsumexp(G, n, g):
    x = n.inputs[0]
    return (G("mul", _unreduce(G, n, g), G("softmax", x, axes=n.attr("axes"))),)


def _j_logsumexp(G, n, ts):
    x = n.inputs[0]
    return G("sum", G("mul", ts[0], G("softmax", x, axes=n.attr("axes"))), axes=n.attr("axes"),
             keepdims=n.attr("keepdims"))


_register(Op("logsumexp", "other", _axis_shape_infer(_logsumexp_attrs),
             impl=_logsumexp_ref, emit=_logsumexp_emit, grad=_g_logsumexp, jvp=_j_logsumexp,
             scratch=_keep_scratch, canonical=_logsumexp_attrs,
             reducer=Reduction(("max", "sumexp"), "{0} + log({1})"),
             lang=(("x", "axis", "keepdims"), {"axis": -1, "keepdims": False}),
             doc="logsumexp(x, axis = -1, keepdims = false): log(sum(exp(x))) along `axis`, "
                 "computed stably; its derivative is softmax(x)"))

# ---------------------------------------------------------------------------
# class targets


def _one_hot_infer(G, ins, a, loc):
    t = ins[0]
    if t.dtype != "int64":
        raise SpecError(f"one_hot needs class labels (a `class(n)` target), got {t.dtype} "
                        f"{shape_str(t.shape)}", loc)
    return tuple(t.shape) + (int(a["n"]),), G.float_dtype


def _one_hot_emit(e: Emit):
    n = e.node.attr("n")
    iota = f"iota{n}"
    line = f"{iota} = np.arange({n})"
    if line not in e.setup:
        e.setup.append(line)
    e(f"np.equal(np.expand_dims({e.args[0]}, -1), {iota}, out={e.out})")


_register(Op("one_hot", "other", _one_hot_infer,
             impl=lambda xs, a, B: (xs[0][..., None] == np.arange(a["n"])).astype(np.float64),
             emit=_one_hot_emit, grad=lambda G, n, g: (None,), jvp=_no_jvp,
             index_map=lambda n, idx: [(0, idx[:-1]), (None, idx[-1])],
             cuda="(({0}) == ({1}) ? ({T})1 : ({T})0)",
             lang=(("t", "n"), {"n": None}),
             doc="class labels to one-hot rows (n defaults to the target's class count)"))

# ---------------------------------------------------------------------------
# random streams: stateless, keyed by (seed, step)
#
# A random op's inputs are a tensor giving the shape and the `step` hyper (the
# trainer feeds the step number); its numbers come from a Philox generator
# keyed by (seed, step), so the same (seed, step) gives the same numbers in
# every run and every lowering, and nothing carries over between steps. The
# derivative with respect to everything is zero.

_KEY = 2 ** 63  # Philox key words are taken modulo this (NumPy warns above it)


def step_hyper(G) -> Node:
    """The `step` hyper every random op reads (int64, fed by the trainer)."""
    return G("hyper", name="step", shape=(), dtype="int64")


def _default_seed(op: str, x: Node, loc) -> int:
    """A seed for an op built without one: different ops, shape tensors and
    call sites (where the build knows its location) get different streams,
    deterministic for a given spec. Identical calls are one node (hash-consing),
    hence one stream: give them different seeds to draw twice."""
    import zlib
    where = f"{loc.line}:{loc.col}" if loc is not None else ""
    return zlib.crc32(f"{op}:{x.id}:{where}".encode())


def _generator(seed, step) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[int(seed) % _KEY, int(step) % _KEY]))


def _random_op(name: str, params: dict, check: Callable, fill: Callable, ref: Callable,
               mean: Callable, doc: str):
    """`params` are the op's numeric attributes with their defaults; `fill(gen,
    out, attrs)` returns the code lines that fill `out` from the generator
    expression `gen`; `ref(generator, shape, attrs)` is the reference and
    `mean(attrs)` the expected value."""
    def numbers(a, loc) -> dict:
        if "seed" in a:
            _integer(name, a, "seed", loc)
        v = {k: _number(name, {**params, **a}, k, loc) for k in params}
        check(v, loc)
        return v

    def infer(G, ins, a, loc):
        numbers(a, loc)
        if len(ins) != 2 or ins[1].shape != ():
            raise SpecError(f"{name} takes a tensor giving the shape and the scalar step", loc)
        return ins[0].shape, a["dtype"]

    def generator(a, step: str) -> str:
        return (f"np.random.Generator(np.random.Philox(key=[{int(a['seed']) % _KEY}, "
                f"int({step}) % {_KEY}]))")

    def emit(e: Emit):
        e("; ".join(fill(generator(e.node.a, e.args[1]), e.out, e.node.a)))

    def impl(xs, a, B):
        return ref(_generator(a["seed"], xs[1]), np.shape(xs[0]), a)

    lang = (("x", *params, "seed"), {**params, "seed": None})
    def expect(G, n):
        return G("broadcast", G.const(mean(n.a), n.dtype), shape=n.shape)

    return _register(Op(name, "other", infer, impl=impl, emit=emit,
                        grad=lambda G, n, g: (None, None), jvp=_no_jvp, lang=lang,
                        canonical=lambda ins, a, loc: {**a, **numbers(a, loc)},
                        expect=expect, doc=doc))


_RANDOM_OPS = ("uniform_noise", "normal_noise", "bernoulli_mask")


@rule("random_stream", _RANDOM_OPS, stage="build")
def _random_stream(G, op, ins, a, loc=None):
    """A random op's stream made explicit: its numbers, a seed (a default one per
    op, shape tensor and call site), its dtype and the `step` hyper as second input."""
    if len(ins) not in (1, 2):
        return None
    try:
        b = OPS[op].canonical(ins, a, loc)
    except SpecError:
        return None  # `infer` reports it, with the location
    x = ins[0]
    b["seed"] = int(a["seed"]) if "seed" in a else _default_seed(op, x, loc)
    b.setdefault("dtype", x.dtype if x.dtype.startswith("float") else G.float_dtype)
    if len(ins) == 2 and repr(sorted(b.items())) == repr(sorted(a.items())):
        return None
    return G(op, x, ins[1] if len(ins) == 2 else step_hyper(G), loc=loc, **b)


def _dt(a) -> str:
    return f"np.{a['dtype']}"


def _check_uniform(v, loc):
    if not v["lo"] <= v["hi"]:
        raise SpecError(f"uniform_noise needs lo <= hi, got lo = {v['lo']:g}, hi = {v['hi']:g}", loc)


def _check_normal(v, loc):
    if not v["std"] >= 0:
        raise SpecError(f"normal_noise needs std >= 0, got {v['std']:g}", loc)


def _check_keep(v, loc):
    if not 0 <= v["keep"] <= 1:
        raise SpecError(f"bernoulli_mask needs 0 <= keep <= 1, got {v['keep']:g}", loc)


def _fill_uniform(gen, o, a):
    lines = [f"{gen}.random(dtype={_dt(a)}, out={o})"]
    lo, hi = float(a["lo"]), float(a["hi"])
    if (lo, hi) != (0.0, 1.0):
        lines += [f"np.multiply({o}, {_py(hi - lo)}, out={o})", f"np.add({o}, {_py(lo)}, out={o})"]
    return lines


def _fill_normal(gen, o, a):
    lines = [f"{gen}.standard_normal(dtype={_dt(a)}, out={o})"]
    mean, std = float(a["mean"]), float(a["std"])
    if std != 1.0:
        lines.append(f"np.multiply({o}, {_py(std)}, out={o})")
    if mean != 0.0:
        lines.append(f"np.add({o}, {_py(mean)}, out={o})")
    return lines


def _fill_bernoulli(gen, o, a):
    return [f"{gen}.random(dtype={_dt(a)}, out={o})", f"np.less({o}, {_py(a['keep'])}, out={o})"]


def _ref_uniform(gen, shape, a):
    u = gen.random(shape, dtype=a["dtype"])
    lo, hi = float(a["lo"]), float(a["hi"])
    return u if (lo, hi) == (0.0, 1.0) else u * (hi - lo) + lo


def _ref_normal(gen, shape, a):
    z = gen.standard_normal(shape, dtype=a["dtype"])
    z = z if float(a["std"]) == 1.0 else z * float(a["std"])
    return z if float(a["mean"]) == 0.0 else z + float(a["mean"])


def _ref_bernoulli(gen, shape, a):
    return (gen.random(shape, dtype=a["dtype"]) < float(a["keep"])).astype(a["dtype"])


_random_op("uniform_noise", {"lo": 0.0, "hi": 1.0}, _check_uniform, _fill_uniform, _ref_uniform,
           lambda a: (a["lo"] + a["hi"]) / 2,
           "uniform_noise(x, lo = 0, hi = 1, seed): numbers uniform in [lo, hi), shaped like x, "
           "drawn afresh each step from the stream (seed, step)")
_random_op("normal_noise", {"mean": 0.0, "std": 1.0}, _check_normal, _fill_normal, _ref_normal, lambda a: a["mean"],
           "normal_noise(x, mean = 0, std = 1, seed): Gaussian numbers shaped like x, drawn "
           "afresh each step from the stream (seed, step)")
_random_op("bernoulli_mask", {"keep": 0.5}, _check_keep, _fill_bernoulli, _ref_bernoulli, lambda a: a["keep"],
           "bernoulli_mask(x, keep = 0.5, seed): 1 with probability `keep`, else 0, shaped like "
           "x, drawn afresh each step from the stream (seed, step)")


_register(Op(
    "training_only", "view", lambda G, ins, a, loc: _training_only_infer(ins, loc),
    impl=lambda xs, a, B: xs[0], emit=lambda e: e.args[0], alias=0,
    grad=lambda G, n, g: (g, None), jvp=lambda G, n, ts: ts[0],
    expect=lambda G, n: n.inputs[1], lang=(("x", "otherwise"), {}),
    curvature=_curv_selecting, doc="x while training; `otherwise` when evaluating and predicting (e.g. input corruption)"))


def _training_only_infer(ins, loc):
    x, other = ins
    if tuple(x.shape) != tuple(other.shape):
        raise SpecError(f"training_only needs two tensors of one shape, got {shape_str(x.shape)} "
                        f"and {shape_str(other.shape)}", loc)
    return x.shape, x.dtype


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


rule("canonical_attrs", [name for name, op in OPS.items() if op.canonical or op.noop],
     stage="build")(canonical_attrs)


def language_ops() -> dict[str, Op]:
    """The ops the language can call directly, by name."""
    return {name: op for name, op in OPS.items() if op.lang is not None}
