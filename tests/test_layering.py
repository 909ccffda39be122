"""The package's layering, read from the source with ast: the runtime and the
API get compiled code only through compiler/pipeline.py (they import no
lowerer, fuser, parser or elaborator), and no module imports itself back."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"compiler": "netc.compiler", "runtime": "netc.runtime", "netc": "netc"}
BACK_END = {"lower_numpy", "lower_cuda", "fuse", "fuse_stats", "plan", "cuda_c", "cupy_runtime", "parse",
            "elaborate"}


def _modules() -> dict[str, Path]:
    out = {}
    for top, name in PACKAGES.items():
        for f in (ROOT / top).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / top).with_suffix("").parts if p != "__init__"]
            out[".".join([name] + parts)] = f
    return out


def _imports(name: str, f: Path, known: set[str]) -> set[str]:
    """Every netc module `f` imports, at the top or inside a function."""
    package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(n, f, set(mods)) for n, f in mods.items()}


def test_runtime_and_api_import_no_lowerer_fuser_parser_or_elaborator():
    bad = {n: sorted(m.rsplit(".", 1)[1] for m in deps if m.startswith("netc.compiler.")
                     and m.rsplit(".", 1)[1] in BACK_END)
           for n, deps in _graph().items() if not n.startswith("netc.compiler")}
    assert not {n: v for n, v in bad.items() if v}


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles
