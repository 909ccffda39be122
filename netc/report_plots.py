"""The figures of `netc report`, each returned as PNG bytes (matplotlib, Agg
backend, imported here and in netc/report.py only: matplotlib is an optional
extra, `netc[report]`).

Every label drawn comes from a run folder (user data): `_text` keeps it short
and stops matplotlib reading `$...$` in it as mathtext."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from netc.compiler.errors import NetcError

INSTALL = "pip install 'netc[report]'"
DPI = 80
HINTON_MAX = 32    # a Hinton diagram for weight matrices up to 32 x 32
FILTERS_MAX = 64   # first-layer filters drawn
UPDATE_RATIO = 1e-3  # the update-to-weight ratio Bengio suggests [PR 4.2]


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or a NetcError saying how to install it."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise NetcError("netc report needs matplotlib, an optional extra: "
                        f"{INSTALL}  (or pip install matplotlib)") from None
    return plt


def _ticker():
    pyplot()
    from matplotlib import ticker
    return ticker


def _text(s, limit: int = 48) -> str:
    s = str(s)
    s = s if len(s) <= limit else s[:limit - 1] + "\u2026"
    return s.replace("$", r"\$")


def _png(fig) -> bytes:
    plt = pyplot()
    buf = io.BytesIO()
    with plt.rc_context({"text.usetex": False}):
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, cols: int = 3, size=(4.2, 3.0)):
    plt = pyplot()
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _positive(values) -> bool:
    return all(v > 0 for v in values)


@dataclass
class Panel:
    """One plot of lines against a common x: {line label: [(x, y)...]}."""
    title: str
    lines: dict[str, list[tuple[float, float]]]
    log: bool = False
    reference: float | None = None  # a dashed horizontal line (a suggested value)


def curves(panels: list[Panel], x_label: str) -> bytes:
    """The panels in a grid, lines overlaid, with a legend."""
    fig, axes = _grid(len(panels))
    for ax, p in zip(axes, panels):
        title, lines, log = p.title, p.lines, p.log
        for label, pts in lines.items():
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=_text(label))
        ys = [y for pts in lines.values() for _, y in pts]
        if log and ys and _positive(ys):
            ax.set_yscale("log")
        if p.reference is not None:
            ax.axhline(p.reference, color="gray", linestyle="--", linewidth=1)
        ax.set_title(_text(title, 60), fontsize=10)
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if 0 < len(lines) <= 12 and any(lines.values()):
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def filters(w: np.ndarray, side: int) -> bytes:
    """The first FILTERS_MAX columns of a (side*side, units) weight matrix, each as a side x side
    image (the page names the matrix)."""
    plt = pyplot()
    units = min(w.shape[1], FILTERS_MAX)
    cols = min(units, 8)
    rows = math.ceil(units / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < units:
            f = np.nan_to_num(w[:, k].reshape(side, side).astype(np.float64))
            m = float(np.abs(f).max()) or 1.0
            ax.imshow(f, cmap="gray", vmin=-m, vmax=m, interpolation="nearest")
    fig.subplots_adjust(wspace=0.08, hspace=0.08)
    return _png(fig)


def hinton(w: np.ndarray, title: str) -> bytes:
    """A Hinton diagram: one square per weight, area ~ |w|, white positive, black negative."""
    plt = pyplot()
    w = np.nan_to_num(np.asarray(w, np.float64).reshape(w.shape[0], -1))
    rows, cols = w.shape
    fig, ax = plt.subplots(figsize=(min(8, 1 + 0.25 * cols), min(8, 1 + 0.25 * rows)))
    ax.set_facecolor("gray")
    ax.set_aspect("equal", "box")
    top = float(np.abs(w).max()) or 1.0
    for (i, j), v in np.ndenumerate(w):
        s = math.sqrt(abs(v) / top)
        ax.add_patch(plt.Rectangle((j - s / 2, i - s / 2), s, s, facecolor="white" if v > 0 else "black",
                                   edgecolor="none"))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_text(title, 60), fontsize=9)
    return _png(fig)


def histograms(arrays: dict[str, np.ndarray], title: str) -> bytes:
    """One histogram per array (its finite values)."""
    fig, axes = _grid(len(arrays), cols=4, size=(3.2, 2.4))
    for ax, (name, a) in zip(axes, arrays.items()):
        v = np.asarray(a, np.float64).ravel()
        v = v[np.isfinite(v)]
        ax.hist(v, bins=min(50, max(5, int(math.sqrt(v.size)) + 1)) if v.size else 5, color="steelblue")
        ax.set_title(_text(name), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(_text(title, 80), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def best_so_far(points: list[tuple[int, float]], all_points: list[tuple[int, float]], metric: str) -> bytes:
    """The best-so-far curve (a step line) over every trial's own value."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if all_points:
        ax.scatter(*zip(*all_points), s=14, color="lightgray", label="each trial")
    if points:
        ax.step(*zip(*points), where="post", color="C3", label="best so far")
    ax.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    ax.set_xlabel("trials finished (k)", fontsize=8)
    ax.set_ylabel(_text(metric), fontsize=8)
    ax.set_title("best so far", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


@dataclass
class Scatter:
    """The metric (ys) against one searched value (xs), with its range's ends when it has one."""
    name: str
    xs: list
    ys: list[float]
    log: bool = False
    range: tuple[float, float] | None = None


def scatters(panels: list[Scatter], metric: str) -> bytes:
    """The metric against each searched value [PR 3.4], the range's ends dashed (a best
    value near one may lie beyond it); values that are not all numbers are drawn as categories."""
    fig, axes = _grid(len(panels))
    for ax, p in zip(axes, panels):
        name, xs, ys, log = p.name, p.xs, p.ys, p.log
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)
        if numeric:
            ax.scatter(xs, ys, s=16)
            if p.range is not None and (not log or p.range[0] > 0):
                for end in p.range:
                    ax.axvline(end, color="gray", linestyle="--", linewidth=1)
            if log and xs and _positive(xs):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(_ticker().NullFormatter())  # within a decade they overlap
        else:
            cats = sorted({str(x) for x in xs})
            ax.scatter([cats.index(str(x)) for x in xs], ys, s=16)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([_text(c, 16) for c in cats], fontsize=7)
        ax.set_title(_text(name, 60) + (" (log)" if log else ""), fontsize=10)
        ax.set_ylabel(_text(metric), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
