"""Lower a fused plan (compiler/fuse.py) to CUDA C kernels and a Python step.

Every fused elementwise or reduce kernel becomes one `extern "C" __global__`
function, compiled by CuPy as a `cupy.RawKernel`: the source text handed to
CuPy is exactly the text the tests compile with nvcc (to PTX) and, under a
small CPU prelude, with gcc (tests/test_cuda.py, compiler/cuda_harness.py).
RawKernel rather than ElementwiseKernel because the kernel then owns its
index arithmetic (the batch size is an argument, transposed reads are index
permutations) and nothing CuPy adds around it goes unchecked.

Matrix products are `cupy.matmul(a, b, out=...)`; a hoisted operand scale
(fuse.py) is applied by the kernels that read the product.

The generated `make(rt, S, B)` allocates every buffer once for batch size B,
with parameters and optimizer state the (device) arrays in S, and returns
`step(*feeds)`: one upload per input per step, the kernels in order, no host
synchronization (the returned loss is a device array; reading it is the
caller's one sync). `rt` is the runtime: CuPy on a GPU (`CupyRuntime`), or
the CPU harness that runs the same kernels compiled by gcc.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from . import fuse
from .errors import NetcError
from .fuse import Ex, Kernel, Plan, ident
from .graph import Node, shape_str
from .lower_numpy import FEED_OPS, STATE_OPS, Function, _comment, _literal
from .ops import OPS, Emit, cuda_expr

CTYPE = {"float32": "float", "float64": "double", "int64": "long long", "int32": "int"}
BLOCK = 256  # threads per block (elementwise; the most for reductions)

GPU_PRELUDE = """\
#define NETC_KERNEL extern "C" __global__
#define NETC_BLOCK 256
#define NETC_INF __int_as_float(0x7f800000)
#define NETC_NAN __int_as_float(0x7fffffff)
"""

INSTALL_HINT = "install CuPy with `pip install 'netc[gpu]'` (the cupy-cuda12x wheel; it needs an NVIDIA driver)"


# ---------------------------------------------------------------------------
# C for one kernel


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
        self.reds: dict[int, str] = {}  # reducer id -> C name of its value (sum/mean/argmax)
        self.accs: dict[tuple, str] = {}  # (reducer id, k) -> accumulator name
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
        elif ex.kind == "onehot":
            lab, j = (self.expr(a, sc) for a in ex.args)
            rhs = f"(({lab}) == ({j}) ? ({t})1 : ({t})0)"
        elif ex.kind == "rowop":
            x = self.expr(ex.args[0], sc)
            m, s = self.accs[(ex.node.id, 0)], self.accs[(ex.node.id, 1)]
            rhs = f"({x} - {m} - log({s}))" if ex.node.op == "log_softmax" else f"(exp({x} - {m}) / {s})"
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
        head = [f"// netc {K.describe()}"]
        covers = K.locs()
        head.append("// covers: " + (", ".join(covers) if covers else "(generated: no source line)")
                    + (f"; parameters {', '.join(K.params())}" if K.params() else ""))
        params = self._param_list()
        body = self._elementwise() if K.kind == "elementwise" else self._reduce()
        code = f"({params}) {{\n" + "\n".join(body) + "\n}\n"
        # the name carries a hash of the code: kernels of different functions, dtypes
        # and specs can share one compilation unit (and identical ones dedupe)
        self.name = f"{self.name}_{hashlib.sha1(code.encode()).hexdigest()[:8]}"
        text = "\n".join(head) + f"\nNETC_KERNEL void {self.name}" + code
        dtypes = tuple(p.ctype for p in self.params)
        return KernelSource(K, self.name, _comment_safe(text), self.params, dtypes)

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
            for kind, r, x in K.steps:
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
        for k, (kind, r, x) in enumerate(K.steps):
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
                loop.emit(f"{a} += exp({v} - {self.accs[(r.id, 0)]});")
            else:  # argmax: the first maximum (the first NaN), as numpy
                loop.emit(f"if ({a}i < 0 || {v} > {a} || ({v} != {v} && {a} == {a})) "
                          f"{{ {a} = {v}; {a}i = r_; }}")
            body.lines += loop.lines
            body.emit("}")
            if block:
                self._block_reduce(body, kind, t, a)
            if r.op in ("log_softmax", "softmax", "logsumexp") and kind in ("max", "sumexp"):
                self.accs[(r.id, 0 if kind == "max" else 1)] = a
                if r.op == "logsumexp" and kind == "sumexp":
                    nm = f"r{k}_"
                    body.emit(f"const {t} {nm} = {self.accs[(r.id, 0)]} + log({a});")
                    self.reds[r.id] = nm
            else:
                nm = f"r{k}_"
                if r.op == "mean":
                    body.emit(f"const {CTYPE[r.dtype]} {nm} = {a} * (({CTYPE[r.dtype]})1 / ({CTYPE[r.dtype]})nk_);")
                elif r.op == "argmax":
                    body.emit(f"const long long {nm} = {a}i;")
                else:
                    body.emit(f"const {CTYPE[r.dtype]} {nm} = {a};")
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


def _comment_safe(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def kernel_sources(P: Plan, prefix: str = "netc") -> list[KernelSource]:
    return [_CGen(k, f"{prefix}_k{k.id}", P).generate() for k in P.kernels if k.kind in ("elementwise", "reduce")]


# ---------------------------------------------------------------------------
# the host side: make(rt, S, B) -> step(*feeds)


@dataclass
class CudaFunction(Function):
    """A function lowered for the GPU: `fn(state, *feeds)` with `state` holding
    device arrays. `plan` is the fused program, `kernels` its CUDA sources."""
    plan: Plan | None = field(default=None, repr=False)
    kernels: list[KernelSource] = field(default_factory=list, repr=False)
    runtime: object = field(default=None, repr=False)
    host_calls: set = field(default_factory=set, repr=False)  # ids of library kernels run on the host

    def bind(self, state: dict, batch: int):
        key = (id(state), batch)
        step = self._steps.get(key)
        if step is None:
            if self.runtime is None:
                self.runtime = CupyRuntime(require_gpu())
            step = self._make(self.runtime, state, batch)
            self._steps = {k: v for k, v in self._steps.items() if k[0] == id(state)}
            self._steps[key] = step
        return step

    def make_step(self, rt, state: dict, batch: int):
        """The step on another runtime (the CPU harness)."""
        return self._make(rt, state, batch)

    def emit(self) -> str:
        """Every kernel's source with the `.net` lines it covers, then the host code."""
        return emit_text(self)


