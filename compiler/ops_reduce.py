"""Reductions and broadcasting: sum, mean, max, min, argmax, sum_to, broadcast."""
from __future__ import annotations

import numpy as np

from .errors import SpecError
from .node import Node, shape_str
from .ops_core import (
    Emit, Op, Reduction, axes_attrs, axis_shape_infer, broadcast_shapes, concrete,
    curv_selecting, dim_expr, float_of, linear_jvp, no_jvp, register, shape_expr, sum_to,
    unreduce)


_sum_attrs = axes_attrs("sum", None)
_mean_attrs = axes_attrs("mean", None)


def _sum_emit(e: Emit):
    a = e.node.a
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out})")


def _mean_emit(e: Emit):
    a = e.node.a
    dims = [e.node.inputs[0].shape[i] for i in a["axes"]]
    e(f"np.sum({e.args[0]}, axis={a['axes']}, keepdims={bool(a.get('keepdims'))}, out={e.out}); "
      f"np.multiply({e.out}, 1.0 / ({'*'.join(dim_expr(d) for d in dims) or '1'}), out={e.out})")


def _g_sum(G, n, g):
    return (unreduce(G, n, g),)


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

register(Op("sum", "reduce", axis_shape_infer(_sum_attrs),
            impl=lambda xs, a, B: np.sum(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
            emit=_sum_emit, grad=_g_sum, jvp=linear_jvp, lang=_REDUCE_LANG, reducer=Reduction(("sum",)),
            canonical=_sum_attrs,
            curvature=curv_selecting, doc="sum over `axis` (all axes by default)"))


def _mean_infer(G, ins, a, loc):
    shape, _ = axis_shape_infer(_mean_attrs)(G, ins, a, loc)
    return shape, float_of(G, ins)


register(Op("mean", "reduce", _mean_infer,
            impl=lambda xs, a, B: np.mean(xs[0], axis=a["axes"], keepdims=bool(a.get("keepdims"))),
            emit=_mean_emit, grad=_g_mean, jvp=linear_jvp, lang=_REDUCE_LANG,
            reducer=Reduction(("sum",), "{0} * (({T})1 / ({T}){n})"),
            canonical=_mean_attrs,
            curvature=_curv_mean, doc="mean over `axis` (all axes by default)"))


# -- max and min reductions ---------------------------------------------------


def _extreme_weights(G, n: Node) -> Node:
    """Where the extreme value is attained, 1/(number of ties); else 0. The
    derivative of max (min) is the derivative of that weighted average."""
    x, axes = n.inputs[0], n.attr("axes")
    hit = G("eq", x, unreduce(G, n, n))
    return G("div", hit, G("sum", hit, axis=axes, keepdims=True))


def _g_extreme(G, n, g):
    return (G("mul", unreduce(G, n, g), _extreme_weights(G, n)),)


def _j_extreme(G, n, ts):
    return G("sum", G("mul", ts[0], _extreme_weights(G, n)), axes=n.attr("axes"),
             keepdims=n.attr("keepdims"))


for _name, _fn in (("max", "max"), ("min", "min")):
    _attrs = axes_attrs(_name, None)
    register(Op(
        _name, "reduce", axis_shape_infer(_attrs),
        impl=lambda xs, a, B, _fn=_fn: getattr(np, _fn)(xs[0], axis=a["axes"],
                                                        keepdims=bool(a.get("keepdims"))),
        emit=lambda e, _fn=_fn: e(f"np.{_fn}({e.args[0]}, axis={e.node.attr('axes')}, "
                                  f"keepdims={bool(e.node.attr('keepdims'))}, out={e.out})"),
        grad=_g_extreme, jvp=_j_extreme, lang=_REDUCE_LANG, reducer=Reduction((_fn,)),
        canonical=_attrs,
        doc=f"{_name}(x, axis, keepdims): the {'largest' if _name == 'max' else 'smallest'} entry "
            f"over `axis` (all axes by default); the derivative goes to the {_name}imal entries, "
            f"split evenly between ties"))


_argmax_attrs = axes_attrs("argmax", -1, single=True, keepdims=False)

register(Op("argmax", "reduce", axis_shape_infer(_argmax_attrs, dtype="int64"),
            impl=lambda xs, a, B: np.argmax(xs[0], axis=a["axes"][0]),
            emit=lambda e: e(f"np.argmax({e.args[0]}, axis={e.node.attr('axes')[0]}, out={e.out})"),
            grad=lambda G, n, g: (None,), jvp=no_jvp, lang=(("x", "axis"), {"axis": -1}),
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


register(Op("sum_to", "reduce", _sum_to_infer, impl=_sum_to_impl, emit=_sum_to_emit,
            grad=lambda G, n, g: (G("broadcast", g, shape=n.inputs[0].shape),), jvp=linear_jvp,
            noop=lambda ins, a: tuple(ins[0].shape) == tuple(a["shape"]),
            reducer=Reduction(("sum",), space=_sum_to_space),
            curvature=curv_selecting,
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
    return (sum_to(G, g, n.inputs[0].shape),)


register(Op("broadcast", "other", _bcast_infer, impl=_bcast_impl, emit=_bcast_emit, grad=_g_bcast,
            jvp=linear_jvp, index_map=_bcast_index,
            noop=lambda ins, a: not a.get("axes") and tuple(ins[0].shape) == tuple(a["shape"]),
            curvature=curv_selecting, doc="broadcast to a shape (with reduced `axes` re-inserted first)"))
