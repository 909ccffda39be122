"""The normalized exponentials, stable by construction: log_softmax, softmax,
logsumexp (the rewrites only route naive user formulas onto them)."""
from __future__ import annotations

import numpy as np

from .ops_core import (
    Emit, Op, Reduction, axes_attrs, axis_shape_infer, reduced_shape, register,
    self_adjoint, unreduce)


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


_softmax_attrs = axes_attrs("softmax", -1, single=True, keepdims=False)
_log_softmax_attrs = axes_attrs("log_softmax", -1, single=True, keepdims=False)


def _same_shape_infer(normalize):
    def infer(G, ins, a, loc):
        normalize(ins, a, loc)
        return ins[0].shape, ins[0].dtype
    return infer


register(Op("log_softmax", "other", _same_shape_infer(_log_softmax_attrs),
            impl=_log_softmax_ref, emit=_log_softmax_emit, grad=_g_log_softmax,
            jvp=_j_log_softmax, scratch=_keep_scratch,
            reducer=Reduction(("max", "sumexp"), row="({x} - {0} - log({1}))"),
            canonical=_log_softmax_attrs,
            lang=(("x", "axis"), {"axis": -1}), curvature=_curv_log_softmax,
            doc="log(softmax(x)), computed stably"))
register(Op("softmax", "other", _same_shape_infer(_softmax_attrs),
            impl=lambda xs, a, B: np.exp(_log_softmax_ref(xs, a, B)), emit=_softmax_emit,
            grad=_g_softmax, jvp=self_adjoint(_g_softmax), scratch=_keep_scratch,
            reducer=Reduction(("max", "sumexp"), row="(exp({x} - {0}) / {1})"),
            canonical=_softmax_attrs,
            lang=(("x", "axis"), {"axis": -1}), curvature=_curv_softmax,
            doc="normalized exponential along `axis`"))


_logsumexp_attrs = axes_attrs("logsumexp", -1, single=True)


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
    return (G("mul", unreduce(G, n, g), G("softmax", x, axes=n.attr("axes"))),)


def _j_logsumexp(G, n, ts):
    x = n.inputs[0]
    return G("sum", G("mul", ts[0], G("softmax", x, axes=n.attr("axes"))), axes=n.attr("axes"),
             keepdims=n.attr("keepdims"))


register(Op("logsumexp", "other", axis_shape_infer(_logsumexp_attrs),
            impl=_logsumexp_ref, emit=_logsumexp_emit, grad=_g_logsumexp, jvp=_j_logsumexp,
            scratch=_keep_scratch, canonical=_logsumexp_attrs,
            reducer=Reduction(("max", "sumexp"), "{0} + log({1})"),
            lang=(("x", "axis", "keepdims"), {"axis": -1, "keepdims": False}),
            doc="logsumexp(x, axis = -1, keepdims = false): log(sum(exp(x))) along `axis`, "
                "computed stably; its derivative is softmax(x)"))
