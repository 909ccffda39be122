"""The end of a run as a person reads it (`netc train`, `netc train --resume`):
the scores in a short table, how long it took and why it stopped, where the
run folder's files are, and the commands that come next. Scripts read
summary.json in the run folder, or `netc train --json`, which prints the same
object; this text is for people and may change."""
from __future__ import annotations

import importlib.resources
import shlex
from pathlib import Path

from netc.compiler.errors import escaped

STOPPED = {"epochs": "ran all its epochs", "early": "stopped early: validation stopped improving",
           "interrupted": "interrupted"}


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _num(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _seconds(v) -> str:
    if v is None:
        return "-"
    return f"{v:.1f} s" if v < 120 else f"{int(v // 60)} min {v % 60:02.0f} s"


def _scores(s: dict) -> list[str]:
    """The table: one row per split, the error for class targets, R^2 and MSE for real ones."""
    classes = any(s.get(f"{k}_error") is not None for k in ("valid", "test"))
    real = any(s.get(f"{k}_r2") is not None for k in ("valid", "test"))
    cols = (["error"] if classes else []) + (["R^2", "MSE"] if real else []) + ["loss"]
    rows = []
    for name, label, note in (("valid", "validation", ""), ("test", "test", "once, on the final parameters"),
                              ("train", "training", "mean over the last epoch")):
        if s.get(f"{name}_loss") is None:
            continue
        cells = {"error": _pct(s.get(f"{name}_error")), "R^2": _num(s.get(f"{name}_r2")),
                 "MSE": _num(s.get(f"{name}_mse")), "loss": _num(s.get(f"{name}_loss"))}
        if name == "valid" and s.get("best_epoch") and s.get("stopped") == "early":
            note = f"kept: epoch {s['best_epoch']}'s parameters, the best"
        rows.append((label, [cells[c] for c in cols], note))
    if not rows:
        return []
    out = ["  " + " " * 12 + "".join(f"{c:>10}" for c in cols)]
    for label, cells, note in rows:
        out.append(f"  {label:<12}" + "".join(f"{c:>10}" for c in cells) + (f"   ({note})" if note else ""))
    return out


def _checked(summary: dict) -> dict:
    """The summary with every value of a wrong type dropped: summary.json is a file in a
    folder, anything may be in it, and a damaged one still prints."""
    out = {}
    for k, v in summary.items():
        if k in ("spec", "stopped"):
            if isinstance(v, str):
                out[k] = v
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[k] = v
    return out


def render(summary: dict, out: Path, *, data: str | None = None, already: bool = False) -> str:
    """The summary text of a run in folder `out`. `data`: a data file to show in the
    `netc predict` line (else DATA); `already`: the run had finished before (resume)."""
    s, run = _checked(summary), _arg(str(out))
    spec = _visible(s.get("spec") or "the spec")
    stopped = _visible(STOPPED.get(s.get("stopped"), s.get("stopped") or ""))
    head = (f"{spec}: finished before, after {int(s.get('epochs', 0))} epochs ({stopped}); "
            f"netc train --resume {run} --epochs N trains up to N in all" if already
            else f"{spec}: trained {int(s.get('epochs', 0))} epochs in {_seconds(s.get('seconds'))} ({stopped})")
    lines = [head, ""]
    table = _scores(s)
    lines += table + ([""] if table else [])
    rate = s.get("examples_per_second")
    counts = [f"{int(s.get('epochs', 0))} epochs", f"{int(s.get('steps') or 0):,} updates",
              f"{int(s.get('age') or 0):,} examples seen" + (f" ({rate:,.0f}/s)" if rate else "")]
    if s.get("compile_seconds") is not None:
        counts.append(f"compiled in {_seconds(s['compile_seconds'])}")
    if s.get("recoveries"):
        counts.append(f"{s['recoveries']} recoveries from divergence")
    lines += ["  " + ", ".join(counts), ""]
    sampled = summary.get("sampled")
    if isinstance(sampled, dict) and sampled:  # a search space: the point this run trained
        from netc.search_space import describe_point
        lines += ["  point       " + describe_point({str(k): v for k, v in sampled.items()}), ""]
    shown = _visible(str(out))
    lines += [f"  run folder  {shown}",
              f"  model       {_visible(str(out / 'params.npz'))} (checkpoint; netc.load({str(out)!r}) in Python)",
              f"  metrics     {_visible(str(out / 'metrics.jsonl'))} (one line per epoch), "
              f"{_visible(str(out / 'summary.json'))}",
              f"  report      {_visible(str(out / 'report.html'))} (after netc report)", "",
              "next:",
              f"  netc report {run}",
              f"  netc export {run} --format onnx --out {_arg(str(out / 'model.onnx'))}",
              f"  netc predict {run} {_arg(data) if data else 'DATA'} --out "
              f"{_arg(str(out / 'predictions.csv'))}"]
    return "\n".join(lines)


def _visible(text: str) -> str:
    """`text` (a name from a spec, a folder, summary.json) on one line, its control
    characters shown as escapes: nothing printed here drives the terminal."""
    return "".join(c if c.isprintable() else escaped(c) for c in text)


def _arg(text: str) -> str:
    """`text` as one shell word to copy: shlex.quote's, or where it holds control
    characters, bash's $'...' with them escaped (the same name, shown, not sent)."""
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join("\\" + c if c in "\\'" else c if c.isprintable() else escaped(c) for c in text) + "'"


def example_data(model) -> str | None:
    """A file `netc predict` reads that holds examples like the run's: the data block's
    test (else validation, else training) file; for MNIST, its test images."""
    cfg = getattr(model, "data_cfg", None)
    for src in ([] if cfg is None else [cfg.test, cfg.valid, cfg.train]):
        if src is None:
            continue
        if src.kind == "mnist":  # the shipped files (runtime/data.py reads them from there)
            split = src.args[0] if src.args else "t10k"
            root = Path(str(importlib.resources.files("netc.runtime") / "datasets" / "mnist"))
            return _shown(root / f"{split}-images-idx3-ubyte.gz")
        if src.args:
            return _shown(model.base_dir / str(src.args[0]))
    return None


def _shown(path: Path) -> str:
    """`path` relative to the working folder where it is inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
