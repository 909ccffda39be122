"""Sizes the data gives: `input x : [_]`, `target t : class(_)` or `[_]`.

One spec can then serve datasets of several widths and class counts. Before any
data is seen, the spec is elaborated twice with two different sets of stand-in
sizes (PROBES): an error both runs report alike does not depend on the data and
is reported as it is; an error that appears in one run only, or reads
differently, depends on a size the data will give, and is reported as such
("cannot be checked until the data gives the sizes written `_`", the stand-in
sizes written `?`), located where it arises. Such a spec is refused: writing `_`
promises that the spec holds for whatever size the data has. The shapes that
differ between the two runs are the unknown ones (`netc check` shows them as `?`).

When the data is there, `bind_text` writes the sizes in place of each `_`: the
bound text is an ordinary spec, and it is what a run folder and a checkpoint
store, so resume, load, predict and export see concrete sizes.

Pure functions of the syntax tree and the text; the elaborator is passed in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from . import syntax as S
from .errors import ErrorList, Loc, NetcError, SpecError

FREE = "_"
PROBES = ((101, 103, 107, 109, 113, 127, 131, 137, 139, 149),
          (211, 223, 227, 229, 233, 239, 241, 251, 257, 263))


@dataclass(frozen=True)
class FreeDim:
    """One `_`: a size of input or target `name` taken from the data.
    `axis` counts the declared axes (the batch axis excluded); None is class(_)'s count."""
    name: str
    axis: int | None
    loc: Loc
    target: bool

    def describe(self) -> str:
        if self.axis is None:
            return f"the number of classes of target '{self.name}'"
        return f"axis {self.axis + 1} of {'target' if self.target else 'input'} '{self.name}'"


def is_free(e: S.Expr | None) -> bool:
    return isinstance(e, S.Name) and e.name == FREE


def declared_items(t: S.Expr) -> list[S.Expr] | None:
    """The size expressions of a declaration's shape (`[a, b]`, or one size: a number, a
    name, any expression such as abs(10)), or None for class(...)."""
    if isinstance(t, S.Call) and isinstance(t.func, S.Name) and t.func.name == "class":
        return None
    return list(t.items) if isinstance(t, S.ListLit) else [t]


def scan(module: S.Module) -> list[FreeDim]:
    """Every `_` in the module's input and target declarations, in the order written."""
    out = []
    for st in module.stmts:
        if not isinstance(st, (S.InputDecl, S.TargetDecl)):
            continue
        target = isinstance(st, S.TargetDecl)
        t = st.type
        if isinstance(t, S.Call):
            if target and isinstance(t.func, S.Name) and t.func.name == "class" and len(t.args) == 1 \
                    and is_free(t.args[0]):
                out.append(FreeDim(st.name, None, t.args[0].loc, True))
            continue
        for i, item in enumerate(declared_items(t)):
            if is_free(item):
                out.append(FreeDim(st.name, i, item.loc, target))
    return out


def probe(run: int, k: int) -> int:
    """The stand-in size of the k-th `_` in elaboration run `run` (0 or 1)."""
    sizes = PROBES[run]
    return sizes[k % len(sizes)]


# ---------------------------------------------------------------------------- checking unbound


def elaborate_unbound(run: Callable[[int], object], free: list[FreeDim], source: str):
    """The spec elaborated with the stand-in sizes of run 0 (`run(i)` elaborates with
    PROBES[i]), its `unknown` shapes filled in; errors classified as above."""
    results, errors = [], []
    for i in (0, 1):
        try:
            results.append(run(i))
            errors.append([])
        except NetcError as e:
            results.append(None)
            errors.append(e.errors if isinstance(e, ErrorList) else [e])
    if not errors[0] and not errors[1]:
        spec, twin = results
        spec.unknown = _unknown_shapes(spec, twin)
        return spec
    both = {(_where(e), e.message) for e in errors[1]}  # word for word: not about the stand-in sizes
    twins = {_where(e): e.message for e in errors[1]}  # the same error in run 1, its sizes differing
    out = [e if (_where(e), e.message) in both else _data_dependent(e, 0, free, source, twins.get(_where(e)))
           for e in errors[0]]
    if not errors[0]:  # run 1 alone failed: its errors depend on the sizes
        out = [_data_dependent(e, 1, free, source) for e in errors[1]]
    raise out[0] if len(out) == 1 else ErrorList(out)


