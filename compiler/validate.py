"""Closed sets and checks for values that enter from outside: API keywords
(`netc.compile`, `netc.load`) and checkpoint metadata.

Why here, at the bottom of the package: a value is checked once, where it
enters, against a closed set; past this point it is one of a few known
strings or a plain int, so no emitter ever sees text a user or a file chose.
Each check raises the caller's error class (NetcError for API arguments,
DataError for a file) with `what` naming the argument or the file and field.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import NetcError

FLOAT_DTYPES = ("float32", "float64")  # the floating-point types the compiler emits
DEVICES = ("cpu", "gpu")
SEED_LIMIT = 2 ** 31  # runtime/config.py: 0 <= seed < 2**31
PATH_LIMIT = 4096  # characters in a file name taken from a file or an argument


def shown(value, limit: int = 60) -> str:
    """A short, escaped rendering of an untrusted value for a message: `repr`
    (quotes, escapes control characters), cut to `limit` characters."""
    try:
        r = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not mask the error
        r = f"<{type(value).__name__}>"
    return r if len(r) <= limit else r[:limit - 5] + "...'" + f" ({len(r)} chars)"


def float_dtype(value, what: str = "dtype", error=NetcError) -> str:
    """One of FLOAT_DTYPES; NumPy's float32/float64 (type or dtype) are accepted too."""
    if isinstance(value, str):
        if value in FLOAT_DTYPES:
            return value
    elif isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        name = np.dtype(value).name
        if name in FLOAT_DTYPES:
            return name
    raise error(f"{what}: {shown(value)} is not a floating-point type netc compiles; "
                f"choose {' or '.join(repr(d) for d in FLOAT_DTYPES)}")


def integer(value, what: str, lo: int, hi: int | None = None, error=NetcError) -> int:
    """An int (or NumPy integer; not a bool, not a float) with lo <= value (< hi)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise error(f"{what}: expected a whole number, got {shown(value)}")
    v = int(value)
    if v < lo or (hi is not None and v >= hi):
        bound = f"between {lo} and {hi - 1}" if hi is not None else f">= {lo}"
        raise error(f"{what}: {shown(v)} is out of range; expected {bound}")
    return v


def seed(value, what: str = "seed", error=NetcError) -> int:
    return integer(value, what, 0, SEED_LIMIT, error)


def flag(value, what: str, error=NetcError) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{what}: expected True or False, got {shown(value)}")
    return bool(value)


def choice(value, options: tuple[str, ...], what: str, error=NetcError) -> str:
    if not isinstance(value, str) or value not in options:
        raise error(f"{what}: unknown value {shown(value)}; choose {' or '.join(repr(o) for o in options)}")
    return value


def text(value, what: str, limit: int, error=NetcError, *, line: bool = False) -> str:
    """A str of at most `limit` characters; with `line`, printable only (no
    newline, NUL or other control character: it names something on one line)."""
    if not isinstance(value, str):
        raise error(f"{what}: expected text, got {type(value).__name__} {shown(value)}")
    if len(value) > limit:
        raise error(f"{what}: {len(value)} characters, more than the {limit} allowed")
    if line and not value.isprintable():
        raise error(f"{what}: {shown(value)} holds a control character")
    return value


def path(value, what: str = "path", error=NetcError) -> Path:
    """A file-system path argument: str or os.PathLike, not empty, no NUL, not absurdly long."""
    if not isinstance(value, (str, os.PathLike)):
        raise error(f"{what}: expected a path (str or pathlib.Path), got {type(value).__name__} {shown(value)}")
    s = os.fspath(value)
    if not isinstance(s, str):
        raise error(f"{what}: expected a text path, got {type(s).__name__} {shown(s)}")
    if not s or "\x00" in s or len(s) > PATH_LIMIT:
        raise error(f"{what}: {shown(s)} is not a usable path (empty, a NUL character, or over {PATH_LIMIT} characters)")
    return Path(s)
