"""Fusion: partition a lowered program into kernels (backend independent).

Input: the same (outputs, updates) a lowering gets. Output: a `Plan`, the
program as a short list of kernels in execution order:

- `gemm`: one matrix product. A scalar factor on an operand
  (`matmul(lr * x', d)`, which simplify pushes into matmuls) is hoisted out
  as the kernel's `alpha`: the product is stored unscaled and every reader
  multiplies by alpha inside its own fused kernel, so no kernel scales an
  operand.
- `elementwise`: a maximal group of elementwise ops over one iteration shape
  (inputs may broadcast into it; `broadcast`, `transpose` and `one_hot` are
  index maps, so they fuse too). Several outputs per kernel are allowed:
  the optimizer update of a parameter (velocity and parameter) is one kernel.
- `reduce`: one or more reductions over the same source shape and axes
  (sum, mean, sum_to, argmax, and log_softmax/softmax, which are a max and a
  sum of exponentials per row), each with its elementwise prologue, plus an
  elementwise epilogue on the reduced values (e.g. a bias gradient and the
  bias update) and, when the reduced axes include the last one (rows),
  elementwise outputs over the source shape that use the row results (the
  softmax backward).
- `library`: an op with no kernel template (run through its NumPy emitter,
  with CuPy standing in for NumPy on the GPU).

Scalars that depend only on hyperparameters, constants and the batch size
(`lr * 0.0357`, `count`) are computed on the host and passed as kernel
arguments. A node computed inside a kernel and read by no other kernel is
never materialized; a cheap elementwise node with several consumers is
recomputed inside each of them rather than stored.

Everything a backend needs is here: each kernel's expressions (`Ex`, a tiny
expression IR over iteration indices), the buffers it reads and writes, the
updates it writes in place, and the set of `.net` source locations it
covers. `lower_cuda` turns a plan into CUDA C and a Python step function.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .fuse_stats import format_stats, gemm_flops, kernel_bytes, plan_stats  # noqa: F401 (re-exported)
from .node import Node, shape_str, toposort
from .ops import OPS

LEAVES = ("input", "param", "state", "hyper")
HOST_OPS = ("const", "hyper", "count")
INLINE_BUDGET = 6  # ops a node with several consumers may cost and still be recomputed in each


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
        return sorted({n.name for n in leaves if n.op in ("param", "state")})

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


# ---------------------------------------------------------------------------
# building a plan


def plan(outputs: list[Node], updates=(), *, merge: bool = True) -> Plan:
    """Fuse the program computing `outputs` and applying `updates` into kernels."""
    outputs, updates = list(outputs), list(updates)
    order = _live(toposort(outputs + [u for _, u in updates]), outputs + [u for _, u in updates])
    pos = {n.id: i for i, n in enumerate(order)}
    users: dict[int, list[Node]] = {n.id: [] for n in order}
    for n in order:
        for i in dict.fromkeys(n.inputs):
            users[i.id].append(n)
    out_ids = {o.id for o in outputs} | {u.id for _, u in updates}

    host = _host_scalars(order)
    absorbed, alpha = _gemm_scales(order, users, host, out_ids)
    host_ids = {h.id for h in host}
    kinds = {n.id: _kind(n, host_ids, absorbed) for n in order}

    # which fusible nodes need a buffer of their own, and which are recomputed by consumers
    def needs_buffer(n: Node) -> bool:
        if n.id in out_ids:
            return True
        for u in users[n.id]:
            k = kinds[u.id]
            if k in ("gemm", "library") or u.id in absorbed:
                return True
            if k == "view" and needs_buffer(u):
                return True
        return False

    inline: set[int] = set()
    cost: dict[int, int] = {}
    for n in order:
        if kinds[n.id] != "fusible":
            continue
        c = 1 + sum(cost.get(i.id, 0) for i in n.inputs if i.id in inline)
        if needs_buffer(n):
            continue
        consumers = [u for u in users[n.id] if u.id not in absorbed]
        if len(consumers) <= 1 or c <= INLINE_BUDGET:
            inline.add(n.id)
            cost[n.id] = c

    kernels: list[Kernel] = []
    for n in order:
        k = kinds[n.id]
        if k == "gemm":
            a, b = (_strip_scale(i, absorbed)[0] for i in n.inputs)
            kernels.append(Kernel("gemm", n.shape, members=[n], alpha=alpha.get(n.id, ()), operands=(a, b)))
        elif k == "library":
            kernels.append(Kernel("library", n.shape, members=[n]))
        elif k == "reduce":
            src, axes = n.inputs[0].shape, _reduced_axes(n)
            kern = Kernel("reduce", tuple(src), axes, members=[n])
            if not _row(n):
                kern.omap[n.id] = OPS[n.op].reducer.axes_map(n)[1]
            kernels.append(kern)
        elif k == "fusible" and n.id not in inline:
            kernels.append(Kernel("elementwise", n.shape, members=[n]))

    P = Plan(order, outputs, updates, kernels, host, inline, alpha, absorbed, set(),
             set(x.id for x in toposort(outputs)) if updates else {n.id for n in order},
             _pos=pos, _out_ids=out_ids)
    _index(P)
    for kern in P.kernels:
        _walk(P, kern)
    if merge:
        _merge_all(P)
    _finish(P)
    return P


def _live(order: list[Node], roots: list[Node]) -> list[Node]:
    """The schedule without what only the ignored inputs of alias views need
    (`training_only(x, otherwise)` in a training step never computes `otherwise`)."""
    live, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n.id in live:
            continue
        live.add(n.id)
        k = OPS[n.op].alias
        stack.extend([n.inputs[k]] if k is not None else n.inputs)
    return [n for n in order if n.id in live]


def _host_scalars(order: list[Node]) -> list[Node]:
    """Scalars computed from hyperparameters, constants and the batch size only."""
    host, ids = [], set()
    for n in order:
        if n.op in HOST_OPS:
            ok = True
        elif n.shape == () and OPS[n.op].kind == "elementwise" and OPS[n.op].impl is not None:
            ok = all(i.id in ids for i in n.inputs)
        else:
            ok = False
        if ok:
            ids.add(n.id)
            host.append(n)
    return host


def _strip_scale(n: Node, absorbed: set) -> tuple[Node, tuple]:
    """The operand under an absorbed `mul(scalar, x)`, and the scalar."""
    if n.id not in absorbed:
        return n, ()
    a, b = n.inputs
    s, x = (a, b) if a.shape == () else (b, a)
    return x, (s,)


def _gemm_scales(order, users, host, out_ids):
    """Operand scalings `mul(s, x)` (s a host scalar) whose readers are all matmuls
    that only fused kernels read: fold s into those products' alpha."""
    host_ids = {n.id for n in host}

    def expression_readers_only(m: Node) -> bool:
        if m.id in out_ids:
            return False
        for u in users[m.id]:
            spec = OPS[u.op]
            if spec.kind in ("matmul", "view") or u.shape == ():
                return False  # a product, a view, or a scalar reader would need the scaled value
            if not (spec.kind == "elementwise" or spec.reducer or spec.index_map):
                return False
        return True

    hoistable = {m.id for m in order if OPS[m.op].kind == "matmul" and expression_readers_only(m)}

    def split(n: Node):
        """(scalar, operand) if n scales an operand of hoistable products only."""
        if n.op != "mul" or n.id in out_ids or n.shape == () or not users[n.id]:
            return None
        a, b = n.inputs
        s, x = (a, b) if a.shape == () else (b, a)
        if s.id not in host_ids or x.shape != n.shape:
            return None
        return (s, x) if all(u.id in hoistable for u in users[n.id]) else None

    absorbed: set[int] = set()
    alpha: dict[int, tuple] = {}
    for m in order:
        if m.id not in hoistable:
            continue
        factors = []
        for i in m.inputs:
            sx = split(i)
            if sx is not None:
                factors.append(sx[0])
                absorbed.add(i.id)
        if factors:
            alpha[m.id] = tuple(factors)
    return absorbed, alpha


