"""Batch methods for small training sets and regression [EB 6; PR 4.1]:
L-BFGS and nonlinear conjugate gradient over the compiled loss-and-gradient,
with a backtracking (Armijo) line search. Each works on one flat float64
vector of all parameters."""
from __future__ import annotations

from typing import Callable

import numpy as np

FG = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _line_search(fg: FG, w, f, g, d, step: float, c1: float = 1e-4, shrink: float = 0.5, tries: int = 40):
    slope = float(g @ d)
    if slope >= 0:  # not a descent direction: fall back to steepest descent
        d, slope = -g, -float(g @ g)
    for _ in range(tries):
        w2 = w + step * d
        f2, g2 = fg(w2)
        if np.isfinite(f2) and f2 <= f + c1 * step * slope:
            return w2, f2, g2, step
        step *= shrink
    return w, f, g, 0.0


def lbfgs(fg: FG, w: np.ndarray, iterations: int, memory: int = 10, tol: float = 1e-10,
          log: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, float, int]:
    """Returns (w, f, function evaluations)."""
    f, g = fg(w)
    evals = 1
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for it in range(iterations):
        if float(np.linalg.norm(g)) <= tol:
            break
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if y_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            q /= max(float(np.linalg.norm(g)), 1e-12)
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            b = float(y @ q) / float(y @ s)
            q += (a - b) * s
        w2, f2, g2, step = _line_search(fg, w, f, g, -q, 1.0)
        evals += 1
        if step == 0.0:
            break
        s_new, y_new = w2 - w, g2 - g
        if float(s_new @ y_new) > 1e-12:
            s_hist.append(s_new)
            y_hist.append(y_new)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        w, f, g = w2, f2, g2
        if log:
            log(it + 1, f)
    return w, f, evals


def conjugate_gradient(fg: FG, w: np.ndarray, iterations: int, tol: float = 1e-10,
                       log: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, float, int]:
    """Polak-Ribiere (with restarts when beta < 0)."""
    f, g = fg(w)
    evals = 1
    d = -g
    step = 1.0 / max(float(np.linalg.norm(g)), 1e-12)
    for it in range(iterations):
        if float(np.linalg.norm(g)) <= tol:
            break
        w2, f2, g2, used = _line_search(fg, w, f, g, d, step * 2)
        evals += 1
        if used == 0.0:
            break
        # CG wants a near-exact search: one secant step on the directional derivative
        # (exact on a quadratic), kept if it lowers the loss
        s0, s1 = float(g @ d), float(g2 @ d)
        if s1 > s0 and s0 < 0:
            a = used * (-s0) / (s1 - s0)
            w3 = w + a * d
            f3, g3 = fg(w3)
            evals += 1
            if np.isfinite(f3) and f3 < f2:
                w2, f2, g2, used = w3, f3, g3, a
        beta = max(0.0, float(g2 @ (g2 - g)) / max(float(g @ g), 1e-300))
        d = -g2 + beta * d
        w, f, g, step = w2, f2, g2, used
        if log:
            log(it + 1, f)
    return w, f, evals
