"""The pipeline, one direction, each stage a function of the last:

    text --parse--> syntax --elaborate--> graph --simplify--> graph
         --differentiate + update--> graph --simplify--> graph --lower--> NumPy | CUDA

`compile_program` runs it and keeps every stage's roots so that
`netc compile --emit graph --after STAGE` can show them.

`Program.function` is the one way the runtime, the API and the diagnostics get
compiled code: memoized on the Program by what the function computes, so no
caller lowers a graph or keeps a cache of its own. This module is also the
only one outside the compiler's back end that calls a lowerer or the fuser.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import free_dims, lower_numpy
from .curvature import gauss_newton_diag
from .differentiate import grad
from .elaborate import elaborate
from .errors import NetcError, SpecError
from .graph import Node, shape_str, toposort
from .lower_numpy import Function
from .ops import expected
from .parse import parse
from .simplify import simplify
from .spec import Spec
from .update import Optimizer, build_updates, regularized_objective

__all__ = ["STAGES", "BACKENDS", "Function", "Program", "compile_program", "parse_and_elaborate", "choose_backend",
           "hessian_vector_function", "bind_sizes", "emit", "fused_stats", "require_backend", "to_backend", "to_host",
           "dump", "dot"]

STAGES = ("elaborate", "simplify", "differentiate", "simplify_grads")
BACKENDS = ("numpy", "cuda", "native")
HYPER_ORDER = ("lr", "momentum", "step")
NAMED = ("train_step", "evaluate", "predict", "curvature", "value_and_grad")


@dataclass(eq=False)
class Program:
    """The compiled spec: the graph's roots after every stage, and its functions.

    `backend` is where `step`, `evaluate`, `predict` and `curvature` run
    ("numpy", or "cuda" for device="gpu"); other functions name their backend.
    """
    spec: Spec
    loss: Node | None
    output: Node | None
    errors: Node | None  # number of misclassified examples in a batch (class targets)
    grads: dict[str, Node]
    updates: list[tuple[Node, Node]]
    stages: dict[str, list[Node]]
    optimizer: Optimizer | None = None
    step_outputs: list[Node] = field(default_factory=list)  # the loss (+ which examples it got wrong)
    curvature_outputs: list[Node] | None = None  # per-parameter bbprop diagonal (for sdlm)
    backend: str = "numpy"
    debug: bool = False
    threads: object = None  # the native backend's thread count (train key `threads`: int, "auto" or None)
    seconds: float = 0.0
    rules_fired: dict[str, int] = field(default_factory=dict)
    _functions: dict = field(default_factory=dict, repr=False)  # key -> Function
    _named: dict = field(default_factory=dict, repr=False)  # (name, backend) -> Function | None

    # -- the one entry point ----------------------------------------------------------
    def function(self, outputs: list[Node], feeds: list[Node] | None = None, *,
                 updates: list[tuple[Node, Node]] = (), backend: str = "numpy", name: str = "function",
                 noise: bool = False) -> Function:
        """The compiled `fn(state, *feeds) -> outputs` (applying `updates` in place).

        Without `noise`, random ops take their expected value (evaluation,
        prediction, statistics); the train step draws them. `feeds` fixes the
        argument order (default: the spec's inputs and targets the outputs read,
        then the step's hyper-parameters). Memoized by outputs, updates, feeds and
        backend: asking twice costs a dictionary lookup.
        """
        if backend not in BACKENDS:
            raise NetcError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        G = self.spec.graph
        outputs = list(outputs) if noise else expected(G, list(outputs))
        updates = list(updates)
        if feeds is None:
            feeds = _used(self.spec.feeds, outputs + [u for _, u in updates]) + _hypers(updates, outputs)
        key = (tuple(o.id for o in outputs), tuple((leaf.id, u.id) for leaf, u in updates),
               tuple(f.id for f in feeds), backend)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = _lower(outputs, updates, name, feeds, backend, self.debug, self.threads)
        return fn

    def named(self, which: str, backend: str | None = None) -> Function | None:
        """One of the program's own functions (NAMED), None where the spec has none."""
        backend = backend or self.backend
        key = (which, backend)
        if key not in self._named:
            if which not in NAMED:
                raise NetcError(f"unknown function {which!r}; choose one of {', '.join(NAMED)}")
            self._named[key] = _NAMED_BUILDERS[which](self, backend)
        return self._named[key]

    @property
    def step(self) -> Function | None:
        return self.named("train_step")

    @property
    def evaluate(self) -> Function | None:
        return self.named("evaluate")

    @property
    def predict(self) -> Function | None:
        return self.named("predict")

    @property
    def curvature(self) -> Function | None:
        return self.named("curvature")

    def use_backend(self, backend: str) -> None:
        """Run step/evaluate/predict/curvature on `backend` from now on (compiled now)."""
        if backend not in BACKENDS:
            raise NetcError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        for which in ("curvature", "train_step", "evaluate", "predict"):
            self.named(which)

    @property
    def state_leaves(self) -> list[Node]:
        """Parameters and optimizer state, in a stable order."""
        seen, out = set(), []
        roots = [u for _, u in self.updates] + [n for n in (self.loss, self.output) if n is not None]
        read = [n for n in toposort(roots) if n.op == "state"]
        for n in list(self.spec.params.values()) + [leaf for leaf, _ in self.updates] + read:
            if n.name not in seen:
                seen.add(n.name)
                out.append(n)
        return out


def _lower(outputs, updates, name, feeds, backend, debug, threads=None) -> Function:
    if backend == "cuda":
        from . import lower_cuda
        return lower_cuda.lower(outputs, updates, name, feeds=feeds)
    if backend == "native":
        from . import lower_c
        return lower_c.lower(outputs, updates, name, feeds=feeds, debug=debug, threads=threads)
    return lower_numpy.lower(outputs, updates, name, feeds=feeds, debug=debug)


# -- the program's own functions ----------------------------------------------------------


def _train_step(prog: Program, backend: str) -> Function | None:
    if prog.loss is None or not prog.updates:
        return None
    feeds = prog.spec.feeds + _hypers(prog.updates, prog.step_outputs)
    return prog.function(prog.step_outputs, feeds, updates=prog.updates, backend=backend,
                         name="train_step", noise=True)


def _evaluate(prog: Program, backend: str) -> Function | None:
    if prog.loss is None:
        return None
    outs = expected(prog.spec.graph, [prog.loss] + ([prog.errors] if prog.errors is not None else []))
    return prog.function(outs, _used(prog.spec.feeds, outs), backend=backend, name="evaluate", noise=True)


def _predict(prog: Program, backend: str) -> Function | None:
    if prog.output is None:
        return None
    (out,) = expected(prog.spec.graph, [prog.output])
    return prog.function([out], _used(list(prog.spec.inputs.values()), [out]), backend=backend,
                         name="predict", noise=True)


def _curvature(prog: Program, backend: str) -> Function | None:
    if prog.curvature_outputs is None:
        return None
    outs = prog.curvature_outputs
    return prog.function(outs, _used(prog.spec.feeds, outs), backend=backend, name="curvature", noise=True)


def _value_and_grad(prog: Program, backend: str) -> Function | None:
    """The whole training criterion and its gradient, weight decay included (the
    graph's own decay terms; `inv_examples` is fed by name): what L-BFGS and CG drive."""
    if prog.loss is None or not prog.grads:
        return None
    G, params = prog.spec.graph, list(prog.spec.params.values())
    outs = regularized_objective(G, prog.optimizer or Optimizer(), params, prog.loss,
                                 [prog.grads[p.name] for p in params])
    return prog.function(outs, prog.spec.feeds + _hypers((), outs), backend=backend, name="value_and_grad")


_NAMED_BUILDERS = {"train_step": _train_step, "evaluate": _evaluate, "predict": _predict,
                   "curvature": _curvature, "value_and_grad": _value_and_grad}


# -- the stages ------------------------------------------------------------------------------


def parse_and_elaborate(text: str, file: str, dtype: str = "float32", check_block=None,
                        read_use=None) -> Spec:
    """`read_use(path, shown, loc) -> text` reads a `use`d file (default: the elaborator's).
    A spec with sizes from the data (`_`) is checked with stand-in sizes; `Spec.free`
    lists them, to bind with `bind_sizes` once the data is known (free_dims.py)."""
    kw = {} if read_use is None else {"read_use": read_use}
    module = parse(text, file)
    free = free_dims.scan(module)
    if not free:
        return elaborate(module, dtype, check_block, **kw)
    return free_dims.elaborate_unbound(lambda run: elaborate(module, dtype, check_block, probe_run=run, **kw),
                                       free, text)


def bind_sizes(text: str, values: list) -> str:
    """The spec text with each `_` (a free_dims.FreeDim of `Spec.free`) replaced by its size."""
    return free_dims.bind_text(text, values)


def compile_program(spec: Spec, *, scales: dict[str, float] | None = None,
                    optimizer: Optimizer | None = None, debug: bool = False, functions: bool = True,
                    step_misses: bool = False, backend: str = "numpy", threads=None) -> Program:
    """Simplify, differentiate, build the update, simplify again, lower.

    `step_misses`: the train step also returns which examples of the batch it
    misclassified (for the emphasizing scheme). `functions`: compile the step,
    evaluate, predict (and curvature) functions now, on `backend`."""
    t0 = time.perf_counter()
    G = spec.graph
    fired: dict[str, int] = {}
    stages: dict[str, list[Node]] = {}
    roots = [n for n in (spec.loss, spec.output) if n is not None]
    stages["elaborate"] = list(roots)
    roots = simplify(G, roots, fired=fired)
    stages["simplify"] = list(roots)
    loss = roots[0] if spec.loss is not None else None
    output = roots[-1] if spec.output is not None else None
    if output is not None:
        reads = {n.name for n in toposort([output]) if n.op == "input"} & set(spec.targets)
        if reads:
            raise SpecError(f"the model's output depends on target '{sorted(reads)[0]}': an output must be "
                            f"computed from the inputs alone (assign `output = ...` to choose it)",
                            spec.output.loc, spec.source)
    errors = _error_count(spec, output)
    grads: dict[str, Node] = {}
    updates: list[tuple[Node, Node]] = []
    if loss is not None and spec.params:
        params = list(spec.params.values())
        gs = grad(G, loss, params)
        gs = simplify(G, gs, fired=fired)
        grads = {p.name: g for p, g in zip(params, gs)}
        stages["differentiate"] = [loss] + gs
        opt = optimizer or Optimizer()
        updates = build_updates(G, opt, params, gs, scales or {}, loss, output)
        news = simplify(G, [u for _, u in updates], fired=fired)
        updates = [(leaf, u) for (leaf, _), u in zip(updates, news)]
        stages["simplify_grads"] = [loss] + [u for _, u in updates]
    step_outputs = [] if loss is None else \
        [loss] + ([errors.inputs[0]] if step_misses and errors is not None else [])
    prog = Program(spec, loss, output, errors, grads, updates, stages, optimizer=optimizer,
                   step_outputs=step_outputs, backend=backend, debug=debug, threads=threads, rules_fired=fired)
    if functions and optimizer is not None and optimizer.needs_curvature_state and loss is not None:
        params = list(spec.params.values())
        curv = simplify(G, gauss_newton_diag(G, loss, params, output), fired=fired)
        prog.curvature_outputs = expected(G, curv)
    if functions:
        prog.use_backend(backend)
    prog.seconds = time.perf_counter() - t0
    return prog


def _hypers(updates, outputs=()) -> list[Node]:
    """The step's scalar inputs: lr, momentum, step (the update count, for noise), then any
    others by name; the trainer feeds them by name."""
    found = {n.name: n for n in toposort([u for _, u in updates] + list(outputs)) if n.op == "hyper"}
    names = [k for k in HYPER_ORDER if k in found] + sorted(k for k in found if k not in HYPER_ORDER)
    return [found[k] for k in names]


def _used(feeds: list[Node], outputs: list[Node]) -> list[Node]:
    ids = {n.id for n in toposort(outputs)}
    return [f for f in feeds if f.id in ids]


def _error_count(spec: Spec, output: Node | None) -> Node | None:
    """sum(argmax(output) != t) for a class(n) target and an [B, n] output."""
    if output is None:
        return None
    G = spec.graph
    for t in spec.targets.values():
        n = t.attr("classes")
        if n is not None and output.ndim == 2 and output.shape[0] is None and output.shape[1] == n:
            return G("sum", G("ne", G("argmax", output, axis=-1), t))
    return None


def hessian_vector_function(prog: Program) -> Function:
    """hv(x, t, v_1..v_k) = H v for the loss's Hessian w.r.t. all parameters, by
    differentiating <grad L, v> again (never forming H)."""
    spec, G = prog.spec, prog.spec.graph
    params = list(spec.params.values())
    vs = [G("input", name=f"__v.{p.name}", shape=p.shape, dtype=p.dtype) for p in params]
    gs = [prog.grads[p.name] for p in params]
    dot_gv = None
    for g, v in zip(gs, vs):
        term = G("sum", G("mul", g, v))
        dot_gv = term if dot_gv is None else G("add", dot_gv, term)
    hv = expected(G, simplify(G, grad(G, dot_gv, params)))
    return prog.function(hv, _used(spec.feeds, hv) + vs, name="hessian_vector", noise=True)


# -- devices -----------------------------------------------------------------------------------


def choose_backend(requested: str | None = None, device: str = "cpu") -> str:
    """The backend a model runs on: cuda for device="gpu"; else `requested`, else
    $NETC_BACKEND, else native where a C compiler and a BLAS are present (the
    NumPy path otherwise, said once on stderr)."""
    if device == "gpu":
        if requested not in (None, "cuda"):
            raise NetcError(f"backend {requested!r} runs on the CPU; device 'gpu' uses the cuda backend")
        return "cuda"
    import os
    choice = requested or os.environ.get("NETC_BACKEND", "").strip().lower() or None
    if choice is not None and choice not in ("native", "numpy"):
        where = "backend" if requested else "NETC_BACKEND"
        raise NetcError(f"unknown {where} {choice!r}; choose native or numpy (cuda: device='gpu')")
    if choice == "numpy":
        return "numpy"
    from . import native_function
    why = native_function.unavailable()
    if why is None:
        return "native"
    if choice == "native":
        raise NetcError(f"backend 'native' is not available here: {why}", hint="use --backend numpy")
    native_function.notice(f"netc: {why}; using the NumPy backend (slower; --backend numpy hides this)")
    return "numpy"


def require_backend(backend: str):
    """The array module a backend's state lives in (numpy, or cupy with a device);
    a NetcError saying what is missing otherwise. Call it before compiling."""
    if backend == "cuda":
        from . import lower_cuda
        return lower_cuda.require_gpu()
    import numpy
    return numpy


def to_backend(state: dict, backend: str) -> dict:
    """State arrays where `backend`'s functions read them."""
    if backend == "cuda":
        from . import lower_cuda
        return lower_cuda.to_device(state, require_backend(backend))
    return state


def to_host(a):
    """A NumPy array from a NumPy or CuPy array (or scalar)."""
    get = getattr(a, "get", None)
    import numpy
    return get() if callable(get) and not isinstance(a, numpy.ndarray) else a


# -- looking at a program ------------------------------------------------------------------------


def emit(prog: Program, kind: str, which: str = "train_step", after: str = "simplify_grads") -> str:
    """What `netc compile --emit KIND` prints: graph (after a stage), dot, numpy (the
    generated source), cuda (the fused kernels, each with the .net lines it covers) or
    c (the native step's C, the same way, and its Python glue)."""
    if kind in ("graph", "dot"):
        roots = prog.stages.get(after)
        if roots is None:
            raise NetcError(f"stage '{after}' did not run for this spec (no loss or no parameters?)")
        if kind == "dot":
            return dot(roots)
        text = dump(roots)
        if prog.rules_fired:
            text += "# rewrites fired: " + ", ".join(f"{k} x{v}" for k, v in sorted(prog.rules_fired.items())) + "\n"
        return text
    fn = prog.named(which, {"cuda": "cuda", "c": "native"}.get(kind, "numpy"))
    if fn is None:
        raise NetcError(f"this spec has no {which} function")
    return fn.emit() if kind in ("cuda", "c") else fn.source


def fused_stats(prog: Program, which: str, batch: int, title: str) -> str:
    """Fused kernels per step, bytes moved and GEMM FLOPs at batch size `batch`."""
    from . import fuse
    fn = prog.named(which, "cuda")
    if fn is None:
        raise NetcError(f"this spec has no {which} function")
    return fuse.format_stats(fn.plan.stats(batch), title)


def dump(roots: list[Node]) -> str:
    """The graph under `roots` as text, one node a line, inputs first."""
    lines = []
    for n in toposort(roots):
        args = ", ".join(f"%{i.id}" for i in n.inputs)
        attrs = ", ".join(f"{k}={v}" for k, v in n.attrs if k not in ("init",))
        inner = "; ".join(x for x in (args, attrs) if x)
        loc = f"  # {n.loc}" if n.loc else ""
        lines.append(f"%{n.id} = {n.op}({inner}) : {shape_str(n.shape)} {n.dtype}{loc}")
    marks = ", ".join(f"%{r.id}" for r in roots)
    return "\n".join(lines) + f"\nroots: {marks}\n"


def dot(roots: list[Node]) -> str:
    """The graph under `roots` in Graphviz's dot language (`netc compile --emit dot | dot -Tsvg`)."""
    lines = ["digraph netc {", "  rankdir=BT;", '  node [shape=box, fontname="monospace", fontsize=10];']
    root_ids = {r.id for r in roots}
    for n in toposort(roots):
        label = n.name or n.op
        if n.op == "const":
            label = f"{n.attr('value'):g}"
        style = ', style=filled, fillcolor="#dde8ff"' if n.op in ("param", "state") else ""
        style = ', style=filled, fillcolor="#ffe8c8"' if n.id in root_ids else style
        text = f"{label}\\n{shape_str(n.shape)}".replace('"', "'")
        lines.append(f'  n{n.id} [label="{text}"{style}];')
        for i in n.inputs:
            lines.append(f"  n{i.id} -> n{n.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"
