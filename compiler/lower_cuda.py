"""Render the fused plan (compiler/plan.py, compiler/fuse.py) for the GPU: the
CUDA C of every kernel (compiler/cuda_c.py) and a Python host step.

Matrix products are `cupy.matmul(a, b, out=...)`; a hoisted operand scale
(fuse.py) is applied by the kernels that read the product. An op with no
kernel template runs through its NumPy emitter with CuPy as the array module.

The generated `make(rt, S, B)` allocates every buffer the plan names once for
batch size B, with parameters and optimizer state the (device) arrays in S,
and returns `step(*feeds)`: one upload per input per step, the kernels in
order, no host synchronization (the returned loss is a device array; reading
it is the caller's one sync). `rt` is the runtime: CuPy on a GPU
(compiler/cupy_runtime.py), or the CPU harness that runs the same kernels
compiled by gcc (tests/cuda_harness.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import plan
from .cuda_c import BLOCK, GPU_PRELUDE, KernelSource, kernel_sources  # noqa: F401 (GPU_PRELUDE re-exported)
from .cupy_runtime import CupyRuntime, require_gpu, to_device, to_host  # noqa: F401 (re-exported)
from .dtypes import comment
from .kernel_ir import Kernel, Plan, through
from .fuse_stats import plan_stats
from .node import Node, shape_str
from .lower_numpy import Function, _literal, host_expr
from .ops import OPS, Emit


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

    KEEP = 1  # device buffers of one state dict at a time

    def new_step(self, state: dict, batch: int):
        if self.runtime is None:
            self.runtime = CupyRuntime(require_gpu())
        return self._make(self.runtime, state, batch)

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
    """Plan (fused), generate CUDA C for every kernel, and render the Python `make(rt, S, B)`."""
    if not name.isidentifier():
        raise ValueError(f"function name {name!r} is not an identifier")
    L = plan.fused(outputs, updates, feeds)
    P, bufs = L.fused, L.buffers
    sources = kernel_sources(P, f"netc_{name}")
    src_of = {ks.kernel.id: ks for ks in sources}
    var: dict[int, str] = {}
    pre: list[str] = []  # make-time lines
    body: list[str] = []  # per-step lines
    for k, s in enumerate(L.state):
        var[s.id] = f"s{k}"
        pre.append(f"    s{k} = S[{s.name!r}]  # {s.op} {shape_str(s.shape)} {s.dtype}")
    for k, f in enumerate(L.feeds):
        if f.op == "input":
            pre.append(f"    x{k} = rt.empty({_shape_py(f.shape)}, {f.dtype!r})"
                       f"  # {comment(f.name)} {shape_str(f.shape)}")
            body.append(f"        d{k} = rt.upload(f{k}, x{k})")
            var[f.id] = f"d{k}"
        else:
            var[f.id] = f"f{k}"
    host_nodes = _host_scalars(P, var, pre, body)

    def arg(n: Node) -> str:
        """A Python expression for n's array (views applied)."""
        return host_expr(n, var)

    launches: list[str] = []
    host_calls: set[int] = set()
    setup: list[str] = []
    filled: dict[int, str] = {}  # output id -> the buffer a constant or host scalar is put in
    for i, st in enumerate(L.steps):
        k = st.what
        if not isinstance(k, Kernel):  # an output no kernel computes
            filled[k.id] = bufs.name[k.id]
            launches.append(f"        rt.fill({filled[k.id]}, {arg(k)})")
            continue
        where = f"  [{comment(', '.join(k.locs()))}]" if k.locs() else ""
        lines = [f"        # k{k.id} {k.kind} ({k.phase}){where}"]
        for m in k.writes:
            var[m.id] = bufs.name[m.id]
        if k.kind == "gemm":
            a, b = (arg(x) for x in k.operands)
            lines.append(f"        rt.matmul({a}, {b}, {var[k.members[0].id]})")
        elif k.kind == "library":
            call, on_host = _library_call(k.members[0], arg, var[k.members[0].id], bufs.scratch[i], setup, pre)
            lines += call
            if on_host:
                host_calls.add(k.id)
        else:
            ks = src_of[k.id]
            pre.append(f"    K{k.id} = rt.kernel(SRC[{k.id}], {ks.name!r}, {ks.dtypes!r})")
            pre.append(f"    G{k.id}, T{k.id} = {_launch_config(k)}")
            args = ["B_" if p.role == "B" else var[p.node.id] for p in ks.params]
            lines.append(f"        rt.launch(K{k.id}, G{k.id}, T{k.id}, ({', '.join(args)},))")
        launches += lines
    rets = [filled.get(o.id) or arg(o) for o in L.outputs]
    host = {h.id for h in P.host}
    finals = [f"        rt.fill({var[leaf.id]}, {arg(u)})" if u.op == "const" or u.id in host
              else f"        rt.copyto({var[leaf.id]}, {arg(u)})" for leaf, u in bufs.copies]
    lines = ["def make(rt, S, B):", "    np = rt.xp  # the array module library calls use", "    B_ = _np.int64(B)"]
    lines += pre
    lines += [f"    {b} = rt.empty({_shape_py(shape)}, {dtype!r})  # {shape_str(shape)}"
              for b, shape, dtype in bufs.allocs]
    lines += ["    " + s for s in setup]
    lines.append(f"    def {name}({', '.join(f'f{k}' for k in range(len(L.feeds)))}):")
    lines += [f"        # f{k} = {comment(f.name)} {shape_str(f.shape)} {f.dtype}" for k, f in enumerate(L.feeds)]
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
        # generated from the op table and the plan: dtypes only from dtypes.DTYPES,
        # names as repr() literals or in sanitized comments, spec values as literals
        exec(compile(source, f"<netc-cuda:{name}>", "exec"), ns)  # noqa: S102
        return ns["make"](rt, S, B)

    return CudaFunction(name, source, [f.name for f in L.feeds], [s.name for s in L.state], list(L.outputs),
                        len(L.order), make, plan=P, kernels=sources, host_calls=host_calls)


