"""Arithmetic on compile-time numbers (shape sizes, block values, formulas).

One place for the rule that such arithmetic stays real and finite: no complex
powers, no 10^400, no integer that outgrows int64.
"""
from __future__ import annotations

import math

from . import syntax as S
from .errors import Loc, SpecError


def literal(e: S.Num) -> int | float:
    """A number as written: `3` is an int, `3.0` and `3e0` are floats."""
    v = e.value
    return int(v) if v.is_integer() and "." not in e.text and "e" not in e.text.lower() else v


def number_op(op: str, a, b):
    """`op` on two numbers; None for an op numbers do not have (matmul)."""
    match op:
        case "add": return a + b
        case "sub": return a - b
        case "mul": return a * b
        case "div": return a / b
        case "pow": return float(a) ** b if isinstance(b, float) or b < 0 or abs(b) > 64 else a ** b
    return None


def checked(r, loc: Loc | None):
    """Arithmetic on numbers must stay real and finite (no complex powers, no 10^400)."""
    if isinstance(r, complex):
        raise SpecError("arithmetic error: a negative number to a fractional power", loc)
    if isinstance(r, int) and not isinstance(r, bool) and abs(r) > 2 ** 63:
        raise SpecError("arithmetic error: the number is too large", loc)
    if isinstance(r, float) and not math.isfinite(r):
        raise SpecError("arithmetic error: the result is not a finite number", loc)
    return r


def arith(op: str, a, b, loc: Loc | None, no_op: str):
    """`a op b` on numbers, every failure a SpecError at `loc`; `no_op` is the
    message for an op numbers do not have."""
    try:
        r = number_op(op, a, b)
    except OverflowError:
        raise SpecError("arithmetic error: the number is too large", loc) from None
    except (ZeroDivisionError, ValueError) as ex:
        raise SpecError(f"arithmetic error: {ex}", loc) from None
    if r is None:
        raise SpecError(no_op, loc)
    return checked(r, loc)
