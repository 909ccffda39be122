"""Layout and indexing: reshape, slice, pad, concat, take (embedding rows) and
its adjoint scatter_add, one_hot, and training_only."""
from __future__ import annotations

import numpy as np

from .errors import SpecError
from .node import Node, shape_str
from .ops_core import (
    Emit, Op, arity, concrete, curv_selecting, dim_expr, float_of, index_expr, integer_attr,
    linear_jvp, no_jvp, norm_axes, register, shape_expr, whole, zeros_like)


def _reshape_attrs(ins, a, loc):
    arity("reshape", ins, 1, loc, "reshape(x, shape) with the shape a list of sizes")
    x, shape = ins[0], a.get("shape")
    if whole(shape):
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
    if not all(whole(d) and (d > 0 or d == -1) for d in rest) or sum(d == -1 for d in rest) > 1:
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


register(Op(
    "reshape", "view",
    lambda G, ins, a, loc: (_reshape_attrs(ins, a, loc)["shape"], ins[0].dtype),
    impl=lambda xs, a, B: np.reshape(xs[0], concrete(a["shape"], B)),
    emit=lambda e: f"np.reshape({e.args[0]}, {shape_expr(e.node.attr('shape'))})",
    grad=lambda G, n, g: (G("reshape", g, shape=n.inputs[0].shape),), jvp=linear_jvp,
    lang=(("x", "shape"), {"shape": None}),
    canonical=_reshape_attrs, noop=lambda ins, b: tuple(b["shape"]) == tuple(ins[0].shape),
    curvature=curv_selecting,
    doc="reshape(x, shape): the same entries in a new shape; the batch dimension is kept, so "
        "`shape` lists the others (one may be -1). A view where the storage allows"))


def _one_axis(op, x: Node, a, loc) -> int:
    axes = norm_axes(a["axes"] if "axes" in a else a.get("axis", -1), x.ndim, loc)
    if len(axes) != 1:
        raise SpecError(f"{op} works along one axis, got {len(axes)}", loc)
    return axes[0]


def _slice_axis(op, ins, a, loc) -> tuple[int, int]:
    arity(op, ins, 1, loc, f"{op}(x, ...) with the sizes and the axis numbers")
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
    lo = integer_attr("slice", a, "lo", loc) if "lo" in a else 0
    hi = integer_attr("slice", a, "hi", loc) if "hi" in a else d
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


register(Op(
    "slice", "view", _slice_infer, impl=_slice_impl,
    emit=lambda e: e.args[0] + index_expr(e.node.attr("axes")[0], f"{e.node.attr('lo')}:{e.node.attr('hi')}"),
    grad=_g_slice, jvp=linear_jvp, lang=(("x", "lo", "hi", "axis"), {"lo": None, "hi": None, "axis": -1}),
    canonical=_slice_attrs, noop=lambda ins, b: b["hi"] - b["lo"] == ins[0].shape[b["axes"][0]],
    curvature=curv_selecting,
    doc="slice(x, lo, hi, axis = -1): entries lo <= i < hi along `axis` (negative counts from "
        "the end; not the batch axis). A view"))


def _pad_attrs(ins, a, loc):
    ax, _ = _slice_axis("pad", ins, a, loc)
    before, after = (integer_attr("pad", a, k, loc) if k in a else 0 for k in ("before", "after"))
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
        e(f"{o}{index_expr(ax, f':{b}')} = 0")
    if n.attr("after"):
        e(f"{o}{index_expr(ax, f'{b + d}:')} = 0")
    e(f"{o}{index_expr(ax, f'{b}:{b + d}')} = {e.args[0]}")


