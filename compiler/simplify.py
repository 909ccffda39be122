"""Graph rewrites: small local functions node -> node | None, applied bottom-up
to a fixed point.

The numerically delicate ops (log_softmax, softplus) are stable by
construction; the rewrites here only *route* naive user formulas onto them.
Each rule is registered by name and root op in the one rewrite table
(`rewrite.RULES`, which also holds the op table's build-stage canonical forms),
so `netc compile` can say what fired; each has a before/after test.
"""
from __future__ import annotations

from .evaluate import evaluate
from .graph import Graph, Node
from .node import toposort
from .ops import OPS
from .rewrite import RULES, Rule, by_op, index, rule

__all__ = ["RULES", "Rule", "node_count", "simplify"]


def _of_kind(*kinds: str) -> tuple[str, ...]:
    """The ops of these kinds (a rule that fires on, say, any elementwise op)."""
    return tuple(name for name, op in OPS.items() if op.kind in kinds)


def _const(n: Node, value: float | None = None) -> bool:
    return n.op == "const" and (value is None or n.attr("value") == value)


@rule("fold_constants", _of_kind("elementwise", "reduce"))
def fold_constants(G: Graph, n: Node) -> Node | None:
    """An elementwise or reducing op over constants is a constant."""
    if not n.inputs or n.shape != () or not all(_const(i) for i in n.inputs):
        return None
    (value,) = evaluate([n], {})
    return G.const(float(value), n.dtype) if n.dtype.startswith("float") else None


def _same_shape(n: Node, x: Node) -> bool:
    return tuple(x.shape) == tuple(n.shape) and x.dtype == n.dtype


def _zero(n: Node) -> bool:
    """A constant 0, or a 0 broadcast to a shape."""
    return _const(n, 0.0) or (n.op == "broadcast" and _const(n.inputs[0], 0.0))


def _one(n: Node) -> bool:
    return _const(n, 1.0) or (n.op == "broadcast" and _const(n.inputs[0], 1.0))


@rule("identities", "add")
def _plus_zero(G: Graph, n: Node) -> Node | None:
    """x+0, 0+x -> x."""
    ins = n.inputs
    for x, c in ((ins[0], ins[1]), (ins[1], ins[0])):
        if _zero(c) and _same_shape(n, x):
            return x
    return None


@rule("identities", "sub")
def _minus_zero(G: Graph, n: Node) -> Node | None:
    """x-0 -> x, 0-x -> -x."""
    ins = n.inputs
    if _zero(ins[1]) and _same_shape(n, ins[0]):
        return ins[0]
    if _zero(ins[0]) and _same_shape(n, ins[1]):
        return G("neg", ins[1], loc=n.loc)
    return None


@rule("identities", "mul")
def _times_constant(G: Graph, n: Node) -> Node | None:
    """x*0 -> 0, x*1 and 1*x -> x, x*-1 -> -x."""
    ins = n.inputs
    for x, c in ((ins[0], ins[1]), (ins[1], ins[0])):
        if _zero(c) and n.shape != () and not _zero(x):
            return G("broadcast", G.const(0.0, n.dtype), shape=n.shape, loc=n.loc)
        if _one(c) and _same_shape(n, x):
            return x
        if _const(c, -1.0) and _same_shape(n, x):
            return G("neg", x, loc=n.loc)
    return None


@rule("identities", ("div", "pow"))
def _by_one(G: Graph, n: Node) -> Node | None:
    """x/1, x^1 -> x."""
    if _const(n.inputs[1], 1.0) and _same_shape(n, n.inputs[0]):
        return n.inputs[0]
    return None


@rule("identities", "neg")
def _double_negation(G: Graph, n: Node) -> Node | None:
    """--x -> x."""
    x = n.inputs[0]
    if x.op == "neg" and _same_shape(n, x.inputs[0]):
        return x.inputs[0]
    return None


@rule("identities", "broadcast")
def _broadcast_of_broadcast_scalar(G: Graph, n: Node) -> Node | None:
    """A broadcast of a broadcast scalar is one broadcast of the scalar."""
    x = n.inputs[0]
    if x.op == "broadcast" and x.inputs[0].shape == ():
        return G("broadcast", x.inputs[0], shape=n.attr("shape"), loc=n.loc)
    return None


