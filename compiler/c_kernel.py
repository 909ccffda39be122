"""C for one fused kernel (compiler/kernel_ir.py), whatever runs its loops.

`CKernel` renders what every C backend shares: parameters, expressions
(elementwise `cuda` templates, index maps, reductions from the op table's
`Reduction`), index arithmetic, writes. The loop skeleton is the backend's:
cuda_c.py (grid-stride loops, block tree reductions), and the native CPU
renderer (plain or OpenMP loops) subclasses the same class. Non-finite
constants use the macros NETC_INF and NETC_NAN, which each prelude defines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import c_type, comment
from .kernel_ir import Ex, Kernel, Plan
from .node import Node
from .ops import OPS, cuda_expr


class _CTypes(dict):
    def __missing__(self, dtype):
        return c_type(dtype)


CTYPE = _CTypes()  # dtype -> C type (a NetcError for a dtype kernels cannot use)


def dim(d) -> str:
    return "B" if d is None else f"{d}LL"


def prod(dims) -> str:
    dims = [d for d in dims if d != 1]
    if not dims:
        return "1LL"
    if len(dims) == 1:
        return dim(dims[0])
    return "(" + " * ".join(dim(d) for d in dims) + ")"


def literal_c(v: float, dtype: str) -> str:
    t = CTYPE[dtype]
    if np.isnan(v):
        return f"(({t})NETC_NAN)"
    if np.isinf(v):
        return f"(({t})NETC_INF)" if v > 0 else f"(-({t})NETC_INF)"
    if dtype == "int64":
        return f"{int(v)}LL"
    return f"(({t}){float(v)!r})"


@dataclass
class Param:
    role: str  # B | scalar | in | out | inout
    ctype: str
    name: str
    node: Node | None = None


class Scope:
    """Lines at one indentation, with the values already named there."""

    def __init__(self, gen: "CKernel", indent: str):
        self.gen, self.ind = gen, indent
        self.lines: list[str] = []
        self.names: dict = {}

    def emit(self, line: str) -> None:
        self.lines.append(self.ind + line)


class CKernel:
    """A fused kernel's C, less the loop skeleton: its parameters (B, host
    scalars a0.., buffers p0..), its expressions as named locals, its writes,
    index arithmetic, and the reduction steps (accumulator, update, the value
    from the op's `Reduction`). A backend subclasses it with the loops it runs
    (cuda_c.CudaKernel: grid-stride loops and block reductions)."""

    def __init__(self, K: Kernel, name: str, P: Plan):
        self.K, self.name, self.P = K, name, P
        self.n = 0
        self.scalar: dict[int, str] = {}
        self.buf: dict[int, str] = {}
        self.params: list[Param] = [Param("B", "long long", "B")]
        self.reds: dict[int, str] = {}  # reducer id -> C name of its value
        self.accs: dict[tuple, str] = {}  # (reducer id, step j) -> C name of the step's result
        write_target = {}
        for m in K.writes:
            write_target[m.id] = K.in_place.get(m.id, m)
        self.write_target = write_target
        for s in K.scalars.values():
            nm = f"a{len(self.scalar)}"
            self.scalar[s.id] = nm
            self.params.append(Param("scalar", CTYPE[s.dtype], nm, s))
        targets = {t.id: t for t in write_target.values()}
        for r in K.reads.values():
            role = "inout" if r.id in targets else "in"
            self._buffer(r, role)
        for t in targets.values():
            if t.id not in self.buf:
                self._buffer(t, "out")

    def _buffer(self, n: Node, role: str) -> None:
        nm = f"p{len(self.buf)}"
        self.buf[n.id] = nm
        t = CTYPE[n.dtype]
        decl = {"in": f"const {t}* __restrict__", "out": f"{t}* __restrict__", "inout": f"{t}*"}[role]
        self.params.append(Param(role, decl, nm, n))

    # -- expressions ---------------------------------------------------------------
    def local(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def offset(self, shape, idx) -> str:
        terms = []
        for d, sym in enumerate(idx):
            if sym is None:
                continue
            stride = prod(shape[d + 1:])
            terms.append(f"i{sym}" if stride == "1LL" else f"i{sym} * {stride}")
        return " + ".join(terms) or "0"

    def expr(self, ex: Ex, sc: Scope) -> str:
        if ex.kind == "const":
            return literal_c(ex.value, ex.dtype)
        if ex.kind == "scalar":
            return self.scalar[ex.node.id]
        if ex.kind == "index":
            return "0LL" if ex.idx[0] is None else f"i{ex.idx[0]}"
        if ex.kind == "red":
            return self.reds[ex.node.id]
        key = (ex.kind, ex.node.id, ex.idx)
        hit = sc.names.get(key)
        if hit is not None:
            return hit
        t = CTYPE[ex.dtype]
        if ex.kind == "read":
            rhs = f"{self.buf[ex.node.id]}[{self.offset(ex.node.shape, ex.idx)}]"
        elif ex.kind == "scaled":
            rhs = "(" + " * ".join(self.expr(a, sc) for a in ex.args) + ")"
        elif ex.kind == "rowop":
            red = OPS[ex.node.op].reducer
            rhs = red.row.format(*self._results(ex.node), x=self.expr(ex.args[0], sc))
        elif ex.kind == "op":
            rhs = cuda_expr(ex.node, [self.expr(a, sc) for a in ex.args], t)
        else:
            raise AssertionError(ex.kind)
        nm = self.local()
        sc.emit(f"const {t} {nm} = {rhs};")
        sc.names[key] = nm
        return nm

    def write(self, m: Node, ex: Ex, idx: tuple, sc: Scope) -> None:
        target = self.write_target[m.id]
        v = self.expr(ex, sc)
        sc.emit(f"{self.buf[target.id]}[{self.offset(target.shape, idx)}] = {v};")

    @staticmethod
    def decompose(sc: Scope, flat: str, dims: list[tuple[int, object]], q: str) -> None:
        """Row-major split of a flat index over (iteration dim, size) pairs."""
        dims = [(d, s) for d, s in dims if s != 1]
        if not dims:
            return
        if len(dims) == 1:
            sc.emit(f"const long long i{dims[0][0]} = {flat};")
            return
        sc.emit(f"long long {q} = {flat};")
        for d, s in reversed(dims[1:]):
            sc.emit(f"const long long i{d} = {q} % {dim(s)}; {q} /= {dim(s)};")
        sc.emit(f"const long long i{dims[0][0]} = {q};")

    def head(self) -> list[str]:
        """Comment lines naming the kernel, the `.net` places and parameters it covers."""
        K = self.K
        covers = K.locs()
        return [f"// netc {comment(K.describe())}",
                "// covers: " + comment((", ".join(covers) if covers else "(generated: no source line)")
                                        + (f"; parameters {', '.join(K.params())}" if K.params() else ""))]

    def param_list(self) -> str:
        return ", ".join(f"const {p.ctype} {p.name}" if p.role in ("B", "scalar") else f"{p.ctype} {p.name}"
                         for p in self.params)

    # -- reductions ----------------------------------------------------------------
    @staticmethod
    def acc_init(kind: str, t: str, a: str) -> str:
        """Declare accumulator `a` of a reduction step."""
        if kind == "argmax":
            return f"{t} {a} = -(({t})NETC_INF); long long {a}i = -1;"
        init = {"max": f"-(({t})NETC_INF)", "min": f"(({t})NETC_INF)"}.get(kind, f"({t})0")
        return f"{t} {a} = {init};"

    def acc_update(self, kind: str, r: Node, a: str, v: str, at: str) -> str:
        """Fold value `v` (read at reduced position `at`) into accumulator `a`."""
        if kind == "sum":
            return f"{a} += {v};"
        if kind == "max":
            return f"if ({v} > {a} || {v} != {v}) {a} = {v};"
        if kind == "min":
            return f"if ({v} < {a} || {v} != {v}) {a} = {v};"
        if kind == "sumexp":
            return f"{a} += exp({v} - {self.accs[(r.id, 0)]});"  # the reducer's first step: its max
        # argmax: the first maximum (the first NaN), as numpy
        return f"if ({a}i < 0 || {v} > {a} || ({v} != {v} && {a} == {a})) {{ {a} = {v}; {a}i = {at}; }}"

    def acc_done(self, sc: Scope, kind: str, r: Node, j: int, a: str, nm: str, count: str) -> None:
        """Step j of reducer r is complete in `a`: after its last step, name its value `nm`
        (the op's `Reduction.value`; row ops use their results where they are read)."""
        self.accs[(r.id, j)] = a + "i" if kind == "argmax" else a
        red = OPS[r.op].reducer
        if j == len(red.steps) - 1 and red.row is None:
            tr = CTYPE[r.dtype]
            sc.emit(f"const {tr} {nm} = {red.value.format(*self._results(r), n=count, T=tr)};")
            self.reds[r.id] = nm

    def _results(self, r: Node) -> list[str]:
        return [self.accs[(r.id, j)] for j in range(len(OPS[r.op].reducer.steps))]
