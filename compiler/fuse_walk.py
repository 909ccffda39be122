"""Walking a kernel: build its expressions (`Ex`) over iteration indices and
record what it reads (compiler/fuse.py). A walk that cannot compute what the
kernel is asked to raises `Unfusable`: that is how a merge is refused."""
from __future__ import annotations

from .kernel_ir import LEAVES, Ex, Kernel, Plan, Unfusable, _root, ident, is_row, o_idx, project, reduced_axes, through
from .node import Node
from .ops import OPS


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


def walk(P: Plan, K: Kernel) -> None:
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
                if tuple(m.inputs[0].shape) != tuple(S) or reduced_axes(m) != axes:
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
            if is_row(m) or (OPS[m.op].reducer is None and m.id not in K.omap):
                K.s_out.append((m, w.value(m, full)))
        w.memo.clear()
        w.avail = {d for d in range(len(S)) if d not in axes}
        for m in K.members:
            if m.id in K.omap:
                K.o_out.append((m, w.value(m, o_idx(K, m))))
    K.reads, K.read_idx, K.scalars = w.reads, w.read_idx, w.scalars
    K.touched = set(w.touched) | K.ids
    K._loc_nodes = list(w.touched.values()) + [m for m in K.members if m.id not in w.touched]