@rule("negations", ("mul", "div"))
def _negated_factor(G: Graph, n: Node) -> Node | None:
    """Negations move outward so they cancel: (-a)*b, a*(-b) -> -(a*b) (and for /)."""
    a, b = n.inputs
    if a.op == "neg":
        return G("neg", G(n.op, a.inputs[0], b, loc=n.loc), loc=n.loc)
    if b.op == "neg":
        return G("neg", G(n.op, a, b.inputs[0], loc=n.loc), loc=n.loc)
    return None


@rule("negations", "sub")
def _minus_negated(G: Graph, n: Node) -> Node | None:
    """a - (-b) -> a + b."""
    if n.inputs[1].op == "neg":
        return G("add", n.inputs[0], n.inputs[1].inputs[0], loc=n.loc)
    return None


@rule("negations", "add")
def _plus_negated(G: Graph, n: Node) -> Node | None:
    """a + (-b) -> a - b;  (-a) + b -> b - a."""
    if n.inputs[1].op == "neg":
        return G("sub", n.inputs[0], n.inputs[1].inputs[0], loc=n.loc)
    if n.inputs[0].op == "neg":
        return G("sub", n.inputs[1], n.inputs[0].inputs[0], loc=n.loc)
    return None


@rule("log_of_softmax", ("log",))
def log_of_softmax(G: Graph, n: Node) -> Node | None:
    """log(softmax(y)) -> log_softmax(y): finite for any logits."""
    if n.inputs[0].op == "softmax":
        s = n.inputs[0]
        return G("log_softmax", s.inputs[0], axes=s.attr("axes"), loc=n.loc)
    return None


@rule("log_of_sigmoid", ("log",))
def log_of_sigmoid(G: Graph, n: Node) -> Node | None:
    """log(sigmoid(a)) -> -softplus(-a);  log(1 - sigmoid(a)) -> -softplus(a)."""
    x = n.inputs[0]
    if x.op == "sigmoid":
        return G("neg", G("softplus", G("neg", x.inputs[0])), loc=n.loc)
    if x.op == "sub" and _const(x.inputs[0], 1.0) and x.inputs[1].op == "sigmoid":
        return G("neg", G("softplus", x.inputs[1].inputs[0]), loc=n.loc)
    return None


@rule("softplus_forms", "log1p")
def _log1p_of_exp(G: Graph, n: Node) -> Node | None:
    """log1p(exp(a)) -> softplus(a)."""
    if n.inputs[0].op == "exp":
        return G("softplus", n.inputs[0].inputs[0], loc=n.loc)
    return None


@rule("softplus_forms", "log")
def _log_of_exp(G: Graph, n: Node) -> Node | None:
    """log(1 + exp(a)) -> softplus(a); log(exp(a)) -> a."""
    x = n.inputs[0]
    if x.op == "exp":
        return x.inputs[0]
    if x.op == "add":
        for c, e in ((x.inputs[0], x.inputs[1]), (x.inputs[1], x.inputs[0])):
            if _const(c, 1.0) and e.op == "exp":
                return G("softplus", e.inputs[0], loc=n.loc)
    return None


NOMINAL_BATCH = 128  # the cost model's guess at the batch size


def _size(n: Node) -> int:
    size = 1
    for d in n.shape:
        size *= NOMINAL_BATCH if d is None else d
    return size


@rule("scale_into_matmul", ("mul",))
def scale_into_matmul(G: Graph, n: Node) -> Node | None:
    """s * (a @ b) -> (s * a) @ b or a @ (s * b) for a scalar s, scaling the smaller
    operand when it is smaller than the product (the weight gradient lr * x'd:
    one pass over the batch instead of one over the weight matrix)."""
    for s, m in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])):
        if s.shape == () and m.op == "matmul" and s.dtype == m.dtype:
            a, b = m.inputs
            small = min((a, b), key=_size)
            if _size(small) * 2 <= _size(m):
                a2 = G("mul", s, a, loc=n.loc) if small is a else a
                b2 = G("mul", s, b, loc=n.loc) if small is b else b
                return G("matmul", a2, b2, loc=n.loc)
    return None


def _two(n: Node) -> bool:
    return _const(n, 2.0)


@rule("square_of_product", ("pow",))
def square_of_product(G: Graph, n: Node) -> Node | None:
    """(a * b)^2 -> a^2 * b^2, so squares reach the factors of a structured product."""
    if _two(n.inputs[1]) and n.inputs[0].op == "mul":
        a, b = n.inputs[0].inputs
        return G("mul", G("pow", a, 2.0), G("pow", b, 2.0), loc=n.loc)
    return None


