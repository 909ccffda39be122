"""Render the degenerate plan (one op per step, compiler/plan.py) as NumPy source.

The generated `make(np, S, B)` allocates every buffer the plan names for batch
size B and returns `step(*feeds)`, which calls BLAS for matrix products and
ufuncs with `out=` for everything else (each op's NumPy emitter), so a step
allocates no arrays. Updates are written in place where the plan says so and
copied over their leaf at the end otherwise. The readable reference every
other renderer is checked against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import math
import threading

import numpy as np

from . import plan
from .node import Node, shape_str
from .ops import OPS, Emit, concrete, shape_expr
from .plan import FEED_OPS, STATE_OPS, comment  # noqa: F401 (FEED_OPS, STATE_OPS re-exported)


@dataclass
class Function:
    """A compiled function: `fn(state, *feeds) -> tuple of arrays`.

    Returned arrays are the function's own buffers: copy what you keep.
    State arrays are bound when a batch size is first seen; change them in
    place (np.copyto), never by rebinding the dict entry.
    """
    name: str
    source: str
    feeds: list[str]
    state: list[str]
    outputs: list[Node]
    nodes: int
    _make: Callable = field(repr=False, default=None)
    _steps: dict = field(repr=False, default_factory=dict)
    _threads: threading.local = field(repr=False, compare=False, default_factory=threading.local)
    buffers: list = field(repr=False, default_factory=list)  # (name, shape, dtype) that bind allocates

    def buffer_bytes(self, batch: int) -> int:
        """Bytes `bind` allocates for one batch size: what a memory budget counts
        before anything exists (runtime/memory.py)."""
        return sum(math.prod(concrete(shape, batch)) * np.dtype(dtype).itemsize for _, shape, dtype in self.buffers)

    KEEP = 4  # state dicts bound at once (training, averaged, ...); each holds its buffers

    def bind(self, state: dict[str, np.ndarray], batch: int):
        """The step bound to `state`'s arrays for this batch size (made once, then cached).
        The cache holds the dict itself: an id() could be reused by a new dict. Each thread
        has its own: a step's buffers are its scratch and its outputs, so two threads
        calling one function at once (a server predicting in threads) must not share them."""
        bindings = self._threads.__dict__.setdefault("bindings", [])  # [(state dict, {batch: step})]
        steps = next((s for st, s in bindings if st is state), None)
        if steps is None:
            steps = {}
            bindings.insert(0, (state, steps))
            del bindings[self.KEEP:]
        step = steps.get(batch)
        if step is None:
            step = steps[batch] = self.new_step(state, batch)
        return step

    def new_step(self, state: dict, batch: int):
        return self._make(np, state, batch)

    def __call__(self, state: dict[str, np.ndarray], *feeds):
        batch = next((f.shape[0] for f in feeds if np.ndim(f) > 0), 1)
        return self.bind(state, batch)(*feeds)


def _literal(n: Node) -> str:
    v = n.attr("value")
    return repr(float(v)) if np.isfinite(v) else f"np.{n.dtype}({str(v)!r})"


def host_expr(n: Node, var: dict[int, str]) -> str:
    """The host (Python) expression of n's array in a renderer's glue: a constant,
    the buffer `var` names, or a view of one as the op table writes it (an alias
    is its input). The CUDA and native renderers share it."""
    if n.op == "const":
        return _literal(n)
    if n.id in var:
        return var[n.id]
    spec = OPS[n.op]
    if spec.alias is not None:
        return host_expr(n.inputs[spec.alias], var)
    if spec.kind == "view":
        return spec.emit(Emit([host_expr(i, var) for i in n.inputs], "", n))
    raise AssertionError(f"%{n.id} {n.op} has no value here")


_comment = comment


def _fill(shape, dtype: str, debug: bool) -> str:
    if not debug:
        return f"np.empty({shape}, dtype=np.{dtype})"
    poison = "np.nan" if dtype.startswith("float") else "-1"  # NaN for floats, -1 for indices
    return f"np.full({shape}, {poison}, dtype=np.{dtype})"


def lower(outputs: list[Node], updates: list[tuple[Node, Node]] = (), name: str = "step",
          feeds: list[Node] | None = None, debug: bool = False) -> Function:
    """Generate and compile `name(*feeds)` computing `outputs` and applying `updates`.

    `feeds` fixes the argument order (default: input and hyper leaves in
    schedule order). With `debug`, buffers start filled with NaN so a read of
    an unwritten value shows up.
    """
    if not name.isidentifier():
        raise ValueError(f"function name {name!r} is not an identifier")
    L = plan.per_op(outputs, updates, feeds)
    var = dict(L.buffers.name)
    step_of = {st.what.id: i for i, st in enumerate(L.steps)}
    setup: list[str] = []
    body: list[str] = []
    for n in L.order:
        if n.op in FEED_OPS + STATE_OPS:
            continue
        i = step_of.get(n.id)
        if n.op == "const":
            if i is not None:  # an output must be an array
                body.append(f"        {var[n.id]}[...] = {_literal(n)}")
            else:
                var[n.id] = _literal(n)
            continue
        spec = OPS[n.op]
        args = [var[x.id] for x in n.inputs]
        loc = f"  [{comment(n.loc)}]" if n.loc else ""
        body.append(f"        # %{n.id} {n.op} {shape_str(n.shape)}{loc}")
        if i is None:  # a view: an expression over its input
            var[n.id] = spec.emit(Emit(args, "", n))
            continue
        e = Emit(args, var[n.id], n, L.buffers.scratch[i], setup)
        spec.emit(e)
        body.extend("        " + line for line in e.lines)
    finals = [f"        np.copyto({var[leaf.id]}, {var[u.id]})" for leaf, u in L.buffers.copies]
    rets = ", ".join(var[o.id] for o in L.outputs)
    lines = ["def make(np, S, B):"]
    lines += [f"    s{k} = S[{s.name!r}]  # {s.op} {shape_str(s.shape)}" for k, s in enumerate(L.state)]
    lines += [f"    {b} = " + _fill(shape_expr(shape), dtype, debug) + f"  # {shape_str(shape)}"
              for b, shape, dtype in L.buffers.allocs]
    lines += ["    " + s for s in setup]
    lines.append(f"    def {name}({', '.join(f'f{k}' for k in range(len(L.feeds)))}):")
    lines += [f"        # f{k} = {comment(f.name)} {shape_str(f.shape)} {f.dtype}" for k, f in enumerate(L.feeds)]
    lines += body + finals
    lines.append(f"        return ({rets}{',' if len(L.outputs) == 1 else ''})")
    lines.append(f"    return {name}")
    source = "\n".join(lines) + "\n"
    # Generated from the op table and the plan: dtypes only from plan.DTYPES, names
    # as repr() literals or in sanitized comments, spec values as number literals.
    namespace: dict = {}
    exec(compile(source, f"<netc:{name}>", "exec"), namespace)  # noqa: S102
    return Function(name, source, [f.name for f in L.feeds], [s.name for s in L.state], list(L.outputs),
                    len(L.order), namespace["make"], buffers=list(L.buffers.allocs))
