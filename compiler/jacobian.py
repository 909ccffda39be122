"""Per-example Jacobians as ordinary graph expressions.

`jacobian(G, y, x)` for y [B, m] and x [B, n] builds J [B, m, n] with
J[b, j, i] = d y[b, j] / d x[b, i] out of broadcasts and elementwise products,
walking forward from x. Nothing here is special to any penalty: because J is a
product of broadcast factors, the simplifier can contract sums over it (the
squared Frobenius norm of an elementwise nonlinearity over an affine map
becomes sum_j f'(a_j)^2 sum_i W_ij^2 without ever forming [B, m, n]).
"""
from __future__ import annotations

from .errors import SpecError
from .graph import Graph, Node, shape_str, toposort
from .ops import OPS


def jacobian(G: Graph, y: Node, x: Node, loc=None) -> Node:
    if y.ndim != 2 or x.ndim != 2 or y.shape[0] is not None or x.shape[0] is not None:
        raise SpecError(f"jacobian(y, x) needs batched vectors [B, m] and [B, n], got "
                        f"{shape_str(y.shape)} and {shape_str(x.shape)}", loc)
    n = x.shape[1]
    # per node: ("diag", d) with J = diag(d) (d None = identity), or ("full", J [B, k, n])
    jac: dict[int, tuple[str, Node | None]] = {x.id: ("diag", None)}
    for node in toposort([y]):
        if node.id in jac or not any(i.id in jac for i in node.inputs):
            continue
        step = _step(G, node, jac, n, loc)
        if step is not None:  # None: the node does not depend on x (e.g. noise shaped like x)
            jac[node.id] = step
    if y.id not in jac:
        return G("broadcast", G.const(0.0, y.dtype), shape=(None, y.shape[1], n))
    kind, j = jac[y.id]
    if kind == "full":
        return j
    raise SpecError("jacobian(y, x) of an elementwise function of x is diagonal; "
                    "write the diagonal d y/d x directly", loc)


def _partials(G: Graph, node: Node) -> list[Node | None]:
    """d node / d input_k elementwise, shaped like the node (the grad rule at g = 1)."""
    ones = G("broadcast", G.const(1.0, node.dtype), shape=node.shape)
    return list(OPS[node.op].grad(G, node, ones))


def _step(G, node, jac, n, loc):
    spec = OPS[node.op]
    deps = [i for i in node.inputs if i.id in jac]
    if spec.alias is not None and node.shape == node.inputs[spec.alias].shape:
        # the node is that input (training_only's training value)
        return jac.get(node.inputs[spec.alias].id)
    if spec.kind != "elementwise" and spec.grad is not None:
        ones = G("broadcast", G.const(1.0, node.dtype), shape=node.shape) if node.dtype.startswith("float") else None
        if ones is not None and all(r is None for r in spec.grad(G, node, ones)):
            return None  # no derivative flows: constant with respect to x
    if spec.kind == "elementwise":
        parts = _partials(G, node)
        terms = []
        for inp, p in zip(node.inputs, parts):
            if inp.id not in jac or p is None:
                continue
            if tuple(inp.shape) != tuple(node.shape):
                raise SpecError(f"jacobian: '{node.op}' broadcasts its x-dependent operand "
                                f"{shape_str(inp.shape)} to {shape_str(node.shape)}; not supported", node.loc or loc)
            kind, j = jac[inp.id]
            terms.append(_scale(G, p, kind, j, n))
        if not terms:
            return ("diag", G("broadcast", G.const(0.0, node.dtype), shape=node.shape))
        kinds = {k for k, _ in terms}
        if kinds == {"diag"}:
            total = terms[0][1]
            for _, t in terms[1:]:
                total = G("add", total, t)
            return ("diag", total)
        total = None
        for k, t in terms:
            t = _full(G, t, n) if k == "diag" else t
            total = t if total is None else G("add", total, t)
        return ("full", total)
    if spec.jacobian is not None and [d.id for d in deps] == [node.inputs[0].id]:
        return ("full", spec.jacobian(G, node, jac[node.inputs[0].id], n, loc))
    raise SpecError(f"jacobian cannot go through '{node.op}' yet", node.loc or loc)


def _scale(G, p: Node, kind: str, j: Node | None, n: int):
    """p (elementwise partial, [B, k]) times the input's Jacobian."""
    if kind == "diag":
        return ("diag", p if j is None else G("mul", p, j))
    k = p.shape[1]
    return ("full", G("mul", G("broadcast", p, shape=(None, k, n), axes=(2,)), j))


def _full(G, d: Node, n: int) -> Node:
    raise SpecError("jacobian: mixing a diagonal and a full Jacobian is not supported yet", d.loc)
