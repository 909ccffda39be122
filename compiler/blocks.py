"""Block values: what a `data`, `train` or `search` block holds once elaborated.

The compiler produces these values and the runtime reads them (runtime/config.py
validates them, netc/search reads distributions from them), so they live here,
apart from the elaborator: both sides import this module, neither imports the
other's internals. Parameter selection (`h1`, `h*.W`, `weights`) is here for the
same reason: the spec's `params(...)` and the train block's `lr_scale h1 = ...`
select the same way.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import syntax as S
from .errors import Loc, SpecError, did_you_mean
from .numbers import arith, literal
from .values import kind_of

if TYPE_CHECKING:
    from .graph import Node


class Symbol(str):
    """A bare name in a block (`standardize`, `polyak`), with where it was written."""

    loc: Loc | None

    def __new__(cls, value: str, loc: Loc | None = None):
        s = super().__new__(cls, value)
        s.loc = loc
        return s


@dataclass(frozen=True)
class BlockCall:
    """A call written in a block, e.g. `sgd(lr = 0.1)` or `mnist("train")[0:50000]`."""
    name: str
    args: tuple
    kwargs: tuple[tuple[str, Any], ...]
    loc: Loc
    slice: tuple | None = None

    @property
    def kw(self) -> dict:
        return dict(self.kwargs)


@dataclass(frozen=True)
class Formula:
    """A block value that depends on names known only later (e.g. `fan_in ^ -0.5`
    evaluated per parameter)."""
    expr: S.Expr

    @classmethod
    def of_name(cls, name: str, loc: Loc) -> "Formula":
        """A bare name as a formula (`lr_scale = fan_in`)."""
        return cls(S.Name(loc, name))

    def evaluate(self, names: dict[str, float]) -> float:
        return _eval_formula(self.expr, names)


@dataclass(frozen=True)
class BlockEntry:
    """One `key [selector] = value` line of a block."""
    key: str
    selector: str | None
    value: Any
    loc: Loc


def block_entry(en: S.Entry) -> BlockEntry:
    return BlockEntry(en.key, en.selector, block_value(en.value), en.loc)


def block_value(e: S.Expr):
    """A block's expression -> numbers, strings, booleans, Symbols, lists, BlockCalls,
    or a Formula where names are known only later. Nothing is looked up: a block
    names runtime things (methods, data sources), not the network's values."""
    match e:
        case S.Num():
            return literal(e)
        case S.Str(value=v):
            return v
        case S.Name(name=n):
            return {"true": True, "false": False}.get(n, Symbol(n, e.loc))
        case S.Neg(operand=x):
            v = block_value(x)
            return -v if isinstance(v, (int, float)) else Formula(e)
        case S.Attr():
            return Symbol(S.dotted_name(e) or "?", e.loc)
        case S.BinOp():
            a, b = block_value(e.left), block_value(e.right)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                return arith(e.op, a, b, e.loc, "@ needs tensors, not numbers")
            return Formula(e)
        case S.ListLit(items=items):
            return [block_value(i) for i in items]
        case S.Call(func=f):
            name = S.dotted_name(f)
            if name is None:
                raise SpecError("expected a name before '('", e.loc)
            return BlockCall(name, tuple(block_value(a) for a in e.args),
                             tuple((k, block_value(v)) for k, v in e.kwargs), e.loc)
        case S.Index(obj=o, lo=lo, hi=hi, is_slice=is_slice):
            base = block_value(o)
            if not isinstance(base, BlockCall) or not is_slice:
                raise SpecError("only a data source can be sliced, as in mnist(\"train\")[0:50000]", e.loc)
            bounds = tuple(None if x is None else _whole(block_value(x), x.loc, "a slice bound")
                           for x in (lo, hi))
            return BlockCall(base.name, base.args, base.kwargs, base.loc, bounds)
    raise SpecError("unsupported expression in a block", e.loc)


def select_params(params: dict[str, Node], pattern: str, loc: Loc | None) -> tuple[Node, ...]:
    """Parameters matching a layer name (`h1` = `h1.*`) or a glob (`h*.W`); a
    train key's selector may also be written as the expression selects,
    `params(h1)` or `params("h*.W")`."""
    call = re.fullmatch(r"(\w+)\((.*)\)", pattern)
    if call is not None:
        if call.group(1) != "params":
            raise SpecError(f"'{pattern}': a parameter selector is a name, a glob or params(...)", loc)
        pattern = call.group(2)
        if len(pattern) >= 2 and pattern[0] == pattern[-1] == '"':
            pattern = pattern[1:-1]
    if pattern in ("weights", "biases"):
        return tuple(p for p in params.values() if (p.ndim >= 2) == (pattern == "weights"))
    globs = [pattern] if any(c in pattern for c in "*?[") else [pattern, pattern + ".*"]
    hits = tuple(p for n, p in params.items() if any(fnmatch.fnmatchcase(n, g) for g in globs))
    if not hits:
        raise SpecError(f"'{pattern}' selects no parameter", loc,
                        hint=did_you_mean(pattern, params) or f"parameters: {', '.join(params) or 'none'}")
    return hits


def _whole(v, loc: Loc, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise SpecError(f"{what} must be a whole number, got {kind_of(v)}", loc)
    return int(v)


def _eval_formula(e: S.Expr, names: dict[str, float]) -> float:
    match e:
        case S.Num(value=v):
            return v
        case S.Name(name=n):
            if n not in names:
                raise SpecError(f"unknown name '{n}' here; known: {', '.join(sorted(names))}", e.loc,
                                hint=did_you_mean(n, names))
            return names[n]
        case S.Neg(operand=x):
            return -_eval_formula(x, names)
        case S.BinOp(op=op, left=l, right=r):
            a, b = _eval_formula(l, names), _eval_formula(r, names)
            return float(arith(op, float(a), float(b), e.loc, "@ is not allowed here"))
    raise SpecError("expected arithmetic on numbers and names", e.loc)