def _size_py(shape) -> str:
    dims = [("B" if d is None else str(d)) for d in shape if d != 1]
    return " * ".join(dims) or "1"


def lower(outputs: list[Node], updates=(), name: str = "step", feeds: list[Node] | None = None) -> CudaFunction:
    """Fuse, generate CUDA C for every kernel, and the Python `make(rt, S, B)`."""
    updates = list(updates)
    P = fuse.plan(outputs, updates)
    sources = kernel_sources(P, f"netc_{name}")
    src_of = {ks.kernel.id: ks for ks in sources}
    order = P.order
    if feeds is None:
        feeds = [n for n in order if n.op in FEED_OPS]
    state_nodes = [n for n in order if n.op in STATE_OPS]
    for leaf, _ in updates:
        if leaf not in state_nodes:
            state_nodes.append(leaf)
    var: dict[int, str] = {}
    pre: list[str] = []  # make-time lines
    body: list[str] = []  # per-step lines
    for k, s in enumerate(state_nodes):
        var[s.id] = f"s{k}"
        pre.append(f"    s{k} = S[{s.name!r}]  # {s.op} {shape_str(s.shape)} {s.dtype}")
    fed = {f.id for f in feeds}
    for k, f in enumerate(feeds):
        if f.op == "input":
            pre.append(f"    x{k} = rt.empty({_shape_py(f.shape)}, {f.dtype!r})  # {f.name} {shape_str(f.shape)}")
            body.append(f"        d{k} = rt.upload(f{k}, x{k})")
            var[f.id] = f"d{k}"
        else:
            var[f.id] = f"f{k}"
    for n in order:
        if n.op in FEED_OPS and n.id not in fed:
            raise ValueError(f"leaf {n.name!r} ({n.op}) is neither fed nor in state")

    # host scalars: at make time when they depend on constants and B only
    host_nodes: list[Node] = []
    per_step: set[int] = set()
    for h in P.host:
        nm = f"h{h.id}"
        typ = f"_np.{h.dtype}"
        if h.op == "const":
            pre.append(f"    {nm} = {typ}({_literal(h)})")
        elif h.op == "hyper":
            body.append(f"        {nm} = {typ}({var[h.id]})")
            per_step.add(h.id)
        elif h.op == "count":
            pre.append(f"    {nm} = {typ}({_size_py(h.attr('dims'))})")
        else:
            k = len(host_nodes)
            host_nodes.append(h)
            args = ", ".join(f"h{i.id}" for i in h.inputs)
            line = f"{nm} = _host({k}, ({args},))  # {h.op}"
            if any(i.id in per_step for i in h.inputs):
                body.append("        " + line)
                per_step.add(h.id)
            else:
                pre.append("    " + line)
        var[h.id] = nm

    # buffers: allocate at the producing kernel, reuse after the last reader
    last: dict[int, int] = {}
    for k in P.kernels:
        for r in k.reads:
            last[r] = k.id
    end = len(P.kernels)
    update_of = {u.id: leaf for leaf, u in updates}
    for o in outputs:
        last[o.id] = end
    for leaf, u in updates:
        last[u.id] = end
    pool: dict[tuple, list[str]] = {}
    owned: dict[int, str] = {}
    allocs: list[str] = []
    nbuf = [0]

    def take(shape, dtype) -> str:
        free = pool.get((tuple(shape), dtype))
        if free:
            return free.pop()
        b = f"b{nbuf[0]}"
        nbuf[0] += 1
        allocs.append(f"    {b} = rt.empty({_shape_py(shape)}, {dtype!r})  # {shape_str(shape)}")
        return b

    def give(node_id: int) -> None:
        b = owned.pop(node_id, None)
        if b is not None:
            n = node_of[node_id]
            pool.setdefault((tuple(n.shape), n.dtype), []).append(b)

    node_of = {n.id: n for n in order}

    def arg(n: Node) -> str:
        """A Python expression for n's array (views applied)."""
        if n.op == "const":
            return _literal(n)
        if n.id in var:
            return var[n.id]
        k = fuse.alias_of(n)
        if k is not None:
            return arg(n.inputs[k])
        spec = OPS[n.op]
        if spec.kind == "view":
            return spec.emit(Emit([arg(i) for i in n.inputs], "", n))
        raise AssertionError(f"%{n.id} {n.op} has no value here")

    finals: list[str] = []
    launches: list[str] = []
    host_calls: set[int] = set()
    setup: list[str] = []
    for k in P.kernels:
        lines = [f"        # k{k.id} {k.kind} ({k.phase})" + (f"  [{_comment(', '.join(k.locs()))}]" if k.locs() else "")]
        for m in k.writes:
            leaf = k.in_place.get(m.id)
            if leaf is not None:
                var[m.id] = var[leaf.id]
            else:
                b = take(m.shape, m.dtype)
                owned[m.id] = b
                var[m.id] = b
                if m.id in update_of:
                    finals.append(f"        rt.copyto({var[update_of[m.id].id]}, {b})")
        if k.kind == "gemm":
            m = k.members[0]
            a, b = (arg(x) for x in k.operands)
            lines.append(f"        rt.matmul({a}, {b}, {var[m.id]})")
        elif k.kind == "library":
            call, on_host = _library_call(k.members[0], arg, var, take, pool, setup, pre)
            lines += call
            if on_host:
                host_calls.add(k.id)
        else:
            ks = src_of[k.id]
            cfg = _launch_config(k)
            pre.append(f"    K{k.id} = rt.kernel(SRC[{k.id}], {ks.name!r}, {ks.dtypes!r})")
            pre.append(f"    G{k.id}, T{k.id} = {cfg}")
            args = []
            for p in ks.params:
                if p.role == "B":
                    args.append("B_")
                elif p.role == "scalar":
                    args.append(var[p.node.id])
                else:
                    args.append(var[p.node.id])
            lines.append(f"        rt.launch(K{k.id}, G{k.id}, T{k.id}, ({', '.join(args)},))")
        launches += lines
        for r in list(k.reads) + [m.id for m in k.writes]:
            if last.get(r, end) <= k.id:
                give(r)
    # outputs that no kernel computes
    rets = []
    for o in outputs:
        if o.id in var and o.id not in {h.id for h in P.host}:
            rets.append(var[o.id])
        elif o.op == "const" or o.id in {h.id for h in P.host}:
            b = take((), o.dtype)
            launches.append(f"        rt.fill({b}, {arg(o)})")
            rets.append(b)
        else:
            rets.append(arg(o))
    for leaf, u in updates:
        if u.id not in P.producer:  # the new value is a leaf or a host scalar
            src = arg(u)
            finals.append(f"        rt.copyto({var[leaf.id]}, {src})" if u.op in STATE_OPS + FEED_OPS
                          else f"        rt.fill({var[leaf.id]}, {src})")
    lines = ["def make(rt, S, B):", "    np = rt.xp  # the array module library calls use", "    B_ = _np.int64(B)"]
    lines += pre + allocs + ["    " + s for s in setup]
    lines.append(f"    def {name}({', '.join(f'f{k}' for k in range(len(feeds)))}):")
    lines += [f"        # f{k} = {f.name} {shape_str(f.shape)} {f.dtype}" for k, f in enumerate(feeds)]
    lines += body + launches + finals
    lines.append(f"        return ({', '.join(rets)}{',' if len(rets) == 1 else ''})")
    lines.append(f"    return {name}")
    source = "\n".join(lines) + "\n"

    impls = [(OPS[h.op].impl, h.a, np.dtype(h.dtype).type) for h in host_nodes]

    def make(rt, S, B):
        def _host(k, xs):
            impl, attrs, typ = impls[k]
            with np.errstate(all="ignore"):
                return typ(impl([np.asarray(x) for x in xs], attrs, B))
        ns = {"_np": np, "SRC": {k: s.source for k, s in src_of.items()}, "_host": _host}
        # generated from the op table and the plan; spec values appear only as
        # float literals and in comments
        exec(compile(source, f"<netc-cuda:{name}>", "exec"), ns)  # noqa: S102
        return ns["make"](rt, S, B)

    return CudaFunction(name, source, [f.name for f in feeds], [s.name for s in state_nodes], list(outputs),
                        len(order), make, plan=P, kernels=sources, host_calls=host_calls)


