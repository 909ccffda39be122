"""The fused program's types (compiler/fuse.py builds them, renderers read them):
`Ex`, a tiny expression IR over iteration indices; `Kernel`, one launch with
its members, expressions, reads and writes; `Plan`, the kernels in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .fuse_stats import plan_stats
from .node import Node, shape_str
from .ops import OPS

FEED_OPS = ("input", "hyper")  # leaves a step is given as arguments, in `feeds` order
STATE_OPS = ("param", "state")  # leaves bound once from the state dict
LEAVES = FEED_OPS + STATE_OPS


class Unfusable(Exception):
    """A tentative kernel cannot compute what it is asked to (a merge is refused)."""


# ---------------------------------------------------------------------------
# the expression IR


@dataclass(frozen=True, eq=False)
class Ex:
    """A value inside a kernel at the current iteration point.

    kind: const (value) | scalar (a host scalar argument) | read (a buffer at
    `idx`) | op (node's elementwise op or index map over args) | index (the
    loop index of iteration dim idx[0]) | red (a reduction's value in this
    kernel) | rowop (a row op's value from its row reductions: the op's
    `Reduction.row`; args: the input) | scaled (args: alpha scalars..., the
    read of a gemm).
    `idx` is a tuple over the node's dims of iteration-dim numbers (None for
    a broadcast dim)."""
    kind: str
    node: Node | None
    idx: tuple = ()
    args: tuple = ()
    dtype: str = "float32"
    value: float | None = None

    @property
    def key(self):
        return (self.kind, self.node.id if self.node is not None else None, self.idx, self.value,
                tuple(a.key for a in self.args) if self.kind in ("index", "scaled") else ())


def project(idx: tuple, from_shape, to_shape) -> tuple:
    """numpy broadcasting, right-aligned: the index into an operand of `to_shape`."""
    off = len(from_shape) - len(to_shape)
    if off < 0:
        raise Unfusable("operand larger than its result")
    return tuple(None if to_shape[d] == 1 else idx[d + off] for d in range(len(to_shape)))


def ident(shape) -> tuple:
    return tuple(None if s == 1 else d for d, s in enumerate(shape))


# ---------------------------------------------------------------------------
# kernels and the plan


@dataclass(eq=False)
class Kernel:
    kind: str  # elementwise | reduce | gemm | library
    space: tuple  # iteration shape (reduce: the source shape S)
    axes: tuple = ()  # reduce: the reduced axes of S
    members: list[Node] = field(default_factory=list)  # computed here (schedule order)
    omap: dict = field(default_factory=dict)  # reduce: node id -> per dim, the S dim it indexes (or None)
    alpha: tuple = ()  # gemm: host scalar factors hoisted out of the operands
    operands: tuple = ()  # gemm: (a, b) nodes read (transposes are views)
    # filled in by finishing the plan
    id: int = -1
    writes: list[Node] = field(default_factory=list)  # members stored to memory
    in_place: dict = field(default_factory=dict)  # member id -> the leaf its value is written into
    reads: dict = field(default_factory=dict)  # node id -> node: buffers read
    read_idx: dict = field(default_factory=dict)  # node id -> set of index tuples read
    scalars: dict = field(default_factory=dict)  # node id -> host scalar node
    touched: set = field(default_factory=set)  # ids of all nodes this kernel computes (members + inlined)
    phase: str = ""  # forward | backward | update
    # reduce kernels: [(step kind, reducer, expr, j)]: the reducer's j-th `Reduction.steps`, in order
    steps: list = field(default_factory=list)
    s_out: list = field(default_factory=list)  # [(node, expr)] written over the source shape
    o_out: list = field(default_factory=list)  # [(node, expr)] written once per reduced point
    e_out: list = field(default_factory=list)  # elementwise: [(node, expr)]

    @property
    def ids(self) -> set:
        return {m.id for m in self.members}

    @property
    def layout(self) -> str:
        """reduce: `block` (a thread block per output point, threads along the
        reduced axes) when the last axis is reduced, else `thread` (a thread per
        output point, a serial loop: consecutive threads read consecutive addresses)."""
        if self.kind != "reduce":
            return ""
        return "block" if (len(self.space) - 1) in self.axes or not self.space else "thread"

    def locs(self) -> list[str]:
        return sorted({str(n.loc) for n in self._loc_nodes if n.loc is not None}, key=_loc_key)

    def lines(self) -> list[str]:
        """`file:line` of every source line this kernel covers."""
        return sorted({f"{n.loc.file}:{n.loc.line}" for n in self._loc_nodes if n.loc is not None},
                      key=_loc_key)

    _loc_nodes: list = field(default_factory=list, repr=False)

    def params(self) -> list[str]:
        """Names of the parameters and optimizer state this kernel reads or writes
        (they name the user's layer where the nodes carry no source line)."""
        leaves = list(self.reads.values()) + list(self.in_place.values())
        if self.kind == "gemm":
            leaves += [_root(x) for x in self.operands]
        return sorted({n.name for n in leaves if n.op in STATE_OPS})

    def describe(self) -> str:
        head = f"k{self.id} {self.kind}"
        if self.kind == "reduce":
            head += f" {shape_str(self.space)} over axes {list(self.axes)} ({self.layout} layout)"
        elif self.kind == "elementwise":
            head += f" {shape_str(self.space)}"
        names = ", ".join(f"%{m.id} {m.op}" for m in self.members)
        return f"{head}: {names}"


def _root(n: Node) -> Node:
    """The node whose storage a chain of index-map views reads."""
    while True:
        k = through(n)
        if k is None:
            return n
        n = n.inputs[k]


storage = _root  # the node whose buffer holds n's value (through free views)


def through(n: Node) -> int | None:
    """For a view that is one of its inputs (`alias`) or an index map of its one
    input (a transpose): that input's position. Else None (reshape, slice: a copy)."""
    spec = OPS[n.op]
    if spec.kind != "view":
        return None
    if spec.alias is not None:
        return spec.alias
    return 0 if spec.index_map is not None and len(n.inputs) == 1 else None


def _loc_key(s: str):
    parts = s.split(":")
    try:
        return (parts[0].startswith("<"), parts[0], *[int(p) for p in parts[1:]])
    except ValueError:
        return (True, s)


@dataclass
class Plan:
    order: list[Node]  # the schedule (topological)
    outputs: list[Node]
    updates: list[tuple[Node, Node]]
    kernels: list[Kernel]  # execution order
    host: list[Node]  # host scalars, in order
    inline: set  # ids of fusible nodes recomputed by their consumers
    alpha: dict  # matmul id -> tuple of host scalar factors
    absorbed: set  # ids of operand-scaling muls folded into a gemm's alpha
    materialized: set  # ids of non-leaf nodes stored to memory
    forward: set  # ids of nodes the outputs depend on (not the updates)
    producer: dict = field(default_factory=dict)  # member id -> kernel
    _pos: dict = field(default_factory=dict, repr=False)  # node id -> schedule position
    _out_ids: set = field(default_factory=set, repr=False)  # outputs and update values

    def kernel(self, node: Node) -> Kernel | None:
        return self.producer.get(node.id)

    def stats(self, batch: int = 128) -> dict:
        return plan_stats(self, batch)


def index(P: Plan) -> None:
    P.producer = {}
    for k in P.kernels:
        for m in k.members:
            P.producer[m.id] = k


def deps(P: Plan, K: Kernel) -> set:
    """id()s of the other kernels whose values K reads."""
    out = set()
    for r in K.reads:
        k = P.producer.get(r)
        if k is not None and k is not K:
            out.add(id(k))
    return out


def o_idx(K: Kernel, n: Node) -> tuple:
    return tuple(K.omap[n.id])


def reduced_axes(n: Node) -> tuple:
    return OPS[n.op].reducer.axes_map(n)[0]


def is_row(n: Node) -> bool:
    """A row op: a result over the source shape, built from row reductions (softmax)."""
    r = OPS[n.op].reducer
    return r is not None and r.row is not None
