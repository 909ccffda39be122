"""The op table: every primitive op, defined in one place.

An entry holds all there is to know about an op: how the language calls it,
its shape/dtype rule, its reverse-mode derivative (a rule that *builds graph
nodes*, so derivatives of derivatives work), its reference NumPy
implementation (used for constant folding and as ground truth in tests), and
its NumPy code emitter (the lowering writes into a preallocated `out`).
Elementwise ops also carry a C expression for the CUDA lowering.

Adding an op = adding one entry here + its finite-difference test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import SpecError
from .graph import Node, shape_str

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
    lang: tuple | None = None  # how the language calls it: (params, defaults dict)
    scratch: Callable | None = None  # node -> [(shape, dtype)] temporaries for emit
    cuda: str | None = None  # elementwise C expression over {0}, {1}, ...
    simplify_on_build: Callable | None = None  # (G, inputs, attrs) -> Node | None
    doc: str = ""


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
# shape helpers


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


def norm_axes(axis, ndim: int, loc=None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, float)) else tuple(axis)
    out = []
    for ax in axes:
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


# ---------------------------------------------------------------------------
# leaves: inputs fed per step, parameters and optimizer state, runtime scalars


def _leaf_infer(G, ins, a, loc):
    return tuple(a.get("shape", ())), a.get("dtype", G.float_dtype)


for _name, _doc in [
    ("input", "data fed each step (inputs and targets)"),
    ("param", "a trainable tensor, initialized from its `init` attribute"),
    ("state", "optimizer state kept between steps (velocities, running averages)"),
    ("hyper", "a scalar fed each step (learning rate, momentum): changing it never recompiles"),
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
    return _register(Op(
        name, "elementwise", _ew_infer, impl=lambda xs, a, B: fn(xs[0]),
        emit=emit or _ufunc_emit(ufunc or name), grad=grad, lang=(("x",), {}),
        cuda=cuda, doc=doc, scratch=scratch))


def binary(name, fn, grad, cuda, ufunc=None, infer=_ew_infer, doc=""):
    return _register(Op(
        name, "elementwise", infer, impl=lambda xs, a, B: fn(xs[0], xs[1]),
        emit=_ufunc_emit(ufunc or name), grad=grad, lang=(("x", "y"), {}), cuda=cuda, doc=doc))


def _sigmoid_emit(e: Emit):
    x, o = e.args[0], e.out
    e(f"np.negative({x}, out={o}); np.exp({o}, out={o}); np.add({o}, 1.0, out={o}); "
      f"np.reciprocal({o}, out={o})")


def _softplus_emit(e: Emit):
    x, o, s = e.args[0], e.out, e.scratch[0]
    e(f"np.abs({x}, out={o}); np.negative({o}, out={o}); np.exp({o}, out={o}); "
      f"np.log1p({o}, out={o}); np.maximum({x}, 0.0, out={s}); np.add({o}, {s}, out={o})")


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
      "(log1p(exp(-fabs({0})))+fmax({0},0))", emit=_softplus_emit,
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


binary("add", np.add, _g_add, "({0}+{1})")
binary("sub", np.subtract, _g_sub, "({0}-{1})", ufunc="subtract")
binary("mul", np.multiply, _g_mul, "({0}*{1})", ufunc="multiply")
binary("div", np.divide, _g_div, "({0}/{1})", ufunc="divide")
OPS["pow"] = Op("pow", "elementwise", _ew_infer, impl=lambda xs, a, B: np.power(xs[0], xs[1]),
                emit=_pow_emit, grad=_g_pow, lang=(("x", "y"), {}), cuda="pow({0},{1})")
binary("maximum", np.maximum, _g_max, "fmax({0},{1})",
       doc="elementwise maximum; the derivative goes to the first argument on ties")
binary("minimum", np.minimum, _g_min, "fmin({0},{1})")
_no_grad = lambda G, n, g: (None, None)  # noqa: E731
for _n, _uf, _c in [("gt", "greater", ">"), ("ge", "greater_equal", ">="), ("lt", "less", "<"),
                    ("le", "less_equal", "<="), ("eq", "equal", "=="), ("ne", "not_equal", "!=")]:
    binary(_n, getattr(np, _uf), _no_grad, f"(({{0}}{_c}{{1}})?1:0)", ufunc=_uf, infer=_cmp_infer,
           doc=f"1 where x {_c} y, else 0 (no derivative)")

# ---------------------------------------------------------------------------
# reductions and broadcasting


def _reduce_infer(G, ins, a, loc):
    x = ins[0]
    return reduced_shape(x.shape, a["axes"], a.get("keepdims", False)), x.dtype


def _mean_infer(G, ins, a, loc):
    return _reduce_infer(G, ins, a, loc)[0], _float_of(G, ins)


def _reduce_build(fn):
    """Normalize `axis` into sorted `axes` before interning."""
    def build(G, ins, a):
        if "axes" in a:
            return None
        axes = norm_axes(a.pop("axis", None), ins[0].ndim)
        return G(fn, *ins, axes=axes, keepdims=bool(a.get("keepdims", False)) or None)
    return build


def _sum_emit(e: Emit):
    a = e.node.a
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out})")


def _mean_emit(e: Emit):
    a = e.node.a
    dims = [e.node.inputs[0].shape[i] for i in a["axes"]]
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out}); "
      f"np.multiply({e.out}, 1.0 / ({'*'.join(dim_expr(d) for d in dims) or '1'}), out={e.out})")


def _g_sum(G, n, g):
    x = n.inputs[0]
    return (G("broadcast", g, shape=x.shape, axes=None if n.attr("keepdims") else n.attr("axes")),)


def _g_mean(G, n, g):
    x = n.inputs[0]
    dims = tuple(x.shape[i] for i in n.attr("axes"))
    (b,) = _g_sum(G, n, g)
    return (G("div", b, G("count", dims=dims, dtype=n.dtype)),)


_register(Op("sum", "reduce", _reduce_infer,
             impl=lambda xs, a, B: np.sum(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
             emit=_sum_emit, grad=_g_sum, lang=(("x", "axis", "keepdims"), {"axis": None, "keepdims": False}),
             simplify_on_build=_reduce_build("sum"), doc="sum over `axis` (all axes by default)"))
_register(Op("mean", "reduce", _mean_infer,
             impl=lambda xs, a, B: np.mean(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
             emit=_mean_emit, grad=_g_mean, lang=(("x", "axis", "keepdims"), {"axis": None, "keepdims": False}),
             simplify_on_build=_reduce_build("mean"), doc="mean over `axis` (all axes by default)"))


def _argmax_build(G, ins, a):
    if "axes" in a:
        return None
    (ax,) = norm_axes(a.pop("axis", -1), ins[0].ndim)
    return G("argmax", *ins, axes=(ax,))


_register(Op("argmax", "reduce",
             lambda G, ins, a, loc: (reduced_shape(ins[0].shape, a["axes"], False), "int64"),
             impl=lambda xs, a, B: np.argmax(xs[0], axis=a["axes"][0]),
             emit=lambda e: e(f"np.argmax({e.args[0]}, axis={e.node.attr('axes')[0]}, out={e.out})"),
             grad=lambda G, n, g: (None,), lang=(("x", "axis"), {"axis": -1}),
             simplify_on_build=_argmax_build, doc="index of the largest entry along `axis`"))


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


def _sum_to_build(G, ins, a):
    return ins[0] if tuple(ins[0].shape) == tuple(a["shape"]) else None


def _sum_to_infer(G, ins, a, loc):
    src, dst = ins[0].shape, a["shape"]
    if len(dst) > len(src) or broadcast_shapes(src, dst, loc) != tuple(src):
        raise SpecError(f"cannot sum {shape_str(src)} down to {shape_str(dst)}", loc)
    return tuple(dst), ins[0].dtype


_register(Op("sum_to", "reduce", _sum_to_infer, impl=_sum_to_impl, emit=_sum_to_emit,
             grad=lambda G, n, g: (G("broadcast", g, shape=n.inputs[0].shape),),
             simplify_on_build=_sum_to_build,
             doc="sum a broadcast result back down to an operand's shape (derivative of broadcasting)"))


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


def _g_bcast(G, n, g):
    axes = n.attr("axes")
    if axes:
        g = G("sum", g, axis=axes)
    return (_sum_to(G, g, n.inputs[0].shape),)


_register(Op("broadcast", "other", _bcast_infer, impl=_bcast_impl, emit=_bcast_emit, grad=_g_bcast,
             simplify_on_build=lambda G, ins, a: ins[0] if not a.get("axes") and tuple(ins[0].shape) == tuple(a["shape"]) else None,
             doc="broadcast to a shape (with reduced `axes` re-inserted first)"))

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


_register(Op("matmul", "matmul", _matmul_infer, impl=lambda xs, a, B: xs[0] @ xs[1],
             emit=lambda e: e(f"np.matmul({e.args[0]}, {e.args[1]}, out={e.out})"),
             grad=lambda G, n, g: (G("matmul", g, G("transpose", n.inputs[1])),
                                   G("matmul", G("transpose", n.inputs[0]), g)),
             lang=(("x", "y"), {}), doc="matrix product (`@`)"))


def _transpose_infer(G, ins, a, loc):
    x = ins[0]
    if x.ndim != 2:
        raise SpecError(f"transpose needs a matrix, got {shape_str(x.shape)}", loc)
    return (x.shape[1], x.shape[0]), x.dtype


_register(Op("transpose", "view", _transpose_infer, impl=lambda xs, a, B: xs[0].T,
             emit=lambda e: f"{e.args[0]}.T", grad=lambda G, n, g: (G("transpose", g),),
             simplify_on_build=lambda G, ins, a: ins[0].inputs[0] if ins[0].op == "transpose" else None,
             lang=(("x",), {}), doc="matrix transpose (`W'` or `W.T`)"))

# ---------------------------------------------------------------------------
# normalized exponentials: stable by construction


def _axis_build(name):
    def build(G, ins, a):
        if "axes" in a:
            return None
        (ax,) = norm_axes(a.pop("axis", -1), ins[0].ndim)
        return G(name, *ins, axes=(ax,))
    return build


def _keep_scratch(n):
    return [(reduced_shape(n.shape, n.attr("axes"), True), n.dtype), (n.shape, n.dtype)]


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


def _g_softmax(G, n, g):
    ax = n.attr("axes")
    return (G("mul", n, G("sub", g, G("sum", G("mul", g, n), axis=ax, keepdims=True))),)


_register(Op("log_softmax", "other", lambda G, ins, a, loc: (ins[0].shape, ins[0].dtype),
             impl=_log_softmax_ref, emit=_log_softmax_emit, grad=_g_log_softmax,
             scratch=_keep_scratch, simplify_on_build=_axis_build("log_softmax"),
             lang=(("x", "axis"), {"axis": -1}), doc="log(softmax(x)), computed stably"))
_register(Op("softmax", "other", lambda G, ins, a, loc: (ins[0].shape, ins[0].dtype),
             impl=lambda xs, a, B: np.exp(_log_softmax_ref(xs, a, B)), emit=_softmax_emit,
             grad=_g_softmax, scratch=_keep_scratch, simplify_on_build=_axis_build("softmax"),
             lang=(("x", "axis"), {"axis": -1}), doc="normalized exponential along `axis`"))

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
             emit=_one_hot_emit, grad=lambda G, n, g: (None,), lang=(("t", "n"), {"n": None}),
             doc="class labels to one-hot rows (n defaults to the target's class count)"))


def language_ops() -> dict[str, Op]:
    """The ops the language can call directly, by name."""
    return {name: op for name, op in OPS.items() if op.lang is not None}


def describe(node: Node) -> str:
    return f"{node.op} {shape_str(node.shape)}"

