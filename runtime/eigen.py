"""The largest eigenvalue of the loss's Hessian by the power method on
Hessian-vector products [EB 5, 9.3]: eta_opt ~ 1/lambda_max, and a rate above
2/lambda_max diverges."""
from __future__ import annotations

import numpy as np

from netc.compiler.pipeline import Program, hessian_vector_function


def largest_eigenvalue(program: Program, state: dict, x: np.ndarray, t: np.ndarray | None,
                       iterations: int = 50, seed: int = 0, tol: float = 1e-4) -> float:
    """|lambda_max| of the Hessian of the mean loss on (x, t), at the current parameters."""
    hv_fn = hessian_vector_function(program)
    names = list(program.spec.params)
    rng = np.random.default_rng(seed)
    v = [rng.normal(size=state[n].shape).astype(state[n].dtype) for n in names]
    data = [x] + ([t] if program.spec.targets else [])
    data = data[:len(hv_fn.feeds) - len(names)]
    lam = 0.0
    for _ in range(iterations):
        norm = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in v))
        v = [a / norm for a in v]
        hv = [h.copy() for h in hv_fn(state, *data, *v)]
        new = np.sqrt(sum(float(np.sum(h.astype(np.float64) ** 2)) for h in hv))
        v = hv
        if abs(new - lam) <= tol * max(new, 1e-30):
            return new
        lam = new
    return lam
