"""Render the fused plan (compiler/plan.py, compiler/fuse.py) as C for the CPU:
the whole function one exported C call (the native backend).

`render` turns a `Lowering` into one translation unit: every elementwise and
reduce kernel a static function (compiler/c_native.py), every matrix product
a `cblas_?gemm` call through a pointer set at load time, the host scalars
(hyper-parameters, the batch size, their products) computed at the top, the
updates copied over their leaves at the end. The exported function is
`void netc_<name>_<seg>(long long B, void* const* P, const double* H)`: `P`
holds the feeds', the state's and the buffers' addresses (in that order,
built once per binding), `H` the hyper-parameters' values. An op with no C
(a library kernel: random masks drawn from NumPy's streams) splits the step
into segments with its NumPy emitter in between, so its numbers are NumPy's.

Where a weight gradient's GEMM feeds only the heavy-ball update of its
velocity, the GEMM writes the velocity itself (compiler/c_fusion.py). Names
reach the source only in comments (`comment`), dtypes only from `DTYPES`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import plan
from .c_fusion import velocity_gemms
from .c_kernel import CTYPE, dim, literal_c, prod
from .c_native import NativeKernel, prelude, safe
from .dtypes import comment as _comment
from .kernel_ir import Kernel, through
from .node import Node, shape_str
from .ops import OPS, cuda_expr



def comment(text) -> str:
    return safe(_comment(text))


@dataclass
class Rendered:
    """A function as C (`c_source`: the body, without the prelude) and its Python
    glue (`py_source`: `make(rt, S, B)`, the step calling the segments)."""
    name: str
    c_source: str
    py_source: str
    segments: list[str]
    lowering: plan.Lowering
    host_in_c: bool
    fused_gemms: list[str] = field(default_factory=list)  # "k3 -> velocity name" notes
    allocs: list = field(default_factory=list)  # the plan's buffers this function uses (b<n>, shape, dtype)


def gemm_operand(x: Node):
    """(storage node, transposed) of a GEMM operand a BLAS call can read in
    place (a 2-D buffer or its transpose), or None."""
    t = False
    while through(x) is not None:
        spec = OPS[x.op]
        if spec.alias is not None:
            x = x.inputs[spec.alias]
        elif x.op == "transpose" and x.ndim == 2 and x.inputs[0].ndim == 2:
            t, x = not t, x.inputs[0]
        else:
            return None
    return (x, t) if x.ndim == 2 else None


def _gemm_ok(k: Kernel) -> bool:
    m = k.members[0]
    if m.ndim != 2 or m.dtype not in ("float32", "float64"):
        return False
    ops = [gemm_operand(x) for x in k.operands]
    return all(o is not None and o[0].op != "const" and o[0].dtype == m.dtype for o in ops)


def host_c_ok(P) -> bool:
    """Every host scalar has a C rendering (else the step computes them in Python)."""
    return all(h.op in ("const", "hyper", "count") or (OPS[h.op].cuda is not None and h.inputs)
               for h in P.host)


def _timed(line: str, kid: int, profile: bool, name: str) -> str:
    """With `profile`, the step's line between two reads of this thread's CPU clock,
    the nanoseconds added to netc_prof_<name>[kid] (a profiling build only)."""
    if not profile:
        return line
    return ("    { struct timespec t0_, t1_; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0_);\n" + line +
            f"\n    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1_); netc_prof_{name}[{kid}] += "
            "(t1_.tv_sec - t0_.tv_sec) * 1000000000LL + (t1_.tv_nsec - t0_.tv_nsec); }")


def render(L: plan.Lowering, name: str, profile: bool = False, fuse_velocity: bool = True) -> Rendered:
    P, bufs = L.fused, L.buffers
    nf, ns = len(L.feeds), len(L.state)
    hyper_slot = {f.id: j for j, f in enumerate(f for f in L.feeds if f.op == "hyper")}
    host_in_c = host_c_ok(P)
    if not host_in_c:  # every host scalar from Python, after the hypers
        hyper_slot = {**hyper_slot, **{h.id: len(hyper_slot) + j for j, h in enumerate(P.host)}}
    slot: dict[str, int] = {f"f{k}": k for k in range(nf)}
    slot.update({f"s{k}": nf + k for k in range(ns)})
    slot.update({b: nf + ns + int(b[1:]) for b, _, _ in bufs.allocs})
    ctype_of: dict[str, str] = {}
    for k, f in enumerate(L.feeds):
        if f.op == "input":
            ctype_of[f"f{k}"] = CTYPE[f.dtype]
    for k, s in enumerate(L.state):
        ctype_of[f"s{k}"] = CTYPE[s.dtype]
    for b, _, dtype in bufs.allocs:
        ctype_of[b] = CTYPE[dtype]
    cvar: dict[int, str] = {}  # node id -> C pointer (or host scalar) name
    for k, f in enumerate(L.feeds):
        cvar[f.id] = f"f{k}"
    for k, s in enumerate(L.state):
        cvar[s.id] = f"s{k}"
    for h in P.host:
        cvar[h.id] = f"h{h.id}"

    fusion = velocity_gemms(P, L, gemm_ok=_gemm_ok) if fuse_velocity else velocity_gemms(P, L, lambda k: False)
    funcs: list[str] = []
    segments: list[list[str]] = [[]]
    seg_py: list[list[tuple]] = [[]]  # per gap after segment i: python steps
    notes: list[str] = []

    def cur() -> list[str]:
        return segments[-1]

    for i, st in enumerate(L.steps):
        k = st.what
        if not isinstance(k, Kernel):  # an output no kernel computes: a constant or a host scalar
            b = bufs.name[k.id]
            cvar[k.id] = b
            v = literal_c(k.attr("value"), k.dtype) if k.op == "const" else f"(({CTYPE[k.dtype]})h{k.id})"
            cur().append(f"    for (long long e_ = 0; e_ < {prod(k.shape)}; ++e_) {b}[e_] = {v};"
                         f"  // output %{k.id} {k.op}")
            continue
        for m in k.writes:
            cvar[m.id] = bufs.name[m.id]
        where = comment(", ".join(k.locs())) if k.locs() else "(generated: no source line)"
        if k.kind == "gemm" and _gemm_ok(k):
            cur().append(f"    // k{k.id} gemm ({k.phase}) [{where}]")
            cur().append(_timed(_gemm_call(k, cvar, fusion.get(k.id)), k.id, profile, name))
            if k.id in fusion:
                notes.append(f"k{k.id} -> {comment(fusion[k.id].leaf.name)}")
        elif k.kind in ("elementwise", "reduce"):
            gen = NativeKernel(k, f"{name}_k{k.id}", P)
            gen.preset, gen.skip = fusion.presets(k), fusion.skips(k)
            funcs.append(gen.function())
            unread = {f.gemm.members[0].id for f in fusion.values() if f.update is k}  # the velocity GEMM's product
            args = ["B" if p.role == "B" else "NULL" if p.node.id in unread else cvar[p.node.id] for p in gen.params]
            cur().append(_timed(f"    {gen.name}({', '.join(args)});  // {k.kind} ({k.phase}) [{where}]", k.id, profile, name))
        else:  # a library call (or a GEMM BLAS cannot read in place): NumPy, between segments
            seg_py[-1].append((i, k))
            segments.append([])
            seg_py.append([])
    finals = []
    py_copies = []
    for leaf, u in bufs.copies:
        dst = cvar[leaf.id]
        if u.op == "const" or u.id in cvar and u.id in {h.id for h in P.host}:
            v = literal_c(u.attr("value"), u.dtype) if u.op == "const" else f"(({CTYPE[leaf.dtype]})h{u.id})"
            finals.append(f"    for (long long e_ = 0; e_ < {prod(leaf.shape)}; ++e_) {dst}[e_] = {v};")
        elif u.id in cvar and tuple(u.shape) == tuple(leaf.shape) and u.dtype == leaf.dtype:
            finals.append(f"    memcpy({dst}, {cvar[u.id]}, sizeof({CTYPE[leaf.dtype]}) * {prod(leaf.shape)});"
                          f"  // {comment(leaf.name)}")
        else:
            py_copies.append((leaf, u))
    if py_copies:  # the C copies first (they read old values first, in order): keep order by going Python
        py_copies = list(bufs.copies)
        finals = []
    cur().extend(finals)

    c_used = set(re.findall(r"\bb\d+\b", "\n".join(ln for seg in segments for ln in seg)))
    ctype_of = {v: t for v, t in ctype_of.items() if not v.startswith("b") or v in c_used}
    head = _segment_head(L, slot, ctype_of, P, hyper_slot, host_in_c)
    c = [f"// ==== {comment(name)}: {len(P.kernels)} kernels; feeds "
         f"{', '.join(comment(f.name) for f in L.feeds) or '(none)'} ===="]
    if profile:
        c += ["#include <time.h>", f"long long netc_prof_{name}[{max(len(P.kernels), 1)}];"]
    c += funcs
    names = []
    for j, lines in enumerate(segments):
        nm = f"netc_{name}_{j}"
        names.append(nm)
        c.append(f"void {nm}(const long long B, void* const* P, const double* H) {{")
        c += head
        c += lines
        c.append("}")
    py, allocs = _python(L, name, seg_py, py_copies, host_in_c, hyper_slot, names, c_used)
    return Rendered(name, "\n".join(c) + "\n", py, names, L, host_in_c, notes, allocs)


def _segment_head(L, slot, ctype_of, P, hyper_slot, host_in_c) -> list[str]:
    """Pointer and host scalar declarations at the top of every segment."""
    out = [f"    {t}* const {v} = ({t}*)P[{slot[v]}]; (void){v};" for v, t in ctype_of.items()]
    for h in P.host:
        t = CTYPE[h.dtype]
        if not host_in_c:
            out.append(f"    const {t} h{h.id} = ({t})H[{hyper_slot[h.id]}]; (void)h{h.id};")
        elif h.op == "const":
            out.append(f"    const {t} h{h.id} = {literal_c(h.attr('value'), h.dtype)}; (void)h{h.id};")
        elif h.op == "hyper":
            out.append(f"    const {t} h{h.id} = ({t})H[{hyper_slot[h.id]}]; (void)h{h.id};")
        elif h.op == "count":
            out.append(f"    const {t} h{h.id} = ({t}){prod(h.attr('dims'))}; (void)h{h.id};")
        else:
            rhs = cuda_expr(h, [f"h{i.id}" for i in h.inputs], t)
            out.append(f"    const {t} h{h.id} = ({t})({rhs}); (void)h{h.id};  // {h.op}")
    return out


def _gemm_call(k: Kernel, cvar: dict, fused) -> str:
    m = k.members[0]
    (ra, ta), (rb, tb) = (gemm_operand(x) for x in k.operands)
    t = CTYPE[m.dtype]
    fn = "netc_sgemm" if m.dtype == "float32" else "netc_dgemm"
    M, N = dim(m.shape[0]), dim(m.shape[1])
    K = dim(k.operands[0].shape[1])
    lda, ldb = dim(ra.shape[1]), dim(rb.shape[1])
    alpha, beta, out = f"({t})1", f"({t})0", cvar[m.id]
    if fused is not None:
        alpha, beta, out = fused.alpha, fused.beta, cvar[fused.leaf.id]
    return (f"    {fn}({int(ta)}, {int(tb)}, {M}, {N}, {K}, {alpha}, {cvar[ra.id]}, {lda}, "
            f"{cvar[rb.id]}, {ldb}, {beta}, {out}, {N});  // [{shape_str(m.shape)}]")


# ---------------------------------------------------------------------------
# the Python glue: make(rt, S, B) -> step(*feeds)


def _shape_py(shape) -> str:
    return "(" + "".join(("B" if d is None else str(d)) + ", " for d in shape) + ")"


def _python(L, name, seg_py, py_copies, host_in_c, hyper_slot, seg_names, c_used) -> tuple[str, list]:
    """The glue's source, and the buffers it allocates: those the C or the glue use
    (a GEMM that writes its velocity leaves its product's buffer unused)."""
    from .lower_cuda import _host_scalars, _library_call
    from .lower_numpy import host_expr
    P, bufs = L.fused, L.buffers
    nf, ns = len(L.feeds), len(L.state)
    pre = ["    np = rt.xp", "    B_ = B"]
    body: list[str] = []
    var: dict[int, str] = {}
    for k, s in enumerate(L.state):
        var[s.id] = f"s{k}"
        pre.append(f"    s{k} = rt.state(S, {s.name!r}, {_shape_py(s.shape)}, {s.dtype!r})  # {s.op} {shape_str(s.shape)}")
    pre.append("    # BUFFERS")
    pre.append(f"    P = rt.table({nf + ns + len(bufs.allocs)})")
    pre += [f"    P[{nf + k}] = rt.address(s{k})" for k in range(ns)]
    nh = max(hyper_slot.values(), default=-1) + 1
    pre.append(f"    H = rt.hypers({max(nh, 1)})")
    pre += [f"    C{j} = rt.fns[{j}]" for j in range(len(seg_names))]
    pre.append(f"    last = [None] * {max(nf, 1)}  # per input: the array the C side reads in place")
    pre.append(f"    D = [None] * {max(nf, 1)}  # per input: the array the C side reads")
    for k, f in enumerate(L.feeds):
        if f.op == "input":
            pre.append(f"    x{k} = rt.empty({_shape_py(f.shape)}, {f.dtype!r})  # {comment(f.name)}")
            body.append(f"        if f{k} is not last[{k}]:  # the trainer passes the same batch buffers each step")
            body.append(f"            d = D[{k}] = rt.feed(f{k}, x{k})")
            body.append(f"            P[{k}] = rt.address(d)")
            body.append(f"            last[{k}] = f{k} if d is f{k} else None  # a copy is made again every call")
            var[f.id] = f"D[{k}]"
        else:
            body.append(f"        H[{hyper_slot[f.id]}] = f{k}")
            var[f.id] = f"f{k}"
    need_host = not host_in_c or any(seg for seg in seg_py)
    if need_host:
        _host_scalars(P, var, pre, body)
        if not host_in_c:
            body += [f"        H[{hyper_slot[h.id]}] = h{h.id}" for h in P.host]
    else:
        for h in P.host:
            var[h.id] = f"h{h.id}"

    def arg(n: Node) -> str:
        return host_expr(n, var)

    setup: list[str] = []
    written: dict[int, str] = {}
    for i, st in enumerate(L.steps):
        for m in st.writes:
            written[m.id] = bufs.name[m.id]
    var_all = dict(written)
    for j, gap in enumerate(seg_py):
        body.append(f"        C{j}(B_, P, H)")
        for m_id, b in var_all.items():
            var.setdefault(m_id, b)
        for i, k in gap:
            m = k.members[0]
            out = bufs.name[m.id]
            body.append(f"        # k{k.id} {k.kind} ({k.phase}) through NumPy")
            if k.kind == "gemm":
                a, b = (arg(x) for x in k.operands)
                body.append(f"        np.matmul({a}, {b}, out={out})")
            else:
                lines, _ = _library_call(m, arg, out, bufs.scratch[i], setup, pre)
                body += lines
    for m_id, b in var_all.items():
        var.setdefault(m_id, b)
    body += [f"        np.copyto({var[leaf.id]}, {arg(u)})" for leaf, u in py_copies]
    rets = [written.get(o.id) or arg(o) for o in L.outputs]  # a constant or host scalar output: its buffer
    used = c_used | set(re.findall(r"\bb\d+\b", "\n".join(body + setup + rets)))
    allocs = [a for a in bufs.allocs if a[0] in used]
    alive = [f"s{k}" for k in range(ns)] + [b for b, _, _ in allocs]
    at = pre.index("    # BUFFERS")
    pre[at:at + 1] = ([f"    {b} = rt.empty({_shape_py(shape)}, {dtype!r})  # {shape_str(shape)}"
                       for b, shape, dtype in allocs]
                      + [f"    rt.alive = ({''.join(a + ', ' for a in alive)})  # the C side holds their addresses"])
    pre += [f"    P[{nf + ns + int(b[1:])}] = rt.address({b})" for b, _, _ in allocs]
    lines = ["def make(rt, S, B):"] + pre + ["    " + s for s in setup]
    lines.append(f"    def {name}({', '.join(f'f{k}' for k in range(nf))}):")
    lines += [f"        # f{k} = {comment(f.name)} {shape_str(f.shape)} {f.dtype}" for k, f in enumerate(L.feeds)]
    lines += body
    lines.append(f"        return ({', '.join(rets)}{',' if len(rets) == 1 else ''})")
    lines.append(f"    return {name}")
    return "\n".join(lines) + "\n", allocs


def lower(outputs: list[Node], updates=(), name: str = "step", feeds: list[Node] | None = None,
          profile: bool = False, fuse_velocity: bool = True, debug: bool = False, threads=None):
    """Plan (fused), render C and its glue, start compiling; a NativeFunction. With
    `profile`, each kernel's CPU nanoseconds accumulate in `netc_prof_<name>`
    (bench/mlp_epoch.py); `fuse_velocity=False` keeps every GEMM writing its product."""
    (fn,) = lower_many([(outputs, updates, name, feeds)], profile=profile, fuse_velocity=fuse_velocity, debug=debug,
                       threads=threads)
    return fn


def lower_many(jobs, profile: bool = False, fuse_velocity: bool = True, debug: bool = False, threads=None) -> list:
    """Several functions ((outputs, updates, name, feeds) each, distinct names) as one
    translation unit: one compiler run for all (the op recipes' tests). `debug`: buffers
    start as NaN; `threads`: the train key (runtime/threads.py decides at each bind)."""
    import numpy as np
    from .c_native import prelude
    from .native_function import NativeFunction, start_shared
    fns, texts = [], []
    for outputs, updates, name, feeds in jobs:
        if not name.isidentifier():
            raise ValueError(f"function name {name!r} is not an identifier")
        L = plan.fused(outputs, updates, feeds)
        R = render(L, name, profile, fuse_velocity)
        texts.append(R.c_source)
        host_nodes = [h for h in L.fused.host if h.inputs and h.op not in ("const", "hyper", "count")]
        impls = [(OPS[h.op].impl, h.a, np.dtype(h.dtype).type) for h in host_nodes]
        fns.append(NativeFunction(name, R.py_source, [f.name for f in L.feeds], [s.name for s in L.state],
                                  list(L.outputs), len(L.order), _maker(R.py_source, name, impls),
                                  buffers=list(R.allocs), segments=R.segments,
                                  fused_gemms=R.fused_gemms, plan=L.fused, debug=debug, threads=threads))
    source = prelude() + "".join(texts)
    for f in fns:
        f.c_source = source
    start_shared(fns, source, "_".join(j[2] for j in jobs)[:40])
    return fns


def _maker(py_source: str, name: str, impls: list):
    import numpy as np

    def make(rt, S, B):
        def _host(k, xs):
            impl, attrs, typ = impls[k]
            with np.errstate(all="ignore"):
                return typ(impl([np.asarray(x) for x in xs], attrs, B))
        ns = {"_np": np, "_host": _host}
        # generated from the op table and the plan: dtypes only from dtypes.DTYPES,
        # names as repr() literals or in sanitized comments, spec values as literals
        exec(compile(py_source, f"<netc-native:{name}>", "exec"), ns)  # noqa: S102
        return ns["make"](rt, S, B)
    return make
