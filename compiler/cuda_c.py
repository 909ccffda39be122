"""CUDA C for one fused kernel (compiler/fuse.py): a `extern "C" __global__` function.

The text is exactly what CuPy compiles as a `cupy.RawKernel`, what the tests
compile with nvcc (to PTX) and, under a small CPU prelude, with gcc
(tests/test_cuda.py, tests/cuda_harness.py). RawKernel rather than
ElementwiseKernel because the kernel then owns its index arithmetic (the
batch size is an argument, transposed reads are index permutations) and
nothing CuPy adds around it goes unchecked. Elementwise expressions, index
maps and reductions come from the op table (`cuda`, `index_map`, `reducer`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .dtypes import c_type, comment
from .kernel_ir import Ex, Kernel, Plan, ident
from .node import Node
from .ops import OPS, cuda_expr

BLOCK = 256  # threads per block (elementwise; the most for reductions)

GPU_PRELUDE = """\
#define NETC_KERNEL extern "C" __global__
#define NETC_BLOCK 256
#define NETC_INF __int_as_float(0x7f800000)
#define NETC_NAN __int_as_float(0x7fffffff)
"""


class _CTypes(dict):
    def __missing__(self, dtype):
        return c_type(dtype)


CTYPE = _CTypes()  # dtype -> C type (a NetcError for a dtype kernels cannot use)


def _dim(d) -> str:
    return "B" if d is None else f"{d}LL"


def _prod(dims) -> str:
    dims = [d for d in dims if d != 1]
    if not dims:
        return "1LL"
    if len(dims) == 1:
        return _dim(dims[0])
    return "(" + " * ".join(_dim(d) for d in dims) + ")"


def _literal_c(v: float, dtype: str) -> str:
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


@dataclass
class KernelSource:
    """A generated kernel: `body` is the __global__ function; `source` adds the
    GPU prelude (what cupy.RawKernel compiles)."""
    kernel: Kernel
    name: str
    body: str
    params: list[Param]
    dtypes: tuple

    @property
    def source(self) -> str:
        return GPU_PRELUDE + self.body


class _Scope:
    def __init__(self, gen: "_CGen", indent: str):
        self.gen, self.ind = gen, indent
        self.lines: list[str] = []
        self.names: dict = {}

    def emit(self, line: str) -> None:
        self.lines.append(self.ind + line)


class _CGen:
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
            stride = _prod(shape[d + 1:])
            terms.append(f"i{sym}" if stride == "1LL" else f"i{sym} * {stride}")
        return " + ".join(terms) or "0"

    def expr(self, ex: Ex, sc: _Scope) -> str:
        if ex.kind == "const":
            return _literal_c(ex.value, ex.dtype)
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

    def write(self, m: Node, ex: Ex, idx: tuple, sc: _Scope) -> None:
        target = self.write_target[m.id]
        v = self.expr(ex, sc)
        sc.emit(f"{self.buf[target.id]}[{self.offset(target.shape, idx)}] = {v};")

    @staticmethod
    def decompose(sc: _Scope, flat: str, dims: list[tuple[int, object]], q: str) -> None:
        """Row-major split of a flat index over (iteration dim, size) pairs."""
        dims = [(d, s) for d, s in dims if s != 1]
        if not dims:
            return
        if len(dims) == 1:
            sc.emit(f"const long long i{dims[0][0]} = {flat};")
            return
        sc.emit(f"long long {q} = {flat};")
        for d, s in reversed(dims[1:]):
            sc.emit(f"const long long i{d} = {q} % {_dim(s)}; {q} /= {_dim(s)};")
        sc.emit(f"const long long i{dims[0][0]} = {q};")

    # -- kernels -------------------------------------------------------------------
    def generate(self) -> KernelSource:
        K = self.K
        head = [f"// netc {comment(K.describe())}"]
        covers = K.locs()
        head.append("// covers: " + comment((", ".join(covers) if covers else "(generated: no source line)")
                                            + (f"; parameters {', '.join(K.params())}" if K.params() else "")))
        params = self._param_list()
        body = self._elementwise() if K.kind == "elementwise" else self._reduce()
        code = f"({params}) {{\n" + "\n".join(body) + "\n}\n"
        # the name carries a hash of the code: kernels of different functions, dtypes
        # and specs can share one compilation unit (and identical ones dedupe)
        self.name = f"{self.name}_{hashlib.sha1(code.encode()).hexdigest()[:8]}"
        text = "\n".join(head) + f"\nNETC_KERNEL void {self.name}" + code
        dtypes = tuple(p.ctype for p in self.params)
        return KernelSource(K, self.name, text, self.params, dtypes)

    def _param_list(self) -> str:
        return ", ".join(f"const {p.ctype} {p.name}" if p.role in ("B", "scalar") else f"{p.ctype} {p.name}"
                         for p in self.params)

    def _elementwise(self) -> list[str]:
        K = self.K
        dims = list(enumerate(K.space))
        sc = _Scope(self, "    ")
        sc.emit(f"const long long n_ = {_prod(K.space)};")
        sc.emit("for (long long e_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; e_ < n_; "
                "e_ += (long long)blockDim.x * gridDim.x) {")
        inner = _Scope(self, "        ")
        self.decompose(inner, "e_", dims, "q_")
        for m, ex in K.e_out:
            if m.id in self.write_target:
                self.write(m, ex, ident(m.shape), inner)
        return sc.lines + inner.lines + ["    }"]

    def _reduce(self) -> list[str]:
        K = self.K
        S, axes = K.space, K.axes
        block = K.layout == "block"
        odims = [(d, S[d]) for d in range(len(S)) if d not in axes]
        rdims = [(d, S[d]) for d in axes]
        out = _Scope(self, "    ")
        if block:
            declared = set()
            for kind, r, x, _ in K.steps:
                t = CTYPE[x.dtype]
                if t not in declared:
                    out.emit(f"__shared__ {t} sh_{t.replace(' ', '_')}[NETC_BLOCK];")
                    declared.add(t)
                if kind == "argmax" and "idx" not in declared:
                    out.emit("__shared__ long long sh_idx[NETC_BLOCK];")
                    declared.add("idx")
        out.emit(f"const long long no_ = {_prod([s for _, s in odims])};")
        out.emit(f"const long long nk_ = {_prod([s for _, s in rdims])};")
        if block:
            out.emit("for (long long o_ = blockIdx.x; o_ < no_; o_ += gridDim.x) {")
        else:
            out.emit("for (long long o_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; o_ < no_; "
                     "o_ += (long long)blockDim.x * gridDim.x) {")
        body = _Scope(self, "        ")
        self.decompose(body, "o_", odims, "qo_")
        rloop = ("for (long long r_ = threadIdx.x; r_ < nk_; r_ += blockDim.x) {" if block
                 else "for (long long r_ = 0; r_ < nk_; ++r_) {")
        for k, (kind, r, x, j) in enumerate(K.steps):
            t = CTYPE[x.dtype]
            a = f"acc{k}_"
            if kind == "argmax":
                body.emit(f"{t} {a} = -(({t})NETC_INF); long long {a}i = -1;")
            else:
                init = {"max": f"-(({t})NETC_INF)", "min": f"(({t})NETC_INF)"}.get(kind, f"({t})0")
                body.emit(f"{t} {a} = {init};")
            body.emit(rloop)
            loop = _Scope(self, "            ")
            self.decompose(loop, "r_", rdims, "qr_")
            v = self.expr(x, loop)
            if kind == "sum":
                loop.emit(f"{a} += {v};")
            elif kind == "max":
                loop.emit(f"if ({v} > {a} || {v} != {v}) {a} = {v};")
            elif kind == "min":
                loop.emit(f"if ({v} < {a} || {v} != {v}) {a} = {v};")
            elif kind == "sumexp":
                loop.emit(f"{a} += exp({v} - {self.accs[(r.id, 0)]});")  # the reducer's first step: its max
            else:  # argmax: the first maximum (the first NaN), as numpy
                loop.emit(f"if ({a}i < 0 || {v} > {a} || ({v} != {v} && {a} == {a})) "
                          f"{{ {a} = {v}; {a}i = r_; }}")
            body.lines += loop.lines
            body.emit("}")
            if block:
                self._block_reduce(body, kind, t, a)
            self.accs[(r.id, j)] = a + "i" if kind == "argmax" else a
            red = OPS[r.op].reducer
            if j == len(red.steps) - 1 and red.row is None:  # the reduced value, from the op's template
                nm, tr = f"r{k}_", CTYPE[r.dtype]
                body.emit(f"const {tr} {nm} = {red.value.format(*self._results(r), n='nk_', T=tr)};")
                self.reds[r.id] = nm
        s_writes = [(m, ex) for m, ex in K.s_out if m.id in self.write_target]
        if s_writes:
            body.emit(rloop)
            loop = _Scope(self, "            ")
            self.decompose(loop, "r_", rdims, "qr_")
            for m, ex in s_writes:
                self.write(m, ex, ident(S), loop)
            body.lines += loop.lines
            body.emit("}")
        o_writes = [(m, ex) for m, ex in K.o_out if m.id in self.write_target]
        if o_writes:
            if block:
                body.emit("__syncthreads();")
                body.emit("if (threadIdx.x == 0) {")
            osc = _Scope(self, "            " if block else "        ")
            for m, ex in o_writes:
                self.write(m, ex, tuple(K.omap[m.id]), osc)
            body.lines += osc.lines
            if block:
                body.emit("}")
        return out.lines + body.lines + ["    }"]

    def _results(self, r: Node) -> list[str]:
        return [self.accs[(r.id, j)] for j in range(len(OPS[r.op].reducer.steps))]

    @staticmethod
    def _block_reduce(sc: _Scope, kind: str, t: str, a: str) -> None:
        """Tree reduction over the block (blockDim.x a power of two)."""
        sh = f"sh_{t.replace(' ', '_')}"
        sc.emit(f"{sh}[threadIdx.x] = {a};" + (f" sh_idx[threadIdx.x] = {a}i;" if kind == "argmax" else ""))
        sc.emit("__syncthreads();")
        sc.emit("for (unsigned s_ = blockDim.x >> 1; s_ > 0; s_ >>= 1) {")
        sc.emit("    if (threadIdx.x < s_) {")
        if kind in ("sum", "sumexp"):
            sc.emit(f"        {sh}[threadIdx.x] = {sh}[threadIdx.x] + {sh}[threadIdx.x + s_];")
        elif kind in ("max", "min"):
            cmp = ">" if kind == "max" else "<"
            sc.emit(f"        const {t} x_ = {sh}[threadIdx.x + s_], y_ = {sh}[threadIdx.x];")
            sc.emit(f"        {sh}[threadIdx.x] = (x_ {cmp} y_ || x_ != x_) ? x_ : y_;")
        else:
            sc.emit(f"        const {t} xv_ = {sh}[threadIdx.x + s_], yv_ = {sh}[threadIdx.x];")
            sc.emit("        const long long xi_ = sh_idx[threadIdx.x + s_], yi_ = sh_idx[threadIdx.x];")
            sc.emit("        if (xi_ >= 0 && (yi_ < 0 || xv_ > yv_ || (xv_ != xv_ && yv_ == yv_) || "
                    "((xv_ == yv_ || (xv_ != xv_ && yv_ != yv_)) && xi_ < yi_))) "
                    f"{{ {sh}[threadIdx.x] = xv_; sh_idx[threadIdx.x] = xi_; }}")
        sc.emit("    }")
        sc.emit("    __syncthreads();")
        sc.emit("}")
        sc.emit(f"{a} = {sh}[0];" + (f" {a}i = sh_idx[0];" if kind == "argmax" else ""))
        sc.emit("__syncthreads();")


def kernel_sources(P: Plan, prefix: str = "netc") -> list[KernelSource]:
    return [_CGen(k, f"{prefix}_k{k.id}", P).generate() for k in P.kernels if k.kind in ("elementwise", "reduce")]
