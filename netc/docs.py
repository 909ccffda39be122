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