def _library_call(m: Node, arg, var, take, pool, setup, pre) -> tuple[list[str], bool]:
    """An op with no kernel template, through its NumPy emitter with `np` the
    runtime's array module. A view that is no index map is copied out; an op
    drawing random numbers runs on the host (NumPy's Philox streams, keyed by
    seed and step, exactly as on the CPU path) and its result is uploaded."""
    spec = OPS[m.op]
    if spec.kind == "view":
        expr = spec.emit(Emit([arg(i) for i in m.inputs], "", m))
        return [f"        np.copyto({var[m.id]}, {expr})"], False
    scratch_shapes = spec.scratch(m) if spec.scratch else []
    scratch = [take(s, d) for s, d in scratch_shapes]
    e = Emit([arg(i) for i in m.inputs], var[m.id], m, scratch, setup)
    spec.emit(e)
    text = "; ".join(e.lines)
    for (s, d), b in zip(scratch_shapes, scratch):
        pool.setdefault((tuple(s), d), []).append(b)
    if "np.random." not in text:
        return ["        " + ln for ln in e.lines], False
    host = f"{var[m.id]}_host"
    pre.append(f"    {host} = _np.empty({_shape_py(m.shape)}, {m.dtype!r})  # host side of a random stream")
    e = Emit([arg(i) for i in m.inputs], host, m, scratch, setup)
    spec.emit(e)
    lines = ["        " + ln.replace("np.", "_np.") for ln in e.lines]
    lines.append(f"        rt.upload({host}, {var[m.id]})")
    return lines, True


