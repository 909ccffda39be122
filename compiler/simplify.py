"""Graph rewrites: small local functions node -> node | None, applied bottom-up
to a fixed point.

The numerically delicate ops (log_softmax, softplus) are stable by
construction; the rewrites here only *route* naive user formulas onto them.
Each rule is a named function in RULES so `netc compile --emit graph` can show
what ran, and each has a before/after test.
"""
from __future__ import annotations

from typing import Callable


from .evaluate import evaluate
from .graph import Graph, Node, toposort
from .ops import OPS

Rule = Callable[[Graph, Node], "Node | None"]


def _const(n: Node, value: float | None = None) -> bool:
    return n.op == "const" and (value is None or n.attr("value") == value)


def fold_constants(G: Graph, n: Node) -> Node | None:
    """An elementwise or reducing op over constants is a constant."""
    if n.op == "const" or not n.inputs or n.shape != () or not all(_const(i) for i in n.inputs):
        return None
    if OPS[n.op].kind not in ("elementwise", "reduce"):
        return None
    (value,) = evaluate([n], {})
    return G.const(float(value), n.dtype) if n.dtype.startswith("float") else None


def _same_shape(n: Node, x: Node) -> bool:
    return tuple(x.shape) == tuple(n.shape) and x.dtype == n.dtype


def _zero(n: Node) -> bool:
    """A constant 0, or a 0 broadcast to a shape."""
    return _const(n, 0.0) or (n.op == "broadcast" and _const(n.inputs[0], 0.0))


def identities(G: Graph, n: Node) -> Node | None:
    """x+0, 0+x, x-0, 0-x, x*0, x*1, 1*x, x/1, x^1, --x."""
    ins = n.inputs
    match n.op:
        case "add":
            for x, c in ((ins[0], ins[1]), (ins[1], ins[0])):
                if _zero(c) and _same_shape(n, x):
                    return x
        case "sub":
            if _zero(ins[1]) and _same_shape(n, ins[0]):
                return ins[0]
            if _zero(ins[0]) and _same_shape(n, ins[1]):
                return G("neg", ins[1], loc=n.loc)
        case "mul":
            for x, c in ((ins[0], ins[1]), (ins[1], ins[0])):
                if _zero(c) and n.shape != () and not _zero(x):
                    return G("broadcast", G.const(0.0, n.dtype), shape=n.shape, loc=n.loc)
                if _const(c, 1.0) and _same_shape(n, x):
                    return x
                if _const(c, -1.0) and _same_shape(n, x):
                    return G("neg", x, loc=n.loc)
        case "div":
            if _const(ins[1], 1.0) and _same_shape(n, ins[0]):
                return ins[0]
        case "pow":
            if _const(ins[1], 1.0) and _same_shape(n, ins[0]):
                return ins[0]
        case "neg":
            if ins[0].op == "neg" and _same_shape(n, ins[0].inputs[0]):
                return ins[0].inputs[0]
    return None


def negations(G: Graph, n: Node) -> Node | None:
    """Move negations outward so they cancel: (-a)*b -> -(a*b), a - (-b) -> a + b, a + (-b) -> a - b."""
    if n.op in ("mul", "div"):
        a, b = n.inputs
        if a.op == "neg":
            return G("neg", G(n.op, a.inputs[0], b, loc=n.loc), loc=n.loc)
        if b.op == "neg":
            return G("neg", G(n.op, a, b.inputs[0], loc=n.loc), loc=n.loc)
    if n.op == "sub" and n.inputs[1].op == "neg":
        return G("add", n.inputs[0], n.inputs[1].inputs[0], loc=n.loc)
    if n.op == "add" and n.inputs[1].op == "neg":
        return G("sub", n.inputs[0], n.inputs[1].inputs[0], loc=n.loc)
    if n.op == "add" and n.inputs[0].op == "neg":
        return G("sub", n.inputs[1], n.inputs[0].inputs[0], loc=n.loc)
    return None


