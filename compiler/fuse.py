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

Each kernel carries its expressions (`Ex`, a tiny expression IR over
iteration indices), the buffers it reads and writes and the set of `.net`
source locations it covers (the types: compiler/kernel_ir.py; building the
expressions: fuse_walk.py; merging: fuse_merge.py). The planner
(compiler/plan.py) decides buffers and in-place updates around a plan;
renderers (lower_cuda.py, the native C one) turn it into code. Which ops
fuse, and how, is read from their entries: `index_map`, `alias`, `reducer`,
an elementwise `cuda` template.
"""
from __future__ import annotations

import heapq

from .fuse_merge import merge_all
from .fuse_stats import format_stats  # noqa: F401 (re-exported for pipeline.py)
from .fuse_walk import walk
from .kernel_ir import LEAVES, Kernel, Plan, deps, ident, index, is_row, o_idx, reduced_axes, storage, through
from .node import Node, toposort
from .ops import OPS

HOST_OPS = ("const", "hyper", "count")
INLINE_BUDGET = 6  # ops a node with several consumers may cost and still be recomputed in each


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
            if i.id in users:  # (an alias view's ignored input is not live)
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
            src, axes = n.inputs[0].shape, reduced_axes(n)
            kern = Kernel("reduce", tuple(src), axes, members=[n])
            if not is_row(n):
                kern.omap[n.id] = OPS[n.op].reducer.axes_map(n)[1]
            kernels.append(kern)
        elif k == "fusible" and n.id not in inline:
            kernels.append(Kernel("elementwise", n.shape, members=[n]))

    P = Plan(order, outputs, updates, kernels, host, inline, alpha, absorbed, set(),
             set(x.id for x in toposort(outputs)) if updates else {n.id for n in order},
             _pos=pos, _out_ids=out_ids)
    index(P)
    for kern in P.kernels:
        walk(P, kern)
    if merge:
        merge_all(P)
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


# ---------------------------------------------------------------------------
# finishing: order, materialization, phases


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
            own = o_idx(k, m) if m.id in k.omap else ident(m.shape)
            if all(ix == own for ix in k.read_idx.get(leaf.id, ())):
                ok.add(m.id)
    return ok


def temporaries(k: Kernel) -> list:
    """(shape, dtype) scratch a library call's NumPy emitter needs."""
    spec = OPS[k.members[0].op]
    return spec.scratch(k.members[0]) if k.kind == "library" and spec.kind != "view" and spec.scratch else []


def _finish(P: Plan) -> None:
    index(P)
    for k in P.kernels:
        walk(P, k)
    pos = P._pos
    # kernel order: dependencies first, then schedule order
    needs = {id(k): deps(P, k) for k in P.kernels}
    byid = {id(k): k for k in P.kernels}
    users: dict[int, list] = {id(k): [] for k in P.kernels}
    for k in P.kernels:
        for d in needs[id(k)]:
            users[d].append(id(k))
    prio = {id(k): min(pos[m.id] for m in k.members) for k in P.kernels}
    count = {i: len(d) for i, d in needs.items()}
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
    mat = set(P._out_ids) | {storage(n).id for n in list(P.outputs) + [u for _, u in P.updates]}  # an output view
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