register(Op(
    "pad", "other", _pad_infer, impl=_pad_impl, emit=_pad_emit,
    grad=lambda G, n, g: (G("slice", g, axis=n.attr("axes")[0], lo=n.attr("before"),
                            hi=n.attr("before") + n.inputs[0].shape[n.attr("axes")[0]]),),
    jvp=linear_jvp, lang=(("x", "before", "after", "axis"), {"before": 0, "after": 0, "axis": -1}),
    canonical=_pad_attrs, noop=lambda ins, b: not b["before"] and not b["after"],
    curvature=curv_selecting,
    doc="pad(x, before, after, axis = -1): x with `before` zeros in front and `after` zeros "
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
    return tuple(shape), x.dtype if x.dtype == y.dtype else float_of(G, ins)


def _g_concat(G, n, g):
    (ax,), dx = n.attr("axes"), n.inputs[0].shape[n.attr("axes")[0]]
    return (G("slice", g, axis=ax, lo=0, hi=dx),
            G("slice", g, axis=ax, lo=dx, hi=n.shape[ax]))


def _j_concat(G, n, ts):
    x, y = n.inputs
    return G("concat", zeros_like(G, x) if ts[0] is None else ts[0],
             zeros_like(G, y) if ts[1] is None else ts[1], axes=n.attr("axes"))


register(Op(
    "concat", "other", _concat_infer,
    impl=lambda xs, a, B: np.concatenate(xs, axis=a["axes"][0]),
    emit=lambda e: e(f"np.concatenate(({e.args[0]}, {e.args[1]}), axis={e.node.attr('axes')[0]}, "
                     f"out={e.out})"),
    grad=_g_concat, jvp=_j_concat, lang=(("x", "y", "axis"), {"axis": -1}),
    canonical=_concat_attrs,
    curvature=curv_selecting,
    doc="concat(x, y, axis = -1): x and y joined along `axis` (not the batch axis); the other "
        "sizes must agree"))

# ---------------------------------------------------------------------------
# gathering rows: embeddings


def _take_infer(G, ins, a, loc):
    arity("take", ins, 2, loc, "take(table, idx)")
    table, idx = ins
    if table.ndim == 0:
        raise SpecError("take(table, idx) needs a table with at least one axis", loc)
    if idx.dtype != "int64":
        raise SpecError(f"take(table, idx) needs integer indices, got {idx.dtype} "
                        f"{shape_str(idx.shape)}", loc)
    return tuple(idx.shape) + tuple(table.shape[1:]), table.dtype


def _scatter_add_infer(G, ins, a, loc):
    arity("scatter_add", ins, 2, loc, "scatter_add(rows, idx; shape)")
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


register(Op(
    "take", "other", _take_infer, impl=lambda xs, a, B: np.take(xs[0], xs[1], axis=0),
    emit=_take_emit,
    grad=lambda G, n, g: (G("scatter_add", g, n.inputs[1], shape=n.inputs[0].shape), None),
    jvp=linear_jvp, lang=(("table", "idx"), {}),
    curvature=curv_selecting,
    doc="take(table, idx): rows of `table` at the integer indices `idx` (an embedding lookup); "
        "the result has shape idx.shape + table.shape[1:]"))
register(Op(
    "scatter_add", "other", _scatter_add_infer, impl=_scatter_add_impl,
    emit=lambda e: e(f"{e.out}[...] = 0; np.add.at({e.out}, {e.args[1]}, {e.args[0]})"),
    grad=lambda G, n, g: (G("take", g, n.inputs[1]), None), jvp=linear_jvp,
    curvature=curv_selecting,
    doc="rows added into a zero tensor of `shape` at the indices (the derivative of take)"))


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


register(Op("one_hot", "other", _one_hot_infer,
            impl=lambda xs, a, B: (xs[0][..., None] == np.arange(a["n"])).astype(np.float64),
            emit=_one_hot_emit, grad=lambda G, n, g: (None,), jvp=no_jvp,
            index_map=lambda n, idx: [(0, idx[:-1]), (None, idx[-1])],
            cuda="(({0}) == ({1}) ? ({T})1 : ({T})0)",
            lang=(("t", "n"), {"n": None}),
            doc="class labels to one-hot rows (n defaults to the target's class count)"))


# ---------------------------------------------------------------------------
# training-time values


register(Op(
    "training_only", "view", lambda G, ins, a, loc: _training_only_infer(ins, loc),
    impl=lambda xs, a, B: xs[0], emit=lambda e: e.args[0], alias=0,
    grad=lambda G, n, g: (g, None), jvp=lambda G, n, ts: ts[0],
    expect=lambda G, n: n.inputs[1], lang=(("x", "otherwise"), {}),
    curvature=curv_selecting,
    doc="x while training; `otherwise` when evaluating and predicting (e.g. input corruption)"))


def _training_only_infer(ins, loc):
    x, other = ins
    if tuple(x.shape) != tuple(other.shape):
        raise SpecError(f"training_only needs two tensors of one shape, got {shape_str(x.shape)} "
                        f"and {shape_str(other.shape)}", loc)
    return x.shape, x.dtype
