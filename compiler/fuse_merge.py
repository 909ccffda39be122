"""Merging kernels (compiler/fuse.py): producer into consumer, and sibling
reductions over one space, until nothing merges. Incremental: a merge
updates the dependency maps locally, and the search for an indirect path
only visits kernels scheduled before the consumer, so this stays near linear."""
from __future__ import annotations

from .fuse_walk import walk
from .kernel_ir import Kernel, Plan, Unfusable, deps, index

NOT_MERGED = ("gemm", "library")


class _Merger:
    """The kernels alive, keyed by id(), with their dependencies both ways."""

    def __init__(self, P: Plan):
        self.P = P
        self.span: dict[int, tuple] = {}  # id(kernel) -> (first, last) schedule position of its members
        for k in P.kernels:
            self.note(k)
        self.byid = {id(k): k for k in P.kernels}
        self.deps = {id(k): deps(P, k) for k in P.kernels}
        self.consumers: dict[int, set] = {i: set() for i in self.byid}
        for i, d in self.deps.items():
            for j in d:
                self.consumers[j].add(i)
        self.failed: set = set()  # (k1, k2) pairs already refused
        self.alive = list(P.kernels)

    def note(self, k: Kernel) -> None:
        ps = [self.P._pos[m.id] for m in k.members]
        self.span[id(k)] = (min(ps), max(ps))

    def indirect(self, k1: int, k2: int) -> bool:
        """Is there a path k1 -> x -> ... -> k2 through another kernel? Kernels whose
        members all come after k2's in the schedule cannot lead to k2: not visited."""
        span, consumers = self.span, self.consumers
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

    def merge(self, k1: Kernel, k2: Kernel) -> Kernel | None:
        """The kernel computing both, now in their place; None (remembered) if refused."""
        a, b = id(k1), id(k2)
        new = _try_merge(self.P, k1, k2)
        if new is None:
            self.failed.add((a, b))
            return None
        n, both = id(new), {a, b}
        self.byid.pop(a), self.byid.pop(b)
        self.byid[n] = new
        self.note(new)
        for m in new.members:
            self.P.producer[m.id] = new
        self.deps[n] = (self.deps.pop(a) | self.deps.pop(b)) - both
        self.consumers[n] = (self.consumers.pop(a) | self.consumers.pop(b)) - both
        for j in self.deps[n]:
            self.consumers[j] -= both
            self.consumers[j].add(n)
        for j in self.consumers[n]:
            self.deps[j] -= both
            self.deps[j].add(n)
        self.alive[self.alive.index(k1)] = new
        self.alive.remove(k2)
        return new

    def into_consumers(self) -> bool:
        """Merge each kernel with its producers (earliest first), as long as it takes them."""
        changed = False
        for k2 in list(self.alive):
            if id(k2) not in self.byid or k2.kind in NOT_MERGED:
                continue
            merged = True
            while merged:  # the merged kernel may take in another producer
                merged = False
                for d in sorted(self.deps[id(k2)], key=lambda i: self.span[i][0]):
                    k1 = self.byid[d]
                    if k1.kind in NOT_MERGED or (d, id(k2)) in self.failed or self.indirect(d, id(k2)):
                        continue
                    new = self.merge(k1, k2)
                    if new is not None:
                        k2, merged = new, True
                        changed = True
                        break
        return changed

    def siblings(self) -> bool:
        """Reductions over the same space and axes reading a common buffer or the outputs
        of a common kernel (log_softmax and argmax of one output; the mean loss and the
        error count over the batch)."""
        changed = False
        groups: dict = {}
        for k in self.alive:
            if k.kind == "reduce":
                groups.setdefault((k.space, k.axes), []).append(k)
        for ks in groups.values():
            while len(ks) > 1:
                k1, rest = ks[0], ks[1:]
                for k2 in rest:
                    a, b = id(k1), id(k2)
                    if (a, b) in self.failed or not (set(k1.reads) & set(k2.reads) or self.deps[a] & self.deps[b]) \
                            or a in self.deps[b] or b in self.deps[a] or self.indirect(a, b) or self.indirect(b, a):
                        continue
                    new = self.merge(k1, k2)
                    if new is not None:
                        ks = [new] + [k for k in rest if k is not k2]
                        changed = True
                        break
                else:
                    ks = rest
        return changed


def merge_all(P: Plan) -> None:
    """Merge kernels until nothing merges; P.kernels becomes the merged list."""
    M = _Merger(P)
    while M.into_consumers() | M.siblings():
        pass
    P.kernels = M.alive
    index(P)


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
        walk(P, new)
        return new
    except Unfusable:
        return None
    finally:
        P.producer.update(saved)
