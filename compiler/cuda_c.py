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

from .c_kernel import CTYPE, CKernel, Param, Scope, prod
from .kernel_ir import Kernel, Plan, ident

BLOCK = 256  # threads per block (elementwise; the most for reductions)

GPU_PRELUDE = """\
#define NETC_KERNEL extern "C" __global__
#define NETC_BLOCK 256
#define NETC_INF __int_as_float(0x7f800000)
#define NETC_NAN __int_as_float(0x7fffffff)
"""


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


class CudaKernel(CKernel):
    """A kernel as CUDA: grid-stride loops; reductions a thread per output point
    or a block per output point with a shared-memory tree reduction."""

    def generate(self) -> KernelSource:
        K = self.K
        head = self.head()
        params = self.param_list()
        body = self._elementwise() if K.kind == "elementwise" else self._reduce()
        code = f"({params}) {{\n" + "\n".join(body) + "\n}\n"
        # the name carries a hash of the code: kernels of different functions, dtypes
        # and specs can share one compilation unit (and identical ones dedupe)
        self.name = f"{self.name}_{hashlib.sha1(code.encode()).hexdigest()[:8]}"
        text = "\n".join(head) + f"\nNETC_KERNEL void {self.name}" + code
        dtypes = tuple(p.ctype for p in self.params)
        return KernelSource(K, self.name, text, self.params, dtypes)

    def _elementwise(self) -> list[str]:
        K = self.K
        dims = list(enumerate(K.space))
        sc = Scope(self, "    ")
        sc.emit(f"const long long n_ = {prod(K.space)};")
        sc.emit("for (long long e_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; e_ < n_; "
                "e_ += (long long)blockDim.x * gridDim.x) {")
        inner = Scope(self, "        ")
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
        out = Scope(self, "    ")
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
        out.emit(f"const long long no_ = {prod([s for _, s in odims])};")
        out.emit(f"const long long nk_ = {prod([s for _, s in rdims])};")
        if block:
            out.emit("for (long long o_ = blockIdx.x; o_ < no_; o_ += gridDim.x) {")
        else:
            out.emit("for (long long o_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; o_ < no_; "
                     "o_ += (long long)blockDim.x * gridDim.x) {")
        body = Scope(self, "        ")
        self.decompose(body, "o_", odims, "qo_")
        rloop = ("for (long long r_ = threadIdx.x; r_ < nk_; r_ += blockDim.x) {" if block
                 else "for (long long r_ = 0; r_ < nk_; ++r_) {")
        for k, (kind, r, x, j) in enumerate(K.steps):
            t = CTYPE[x.dtype]
            a = f"acc{k}_"
            body.emit(self.acc_init(kind, t, a))
            body.emit(rloop)
            loop = Scope(self, "            ")
            self.decompose(loop, "r_", rdims, "qr_")
            loop.emit(self.acc_update(kind, r, a, self.expr(x, loop), "r_"))
            body.lines += loop.lines
            body.emit("}")
            if block:
                self._block_reduce(body, kind, t, a)
            self.acc_done(body, kind, r, j, a, f"r{k}_", "nk_")
        s_writes = [(m, ex) for m, ex in K.s_out if m.id in self.write_target]
        if s_writes:
            body.emit(rloop)
            loop = Scope(self, "            ")
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
            osc = Scope(self, "            " if block else "        ")
            for m, ex in o_writes:
                self.write(m, ex, tuple(K.omap[m.id]), osc)
            body.lines += osc.lines
            if block:
                body.emit("}")
        return out.lines + body.lines + ["    }"]

    @staticmethod
    def _block_reduce(sc: Scope, kind: str, t: str, a: str) -> None:
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
    return [CudaKernel(k, f"{prefix}_k{k.id}", P).generate() for k in P.kernels if k.kind in ("elementwise", "reduce")]