def _host_scalars(P: Plan, var: dict, pre: list, body: list) -> list[Node]:
    """Name every host scalar h{id}: computed at make time when it depends on
    constants and B only, per step when on a hyper. Returns the ones computed
    through their op's reference implementation (`_host(k, ...)` in the source)."""
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
        elif not h.inputs:  # count: a size known once B is
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
    return host_nodes


def _library_call(m: Node, arg, out: str, scratch: list[str], setup, pre) -> tuple[list[str], bool]:
    """An op with no kernel template, through its NumPy emitter with `np` the
    runtime's array module. A view that is no index map is copied out; an op
    drawing random numbers runs on the host (NumPy's Philox streams, keyed by
    seed and step, exactly as on the CPU path) and its result is uploaded."""
    spec = OPS[m.op]
    if spec.kind == "view":
        expr = spec.emit(Emit([arg(i) for i in m.inputs], "", m))
        return [f"        np.copyto({out}, {expr})"], False
    if spec.expect is None:  # not a random op (its entry would say its expected value)
        e = Emit([arg(i) for i in m.inputs], out, m, scratch, setup)
        spec.emit(e)
        return ["        " + ln for ln in e.lines], False
    host = f"{out}_host"
    pre.append(f"    {host} = _np.empty({_shape_py(m.shape)}, {m.dtype!r})  # host side of a random stream")
    e = Emit([arg(i) for i in m.inputs], host, m, scratch, setup)
    spec.emit(e)
    lines = ["        " + ln.replace("np.", "_np.") for ln in e.lines]
    lines.append(f"        rt.upload({host}, {out})")
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
# inspection


def emit_text(fn: CudaFunction) -> str:
    P = fn.plan
    src_of = {ks.kernel.id: ks for ks in fn.kernels}
    out = [f"// ==== {fn.name}: {len(P.kernels)} kernels "
           f"({', '.join(f'{v} {k}' for k, v in sorted(plan_stats(P)['by_kind'].items()))}) ===="]
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
    """A GEMM operand as the user named it (a view as its NumPy expression: `W.T`)."""
    if through(n) is not None:
        return OPS[n.op].emit(Emit([_leaf_name(i) for i in n.inputs], "", n))
    return comment(n.name or f"%{n.id}")
