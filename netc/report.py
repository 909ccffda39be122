"""`netc report RUN [RUN...] [--out FILE]`: one self-contained HTML page (every
figure a base64 PNG data URI) that shows what a run recorded: learning curves
against age (several runs overlaid), the per-layer statistics of
metrics.jsonl over time [PR 4.2], first-layer filters when the input is an
image, Hinton diagrams of small weight matrices and weight histograms at the
end; for a search folder, the best-so-far curve and the metric against each
searched value [PR 3.4].

Run folders are user data: every string from one is escaped (html.escape) and
checkpoints are read through runtime/checkpoint.py only. The figures are in
netc/report_plots.py (matplotlib, an optional extra)."""
from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import DataError, NetcError
from netc.runtime import checkpoint

from . import report_plots as plots
from .search_store import best_so_far

HINTON_LIMIT = 12   # Hinton diagrams drawn per run
HISTOGRAM_LIMIT = 24  # weight arrays in the histogram figure
ACTIVATION_EXAMPLES = 1000  # the activations at the end: on this many examples
CURVES = (("train_loss", "training loss", True), ("valid_error", "validation error", False),
          ("test_error", "test error", False), ("lr", "learning rate", True))
LAYER_STATS = (("mean", "activation mean", False), ("std", "activation std", False),
               ("saturated", "saturated fraction (bounded units)", False), ("dead", "dead fraction", False),
               ("pre_std", "pre-activation std", False), ("grad_rms", "d loss / d activation (rms)", True))
PARAM_STATS = (("norm", "weight norm", True), ("grad_norm", "gradient norm", True),
               ("update_ratio", "update-to-weight ratio", True))


@dataclass
class Run:
    folder: Path
    label: str
    rows: list[dict]
    summary: dict
    params: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoint_note: str | None = None
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    activations_note: str | None = None


@dataclass
class Search:
    folder: Path
    label: str
    records: list[dict]
    space: dict[str, str]
    metric: str
    skipped: int