def _kind(n: Node, host_ids: set, absorbed: set) -> str:
    if n.op in LEAVES:
        return "leaf"
    if n.op == "const" or n.id in host_ids:
        return "host"
    if n.id in absorbed:
        return "absorbed"
    spec = OPS[n.op]
    if spec.kind == "view":
        return "view" if through(n) is not None else "library"  # reshape, slice: a copy
    if spec.kind == "matmul":
        return "gemm"
    if spec.reducer is not None:
        return "reduce"
    if spec.index_map is not None or (spec.kind == "elementwise" and cuda_template(n.op) is not None):
        return "fusible"
    return "library"


def cuda_template(op: str) -> str | None:
    """The op's elementwise C template (ops.py), or None: then it runs as a library call."""
    return OPS[op].cuda


def _reduced_axes(n: Node) -> tuple:
    return OPS[n.op].reducer.axes_map(n)[0]


def _row(n: Node) -> bool:
    """A row op: a result over the source shape, built from row reductions (softmax)."""
    r = OPS[n.op].reducer
    return r is not None and r.row is not None


def _index(P: Plan) -> None:
    P.producer = {}
    for k in P.kernels:
        for m in k.members:
            P.producer[m.id] = k


# ---------------------------------------------------------------------------
# walking a kernel: build its expressions, find what it reads


