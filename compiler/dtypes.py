"""What generated code may hold from outside the op table.

A dtype string can come from a file (a checkpoint's metadata, a spec's
attributes): renderers interpolate only the dtypes listed here, checked
before any source is made. Names and source locations go into comments only
through `comment`, which keeps them on one line.
"""
from __future__ import annotations

from .errors import NetcError

# dtype -> (C type, bytes); a C type None: no kernel renderer supports it
DTYPES = {"float64": ("double", 8), "float32": ("float", 4), "int64": ("long long", 8),
          "int32": ("int", 4), "bool": ("bool", 1), "float16": (None, 2)}


def check_dtypes(nodes) -> None:
    """Refuse a node (or a `dtype` attribute) whose dtype is outside `DTYPES`."""
    for n in nodes:
        for d in (n.dtype, n.attr("dtype")):
            if d is not None and (not isinstance(d, str) or d not in DTYPES):
                raise NetcError(f"unsupported dtype {d!r} in %{n.id} {n.op} "
                                f"(supported: {', '.join(DTYPES)})", n.loc)


def itemsize(dtype: str) -> int:
    return DTYPES[dtype][1] if dtype in DTYPES else 8


def c_type(dtype: str) -> str:
    """The C type of a dtype, or a NetcError where kernels cannot use it."""
    t = DTYPES.get(dtype, (None,))[0]
    if t is None:
        raise NetcError(f"dtype {dtype!r} is not supported in generated C kernels")
    return t


def comment(text) -> str:
    """`text` fit for a one-line comment in generated source."""
    return "".join(c if c.isprintable() else "?" for c in str(text))