def _num(v) -> float | None:
    """v as a finite float, or None (a run folder may hold anything)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _json_lines(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a .jsonl file, and how many lines were not one (cut short, damaged)."""
    rows, bad = [], 0
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:
        return [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _json(path: Path) -> dict:
    try:
        v = json.loads(path.read_bytes().decode(errors="replace"))
    except (OSError, json.JSONDecodeError, RecursionError):
        return {}
    return v if isinstance(v, dict) else {}


def is_search(folder: Path) -> bool:
    return (folder / "trials.jsonl").is_file() or (folder / "search.json").is_file()


def read_run(folder: Path, label: str) -> Run:
    rows, _ = _json_lines(folder / "metrics.jsonl")
    run = Run(folder, label, rows, _json(folder / "summary.json"))
    if not (folder / checkpoint.FILE).exists():
        run.checkpoint_note = f"no {checkpoint.FILE}: no weights to draw"
        return run
    try:
        with checkpoint.open_checkpoint(folder) as ck:
            shapes = ck.meta.get("params") or {}
            for name, shape in shapes.items():
                run.params[name] = ck.read(f"state/{name}", shape=tuple(shape))
    except NetcError as e:
        run.checkpoint_note = f"the checkpoint could not be read: {e.message}"
        return run
    run.activations, run.activations_note = final_activations(folder)
    return run


def final_activations(folder: Path) -> tuple[dict[str, np.ndarray], str]:
    """Each named layer's activations at the end, on the first ACTIVATION_EXAMPLES examples
    of the run's validation set (else its training set), read again through its data block;
    ({}, why not) when the run was trained on arrays or its data cannot be read."""
    from netc.compiler.pipeline import to_host
    from netc.model import load
    from netc.runtime.splits import load_source
    record = _json(folder / "run.json")
    if record.get("data") != "spec" or not isinstance(record.get("base"), str):
        return {}, "no activations: the run was not trained on its spec's data block"
    try:
        m = load(folder)
        spec = m.program.spec
        src = m.data_cfg.valid or m.data_cfg.train
        layers = [k for k, n in spec.named.items() if n.ndim >= 2 and n.shape[0] is None and k != "loss"]
        if src is None or len(spec.inputs) != 1 or not layers:
            return {}, "no activations: the spec has no data block with one input, or no named layer"
        ds = load_source(src, Path(record["base"]), next(iter(spec.targets.values()), None))
        x = m.normalizer.apply(ds.x[:ACTIVATION_EXAMPLES]).astype(spec.graph.float_dtype, copy=False)
        fn = m.program.function([spec.named[k] for k in layers], list(spec.inputs.values()), name="activations")
        values = fn(m.state, np.ascontiguousarray(x))
    except (NetcError, OSError, ValueError) as e:
        return {}, f"no activations: {getattr(e, 'message', None) or e}"
    which = "validation" if m.data_cfg.valid is not None else "training"
    note = f"on the first {len(x)} examples of the {which} set"
    return {k: np.asarray(to_host(v)) for k, v in zip(layers, values)}, note


def read_search(folder: Path, label: str) -> Search:
    rows, bad = _json_lines(folder / "trials.jsonl")
    records: dict[int, dict] = {}
    for r in rows:
        k = r.get("trial")
        if isinstance(k, int) and not isinstance(k, bool):
            ok = r.get("status") == "ok" and _num(r.get("metric")) is not None
            sampled = r.get("sampled") if isinstance(r.get("sampled"), dict) else {}
            records.setdefault(k, {"trial": k, "status": "ok" if ok else "failed",
                                   "metric": _num(r.get("metric")) if ok else None, "sampled": sampled})
        else:
            bad += 1
    ident = _json(folder / "search.json")
    space = ident.get("space") if isinstance(ident.get("space"), dict) else {}
    return Search(folder, label, sorted(records.values(), key=lambda r: r["trial"]),
                  {str(k): str(v) for k, v in space.items()}, str(ident.get("metric", "metric")), bad)


# ------------------------------------------------------------------------------- the figures


def _series(rows: list[dict], get) -> list[tuple[float, float]]:
    pts = []
    for r in rows:
        x, y = _num(r.get("age")), get(r)
        if x is not None and y is not None:
            pts.append((x, y))
    return pts


def learning_curves(runs: list[Run]) -> bytes | None:
    panels = []
    for key, title, log in CURVES:
        lines = {r.label: _series(r.rows, lambda row, k=key: _num(row.get(k))) for r in runs}
        if key == "valid_error":  # beside it, the test error of a run that evaluated it once, at its end
            lines.update({f"{r.label}: test, at the end": _at_end(r) for r in runs
                          if not _series(r.rows, lambda row: _num(row.get("test_error")))})
        if any(lines.values()):
            panels.append(plots.Panel(title, {k: v for k, v in lines.items() if v}, log))
    return plots.curves(panels, "age (examples seen)") if panels else None


def _at_end(run: Run) -> list[tuple[float, float]]:
    """The summary's test error as one point at the run's last age (a run evaluates the
    test set once, at the end, unless its train block says test_every = epoch)."""
    x, y = _num(run.summary.get("age")), _num(run.summary.get("test_error"))
    return [(x, y)] if x is not None and y is not None else []


def _names(rows: list[dict], group: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        g = r.get(group)
        if isinstance(g, dict):
            seen.update((k, None) for k, v in g.items() if isinstance(v, dict))
    return list(seen)


def _stat(group: str, name: str, key: str):
    def get(row):
        g = row.get(group)
        entry = g.get(name) if isinstance(g, dict) else None
        return _num(entry.get(key)) if isinstance(entry, dict) else None
    return get


def layer_statistics(run: Run) -> bytes | None:
    panels = []
    for group, table in (("layers", LAYER_STATS), ("params", PARAM_STATS)):
        names = _names(run.rows, group)
        for key, title, log in table:
            lines = {n: pts for n in names if (pts := _series(run.rows, _stat(group, n, key)))}
            if lines:
                ref = plots.UPDATE_RATIO if key == "update_ratio" else None
                panels.append(plots.Panel(title, lines, log, ref))
    return plots.curves(panels, "age (examples seen)") if panels else None


def first_layer_filters(run: Run) -> tuple[bytes, str] | None:
    """The first weight matrix (name ending in .W) drawn as images when its input width is a perfect square."""
    for name, w in run.params.items():
        if name.endswith(".W") and w.ndim == 2:
            side = math.isqrt(w.shape[0])
            if side >= 4 and side * side == w.shape[0] and w.shape[1] > 0:
                note = (f"{name}: the first {min(w.shape[1], plots.FILTERS_MAX)} of {w.shape[1]} units, each "
                        f"as a {side} x {side} image (input width {w.shape[0]}); gray 0, white positive")
                return plots.filters(w, side), note
            return None
    return None


def hinton_diagrams(run: Run) -> list[tuple[bytes, str]]:
    out = []
    for name, w in run.params.items():
        if w.ndim == 2 and 0 < w.shape[0] <= plots.HINTON_MAX and 0 < w.shape[1] <= plots.HINTON_MAX:
            out.append((plots.hinton(w, f"{name} {w.shape[0]} x {w.shape[1]}"), name))
            if len(out) == HINTON_LIMIT:
                break
    return out


def weight_histograms(run: Run) -> bytes | None:
    arrays = {k: v for k, v in list(run.params.items())[:HISTOGRAM_LIMIT] if v.size}
    return plots.histograms(arrays, "weights at the end") if arrays else None


def _is_log(dist: str) -> bool:
    return dist.startswith("loguniform") or "log = true" in dist


def _range(dist: str) -> tuple[float, float] | None:
    """The ends of a searched range, from search.json's text of it (`loguniform(0.001, 0.1)`); None for a choice."""
    m = re.match(r"^\s*(\w+)\(\s*([^,()]+),\s*([^,()]+)", dist)
    if m is None or m.group(1) == "choice":
        return None
    try:
        lo, hi = float(m.group(2)), float(m.group(3))
    except ValueError:
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and lo < hi else None


def search_figures(s: Search) -> list[bytes]:
    _, curve = best_so_far(s.records)
    steps = [(c["k"], c["metric"]) for c in curve if c["metric"] is not None]
    each = [(k + 1, r["metric"]) for k, r in enumerate(s.records) if r["metric"] is not None]
    figs = [plots.best_so_far(steps, each, s.metric)] if each else []
    ok = [r for r in s.records if r["metric"] is not None]
    names = list(s.space) or list(dict.fromkeys(k for r in ok for k in r["sampled"]))
    panels = []
    for name in names:
        pts = [(r["sampled"][name], r["metric"]) for r in ok if name in r["sampled"]]
        if pts:
            dist = s.space.get(name, "")
            panels.append(plots.Scatter(name, [p[0] for p in pts], [p[1] for p in pts], _is_log(dist), _range(dist)))
    if panels:
        figs.append(plots.scatters(panels, s.metric))
    return figs


# ------------------------------------------------------------------------------- the page

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
img{max-width:100%;display:block;margin:.5em 0}img.inline{display:inline-block;vertical-align:top;margin-right:1em}.note{color:#666;font-size:.9em}"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _img(png: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_show(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _run_section(run: Run) -> list[str]:
    parts = [f"<h2>Run {_e(run.label)}</h2>", f'<p class="note">{_e(run.folder)}</p>']
    scalars = [(k, v) for k, v in run.summary.items() if isinstance(v, (str, int, float, bool)) or v is None]
    if scalars:
        parts.append(_table(scalars))
    if run.checkpoint_note:
        parts.append(f'<p class="note">{_e(run.checkpoint_note)}</p>')
    png = layer_statistics(run)
    parts.append("<h3>Per-layer statistics over time</h3>")
    parts.append(_img(png, f"per-layer statistics of {run.label}") if png else
                 '<p class="note">metrics.jsonl holds no per-layer statistics (train with stats on).</p>')
    filt = first_layer_filters(run)
    if filt:
        parts += ["<h3>First-layer filters</h3>", f'<p class="note">{_e(filt[1])}</p>',
                  _img(filt[0], f"first-layer filters of {run.label}")]
    diagrams = hinton_diagrams(run)
    if diagrams:
        parts.append("<h3>Hinton diagrams (small weight matrices; area ~ |w|, white positive)</h3>")
        parts.append("<div>" + "".join(_img(png, f"Hinton diagram of {name}", "inline")
                                       for png, name in diagrams) + "</div>")
    hist = weight_histograms(run)
    if hist:
        parts += ["<h3>Weights at the end</h3>", _img(hist, f"weight histograms of {run.label}")]
    if run.activations:
        acts = dict(list(run.activations.items())[:HISTOGRAM_LIMIT])
        parts += ["<h3>Activations at the end</h3>", f'<p class="note">{_e(run.activations_note)}</p>',
                  _img(plots.histograms(acts, "activations at the end"), f"activation histograms of {run.label}")]
    elif run.activations_note:
        parts.append(f'<p class="note">{_e(run.activations_note)}</p>')
    return parts


def _search_section(s: Search) -> list[str]:
    ok = [r for r in s.records if r["metric"] is not None]
    parts = [f"<h2>Search {_e(s.label)}</h2>", f'<p class="note">{_e(s.folder)}</p>']
    rows: list[tuple[str, object]] = [("metric (minimized)", s.metric), ("trials finished", len(s.records)),
                                      ("ok", len(ok)), ("failed", len(s.records) - len(ok))]
    if s.skipped:
        rows.append(("unreadable lines in trials.jsonl", s.skipped))
    best, _ = best_so_far(s.records)
    if best is not None:
        rows += [("best trial", best["trial"]), ("best " + s.metric, best["metric"])]
        rows += [(f"best {k}", v) for k, v in best["sampled"].items()]
    rows += [(f"space: {k}", v) for k, v in s.space.items()]
    parts.append(_table(rows))
    figs = search_figures(s)
    if not figs:
        parts.append('<p class="note">no trial has finished with a metric yet.</p>')
    alts = ("best-so-far curve", "metric against each searched value")
    parts += [_img(png, f"{alt} of {s.label}") for png, alt in zip(figs, alts)]
    return parts


def _labels(folders: list[Path]) -> list[str]:
    names = [f.resolve().name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def render(folders: list[Path]) -> str:
    """The HTML page for these run and search folders."""
    plots.pyplot()  # the install message before any reading
    runs, searches = [], []
    for folder, label in zip(folders, _labels(folders)):
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder (netc report takes run folders from `netc train --out` "
                            f"or search folders from `netc search --out`)")
        if is_search(folder):
            searches.append(read_search(folder, label))
        elif (folder / "metrics.jsonl").is_file() or (folder / checkpoint.FILE).is_file():
            runs.append(read_run(folder, label))
        else:
            raise DataError(f"{folder}: neither a run folder (metrics.jsonl, {checkpoint.FILE}) "
                            f"nor a search folder (trials.jsonl)")
    title = "netc report: " + ", ".join(r.label for r in runs + searches)
    parts = [f"<h1>{_e(title)}</h1>"]
    if runs:
        png = learning_curves(runs)
        parts.append("<h2>Learning curves</h2>")
        parts.append(_img(png, "learning curves") if png else
                     '<p class="note">no epoch recorded in metrics.jsonl yet.</p>')
    for r in runs:
        parts += _run_section(r)
    for s in searches:
        parts += _search_section(s)
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_report(folders: list[Path], out: Path | None = None) -> Path:
    """Write the page to `out` (default: the first folder's report.html); return its path."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise NetcError("netc report takes at least one run or search folder")
    page = render(folders)
    out = Path(out) if out is not None else folders[0] / "report.html"
    try:
        atomic_write(out, lambda f: f.write(page.encode("utf-8")))
        out.chmod(0o644)  # a page to share, not a secret (mkstemp makes it 0600)
    except OSError as e:
        raise NetcError(f"{out}: cannot write the report ({e.strerror or e})") from None
    return out