class _Walker:
    def __init__(self, P: Plan, K: Kernel):
        self.P, self.K = P, K
        self.ids = K.ids
        self.host_ids = {n.id for n in P.host}
        self.reads: dict[int, Node] = {}
        self.read_idx: dict[int, set] = {}
        self.scalars: dict[int, Node] = {}
        self.touched: dict[int, Node] = {}
        self.avail: set | None = None  # iteration dims defined here (None: all)
        self.done_red: set = set()  # reductions whose value is known at this point
        self.memo: dict = {}

    def value(self, n: Node, idx: tuple) -> Ex:
        key = (n.id, idx)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        ex = self._value(n, idx)
        self.memo[key] = ex
        return ex

    def _need(self, idx):
        if self.avail is not None:
            for d in idx:
                if d is not None and d not in self.avail:
                    raise Unfusable("needs an index this phase does not have")

    def _value(self, n: Node, idx: tuple) -> Ex:
        P, K = self.P, self.K
        if n.op == "const":
            return Ex("const", n, (), (), n.dtype, float(n.attr("value")))
        if n.id in self.host_ids:
            self.scalars[n.id] = n
            return Ex("scalar", n, (), (), n.dtype)
        self._need(idx)
        if n.id in self.ids:
            self.touched[n.id] = n
            red = OPS[n.op].reducer
            if red is not None and red.row is not None:
                if idx != ident(K.space) or (n.id, len(red.steps) - 1) not in self.done_red:
                    raise Unfusable("a row op's value is only known at its own point, after its reductions")
                return Ex("rowop", n, idx, (self.value(n.inputs[0], idx),), n.dtype)
            if red is not None:
                want = tuple(d for d in K.omap[n.id])
                if idx != want or (n.id, len(red.steps) - 1) not in self.done_red:
                    raise Unfusable("a reduction read away from its own output point")
                return Ex("red", n, idx, (), n.dtype)
            return self._compute(n, idx)
        if n.id in P.inline or (OPS[n.op].kind == "view" and through(n) is not None):
            self.touched[n.id] = n
            return self._compute(n, idx)
        if n.op not in LEAVES and n.id not in P.producer:
            raise Unfusable(f"%{n.id} {n.op} is computed nowhere")
        self.reads[n.id] = n
        self.read_idx.setdefault(n.id, set()).add(idx)
        ex = Ex("read", n, idx, (), n.dtype)
        scale = P.alpha.get(n.id)
        if scale:
            for s in scale:
                self.scalars[s.id] = s
            ex = Ex("scaled", n, idx, tuple(Ex("scalar", s, (), (), s.dtype) for s in scale) + (ex,), n.dtype)
        return ex

    def _compute(self, n: Node, idx: tuple) -> Ex:
        spec = OPS[n.op]
        if spec.alias is not None:
            return self.value(n.inputs[spec.alias], idx)
        if spec.index_map is not None:
            args = tuple(self.value(n.inputs[k], at) if k is not None else Ex("index", None, (at,), (), "int64")
                         for k, at in spec.index_map(n, idx))
            return Ex("op", n, idx, args, n.dtype) if spec.cuda is not None else args[0]
        if spec.kind != "elementwise":
            raise Unfusable(f"{n.op} is not elementwise")
        args = tuple(self.value(i, project(idx, n.shape, i.shape)) for i in n.inputs)
        return Ex("op", n, idx, args, n.dtype)


