"""The prelude reference, generated from the prelude's own comments."""
from __future__ import annotations

from importlib import resources


def prelude_reference() -> str:
    text = resources.files("netc.compiler").joinpath("prelude.net").read_text()
    out, comment = [], []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# ----"):
            out.append("\n" + s.strip("# -").strip().upper())
            comment = []
        elif s.startswith("#"):
            comment.append(s.lstrip("# "))
        elif s.startswith("def "):
            head = s[4:].split(")")[0] + ")"
            out.append(f"  {head}\n      {' '.join(comment)}" if comment else f"  {head}")
            comment = []
        elif not s:
            comment = []
    return "netc prelude (every function is plain .net; see `netc doc ops` for the primitives)\n" + "\n".join(out)


def methods_reference() -> str:
    """`netc doc methods`: each training method's arguments, defaults and meanings,
    read from the train block's own models (runtime/config.py)."""
    from netc.runtime.config import BATCH_METHODS, METHODS
    out = ["train { method = NAME(ARG = VALUE, ...) } (a train-level `lr = ...` overrides a method's lr)"]
    for name, cls in METHODS.items():
        doc = " ".join((cls.__doc__ or "").split())
        out.append(f"\n  {name}{' (batch: the whole training set each iteration)' if name in BATCH_METHODS else ''}"
                   f"\n      {doc}")
        for arg, f in cls.model_fields.items():
            if arg == "kind":
                continue
            default = f.default_factory() if f.default_factory else f.default
            out.append(f"    {arg:<10} default {default!r:<10} {f.description or ''}")
    return "\n".join(out)
