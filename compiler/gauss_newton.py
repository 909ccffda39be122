"""The loss's curvature as compiled functions, for diagnostics (`netc hessian`):
Gauss-Newton-vector products and the bbprop diagonal of any spec.

The Gauss-Newton matrix is the one bbprop's diagonal approximates
(compiler/curvature.py): G = J^T H_z J, with z the values where the loss leaves
the network (the nodes of the output's subgraph that the loss's own part reads;
a parameter read by the loss directly, as in a weight penalty, is its own z with
J = I), J = dz/dw and H_z the exact Hessian of the loss in z. G is positive
semi-definite wherever the loss is convex in z (mse, nll of softmax).

G v is built from reverse-mode derivatives only: J v by differentiating
J^T u = d<z, u>/dw against v with respect to the stand-in u (linear in u, so
u drops out), H_z w as the derivative of <dL/dz, w> with z a stand-in leaf,
then J^T of that. Never forming J or H.
"""
from __future__ import annotations

from .curvature import gauss_newton_diag
from .differentiate import grad
from .errors import NetcError
from .graph import Graph, Node, depends_on, toposort
from .lower_numpy import Function
from .ops import expected
from .simplify import simplify


def curvature_diagonal_function(prog) -> Function:
    """The bbprop diagonal (Gauss-Newton, cross terms between units dropped) of the
    mean loss, per parameter: the program's own where its method keeps one."""
    _need_loss(prog)
    G, params = prog.spec.graph, list(prog.spec.params.values())
    curv = expected(G, simplify(G, gauss_newton_diag(G, prog.loss, params, prog.output)))
    return prog.function(curv, _used(prog.spec.feeds, curv), name="curvature_diagonal")


def gauss_newton_vector_function(prog) -> Function:
    """gv(x, t, v_1..v_k) = G v per parameter, G the Gauss-Newton matrix of the mean loss."""
    _need_loss(prog)
    spec, G = prog.spec, prog.spec.graph
    params = list(spec.params.values())
    zs = _frontier(prog.loss, prog.output, params)
    vs = [G("input", name=f"__v.{p.name}", shape=p.shape, dtype=p.dtype) for p in params]
    # J v: differentiate J^T u (linear in the stand-ins u) against v, with respect to u
    us = [G("input", name=f"__gn.u{k}", shape=z.shape, dtype=z.dtype) for k, z in enumerate(zs)]
    jt_u = grad(G, _dot(G, zs, us), params)
    jv = grad(G, _dot(G, jt_u, vs), us)
    # H_z w: the loss with each z a leaf, differentiated twice
    zl = [G("input", name=f"__gn.z{k}", shape=z.shape, dtype=z.dtype) for k, z in enumerate(zs)]
    loss_z = _replace(G, [prog.loss], dict(zip((z.id for z in zs), zl)))[0]
    ws = [G("input", name=f"__gn.w{k}", shape=z.shape, dtype=z.dtype) for k, z in enumerate(zs)]
    h_w = grad(G, _dot(G, grad(G, loss_z, zl), ws), zl)
    # back into the graph: z for its leaf, J v for w, then J^T of that (u := H_z J v)
    h_jv = _replace(G, h_w, {**{l.id: z for l, z in zip(zl, zs)}, **{w.id: j for w, j in zip(ws, jv)}})
    gv = _replace(G, jt_u, {u.id: h for u, h in zip(us, h_jv)})
    gv = expected(G, simplify(G, gv))
    left = {n.name for n in toposort(gv) if n.op == "input" and n.name.startswith("__gn.")}
    if left:  # u entered J v non-linearly: cannot happen for a derivative of <z, u>
        raise NetcError(f"Gauss-Newton products: stand-ins {sorted(left)} did not drop out")
    return prog.function(gv, _used(spec.feeds, gv) + vs, name="gauss_newton_vector")


def _need_loss(prog) -> None:
    if prog.loss is None or not prog.spec.params:
        raise NetcError(f"this spec has no {'loss' if prog.loss is None else 'parameters'}: "
                        f"there is no curvature to measure")


def _frontier(loss: Node, output: Node | None, params: list[Node]) -> list[Node]:
    """The network's values the loss's own part reads (see the module docstring)."""
    order = toposort([loss])
    on_path = depends_on(order, params)
    network = {n.id for n in toposort([output])} if output is not None else set()
    zs: dict[int, Node] = {}
    for n in order:
        if n.id in network or n.id not in on_path:
            continue
        for i in n.inputs:
            if i.id in on_path and (i.id in network or i.op == "param"):
                zs.setdefault(i.id, i)
    return list(zs.values())


def _dot(G: Graph, xs: list[Node], ys: list[Node]) -> Node:
    total = None
    for x, y in zip(xs, ys):
        term = G("sum", G("mul", x, y))
        total = term if total is None else G("add", total, term)
    return total


def _replace(G: Graph, roots: list[Node], mapping: dict[int, Node]) -> list[Node]:
    """`roots` rebuilt with the nodes of `mapping` replaced."""
    memo = dict(mapping)
    for n in toposort(roots):
        if n.id not in memo:
            memo[n.id] = G.rebuild(n, [memo.get(i.id, i) for i in n.inputs])
    return [memo[r.id] for r in roots]


def _used(feeds: list[Node], outputs: list[Node]) -> list[Node]:
    ids = {n.id for n in toposort(outputs)}
    return [f for f in feeds if f.id in ids]
