"""The pipeline, one direction, each stage a function of the last:

    text --parse--> syntax --elaborate--> graph --simplify--> graph
         --differentiate + update--> graph --simplify--> graph --lower--> NumPy

`compile_program` runs it and keeps every stage's roots so that
`netc compile --emit graph --after STAGE` can show them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .differentiate import grad
from .elaborate import Spec, elaborate
from .graph import Node, shape_str, toposort
from .lower_numpy import Function, lower
from .errors import SpecError
from .ops import expected
from .parse import parse
from .simplify import simplify
from .curvature import gauss_newton_diag
from .update import Optimizer, build_updates

STAGES = ("elaborate", "simplify", "differentiate", "simplify_grads")


@dataclass
class Program:
    spec: Spec
    loss: Node | None
    output: Node | None
    errors: Node | None  # number of misclassified examples in a batch (class targets)
    grads: dict[str, Node]
    updates: list[tuple[Node, Node]]
    stages: dict[str, list[Node]]
    step: Function | None = None
    evaluate: Function | None = None
    predict: Function | None = None
    curvature: Function | None = None  # per-parameter bbprop diagonal (for sdlm)
    seconds: float = 0.0
    rules_fired: dict[str, int] = field(default_factory=dict)

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


def parse_and_elaborate(text: str, file: str, dtype: str = "float32", check_block=None) -> Spec:
    return elaborate(parse(text, file), dtype, check_block)


def compile_program(spec: Spec, *, scales: dict[str, float] | None = None,
                    optimizer: Optimizer | None = None, debug: bool = False, functions: bool = True,
                    step_misses: bool = False) -> Program:
    """`step_misses`: the train step also returns which examples of the batch it
    misclassified (for the emphasizing scheme)."""
    """Simplify, differentiate, build the update, simplify again, lower."""
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
    prog = Program(spec, loss, output, errors, grads, updates, stages, rules_fired=fired)
    if functions and optimizer is not None and optimizer.needs_curvature_state and loss is not None:
        params = list(spec.params.values())
        curv = simplify(G, gauss_newton_diag(G, loss, params, output), fired=fired)
        curv = expected(G, curv)
        prog.curvature = lower(curv, (), "curvature", feeds=_used(spec.feeds, curv), debug=debug)
    if functions:
        feeds = spec.feeds
        if loss is not None:
            outs = [loss] + ([errors.inputs[0]] if step_misses and errors is not None else [])
            hypers = _hypers(updates, outs)
            if updates:
                prog.step = lower(outs, updates, "train_step", feeds=feeds + hypers, debug=debug)
            outs = expected(G, [loss] + ([errors] if errors is not None else []))  # no noise when evaluating
            prog.evaluate = lower(outs, (), "evaluate", feeds=_used(feeds, outs), debug=debug)
        if output is not None:
            (out,) = expected(G, [output])
            prog.predict = lower([out], (), "predict", feeds=_used(list(spec.inputs.values()), [out]),
                                 debug=debug)
    prog.seconds = time.perf_counter() - t0
    return prog


HYPER_ORDER = ("lr", "momentum", "step")


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
    return lower(hv, (), "hessian_vector", feeds=_used(spec.feeds, hv) + vs)