def _o_idx(K: Kernel, n: Node) -> tuple:
    return tuple(K.omap[n.id])


def _walk(P: Plan, K: Kernel) -> None:
    """Build K's expressions and record what it reads. Raises Unfusable."""
    K.steps, K.s_out, K.o_out, K.e_out = [], [], [], []
    if K.kind in ("gemm", "library"):
        n = K.members[0]
        K.reads, K.read_idx, K.scalars = {}, {}, {}
        ins = K.operands if K.kind == "gemm" else n.inputs
        if K.kind == "library" and OPS[n.op].alias is not None:
            ins = [n.inputs[OPS[n.op].alias]]
        for i in ins:
            root = _root(i)
            if root.op == "const":
                continue
            if root.id in {h.id for h in P.host}:
                K.scalars[root.id] = root
                continue
            K.reads[root.id] = root
        for s in K.alpha:
            K.scalars[s.id] = s
        K.touched = {n.id} | set(P.absorbed & {x.id for x in n.inputs})
        K._loc_nodes = [n] + [x for x in n.inputs if x.id in P.absorbed]
        return
    w = _Walker(P, K)
    if K.kind == "elementwise":
        for m in K.members:
            if m.shape != K.space:
                raise Unfusable("an output of another shape")
            K.e_out.append((m, w.value(m, ident(m.shape))))
    else:
        S, axes = K.space, K.axes
        reducers = [m for m in K.members if OPS[m.op].reducer is not None]
        for m in K.members:
            if OPS[m.op].reducer is not None:
                if tuple(m.inputs[0].shape) != tuple(S) or _reduced_axes(m) != axes:
                    raise Unfusable("reductions over different spaces")
            elif m.id not in K.omap and m.shape != S:
                raise Unfusable("an output of another shape")
        full = ident(S)
        for r in reducers:
            w.memo.clear()
            x = w.value(r.inputs[0], full)
            for j, kind in enumerate(OPS[r.op].reducer.steps):
                K.steps.append((kind, r, x, j))
                w.done_red.add((r.id, j))
        w.memo.clear()
        for m in K.members:
            if _row(m) or (OPS[m.op].reducer is None and m.id not in K.omap):
                K.s_out.append((m, w.value(m, full)))
        w.memo.clear()
        w.avail = {d for d in range(len(S)) if d not in axes}
        for m in K.members:
            if m.id in K.omap:
                K.o_out.append((m, w.value(m, _o_idx(K, m))))
    K.reads, K.read_idx, K.scalars = w.reads, w.read_idx, w.scalars
    K.touched = set(w.touched) | K.ids
    K._loc_nodes = list(w.touched.values()) + [m for m in K.members if m.id not in w.touched]


# ---------------------------------------------------------------------------
# merging


def _deps(P: Plan, K: Kernel) -> set:
    out = set()
    for r in K.reads:
        k = P.producer.get(r)
        if k is not None and k is not K:
            out.add(id(k))
    return out