@rule("elementwise_through_layout", _of_kind("elementwise"))
def elementwise_through_layout(G: Graph, n: Node) -> Node | None:
    """f(broadcast(a)) -> broadcast(f(a)) and f(a') -> f(a)' for a unary elementwise f
    (or a power by a constant): compute on the smaller tensor, let transposes cancel."""
    if not n.inputs:
        return None
    if len(n.inputs) == 2 and not (n.op == "pow" and _const(n.inputs[1])):
        return None
    x = n.inputs[0]
    rest = n.inputs[1:]
    if x.op == "broadcast" and x.inputs[0].op != "const":
        return G("broadcast", G(n.op, x.inputs[0], *rest, loc=n.loc), shape=x.attr("shape"),
                 axes=x.attr("axes"), loc=n.loc)
    if x.op == "transpose":
        return G("transpose", G(n.op, x.inputs[0], *rest, loc=n.loc), loc=n.loc)
    return None


def _factors(n: Node) -> list[Node]:
    if n.op == "mul" and tuple(n.inputs[0].shape) == tuple(n.shape) == tuple(n.inputs[1].shape):
        return _factors(n.inputs[0]) + _factors(n.inputs[1])
    return [n]


def _missing_axis(f: Node) -> int | None:
    """For broadcast(a) to rank 3 from a rank-2 a: the one axis a lacks."""
    if f.op != "broadcast" or len(f.shape) != 3 or f.inputs[0].ndim != 2:
        return None
    axes = f.attr("axes")
    if axes:
        return axes[0] if len(axes) == 1 else None
    return 0


@rule("contract_sum", ("sum",))
def contract_sum(G: Graph, n: Node) -> Node | None:
    """sum over all axes (or over axes 1 and 2, per example) of a product of
    rank-2 tensors broadcast to rank 3 -> the same sum contracted on the small
    tensors: P[a,b] Q[b,c] R[a,c] -> sum(P * (R @ Q')), and the two-factor
    cases. The closed form of a squared Jacobian norm (its batch total, or its
    per-example values for `contractive`) falls out of this without an
    [a, b, c] tensor."""
    axes = n.attr("axes")
    if n.inputs[0].ndim != 3 or axes not in ((0, 1, 2), (1, 2)) or n.attr("keepdims"):
        return None
    groups: dict[int, Node] = {}
    for f in _factors(n.inputs[0]):
        ax = _missing_axis(f)
        if ax is None:
            return None
        groups[ax] = f.inputs[0] if ax not in groups else G("mul", groups[ax], f.inputs[0], loc=n.loc)
    P, Q, R = groups.get(2), groups.get(0), groups.get(1)  # P[a,b], Q[b,c], R[a,c]
    if P is not None and Q is not None and R is not None:
        inner = G("mul", P, G("matmul", R, G("transpose", Q)), loc=n.loc)  # [a, b]
    elif P is not None and Q is not None:
        inner = G("mul", P, G("sum", Q, axis=1), loc=n.loc)  # [a, b]
    elif P is not None and R is not None:
        inner = G("mul", G("sum", P, axis=1), G("sum", R, axis=1), loc=n.loc)  # [a]
    elif Q is not None and R is not None:
        inner = G("mul", R, G("sum", Q, axis=0), loc=n.loc)  # [a, c]
    else:
        return None
    if axes == (1, 2) and inner.ndim == 2:
        return G("sum", inner, axis=1, loc=n.loc)
    return inner if axes == (1, 2) else G("sum", inner, loc=n.loc)


def simplify(G: Graph, roots: list[Node], rules: dict[str, Rule] | None = None,
             fired: dict[str, int] | None = None) -> list[Node]:
    """Rewrite the graph under `roots` bottom-up until no rule fires.

    `rules`: a subset of the table (by name) to apply instead of all its
    simplify-stage rules; `fired` counts the rewrites by rule name."""
    table = by_op("simplify") if rules is None else index(rules.values())
    done: dict[int, Node] = {}  # node id -> its simplified form (which maps to itself)

    def settle(root: Node) -> Node:
        for n in toposort([root], known=done):  # only what is not simplified yet
            m = G.rebuild(n, [done[i.id] for i in n.inputs])
            for _ in range(100):
                for case in table.get(m.op, ()):
                    new = case.fn(G, m)
                    if new is not None and new is not m:
                        if fired is not None:
                            fired[case.name] = fired.get(case.name, 0) + 1
                        m = settle(new)
                        break
                else:
                    break
            done[n.id] = m
            done[m.id] = m
        return done[root.id]

    return [settle(r) for r in roots]


def node_count(roots: list[Node]) -> int:
    return len(toposort(roots))
