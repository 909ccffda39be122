"""The planner: what every renderer needs, decided once.

A renderer (NumPy source, CUDA kernels and their Python host step, a native C
step) gets a `Lowering`: the schedule, the fed and state leaves with their
names, the steps in execution order (one op each in the degenerate plan the
NumPy renderer reads; fused kernels from compiler/fuse.py otherwise), and
where every value lives (`Buffers`: the buffers allocated once per batch
size, reused after their last reader; update values written in place over
their leaf when nothing reads the old value afterwards; the copies left for
the end of the step). A renderer only turns that into text.

Adding a backend = a renderer of `fused(...)` (or `per_op(...)`): walk
`steps`, render each kernel (compiler/c_kernel.py gives a kernel's C less its
loops; cuda_c.py adds CUDA's), declare `buffers.allocs`, bind `state` by name,
take `feeds` as arguments, end with `buffers.copies`. Nothing here changes.

Generated source is built from the op table and this plan: a dtype reaches it
only from the closed set `dtypes.DTYPES` (checked here, before any source is made),
names only as repr() literals or in `comment()`-sanitized comments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import fuse
from .dtypes import DTYPES, check_dtypes, comment  # noqa: F401 (re-exported for renderers)
from .kernel_ir import FEED_OPS, STATE_OPS, storage
from .node import Node, toposort
from .ops import OPS

@dataclass(eq=False)
class Step:
    """One unit of execution: an op (`what` a Node) or a fused kernel (a
    kernel_ir.Kernel). `reads`: ids of the buffers it reads (views resolved to the
    node owning the storage), in the order they are freed; `overwrite`: ids of
    written update values this step may store over their leaf (it reads the old
    value only where it writes the new one)."""
    what: object
    writes: list[Node]
    reads: list[int]
    scratch: list[tuple] = field(default_factory=list)  # (shape, dtype) temporaries
    overwrite: set = field(default_factory=set)


@dataclass
class Buffers:
    name: dict[int, str]  # node id -> f{k} | s{k} | b{n}: where its value lives
    allocs: list[tuple[str, tuple, str]]  # (b{n}, shape, dtype), in allocation order
    scratch: list[list[str]]  # per step, its scratch buffers
    in_place: dict[int, Node]  # update value id -> the leaf it is written over
    copies: list[tuple[Node, Node]]  # (leaf, value) copied at the end of the step, in order


@dataclass
class Lowering:
    """A program planned for rendering."""
    order: list[Node]  # the schedule (topological)
    outputs: list[Node]
    updates: list[tuple[Node, Node]]
    feeds: list[Node]
    state: list[Node]
    steps: list[Step]
    buffers: Buffers
    storage: Callable  # node -> the node whose buffer holds its value
    fused: object = None  # the kernel_ir.Plan the steps come from (None: one op per step)


def leaves(order: list[Node], updates, feeds: list[Node] | None = None) -> tuple[list[Node], list[Node]]:
    """(feeds, state): fed leaves in argument order (default: schedule order) and
    state leaves (parameters, optimizer state, and every updated leaf)."""
    if feeds is None:
        feeds = [n for n in order if n.op in FEED_OPS]
    fed = {f.id for f in feeds}
    for n in order:
        if n.op in FEED_OPS and n.id not in fed:
            raise ValueError(f"leaf {n.name!r} ({n.op}) is neither fed nor in state")
    state = [n for n in order if n.op in STATE_OPS]
    for leaf, _ in updates:
        if leaf not in state:
            state.append(leaf)
    return list(feeds), state


def view_storage(n: Node) -> Node:
    """NumPy: every view reads the storage of its input (or the one it aliases)."""
    while OPS[n.op].kind == "view":
        alias = OPS[n.op].alias
        n = n.inputs[0 if alias is None else alias]
    return n


def allocate(steps: list[Step], outputs, updates, storage_of: Callable, feeds, state) -> Buffers:
    """Names and buffers for every value the steps write.

    A buffer is taken when its value is written and given back to a pool (by
    shape and dtype, last in first out) after the last step reading it; the
    outputs and the update values are read at the end. An update's value goes
    over its leaf when the step allows it, it is not an output, has the leaf's
    shape, and no later step (nor the end) reads the old value; otherwise it
    is copied over at the end, copies reading an updated leaf first."""
    name: dict[int, str] = {f.id: f"f{k}" for k, f in enumerate(feeds)}
    name.update({s.id: f"s{k}" for k, s in enumerate(state)})
    end = len(steps)
    last: dict[int, int] = {}
    for i, st in enumerate(steps):
        for r in st.reads:
            last[r] = i
    for n in list(outputs) + [u for _, u in updates]:
        last[storage_of(n).id] = end
    out_ids = {o.id for o in outputs}
    update_of = {u.id: leaf for leaf, u in updates}
    pool: dict[tuple, list[str]] = {}
    allocs: list[tuple[str, tuple, str]] = []
    owned: dict[int, tuple] = {}  # node id -> (name, key) of the buffer it holds

    def take(shape, dtype) -> str:
        free = pool.get((tuple(shape), dtype))
        if free:
            return free.pop()
        b = f"b{len(allocs)}"
        allocs.append((b, tuple(shape), dtype))
        return b

    in_place: dict[int, Node] = {}
    copies: list[tuple[Node, Node]] = []
    scratch: list[list[str]] = []
    written: set[int] = set()
    for i, st in enumerate(steps):
        for m in st.writes:
            written.add(m.id)
            leaf = update_of.get(m.id)
            if (leaf is not None and m.id in st.overwrite and m.id not in out_ids
                    and tuple(leaf.shape) == tuple(m.shape) and last.get(leaf.id, -1) <= i):
                in_place[m.id] = leaf
                name[m.id] = name[leaf.id]
                continue
            name[m.id] = take(m.shape, m.dtype)
            owned[m.id] = (name[m.id], (tuple(m.shape), m.dtype))
            if leaf is not None:
                copies.append((leaf, m))
        temps = [take(s, d) for s, d in st.scratch]
        for (s, d), b in zip(st.scratch, temps):
            pool.setdefault((tuple(s), d), []).append(b)
        scratch.append(temps)
        for r in list(st.reads) + [m.id for m in st.writes]:
            if last.get(r, end) <= i and r in owned:
                b, key = owned.pop(r)
                pool.setdefault(key, []).append(b)
    copies += [(leaf, u) for leaf, u in updates if u.id not in written]
    updated = {leaf.id for leaf, _ in updates}
    copies.sort(key=lambda c: storage_of(c[1]).id not in updated)  # stable: old values read first
    return Buffers(name, allocs, scratch, in_place, copies)


def per_op(outputs: list[Node], updates=(), feeds: list[Node] | None = None) -> Lowering:
    """The degenerate plan: every op not a view its own step (the NumPy renderer).
    A constant is an inline literal unless it is an output (then a buffer)."""
    outputs, updates = list(outputs), list(updates)
    order = toposort(outputs + [u for _, u in updates])
    check_dtypes(order)
    feeds, state = leaves(order, updates, feeds)
    out_ids = {o.id for o in outputs}
    leaf_ids = {n.id for n in feeds + state}
    steps = []
    for n in order:
        spec = OPS[n.op]
        if n.id in leaf_ids or spec.kind == "view" or (n.op == "const" and n.id not in out_ids):
            continue
        reads = list({view_storage(x).id for x in n.inputs})  # (a set: the order frees follow)
        steps.append(Step(n, [n], reads, spec.scratch(n) if spec.scratch else [],
                          {n.id} if spec.kind == "elementwise" else set()))
    bufs = allocate(steps, outputs, updates, view_storage, feeds, state)
    return Lowering(order, outputs, updates, feeds, state, steps, bufs, view_storage)


def fused(outputs: list[Node], updates=(), feeds: list[Node] | None = None) -> Lowering:
    """The fused plan (compiler/fuse.py): a step per kernel, then a step per
    output no kernel computes that needs a buffer (a constant, a host scalar)."""
    outputs, updates = list(outputs), list(updates)
    check_dtypes(toposort(outputs + [u for _, u in updates]))
    P = fuse.plan(outputs, updates)
    feeds, state = leaves(P.order, updates, feeds)
    steps = [Step(k, list(k.writes), list(k.reads), fuse.temporaries(k), fuse.overwritable(k, updates))
             for k in P.kernels]
    host = {h.id for h in P.host}
    for o in {o.id: o for o in outputs}.values():
        if o.op == "const" or o.id in host:
            steps.append(Step(o, [o], []))
    bufs = allocate(steps, outputs, updates, storage, feeds, state)
    for k in P.kernels:
        k.in_place = {m.id: bufs.in_place[m.id] for m in k.writes if m.id in bufs.in_place}
    return Lowering(P.order, outputs, updates, feeds, state, steps, bufs, storage, P)
