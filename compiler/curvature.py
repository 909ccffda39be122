"""Diagonal curvature: LeCun's "bbprop" (Efficient BackProp §7.3-7.4).

A second backward pass that carries h = (an approximation of) d2L/dz2 for
every node z, elementwise, next to the gradient g = dL/dz:

- below the network's output (the layers): Gauss-Newton, h_u = J^2 h_z, with
  squared Jacobians (squared weights in the backward sums) and the f'' terms
  dropped;
- from the output to the loss: exact second derivatives (h_u = J^2 h_z +
  d2z/du2 g_z), so the loss's own curvature (e.g. p(1-p) of softmax NLL) is
  right.

Cross terms between units are dropped everywhere (the diagonal
approximation). Elementwise units are handled here, generically (their
partials squared); every other op says how h flows through it in its entry's
`curvature` rule (compiler/ops.py). The result is a graph: one node per parameter, compiled and
run like any other (stochastic diagonal Levenberg-Marquardt feeds on it).
"""
from __future__ import annotations

from .differentiate import grad
from .errors import SpecError
from .graph import Graph, Node, depends_on, toposort
from .ops import OPS

def gauss_newton_diag(G: Graph, loss: Node, params: list[Node], output: Node | None = None) -> list[Node]:
    """Per-parameter diagonal curvature of `loss` (Gauss-Newton below `output`)."""
    order = toposort([loss])
    on_path = depends_on(order, params)
    network = {n.id for n in toposort([output])} if output is not None else set()
    consumers: dict[int, set[int]] = {}
    for n in order:
        for i in n.inputs:
            consumers.setdefault(i.id, set()).add(n.id)
    path_nodes = [n for n in order if n.id in on_path]
    grads = dict(zip((n.id for n in path_nodes), grad(G, loss, path_nodes)))
    h: dict[int, list[Node]] = {loss.id: [G.const(0.0, loss.dtype)]}
    absorbed: set[int] = set()
    for z in reversed(order):
        parts = h.get(z.id)
        if not parts or z.id not in on_path or not z.inputs or z.id in absorbed:
            continue
        hz = _total(G, parts)
        h[z.id] = [hz]
        exact = z.id not in network
        if OPS[z.op].kind == "elementwise":
            inner, inputs = _region(z, on_path, consumers, network, exact)
            absorbed |= inner
            flows = _region_rule(G, z, inputs, hz, grads.get(z.id) if exact else None)
        else:
            inputs = list(z.inputs)
            flows = _rule(G, z, hz, grads.get(z.id), exact)
        for inp, hu in zip(inputs, flows):
            if hu is not None and inp.id in on_path:
                h.setdefault(inp.id, []).append(hu)
    return [_total(G, h[p.id]) if p.id in h else G("broadcast", G.const(0.0, p.dtype), shape=p.shape)
            for p in params]


def _region(z: Node, on_path, consumers, network, exact):
    """The elementwise subgraph rooted at z that computes one function per element
    (e.g. softsign = a / (1 + |a|)): its inner nodes and its inputs on the path.
    bbprop squares the derivative of the whole unit, not of each piece."""
    inner: set[int] = set()
    members = {z.id}
    inputs: list[Node] = []
    stack = [z]
    while stack:
        n = stack.pop()
        for i in n.inputs:
            if i.id not in on_path or i.id in members or i in inputs:
                continue
            same_part = (i.id not in network) == exact
            if (OPS[i.op].kind == "elementwise" and i.inputs and tuple(i.shape) == tuple(z.shape)
                    and same_part and consumers.get(i.id, set()) <= members):
                members.add(i.id)
                inner.add(i.id)
                stack.append(i)
            else:
                inputs.append(i)
    return inner, inputs


def _substitute(G: Graph, root: Node, mapping: dict[int, Node]) -> Node:
    memo = dict(mapping)
    for n in toposort([root]):
        if n.id not in memo:
            memo[n.id] = G.rebuild(n, [memo.get(i.id, i) for i in n.inputs])
    return memo[root.id]


def _region_rule(G: Graph, z: Node, inputs: list[Node], hz: Node, gz: Node | None) -> list[Node]:
    """h_u = sum_to(F_u^2 h_z [+ F_uu g_z]) for z = F(u, ...) elementwise, with F's partials
    taken on stand-in leaves so other paths to u do not leak in."""
    leaves = [G("input", name=f"__bbprop.{z.id}.{k}", shape=z.shape, dtype=u.dtype)
              for k, u in enumerate(inputs)]
    zl = _substitute(G, z, {u.id: leaf for u, leaf in zip(inputs, leaves)})
    back = {leaf.id: (u if tuple(u.shape) == tuple(z.shape) else G("broadcast", u, shape=z.shape))
            for u, leaf in zip(inputs, leaves)}
    firsts = grad(G, G("sum", zl), leaves)
    out = []
    for u, leaf, d in zip(inputs, leaves, firsts):
        term = G("mul", _sq(G, d), hz)
        if gz is not None:
            (d2,) = grad(G, G("sum", d), [leaf])
            term = G("add", term, G("mul", d2, gz))
        out.append(G("sum_to", _substitute(G, term, back), shape=u.shape))
    return out


def _total(G, parts):
    t = parts[0]
    for p in parts[1:]:
        t = G("add", t, p)
    return t


def _sq(G, x):
    return G("mul", x, x)


def _rule(G: Graph, z: Node, hz: Node, gz: Node | None, exact: bool) -> list[Node | None]:
    """h for z's inputs by its op's `curvature` rule (gz only where the pass is exact)."""
    spec = OPS[z.op]
    if spec.grad is None:
        raise SpecError(f"'{z.op}' has no derivative", z.loc)
    if spec.curvature is not None:
        return list(spec.curvature(G, z, hz, gz if exact else None))
    if all(r is None for r in spec.grad(G, z, hz)):
        return [None] * len(z.inputs)  # not differentiable: no curvature flows
    raise SpecError(f"diagonal curvature (bbprop) does not handle '{z.op}' yet", z.loc)
