"""Lower a graph to generated NumPy source.

Schedule (topological order), liveness and buffer reuse are decided here, once;
the generated `make(np, S, B)` allocates every buffer for batch size B and
returns `step(*feeds)`, which calls BLAS for matrix products and ufuncs with
`out=` for everything else, so a step allocates no arrays. Updates
(leaf <- new value) are written in place into the leaf's storage when every
other reader of the old value has already run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .graph import Node, shape_str, toposort
from .ops import OPS, Emit, shape_expr

FEED_OPS = ("input", "hyper")
STATE_OPS = ("param", "state")


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

    def bind(self, state: dict[str, np.ndarray], batch: int):
        """The step bound to `state`'s arrays for this batch size (made once, then cached).
        The cache holds the dict itself: an id() could be reused by a new dict."""
        bindings = self._steps.setdefault("bindings", [])  # [(state dict, {batch: step})]
        steps = next((s for st, s in bindings if st is state), None)
        if steps is None:
            steps = {}
            bindings.insert(0, (state, steps))
            del bindings[4:]  # a few live state dicts (training, averaged) at most
        step = steps.get(batch)
        if step is None:
            step = steps[batch] = self._make(np, state, batch)
        return step

    def __call__(self, state: dict[str, np.ndarray], *feeds):
        batch = next((f.shape[0] for f in feeds if np.ndim(f) > 0), 1)
        return self.bind(state, batch)(*feeds)


def _literal(n: Node) -> str:
    v = n.attr("value")
    return repr(float(v)) if np.isfinite(v) else f"np.{n.dtype}({str(v)!r})"


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def lower(outputs: list[Node], updates: list[tuple[Node, Node]] = (), name: str = "step",
          feeds: list[Node] | None = None, debug: bool = False) -> Function:
    """Generate and compile `name(*feeds)` computing `outputs` and applying `updates`.

    `feeds` fixes the argument order (default: input and hyper leaves in
    schedule order). With `debug`, buffers start filled with NaN so a read of
    an unwritten value shows up.
    """
    updates = list(updates)
    order = toposort(list(outputs) + [u for _, u in updates])
    pos = {n.id: i for i, n in enumerate(order)}
    out_ids = {o.id for o in outputs}

    # liveness: last position where each node's value (or a view of it) is read
    root: dict[int, int] = {}
    for n in order:
        root[n.id] = root[n.inputs[0].id] if OPS[n.op].kind == "view" else n.id
    last_use: dict[int, int] = {}
    for n in order:
        for i in n.inputs:
            last_use[root[i.id]] = pos[n.id]
    for o in outputs:
        last_use[root[o.id]] = len(order)

    readers: dict[int, list[int]] = {}
    for n in order:
        for i in n.inputs:
            readers.setdefault(root[i.id], []).append(pos[n.id])

    if feeds is None:
        feeds = [n for n in order if n.op in FEED_OPS]
    feed_names = [f.name for f in feeds]
    state_nodes = [n for n in order if n.op in STATE_OPS]
    for leaf, _ in updates:
        if leaf not in state_nodes:
            state_nodes.append(leaf)

    var: dict[int, str] = {}
    for k, f in enumerate(feeds):
        var[f.id] = f"f{k}"
    for k, s in enumerate(state_nodes):
        var[s.id] = f"s{k}"

    setup: list[str] = []
    body: list[str] = []
    allocs: list[str] = []
    pool: dict[tuple, list[str]] = {}
    owned: dict[int, str] = {}  # node id -> buffer it owns (to free at last use)
    nbuf = [0]
    def fill(shape, dtype) -> str:
        if not debug:
            return f"np.empty({shape}, dtype=np.{dtype})"
        poison = "np.nan" if dtype.startswith("float") else "-1"  # NaN for floats, -1 for indices
        return f"np.full({shape}, {poison}, dtype=np.{dtype})"

    def take(shape, dtype) -> str:
        key = (tuple(shape), dtype)
        free = pool.get(key)
        if free:
            return free.pop()
        b = f"b{nbuf[0]}"
        nbuf[0] += 1
        allocs.append(f"    {b} = " + fill(shape_expr(shape), dtype) +
                      f"  # {shape_str(shape)}")
        return b

    def give(shape, dtype, b: str) -> None:
        pool.setdefault((tuple(shape), dtype), []).append(b)

    update_of = {u.id: leaf for leaf, u in updates}
    finals: list[str] = []
    for n in order:
        if n.id in var:
            continue
        if n.op == "const":
            var[n.id] = _literal(n)
            if n.id in out_ids:  # an output must be an array
                b = take((), n.dtype)
                body.append(f"        {b}[...] = {var[n.id]}")
                var[n.id] = b
            continue
        if n.op in FEED_OPS + STATE_OPS:
            raise ValueError(f"leaf {n.name!r} ({n.op}) is neither fed nor in state")
        spec = OPS[n.op]
        args = [var[i.id] for i in n.inputs]
        loc = f"  [{_comment(str(n.loc))}]" if n.loc else ""
        body.append(f"        # %{n.id} {n.op} {shape_str(n.shape)}{loc}")
        if spec.kind == "view":
            var[n.id] = spec.emit(Emit(args, "", n))
            leaf = update_of.get(n.id)
            if leaf is not None:  # a view cannot be written in place: copy it over at the end
                finals.append(f"        np.copyto({var[leaf.id]}, {var[n.id]})")
            continue
        leaf = update_of.get(n.id)
        in_place = (leaf is not None and spec.kind == "elementwise" and n.id not in out_ids
                    and tuple(leaf.shape) == tuple(n.shape)
                    and all(p <= pos[n.id] for p in readers.get(leaf.id, [])))
        if in_place:
            out = var[leaf.id]
        else:
            out = take(n.shape, n.dtype)
            owned[n.id] = out
            if leaf is not None:
                finals.append(f"        np.copyto({var[leaf.id]}, {out})")
        scratch = [take(s, d) for s, d in (spec.scratch(n) if spec.scratch else [])]
        e = Emit(args, out, n, scratch, setup)
        spec.emit(e)
        body.extend("        " + line for line in e.lines)
        for (s, d), b in zip(spec.scratch(n) if spec.scratch else [], scratch):
            give(s, d, b)
        var[n.id] = out
        for r in {root[x.id] for x in n.inputs}:
            if last_use.get(r) == pos[n.id] and r in owned:
                rn = order[pos[r]]
                give(rn.shape, rn.dtype, owned.pop(r))
    rets = ", ".join(var[o.id] for o in outputs)
    lines = ["def make(np, S, B):"]
    lines += [f"    s{k} = S[{s.name!r}]  # {s.op} {shape_str(s.shape)}" for k, s in enumerate(state_nodes)]
    lines += allocs
    lines += ["    " + s for s in setup]
    lines.append(f"    def {name}({', '.join(f'f{k}' for k in range(len(feeds)))}):")
    lines += [f"        # f{k} = {f.name} {shape_str(f.shape)} {f.dtype}" for k, f in enumerate(feeds)]
    lines += body + finals
    lines.append(f"        return ({rets}{',' if len(outputs) == 1 else ''})")
    lines.append(f"    return {name}")
    source = "\n".join(lines) + "\n"
    # The source is generated here from the op table; spec values appear in it
    # only as float literals and in comments, so nothing from a spec executes.
    namespace: dict = {}
    exec(compile(source, f"<netc:{name}>", "exec"), namespace)  # noqa: S102
    return Function(name, source, feed_names, [s.name for s in state_nodes], list(outputs),
                    len(order), namespace["make"])
