"""Where a refresh of transformed units [RV] must be compensated, read from the
graph, or why it cannot be (a located SpecError naming the consumer).

A `transformed` layer computes h = gamma * (tanh(a) + alpha * a + beta) with
a = sum_j s_j u_j @ W_j + b. Changing alpha, beta, gamma to new values gives

    h_old = r h_new - delta a - kappa,   r = g_old / g_new,
    delta = g_old (alpha_new - alpha_old),  kappa = g_old (beta_new - beta_old)

so every weighted sum that reads h keeps its value exactly if its weight rows
for h are scaled by r, it holds a term reading each u_j through a weight
(a shortcut: `shortcut(u, n)`, or u concatenated into its input) that absorbs
-delta (u_j @ W_j), and a bias that absorbs -(delta b + kappa). This module
finds, in the noise-free graph (what evaluation computes: dropout and other
noise at their expected value), every such sum, whatever the order of its
terms, through concat, dropout and scalar factors, and refuses a topology
where one of the three is missing or a weight it would change is read
elsewhere in the network's function.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netc.compiler.errors import SpecError
from netc.compiler.graph import Node, toposort
from netc.compiler.ops import expected
from netc.compiler.pipeline import Program


@dataclass(frozen=True)
class Segment:
    """`scale * node` read through rows [start, stop) of a weight."""
    node: Node
    scale: float
    start: int
    stop: int


@dataclass
class Term:
    """`scale * (segments side by side) @ weight` in a sum."""
    matmul: Node
    weight: str
    scale: float
    segments: list[Segment]


@dataclass
class Sum:
    root: Node
    terms: list[Term]
    bias: tuple[str, float] | None  # a rank-1 parameter added to the sum, and its factor
    internal: set[int] = field(default_factory=set)  # ids of the add/scale nodes inside the sum
    others: list[Node] = field(default_factory=list)  # leaves that are neither (a refresh leaves them)


@dataclass
class Consumer:
    """A sum that reads the layer: the term(s) reading h, and for each input segment
    of the layer the term and segment that read the same input (its shortcut)."""
    sum: Sum
    reads: list[tuple[Term, Segment]]  # (term, the segment of it that is h)
    shortcuts: list[tuple[Term, Segment]]  # one per input segment of the layer, in its order


@dataclass
class Layer:
    name: str
    h: Node  # the unit's output, noise-free graph
    pre: Node  # a
    inputs: Sum  # a decomposed: its terms (W_j, u_j) and bias
    consumers: list[Consumer]

    def key(self, what: str) -> str:
        return f"{self.name}.{what}"

    @property
    def input_segments(self) -> list[tuple[Term, Segment]]:
        return [(t, s) for t in self.inputs.terms for s in t.segments]


def find_layers(program: Program) -> list[Layer]:
    """Every transformed layer with the sums that read it, in graph order; a SpecError
    (located at the consumer) where a refresh could not keep the function."""
    return _Finder(program).layers()


class _Finder:
    def __init__(self, program: Program):
        self.spec = spec = program.spec
        G = spec.graph
        out = spec.output if spec.output is not None else spec.loss
        roots = [n for n in (out, spec.loss) if n is not None]
        self.roots = expected(G, roots)
        self.order = toposort(self.roots)
        self.users = _users(self.order)
        self.fn_users = _users(toposort(self.roots[:1]))  # the network's function only (penalties aside)
        self.position = {n.id: i for i, n in enumerate(self.order)}
        self.h_names: dict[int, str] = {}

    # -- the layers --------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        found = []
        for name, alpha in self.spec.buffers.items():
            if not name.endswith(".alpha"):
                continue
            p = name[: -len(".alpha")]
            gamma, beta = self.spec.buffers.get(f"{p}.gamma"), self.spec.buffers.get(f"{p}.beta")
            if gamma is None or beta is None or alpha.id not in self.position:
                continue
            h, pre = self._unit(alpha, beta, gamma)
            if h is None:
                raise self._error(f"transforms: the buffers of '{p}' are not used as a transformed unit "
                                  f"gamma * (tanh(a) + alpha * a + beta)", alpha)
            self.h_names[h.id] = p
            found.append((p, h, pre))
        found.sort(key=lambda f: self.position[f[1].id])
        layers = []
        for p, h, pre in found:
            inputs = self._sum(pre, single_users=False)
            if not inputs.terms or inputs.others:
                raise self._error(f"transforms: the pre-activation of '{p}' must be a sum of x @ W terms "
                                  f"and a bias", pre)
            layer = Layer(p, h, pre, inputs, [])
            layer.consumers = [self._consumer(layer, m) for m in self._reading_matmuls(layer)]
            layers.append(layer)
        return layers

    def _unit(self, alpha: Node, beta: Node, gamma: Node) -> tuple[Node | None, Node | None]:
        """h = gamma * (tanh(a) + alpha * a + beta), any order: (h, a), or (None, None)."""
        for h in self.users.get(gamma.id, []):
            if h.op != "mul":
                continue
            inner = h.inputs[1] if h.inputs[0] is gamma else h.inputs[0]
            leaves = _add_leaves(inner)
            if leaves is None or len(leaves) != 3 or beta not in leaves:
                continue
            tanh = next((n for n in leaves if n.op == "tanh"), None)
            lin = next((n for n in leaves if n.op == "mul" and alpha in n.inputs), None)
            if tanh is None or lin is None:
                continue
            a = lin.inputs[1] if lin.inputs[0] is alpha else lin.inputs[0]
            if tanh.inputs[0] is a:
                return h, a
        return None, None

    # -- the sums that read a layer ----------------------------------------------------
    def _reading_matmuls(self, layer: Layer) -> list[Node]:
        """The matmuls that read h through concat, scalar factors and the noise-free form of
        dropout; anything else that reads h is refused."""
        found, seen, stack = {}, set(), [layer.h]
        while stack:
            n = stack.pop()
            for u in self.users.get(n.id, []):
                if u.id in seen:
                    continue
                if u.op == "matmul" and u.inputs[0] is n and u.inputs[1] is not n:
                    if u.inputs[1].op != "param":
                        raise self._error(f"transforms: '{layer.name}' is read by a product with "
                                          f"{_what(u.inputs[1])}, not with a parameter: a refresh could "
                                          f"not rescale it", u)
                    found[u.id] = u
                elif _passes(u, n):
                    seen.add(u.id)
                    stack.append(u)
                else:
                    raise self._error(f"transforms: '{layer.name}' is read here by '{u.op}', not by a "
                                      f"weighted sum (x @ W + ... + b): a refresh of its alpha, beta, gamma "
                                      f"could not be compensated", u)
        if not found:
            raise self._error(f"transforms: nothing reads '{layer.name}' through a weight", layer.h)
        return sorted(found.values(), key=lambda m: self.position[m.id])

    def _consumer(self, layer: Layer, m: Node) -> Consumer:
        root = m
        while True:
            us = self.users.get(root.id, [])
            if len(us) != 1 or not _linear(us[0], root):
                break
            root = us[0]
        s = self._sum(root, single_users=True)
        reads = [(t, seg) for t in s.terms if t.matmul is m for seg in t.segments if seg.node is layer.h]
        shortcuts = []
        for _, seg in layer.input_segments:
            hit = next(((t, g) for t in s.terms for g in t.segments if g.node is seg.node), None)
            if hit is None:
                raise self._error(
                    f"transforms: this sum reads '{layer.name}' but not {self._name(seg.node)}, an input of "
                    f"'{layer.name}', so a refresh of its alpha could not be compensated here; add a "
                    f"shortcut from {self._name(seg.node)} to this sum (`+ shortcut(..., n)`, or concat it "
                    f"into this sum's input as `stack_transformed` does) [RV]", m)
            shortcuts.append(hit)
        if s.bias is None:
            raise self._error(f"transforms: this sum reads '{layer.name}' but has no bias to absorb the "
                              f"change of its beta", m)
        changed = [t for t, _ in reads + shortcuts]
        self._exclusive(layer, s, m, [(t.weight, {t.matmul.id}) for t in changed] + [(s.bias[0], s.internal)])
        return Consumer(s, reads, shortcuts)

    def _exclusive(self, layer: Layer, s: Sum, m: Node, names: list) -> None:
        """A weight or bias the refresh changes must be read only inside this sum."""
        terms = {t.matmul.id for t in s.terms}
        for name, allowed in names:
            node = self.spec.params[name]
            for u in self.fn_users.get(node.id, []):
                if u.id not in allowed or (u.id in terms and len(self.fn_users.get(u.id, [])) != 1):
                    raise self._error(f"transforms: a refresh of '{layer.name}' changes '{name}' in the sum "
                                      f"here, but '{name}' is also read elsewhere in the network", m)

    # -- sums and segments -------------------------------------------------------------
    def _sum(self, root: Node, single_users: bool) -> Sum:
        """`root` as sum of terms: matmuls with a parameter, and one rank-1 parameter (the
        bias); other leaves are left out (they do not change). With `single_users`, only
        nodes read by nothing else are opened."""
        terms, bias, internal, others = [], None, set(), []
        stack = [(root, 1.0)]
        while stack:
            n, scale = stack.pop()
            opened = n is root or not single_users or len(self.users.get(n.id, [])) == 1
            parts = _linear_parts(n) if opened else None
            if parts is not None:
                internal.add(n.id)
                stack.extend((x, scale * f) for x, f in parts)
            elif n.op == "matmul" and n.inputs[1].op == "param" and n.inputs[1].ndim == 2:
                terms.append(Term(n, n.inputs[1].name, scale, _segments(n.inputs[0])))
            elif n.op == "param" and n.ndim == 1 and bias is None:
                bias = (n.name, scale)
            elif n.op == "broadcast" and n.inputs[0].op == "param" and n.inputs[0].ndim == 1 and bias is None:
                internal.add(n.id)
                bias = (n.inputs[0].name, scale)
            elif _scalar(n) is None or _scalar(n) != 0.0:
                others.append(n)
        return Sum(root, terms, bias, internal, others)

    def _name(self, n: Node) -> str:
        if n.id in self.h_names:
            return f"'{self.h_names[n.id]}'"
        if n.op in ("input", "param", "state") and n.name:
            return f"'{n.name}'"
        return _what(n)

    def _error(self, message: str, node: Node) -> SpecError:
        loc = node.loc
        source = None
        if loc is not None:
            source = self.spec.source if loc.file == self.spec.file else next(
                (text for path, text in self.spec.used.items() if path.endswith(loc.file) or loc.file.endswith(path)),
                None)
        return SpecError(message, loc, source)


def _users(order: list[Node]) -> dict[int, list[Node]]:
    users: dict[int, list[Node]] = {}
    for n in order:
        for i in dict.fromkeys(n.inputs):  # a node reading x twice is one user
            users.setdefault(i.id, []).append(n)
    return users


def _scalar(n: Node) -> float | None:
    """The value of a constant scalar (or a broadcast one), else None."""
    if n.op == "broadcast":
        n = n.inputs[0]
    if n.op == "const" and n.ndim == 0:
        return float(n.attr("value"))
    return None


def _scaled(n: Node) -> tuple[Node, float] | None:
    """n = factor * x for a constant factor: (x, factor), else None."""
    if n.op == "neg":
        return n.inputs[0], -1.0
    if n.op in ("add", "sub") and _scalar(n.inputs[1]) == 0.0 and _scalar(n.inputs[0]) is None:
        return n.inputs[0], 1.0  # zero-mean noise at its expected value
    if n.op == "mul":
        for i, j in ((0, 1), (1, 0)):
            c = _scalar(n.inputs[i])
            if c is not None and _scalar(n.inputs[j]) is None:
                return n.inputs[j], c
    if n.op == "div":
        c = _scalar(n.inputs[1])
        if c is not None and c != 0 and _scalar(n.inputs[0]) is None:
            return n.inputs[0], 1.0 / c
    return None


def _linear_parts(n: Node) -> list[tuple[Node, float]] | None:
    """n as a linear combination of its inputs (add, sub, a constant factor), else None."""
    if n.op == "add":
        return [(n.inputs[0], 1.0), (n.inputs[1], 1.0)]
    if n.op == "sub":
        return [(n.inputs[0], 1.0), (n.inputs[1], -1.0)]
    s = _scaled(n)
    return None if s is None else [s]


def _linear(user: Node, n: Node) -> bool:
    parts = _linear_parts(user)
    return parts is not None and any(x is n for x, _ in parts) and user.shape == n.shape


def _passes(user: Node, n: Node) -> bool:
    """`user` hands `n` on unchanged but for a factor or by placing it beside others
    (concat along the features): what a weight can read through."""
    if user.op == "concat":
        return user.attr("axes") == (user.ndim - 1,)
    s = _scaled(user)
    return s is not None and s[0] is n


def _segments(n: Node, start: int = 0, scale: float = 1.0) -> list[Segment]:
    if n.op == "concat" and n.attr("axes") == (n.ndim - 1,):
        left, right = n.inputs
        return _segments(left, start, scale) + _segments(right, start + left.shape[-1], scale)
    s = _scaled(n)
    if s is not None:
        return _segments(s[0], start, scale * s[1])
    return [Segment(n, scale, start, start + n.shape[-1])]


def _add_leaves(n: Node) -> list[Node] | None:
    """The leaves of a tree of adds (at most three), else None."""
    if n.op != "add":
        return None
    out, stack = [], [n]
    while stack:
        x = stack.pop()
        if x.op == "add":
            stack.extend(x.inputs)
        else:
            out.append(x)
        if len(out) + len(stack) > 3:
            return None
    return out


def _what(n: Node) -> str:
    where = f" at {n.loc}" if n.loc is not None else ""
    return f"the {n.op} expression{where}"