def _merge_all(P: Plan) -> None:
    """Merge producer/consumer kernels until nothing merges. Incremental: a merge
    updates the maps locally, and the search for an indirect path only visits
    kernels scheduled before the consumer, so this stays near linear."""
    pos = P._pos
    span = {}  # id(kernel) -> (first, last) schedule position of its members

    def note(k):
        ps = [pos[m.id] for m in k.members]
        span[id(k)] = (min(ps), max(ps))

    for k in P.kernels:
        note(k)
    byid = {id(k): k for k in P.kernels}
    consumers: dict[int, set] = {i: set() for i in byid}
    deps = {id(k): _deps(P, k) for k in P.kernels}
    for i, d in deps.items():
        for j in d:
            consumers[j].add(i)
    failed: set = set()  # (producer, consumer) pairs already refused
    alive = list(P.kernels)
    changed = True
    while changed:
        changed = False
        for k2 in list(alive):
            if id(k2) not in byid or k2.kind in ("gemm", "library"):
                continue
            merged_any = True
            while merged_any:  # the merged kernel may take in another producer
                merged_any = False
                for d in sorted(deps[id(k2)], key=lambda i: span[i][0]):
                    k1 = byid[d]
                    if k1.kind in ("gemm", "library") or (d, id(k2)) in failed:
                        continue
                    if _indirect(d, id(k2), consumers, span):
                        continue
                    new = _try_merge(P, k1, k2)
                    if new is None:
                        failed.add((d, id(k2)))
                        continue
                    # rewire: new replaces k1 and k2
                    i1, i2, n = d, id(k2), id(new)
                    byid.pop(i1), byid.pop(i2)
                    byid[n] = new
                    note(new)
                    for m in new.members:
                        P.producer[m.id] = new
                    deps[n] = (deps.pop(i1) | deps.pop(i2)) - {i1, i2}
                    consumers[n] = (consumers.pop(i1) | consumers.pop(i2)) - {i1, i2}
                    for j in deps[n]:
                        consumers[j] -= {i1, i2}
                        consumers[j].add(n)
                    for j in consumers[n]:
                        deps[j] -= {i1, i2}
                        deps[j].add(n)
                    alive[alive.index(k1)] = new
                    alive.remove(k2)
                    k2 = new
                    merged_any = changed = True
                    break
        # siblings: reductions over the same space and axes reading a common buffer or
        # the outputs of a common kernel (log_softmax and argmax of one output; the
        # mean loss and the error count over the batch)
        groups: dict = {}
        for k in alive:
            if k.kind == "reduce":
                groups.setdefault((k.space, k.axes), []).append(k)
        for ks in groups.values():
            while len(ks) > 1:
                k1, rest = ks[0], ks[1:]
                for k2 in rest:
                    a, b = id(k1), id(k2)
                    if (a, b) in failed or not (set(k1.reads) & set(k2.reads) or deps[a] & deps[b]) \
                            or a in deps[b] or b in deps[a] \
                            or _indirect(a, b, consumers, span) or _indirect(b, a, consumers, span):
                        continue
                    new = _try_merge(P, k1, k2)
                    if new is None:
                        failed.add((a, b))
                        continue
                    n = id(new)
                    byid.pop(a), byid.pop(b)
                    byid[n] = new
                    note(new)
                    for m in new.members:
                        P.producer[m.id] = new
                    deps[n] = deps.pop(a) | deps.pop(b)
                    consumers[n] = consumers.pop(a) | consumers.pop(b)
                    for j in deps[n]:
                        consumers[j] -= {a, b}
                        consumers[j].add(n)
                    for j in consumers[n]:
                        deps[j] -= {a, b}
                        deps[j].add(n)
                    alive[alive.index(k1)] = new
                    alive.remove(k2)
                    ks = [new] + [k for k in rest if k is not k2]
                    changed = True
                    break
                else:
                    ks = rest
    P.kernels = alive
    _index(P)