def _where(e: NetcError):
    return None if e.loc is None else (e.loc.file, e.loc.line, e.loc.col)


def _plain(message: str, run: int) -> str:
    """The message with run `run`'s stand-in sizes written `?`."""
    pattern = r"(?<![\w.])(" + "|".join(str(p) for p in PROBES[run]) + r")(?![\w.])"
    return re.sub(pattern, "?", message)


_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")


def _differing(message: str, twin: str | None) -> str | None:
    """`message` with every number that reads differently in `twin` (the same error in the
    other run) written `?`: sizes derived from the stand-ins (products, sums) included.
    None where the two differ in more than their numbers."""
    if twin is None or _NUMBER.split(message) != _NUMBER.split(twin):
        return None
    parts = _NUMBER.split(message)
    out = [parts[0]]
    for a, b, rest in zip(_NUMBER.findall(message), _NUMBER.findall(twin), parts[1:]):
        out += [a if a == b else "?", rest]
    return "".join(out)


def _data_dependent(e: NetcError, run: int, free: list[FreeDim], source: str, twin: str | None = None) -> NetcError:
    where = ", ".join(f"{f.loc.line}:{f.loc.col}" for f in free)
    plain = _differing(e.message, twin) or _plain(e.message, run)
    msg = f"cannot be checked until the data gives the sizes written `_` (at {where}): {plain}"
    hint = ("it fails for the stand-in sizes netc tries; if it holds only for your data's sizes, write them "
            "in place of `_`, or derive the other sizes from them with dim(x) or classes(t)")
    return SpecError(msg, e.loc, e.source if e.source is not None else source, hint=hint)


def _unknown_shapes(spec, twin) -> dict[str, tuple]:
    """Shapes of the spec's named tensors with "?" where the two runs differ."""
    out = {}
    for attr in ("inputs", "targets", "params", "buffers", "named"):
        a, b = getattr(spec, attr), getattr(twin, attr)
        for name, n in a.items():
            m = b.get(name)
            if m is None or m.shape == n.shape:
                continue
            if len(m.shape) != len(n.shape):
                out[name] = ("?",)
            else:
                out[name] = tuple(d if d == e else "?" for d, e in zip(n.shape, m.shape))
    for name, n in spec.targets.items():
        m = twin.targets.get(name)
        if m is not None and n.attr("classes") != m.attr("classes"):
            out[f"{name}.classes"] = ("?",)
    if spec.loss is not None and twin.loss is not None and spec.loss.shape != twin.loss.shape:
        out["loss"] = ("?",)
    if spec.output is not None and twin.output is not None and spec.output.shape != twin.output.shape:
        out["<output>"] = tuple(d if d == e else "?" for d, e in zip(spec.output.shape, twin.output.shape)) \
            if len(spec.output.shape) == len(twin.output.shape) else ("?",)
    return out


# ---------------------------------------------------------------------------- binding


def bind_text(source: str, values: list[tuple[FreeDim, int]]) -> str:
    """`source` with each FreeDim's `_` replaced by its size (a plain spec text)."""
    lines = source.split("\n")
    for f, v in sorted(values, key=lambda fv: (fv[0].loc.line, fv[0].loc.col), reverse=True):
        i, c = f.loc.line - 1, f.loc.col - 1
        line = lines[i]
        if line[c:c + 1] != FREE:
            raise AssertionError(f"no `_` at {f.loc}")
        lines[i] = line[:c] + str(int(v)) + line[c + 1:]
    return "\n".join(lines)

