"""The largest eigenvalue of the matrix the update multiplies by, by the power
method on Hessian-vector products [EB 5, 9.3]: eta_opt ~ 1/lambda_max, and a
rate above 2/lambda_max diverges.

For w <- w - eps P g (P diagonal: lr_scale, and SDLM's 1/(h + mu)) that matrix
is P H, not H: its eigenvalues are those of the symmetric P^1/2 H P^1/2, on
which the power method runs.

`lanczos` gives the top of a spectrum with error bounds (`netc hessian`, netc/hessian.py)."""
from __future__ import annotations

import numpy as np

from netc.compiler.pipeline import Program, hessian_vector_function


def largest_eigenvalue(program: Program, state: dict, x: np.ndarray, t: np.ndarray | None,
                       iterations: int = 50, seed: int = 0, tol: float = 1e-4,
                       precondition: list[np.ndarray] | None = None) -> float:
    """|lambda_max| of P H, H the Hessian of the mean loss on (x, t) at the current
    parameters, P a positive diagonal per parameter (default: the identity)."""
    hv_fn = hessian_vector_function(program)
    names = list(program.spec.params)
    rng = np.random.default_rng(seed)
    root = None if precondition is None else [np.sqrt(np.asarray(p, dtype=np.float64)) for p in precondition]
    v = [rng.normal(size=state[n].shape).astype(state[n].dtype) for n in names]
    data = [x] + ([t] if program.spec.targets else [])
    data = data[:len(hv_fn.feeds) - len(names)]

    def apply(u):  # P^1/2 H P^1/2 u
        if root is not None:
            u = [(a * r).astype(state[n].dtype) for a, r, n in zip(u, root, names)]
        hu = [h.copy() for h in hv_fn(state, *data, *u)]
        return hu if root is None else [(h * r).astype(state[n].dtype) for h, r, n in zip(hu, root, names)]

    lam = 0.0
    for _ in range(iterations):
        norm = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in v))
        v = [a / norm for a in v]
        hv = apply(v)
        new = np.sqrt(sum(float(np.sum(h.astype(np.float64) ** 2)) for h in hv))
        v = hv
        if abs(new - lam) <= tol * max(new, 1e-30):
            return new
        lam = new
    return lam


def lanczos(matvec, n: int, steps: int, rng: np.random.Generator, tol: float = 1e-10):
    """(Ritz values ascending, residual of each, steps taken, closed) of the symmetric
    map `matvec` on R^n, from a random start, every new vector orthogonalized
    against all the earlier ones twice."""
    steps = min(steps, n)
    Q = np.zeros((steps + 1, n))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    q = rng.normal(size=n)
    Q[0] = q / np.linalg.norm(q)
    scale, closed, m = 0.0, False, steps
    for j in range(steps):
        w = matvec(Q[j])
        alpha[j] = Q[j] @ w
        for _ in range(2):  # full reorthogonalization
            w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        scale = max(scale, abs(alpha[j]), beta[j])
        if beta[j] <= tol * max(scale, 1e-300):
            closed, m = True, j + 1
            break
        Q[j + 1] = w / beta[j]
    else:
        closed = steps == n
    T = np.diag(alpha[:m]) + np.diag(beta[:m - 1], 1) + np.diag(beta[:m - 1], -1)
    theta, S = np.linalg.eigh(T)
    residuals = np.abs(beta[m - 1] * S[-1]) if not closed else np.zeros(m)
    floor = 4 * np.finfo(np.float64).eps * max(scale, 1e-300)  # round-off in the products themselves
    return theta, np.maximum(residuals, floor), m, closed