def log_of_softmax(G: Graph, n: Node) -> Node | None:
    """log(softmax(y)) -> log_softmax(y): finite for any logits."""
    if n.op == "log" and n.inputs[0].op == "softmax":
        s = n.inputs[0]
        return G("log_softmax", s.inputs[0], axes=s.attr("axes"), loc=n.loc)
    return None


def log_of_sigmoid(G: Graph, n: Node) -> Node | None:
    """log(sigmoid(a)) -> -softplus(-a);  log(1 - sigmoid(a)) -> -softplus(a)."""
    if n.op != "log":
        return None
    x = n.inputs[0]
    if x.op == "sigmoid":
        return G("neg", G("softplus", G("neg", x.inputs[0])), loc=n.loc)
    if x.op == "sub" and _const(x.inputs[0], 1.0) and x.inputs[1].op == "sigmoid":
        return G("neg", G("softplus", x.inputs[1].inputs[0]), loc=n.loc)
    return None


def softplus_forms(G: Graph, n: Node) -> Node | None:
    """log(1 + exp(a)) and log1p(exp(a)) -> softplus(a); log(exp(a)) -> a."""
    if n.op == "log1p" and n.inputs[0].op == "exp":
        return G("softplus", n.inputs[0].inputs[0], loc=n.loc)
    if n.op != "log":
        return None
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


def scale_into_matmul(G: Graph, n: Node) -> Node | None:
    """s * (a @ b) -> (s * a) @ b or a @ (s * b) for a scalar s, scaling the smaller
    operand when it is smaller than the product (the weight gradient lr * x'd:
    one pass over the batch instead of one over the weight matrix)."""
    if n.op != "mul":
        return None
    for s, m in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])):
        if s.shape == () and m.op == "matmul" and s.dtype == m.dtype:
            a, b = m.inputs
            small = min((a, b), key=_size)
            if _size(small) * 2 <= _size(m):
                a2 = G("mul", s, a, loc=n.loc) if small is a else a
                b2 = G("mul", s, b, loc=n.loc) if small is b else b
                return G("matmul", a2, b2, loc=n.loc)
    return None


RULES: dict[str, Rule] = {
    "fold_constants": fold_constants,
    "identities": identities,
    "negations": negations,
    "log_of_softmax": log_of_softmax,
    "log_of_sigmoid": log_of_sigmoid,
    "softplus_forms": softplus_forms,
    "scale_into_matmul": scale_into_matmul,
}


def simplify(G: Graph, roots: list[Node], rules: dict[str, Rule] | None = None,
             fired: dict[str, int] | None = None) -> list[Node]:
    """Rewrite the graph under `roots` bottom-up until no rule fires."""
    rules = RULES if rules is None else rules
    done: dict[int, Node] = {}  # node id -> its simplified form (which maps to itself)

    def pending(root: Node) -> list[Node]:
        """Nodes under root not simplified yet, inputs first (never walks into done ones)."""
        order, seen, stack = [], set(), [(root, 0)]
        while stack:
            n, i = stack.pop()
            if i == 0 and (n.id in done or n.id in seen):
                continue
            if i < len(n.inputs):
                stack.append((n, i + 1))
                c = n.inputs[i]
                if c.id not in done and c.id not in seen:
                    stack.append((c, 0))
            else:
                seen.add(n.id)
                order.append(n)
        return order

    def settle(root: Node) -> Node:
        for n in pending(root):
            m = G.rebuild(n, [done[i.id] for i in n.inputs])
            for _ in range(100):
                for name, rule in rules.items():
                    r = rule(G, m)
                    if r is not None and r is not m:
                        if fired is not None:
                            fired[name] = fired.get(name, 0) + 1
                        m = settle(r)
                        break
                else:
                    break
            done[n.id] = m
            done[m.id] = m
        return done[root.id]

    return [settle(r) for r in roots]


def node_count(roots: list[Node]) -> int:
    return len(toposort(roots))


