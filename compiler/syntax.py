"""The typed syntax tree: what the parser hands to the elaborator.

Plain frozen dataclasses; every node carries its Loc so later stages can point
at the user's text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Loc


@dataclass(frozen=True)
class Expr:
    loc: Loc


@dataclass(frozen=True)
class Num(Expr):
    value: float
    text: str


@dataclass(frozen=True)
class Str(Expr):
    value: str


@dataclass(frozen=True)
class Name(Expr):
    name: str


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # add sub mul div matmul pow
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


@dataclass(frozen=True)
class Transpose(Expr):
    operand: Expr


@dataclass(frozen=True)
class Call(Expr):
    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True)
class Index(Expr):
    obj: Expr
    lo: Expr | None
    hi: Expr | None
    is_slice: bool


@dataclass(frozen=True)
class Attr(Expr):
    obj: Expr
    name: str


@dataclass(frozen=True)
class ListLit(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Stmt:
    loc: Loc


@dataclass(frozen=True)
class InputDecl(Stmt):
    name: str
    type: Expr


@dataclass(frozen=True)
class TargetDecl(Stmt):
    name: str
    type: Expr


@dataclass(frozen=True)
class Assign(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Def(Stmt):
    name: str
    params: tuple[Param, ...]
    body: tuple[Assign, ...]
    result: Expr


@dataclass(frozen=True)
class Entry:
    key: str
    selector: str | None
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Block(Stmt):
    name: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Use(Stmt):
    path: str


@dataclass(frozen=True)
class Module:
    file: str
    source: str
    stmts: tuple[Stmt, ...] = field(default=())


def dotted_name(e: Expr) -> str | None:
    """`h1.W` written as attributes of names -> "h1.W"; None for any other expression."""
    if isinstance(e, Name):
        return e.name
    if isinstance(e, Attr):
        base = dotted_name(e.obj)
        return None if base is None else f"{base}.{e.name}"
    return None
