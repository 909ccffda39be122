"""Small synthetic data sets shared by the tests."""
from __future__ import annotations

import numpy as np


def make_problem(n=200, features=20, classes=3, seed=0, spread=2.0):
    """Gaussian blobs around random centres; spread 2 is nearly separable, 0.4 is noisy."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features)) * spread
    t = rng.integers(0, classes, n)
    x = (centres[t] + rng.normal(size=(n, features))).astype(np.float32)
    return x, t.astype(np.int64)
