"""Input normalization, fitted on the training split only and saved with the model.

"center" subtracts the per-feature mean (mean cancellation, LeCun et al. 1998,
"Efficient BackProp" §4.3); "standardize" also divides by the per-feature
standard deviation (covariance equalization). Statistics come from the training
data alone so validation/test numbers are honest, and they are stored as plain
arrays so a model .npz never needs pickle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Normalizer", "fit", "KINDS", "MIN_STD", "RELATIVE_FLOOR"]

KINDS = ("none", "center", "standardize")

# Features whose training std is below this (e.g. MNIST border pixels, always 0)
# are divided by 1 instead: dividing by ~0 would give inf/nan on train and blow up
# any test value that differs from the constant. Centering alone maps them to ~0.
MIN_STD = 1e-8

# Near-constant features are divided by at least this fraction of the typical
# (RMS) feature std: an MNIST pixel that is almost always 0 has a std of ~1e-3,
# and dividing by it turns its rare nonzero values into outliers of several
# hundred that saturate the first layer.
RELATIVE_FLOOR = 0.1

_NEEDS = {"none": (), "center": ("mean",), "standardize": ("mean", "scale")}
_CHUNK = 8192  # rows per pass, so float64 statistics never need a float64 copy of x


@dataclass
class Normalizer:
    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown normalization {self.kind!r}; choose one of {KINDS}")
        missing = [k for k in _NEEDS[self.kind] if k not in self.arrays]
        if missing:
            raise ValueError(f"{self.kind} normalizer is missing statistics {missing}")

    def apply(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / scale as a new array (or into `out`); x is never modified.

        float32 unless x is float64, so the training step keeps its precision.
        """
        x = np.asarray(x)
        dt = np.float64 if x.dtype == np.float64 else np.float32
        if out is None:
            out = np.empty(x.shape, dt)
        elif out.shape != x.shape:
            raise ValueError(f"out has shape {out.shape}, expected {x.shape}")
        elif np.shares_memory(out, x):
            raise ValueError("out must not overlap x (apply never modifies its input)")
        if self.kind == "none":
            np.copyto(out, x, casting="unsafe")
            return out
        mean = self.arrays["mean"]
        if x.shape[-1:] != mean.shape:
            raise ValueError(f"normalizer was fitted on {mean.shape[0]} features, "
                             f"data has {x.shape[-1] if x.ndim else 0}")
        np.subtract(x, mean.astype(out.dtype), out=out, casting="unsafe")
        if self.kind == "standardize":
            np.divide(out, self.arrays["scale"].astype(out.dtype), out=out)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat, pickle-free arrays for a model .npz: "norm.kind" plus "norm.<stat>"."""
        d = {"norm.kind": np.array(self.kind)}
        d.update({f"norm.{k}": np.asarray(v) for k, v in self.arrays.items()})
        return d

    @staticmethod
    def from_arrays(d) -> "Normalizer":
        """Inverse of to_arrays; `d` may be a whole model .npz (other keys ignored)."""
        if "norm.kind" not in d:
            raise ValueError("no 'norm.kind' entry: these arrays hold no normalizer")
        kind = str(np.asarray(d["norm.kind"])[()])
        stats = {k[len("norm."):]: np.asarray(d[k]) for k in d.keys()
                 if k.startswith("norm.") and k != "norm.kind"}
        return Normalizer(kind, stats)


def fit(kind: str, x: np.ndarray) -> Normalizer:
    """Fit per-feature statistics (in float64) on training features x [n, features]."""
    if kind not in KINDS:
        raise ValueError(f"unknown normalization {kind!r}; choose one of {KINDS}")
    if kind == "none":
        return Normalizer("none", {})
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"fit needs a non-empty [n, features] array, got shape {x.shape}")
    n = x.shape[0]
    total = np.zeros(x.shape[1], np.float64)
    for i in range(0, n, _CHUNK):
        total += x[i:i + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    if kind == "center":
        return Normalizer("center", {"mean": mean})
    # Two-pass variance: numerically safer than E[x^2] - E[x]^2.
    sq = np.zeros(x.shape[1], np.float64)
    for i in range(0, n, _CHUNK):
        d = x[i:i + _CHUNK].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / n)
    live = std >= MIN_STD
    floor = RELATIVE_FLOOR * np.sqrt(np.mean(std[live] ** 2)) if live.any() else 1.0
    scale = np.where(live, np.maximum(std, floor), 1.0)
    return Normalizer("standardize", {"mean": mean, "scale": scale})
