"""C for one fused kernel on the CPU: compiler/c_kernel.py's expressions inside
plain loops (a static function the native step calls in order).

Elementwise kernels are nested loops over the iteration shape, the innermost
one `#pragma omp simd` (unit stride on the written buffer, so GCC vectorizes
it), the outer one split across OpenMP threads where the space is large
enough to pay (runtime/threads.py's `netc_par_min`, `netc_threads`);
reductions loop over their output points (split the same way), each
reduction step a loop over the reduced points (sums with a simd reduction). The prelude maps the op
table's C names onto the CPU: float calls to their float versions (vector math
from compiler/c_math.py where it exists), `fmax`/`fmin` to selects that
propagate NaN as NumPy's maximum/minimum do (the reference every backend is
checked against), and declares the BLAS GEMMs called through pointers.
"""
from __future__ import annotations

from .c_kernel import CTYPE, CKernel, Scope, prod
from .kernel_ir import ident

# libm names the op table's templates use, with one argument (float -> f suffix)
UNARY = ("exp", "log", "tanh", "fabs", "sqrt", "log1p", "expm1")


def prelude() -> str:
    """The translation unit's head: the vector math (compiler/c_math.py, which maps
    the op table's libm names onto float versions) and the runtime hooks
    (compiler/c_runtime.py: the GEMM shims, the thread count)."""
    from .c_runtime import C_RUNTIME
    try:
        from .c_math import C_MATH
    except ImportError:  # not there yet: libm, NaN-propagating max/min
        C_MATH = _LIBM
    return ("#include <stdbool.h>\n#include <stddef.h>\n#include <string.h>\n"
            "#define __restrict__ restrict\n" + C_MATH + "\n" + C_RUNTIME + "\n")


def _libm() -> str:
    lines = ["#include <math.h>", "#define NETC_INF INFINITY", "#define NETC_NAN NAN"]
    for f in UNARY:
        lines.append(f"#define {f}(x) _Generic((x), float: {f}f, default: {f})(x)")
    lines += [
        "static inline float netc_fmaxf(float a, float b) { return (a > b || a != a) ? a : b; }",
        "static inline double netc_fmax(double a, double b) { return (a > b || a != a) ? a : b; }",
        "static inline float netc_fminf(float a, float b) { return (a < b || a != a) ? a : b; }",
        "static inline double netc_fmin(double a, double b) { return (a < b || a != a) ? a : b; }",
        "#define fmax(a, b) _Generic((a), float: netc_fmaxf, default: netc_fmax)((a), (b))",
        "#define fmin(a, b) _Generic((a), float: netc_fminf, default: netc_fmin)((a), (b))",
        "#define pow(a, b) _Generic((a), float: powf, default: pow)((a), (b))",
    ]
    return "\n".join(lines) + "\n"


_LIBM = _libm()


SMALL = 4096  # elements: a kernel known to be this small never opens a parallel region


def _size(space) -> int:
    n = 1
    for d in space:
        n *= d
    return n


def safe(text: str) -> str:
    """A `//` comment's text: one line (dtypes.comment) that cannot splice the next
    line into it (no backslash) nor spell a trigraph."""
    return text.replace("\\", "/").replace("??", "?")


