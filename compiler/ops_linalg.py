"""Linear algebra: the matrix product and the transpose."""
from __future__ import annotations

from .errors import SpecError
from .node import shape_str
from .ops_core import Op, curv_selecting, dim_expr, float_of, linear_jvp, register, tangent_sum
from .rewrite import rule


def _matmul_infer(G, ins, a, loc):
    x, w = ins
    if x.ndim != 2 or w.ndim != 2:
        raise SpecError(f"@ needs two matrices, got {shape_str(x.shape)} @ {shape_str(w.shape)}", loc)
    if x.shape[1] != w.shape[0]:
        raise SpecError(f"shapes {shape_str(x.shape)} and {shape_str(w.shape)} do not match in @ "
                        f"(inner dimensions {dim_expr(x.shape[1])} and {dim_expr(w.shape[0])})", loc)
    return (x.shape[0], w.shape[1]), float_of(G, ins)


def _j_matmul(G, n, ts):
    x, w = n.inputs
    tx, tw = ts
    return tangent_sum(G, n, None if tx is None else G("matmul", tx, w),
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


register(Op("matmul", "matmul", _matmul_infer, impl=lambda xs, a, B: xs[0] @ xs[1],
            emit=lambda e: e(f"np.matmul({e.args[0]}, {e.args[1]}, out={e.out})"),
            grad=lambda G, n, g: (G("matmul", g, G("transpose", n.inputs[1])),
                                  G("matmul", G("transpose", n.inputs[0]), g)),
            jvp=_j_matmul, lang=(("x", "y"), {}), curvature=_curv_matmul, jacobian=_jac_matmul,
            doc="matrix product (`@`)"))


def _transpose_infer(G, ins, a, loc):
    x = ins[0]
    if x.ndim != 2:
        raise SpecError(f"transpose needs a matrix, got {shape_str(x.shape)}", loc)
    return (x.shape[1], x.shape[0]), x.dtype


register(Op("transpose", "view", _transpose_infer, impl=lambda xs, a, B: xs[0].T,
            emit=lambda e: f"{e.args[0]}.T", grad=lambda G, n, g: (G("transpose", g),),
            jvp=linear_jvp, index_map=lambda n, idx: [(0, (idx[1], idx[0]))],
            lang=(("x",), {}), curvature=curv_selecting, doc="matrix transpose (`W'` or `W.T`)"))


@rule("transpose_twice", ("transpose",), stage="build")
def _transpose_twice(G, op, ins, a, loc=None):
    """x'' is x."""
    return ins[0].inputs[0] if ins[0].op == "transpose" else None