def _shape_py(shape) -> str:
    return "(" + "".join(("B" if d is None else str(d)) + ", " for d in shape) + ")"


def _launch_config(k: Kernel) -> str:
    """Python expression for (blocks, threads per block), evaluated in make()."""
    if k.kind == "elementwise":
        n = _size_py(k.space)
        return f"min(max(({n} + {BLOCK - 1}) // {BLOCK}, 1), 65535), {BLOCK}"
    odims = [s for d, s in enumerate(k.space) if d not in k.axes]
    rdims = [s for d, s in enumerate(k.space) if d in k.axes]
    no, nk = _size_py(odims), _size_py(rdims)
    if k.layout == "block":
        return f"min(max({no}, 1), 65535), min({BLOCK}, max(32, 1 << max({nk} - 1, 0).bit_length()))"
    return f"min(max(({no} + 127) // 128, 1), 65535), 128"


# ---------------------------------------------------------------------------
# the device


def require_gpu():
    """The cupy module, with a device; else a NetcError saying what is missing."""
    try:
        import cupy
    except ImportError as e:
        raise NetcError(f"device 'gpu' needs CuPy, which is not installed ({e}); {INSTALL_HINT}, "
                        "or use the default device 'cpu'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, no device
        raise NetcError(f"device 'gpu': CuPy is installed but no CUDA device is usable ({e}); run on a machine "
                        "with an NVIDIA GPU and driver, or use the default device 'cpu'") from None
    if count < 1:
        raise NetcError("device 'gpu': CuPy is installed but no CUDA device is visible "
                        "(check CUDA_VISIBLE_DEVICES and the driver), or use the default device 'cpu'")
    return cupy


_KERNEL_CACHE: dict = {}


class CupyRuntime:
    """What generated steps call, on CuPy. Compiled kernels are cached in-process
    by source and parameter types, so recompiling a spec costs no NVRTC time."""

    def __init__(self, cp):
        self.cp = self.xp = cp

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def kernel(self, source: str, name: str, dtypes: tuple = ()):
        key = (source, name, dtypes)
        k = _KERNEL_CACHE.get(key)
        if k is None:
            k = _KERNEL_CACHE[key] = self.cp.RawKernel(source, name)
        return k

    def launch(self, k, grid: int, block: int, args: tuple) -> None:
        k((grid,), (block,), args)

    def matmul(self, a, b, out) -> None:
        self.cp.matmul(a, b, out=out)

    def upload(self, x, buf):
        cp = self.cp
        if isinstance(x, cp.ndarray):
            if x.dtype == buf.dtype and x.flags.c_contiguous and x.shape == buf.shape:
                return x
            cp.copyto(buf, x)
            return buf
        buf.set(np.ascontiguousarray(x, dtype=buf.dtype))
        return buf

    def copyto(self, dst, src) -> None:
        self.cp.copyto(dst, src)

    def fill(self, buf, value) -> None:
        buf.fill(value)


def to_device(state: dict, cp) -> dict:
    return {k: cp.asarray(v) for k, v in state.items()}


def to_host(a):
    """A NumPy array from a NumPy or CuPy array (or scalar)."""
    get = getattr(a, "get", None)
    return get() if callable(get) and not isinstance(a, np.ndarray) else a


# ---------------------------------------------------------------------------
# inspection


def emit_text(fn: CudaFunction) -> str:
    P = fn.plan
    src_of = {ks.kernel.id: ks for ks in fn.kernels}
    out = [f"// ==== {fn.name}: {len(P.kernels)} kernels "
           f"({', '.join(f'{v} {k}' for k, v in sorted(fuse.plan_stats(P)['by_kind'].items()))}) ===="]
    for k in P.kernels:
        covers = ", ".join(k.lines()) or "(generated: no source line)"
        params = k.params()
        out.append("")
        if k.kind in ("gemm", "library"):
            out.append(f"// ---- k{k.id} {k.kind} ({k.phase}) covers {covers}"
                       + (f"; parameters {', '.join(params)}" if params else ""))
        else:
            out.append(f"// ---- k{k.id} {k.kind} ({k.phase}) covers {covers}")
        if k.kind == "gemm":
            m = k.members[0]
            names = [(_leaf_name(x)) for x in k.operands]
            alpha = " * ".join(_leaf_name(s) for s in k.alpha)
            out.append(f"// cupy.matmul({names[0]}, {names[1]}, out=[{shape_str(m.shape)}])"
                       + (f"; readers scale by {alpha}" if alpha else ""))
        elif k.kind == "library":
            m = k.members[0]
            where = ("computed on the host (NumPy's random streams), then uploaded" if k.id in fn.host_calls
                     else "through its NumPy emitter, with the runtime's arrays")
            out.append(f"// library call: {m.op} {shape_str(m.shape)} {where}")
        else:
            out.append(src_of[k.id].body.rstrip("\n"))
    out.append("")
    out.append("# ---- host code: make(rt, S, B) -> step(*feeds) ----")
    out.append(fn.source.rstrip("\n"))
    return "\n".join(out) + "\n"


def _leaf_name(n: Node) -> str:
    if n.op == "transpose":
        return _leaf_name(n.inputs[0]) + ".T"
    return n.name or f"%{n.id}"


# ---------------------------------------------------------------------------
# a compiled program's functions, for the GPU

FUNCTIONS = {"train_step": "step", "evaluate": "evaluate", "predict": "predict"}


def lower_function(prog, which: str = "train_step") -> CudaFunction | None:
    """The CUDA version of one of a Program's functions (same outputs, feeds and
    updates as its NumPy version); None if the program has no such function."""
    attr = FUNCTIONS.get(which, which)
    fn = getattr(prog, attr, None)
    if fn is None:
        return None
    if isinstance(fn, CudaFunction):
        return fn
    return _lower_like(fn, prog.updates if attr == "step" else (), which)


def _lower_like(fn: Function, updates, name: str) -> CudaFunction:
    leaves = {n.name: n for n in _leaves(list(fn.outputs) + [u for _, u in updates])}
    return lower(fn.outputs, updates, name, feeds=[leaves[f] for f in fn.feeds])


def lower_program(prog) -> None:
    """Replace every compiled function a Program holds (step, evaluate, predict,
    curvature, ...) by its CUDA version."""
    import dataclasses
    for f in dataclasses.fields(prog):
        fn = getattr(prog, f.name)
        if isinstance(fn, Function) and not isinstance(fn, CudaFunction):
            setattr(prog, f.name, _lower_like(fn, prog.updates if f.name == "step" else (),
                                              "train_step" if f.name == "step" else f.name))


def _leaves(roots):
    from .graph import toposort
    return [n for n in toposort(roots) if n.op in FEED_OPS]