class NativeKernel(CKernel):
    """A kernel as a static C function: nested loops (elementwise) or a loop over
    output points with a loop per reduction step (reduce). `preset` (an Ex key ->
    the leaf holding its value) names values another step already stored, and `skip` the
    members not written here (the velocity a GEMM wrote: compiler/c_fusion.py)."""

    preset: dict = {}
    skip: frozenset = frozenset()

    def function(self) -> str:
        """The loops as `<name>_body(lo_, hi_, ...)` over a range of the outer loop, and
        `<name>(...)` calling it once, or split across the OpenMP team where the space
        reaches runtime/threads.py's `netc_par_min` (a serial call keeps the loops out
        of an outlined parallel region, which costs even when it runs on one thread)."""
        K = self.K
        self.outer = "1LL"
        body = self._elementwise() if K.kind == "elementwise" else self._reduce()
        params = self.param_list()
        args = ", ".join(p.name for p in self.params)
        head = "\n".join(safe(h) for h in self.head())
        text = (f"{head}\nstatic void {self.name}_body(const long long lo_, const long long hi_, {params}) {{\n"
                + "\n".join(body) + "\n}\n")
        call = f"{self.name}_body(0, {self.outer}, {args});"
        if self.outer == "1LL" or (all(d is not None for d in K.space) and _size(K.space) < SMALL):
            return text + f"static void {self.name}({params}) {{ {call} }}\n"
        return text + (
            f"static void {self.name}({params}) {{\n"
            f"    const long long n_ = {self.outer};\n"
            f"    if (netc_threads > 1 && {prod(K.space)} >= netc_par_min && n_ > 1) {{\n"
            f"        #pragma omp parallel num_threads(netc_threads)\n"
            f"        {{\n"
            f"            const long long t_ = omp_get_thread_num(), T_ = omp_get_num_threads();\n"
            f"            {self.name}_body(n_ * t_ / T_, n_ * (t_ + 1) / T_, {args});\n"
            f"        }}\n"
            f"    }} else {{\n"
            f"        {call}\n"
            f"    }}\n"
            f"}}\n")


    def _elementwise(self) -> list[str]:
        K = self.K
        out: list[str] = []
        ind = "    "
        dims = [(d, s) for d, s in enumerate(K.space)]
        loops = [(d, s) for d, s in dims if s != 1]
        for d, s in dims:
            if s == 1:
                out.append(f"{ind}const long long i{d} = 0; (void)i{d};")
        for j, (d, s) in enumerate(loops):
            if j == len(loops) - 1:
                out.append(f"{ind}#pragma omp simd")
            if j == 0:  # the outer loop: the range this call covers
                self.outer = prod([s])
                out.append(f"{ind}for (long long i{d} = lo_; i{d} < hi_; ++i{d}) {{")
            else:
                out.append(f"{ind}for (long long i{d} = 0; i{d} < {prod([s])}; ++i{d}) {{")
            ind += "    "
        sc = Scope(self, ind)
        for key, leaf in self.preset.items():  # read where a GEMM stored it
            sc.names[key] = f"{self.buf[leaf.id]}[{self.offset(leaf.shape, ident(leaf.shape))}]"
        for m, ex in K.e_out:
            if m.id in self.write_target and m.id not in self.skip:
                self.write(m, ex, ident(m.shape), sc)
        out += sc.lines
        for j in range(len(loops)):
            ind = ind[:-4]
            out.append(f"{ind}}}")
        return out

    def _reduce(self) -> list[str]:
        K = self.K
        S, axes = K.space, K.axes
        odims = [(d, S[d]) for d in range(len(S)) if d not in axes]
        rdims = [(d, S[d]) for d in axes]
        out = Scope(self, "    ")
        out.emit(f"const long long no_ = {prod([s for _, s in odims])};")
        out.emit(f"const long long nk_ = {prod([s for _, s in rdims])};")
        self.outer = "no_" if [s for _, s in odims if s != 1] else "1LL"
        if self.outer == "no_":
            self.outer = prod([s for _, s in odims])
        out.emit("for (long long o_ = lo_; o_ < hi_; ++o_) {")
        body = Scope(self, "        ")
        self._zero(body, odims + rdims)
        self.decompose(body, "o_", odims, "qo_")
        for k, (kind, r, x, j) in enumerate(K.steps):
            t = CTYPE[x.dtype]
            a = f"acc{k}_"
            body.emit(self.acc_init(kind, t, a))
            if kind in ("sum", "sumexp") and len([s for _, s in rdims if s != 1]) <= 1:
                body.emit(f"#pragma omp simd reduction(+:{a})")
            body.emit("for (long long r_ = 0; r_ < nk_; ++r_) {")
            loop = Scope(self, "            ")
            self.decompose(loop, "r_", rdims, "qr_")
            loop.emit(self.acc_update(kind, r, a, self.expr(x, loop), "r_"))
            body.lines += loop.lines
            body.emit("}")
            self.acc_done(body, kind, r, j, a, f"r{k}_", "nk_")
        s_writes = [(m, ex) for m, ex in K.s_out if m.id in self.write_target]
        if s_writes:
            body.emit("for (long long r_ = 0; r_ < nk_; ++r_) {")
            loop = Scope(self, "            ")
            self.decompose(loop, "r_", rdims, "qr_")
            for m, ex in s_writes:
                self.write(m, ex, ident(S), loop)
            body.lines += loop.lines
            body.emit("}")
        o_writes = [(m, ex) for m, ex in K.o_out if m.id in self.write_target]
        osc = Scope(self, "        ")
        for m, ex in o_writes:
            self.write(m, ex, tuple(K.omap[m.id]), osc)
        return out.lines + body.lines + osc.lines + ["    }"]

    @staticmethod
    def _zero(sc: Scope, dims) -> None:
        """Size-1 iteration dims have no loop: their index is 0 wherever it is named."""
        for d, s in dims:
            if s == 1:
                sc.emit(f"const long long i{d} = 0; (void)i{d};")