def _indirect(k1: int, k2: int, consumers: dict, span: dict) -> bool:
    """Is there a path k1 -> x -> ... -> k2 through another kernel? Kernels whose
    members all come after k2's in the schedule cannot lead to k2: not visited."""
    last = span[k2][1]
    stack = [c for c in consumers[k1] if c != k2 and span[c][0] < last]
    seen = set(stack)
    while stack:
        c = stack.pop()
        for nxt in consumers.get(c, ()):
            if nxt == k2:
                return True
            if nxt not in seen and span[nxt][0] < last:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _try_merge(P: Plan, k1: Kernel, k2: Kernel) -> Kernel | None:
    members = sorted(k1.members + k2.members, key=lambda m: P._pos[m.id])
    if k1.kind == k2.kind == "elementwise":
        if k1.space != k2.space:
            return None
        new = Kernel("elementwise", k1.space, members=members)
    elif k1.kind == k2.kind == "reduce":
        if k1.space != k2.space or k1.axes != k2.axes:
            return None
        new = Kernel("reduce", k1.space, k1.axes, members=members, omap={**k1.omap, **k2.omap})
    else:
        red, ew = (k1, k2) if k1.kind == "reduce" else (k2, k1)
        new = Kernel("reduce", red.space, red.axes, members=members, omap=dict(red.omap))
        if ew.space == red.space:
            if red.layout != "block":
                return None  # writing the source shape from a thread per column: keep them apart
        else:
            omap = next((red.omap[m.id] for m in red.members if m.id in red.omap and m.shape == ew.space), None)
            if omap is None:
                return None
            for m in ew.members:
                new.omap[m.id] = omap
    saved = {m.id: P.producer.get(m.id) for m in new.members}
    for m in new.members:
        P.producer[m.id] = new
    try:
        _walk(P, new)
        return new
    except Unfusable:
        return None
    finally:
        P.producer.update(saved)


# ---------------------------------------------------------------------------
# finishing: order, materialization, in-place updates, phases


def overwritable(k: Kernel, updates) -> set:
    """Ids of k's stored update values that k may write over their leaf: it reads
    the old value only at the point it overwrites (products and library calls
    write their own buffer; their update is copied after). The planner
    (compiler/plan.py) decides, knowing the other readers; it fills `in_place`."""
    if k.kind not in ("elementwise", "reduce"):
        return set()
    leaf_of = {u.id: leaf for leaf, u in updates}
    ok = set()
    for m in k.writes:
        leaf = leaf_of.get(m.id)
        if leaf is not None:
            own = _o_idx(k, m) if m.id in k.omap else ident(m.shape)
            if all(ix == own for ix in k.read_idx.get(leaf.id, ())):
                ok.add(m.id)
    return ok


def temporaries(k: Kernel) -> list:
    """(shape, dtype) scratch a library call's NumPy emitter needs."""
    spec = OPS[k.members[0].op]
    return spec.scratch(k.members[0]) if k.kind == "library" and spec.kind != "view" and spec.scratch else []


def _finish(P: Plan) -> None:
    _index(P)
    for k in P.kernels:
        _walk(P, k)
    pos = P._pos
    # kernel order: dependencies first, then schedule order
    deps = {id(k): _deps(P, k) for k in P.kernels}
    byid = {id(k): k for k in P.kernels}
    users: dict[int, list] = {id(k): [] for k in P.kernels}
    for k in P.kernels:
        for d in deps[id(k)]:
            users[d].append(id(k))
    prio = {id(k): min(pos[m.id] for m in k.members) for k in P.kernels}
    count = {i: len(d) for i, d in deps.items()}
    heap = [(prio[i], i) for i, c in count.items() if c == 0]
    heapq.heapify(heap)
    ordered = []
    while heap:
        _, i = heapq.heappop(heap)
        ordered.append(byid[i])
        for u in users[i]:
            count[u] -= 1
            if count[u] == 0:
                heapq.heappush(heap, (prio[u], u))
    if len(ordered) != len(P.kernels):
        raise AssertionError("fusion made a cycle between kernels")
    P.kernels = ordered
    for i, k in enumerate(P.kernels):
        k.id = i

    # materialized: everything some other kernel reads, and the outputs
    mat = set(P._out_ids)
    for k in P.kernels:
        mat.update(r for r in k.reads)
    P.materialized = {i for i in mat if i in P.producer}
    update_of = {u.id: leaf for leaf, u in P.updates}
    for k in P.kernels:
        k.writes = [m for m in k.members if m.id in P.materialized]
    fwd = P.forward
    for k in P.kernels:
        if any(m.id in update_of for m in k.members):
            k.phase = "update"
        elif any(m.id in fwd for m in k.members):
            k.phase = "forward"
        else:
            k.phase = "backward"
