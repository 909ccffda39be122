"""The values the elaborator computes with, and the checks that turn them into
what an operation needs.

Values: Nodes (tensors), Python numbers, strings, lists (shape literals),
functions (user `def`s and builtins), ParamSets (selectors like `weights`) and
init descriptors (dicts). Names are bound in Envs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import syntax as S
from .errors import Loc, SpecError, did_you_mean
from .graph import Graph, Node, shape_str

MAX_TENSOR = 2 ** 28  # values in one declared tensor (1 GiB of float32)


@dataclass(frozen=True)
class ParamSet:
    """A selection of parameters (`weights`, `biases`, `params(h2)`); ops map over it."""
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class UserFn:
    """A `def` with the environment it was defined in."""
    d: S.Def
    env: "Env"


@dataclass(frozen=True)
class Builtin:
    name: str
    fn: Callable  # (ctx, args: list, kwargs: dict, loc) -> value
    doc: str = ""


class Env:
    """A scope: names bound here, then in the parent."""

    def __init__(self, parent: "Env | None" = None):
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def lookup(self, name: str):
        e = self
        while e is not None:
            if name in e.vars:
                return e.vars[name]
            e = e.parent
        raise KeyError(name)

    def names(self):
        e, out = self, set()
        while e is not None:
            out |= set(e.vars)
            e = e.parent
        return out


def kind_of(v) -> str:
    """What a value is, as an error message says it."""
    if isinstance(v, Node):
        return f"a tensor {shape_str(v.shape)}"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return f"the number {v:g}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, ParamSet):
        return "a parameter selector"
    if isinstance(v, (UserFn, Builtin)):
        return "a function"
    if isinstance(v, dict):
        return "an initialization"
    return type(v).__name__


def whole_number(v, loc: Loc, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise SpecError(f"{what} must be a whole number, got {kind_of(v)}", loc)
    return int(v)


def sizes(v, loc: Loc, what: str) -> tuple[int, ...]:
    """A shape as written ([784], or one number) -> positive sizes within MAX_TENSOR."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list):
        raise SpecError(f"{what} must be a list of sizes like [784], got {kind_of(v)}", loc)
    dims = tuple(whole_number(d, loc, "a size") for d in v)
    if any(d <= 0 for d in dims):
        raise SpecError(f"{what} has a size that is not positive: {list(dims)}", loc)
    total = 1
    for d in dims:
        total *= d
    if total > MAX_TENSOR:
        raise SpecError(f"{what} {list(dims)} has {total:,} values, more than netc allows ({MAX_TENSOR:,})", loc)
    return dims


def as_tensor(G: Graph, v, loc: Loc, what: str, allow_number=False) -> Node:
    """`v` as an operand of `what`: a tensor, or (if allowed) a number made a constant."""
    if isinstance(v, Node):
        return v
    if allow_number and isinstance(v, (int, float)) and not isinstance(v, bool):
        return G.const(v)
    raise SpecError(f"{what} needs a tensor, got {kind_of(v)}", loc)


def bind(fname: str, names: list[str], defaults: dict, args: list, kwargs: dict, loc: Loc) -> dict:
    """A builtin's arguments, positional and named, bound to its parameter names."""
    if len(args) > len(names):
        raise SpecError(f"'{fname}' takes at most {len(names)} arguments, got {len(args)}", loc)
    out = dict(zip(names, args))
    for k, val in kwargs.items():
        if k not in names:
            raise SpecError(f"'{fname}' has no argument '{k}'", loc,
                            hint=did_you_mean(k, names) or f"its arguments are: {', '.join(names)}")
        if k in out:
            raise SpecError(f"argument '{k}' of '{fname}' given twice", loc)
        out[k] = val
    for n in names:
        if n not in out:
            if n not in defaults:
                raise SpecError(f"'{fname}' needs argument '{n}'", loc)
            out[n] = defaults[n]
    return out
