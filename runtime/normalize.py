"""Input normalization, fitted on the training split only and saved with the model.

Kinds (the spec writes a bare name, a call with named arguments, or a list that
is applied in order, each step fitted on the previous step's training output):

    normalize = standardize
    normalize = pca(dims = 50)            # or pca(variance = 0.99)
    normalize = zca(eps = 0.1)
    normalize = [log, standardize]

- none: the identity.
- center: subtract the per-feature mean (mean cancellation, LeCun et al. 1998,
  "Efficient BackProp" §4.3).
- standardize: also divide by the per-feature standard deviation (covariance
  equalization), floored for (near-)constant features (MIN_STD, RELATIVE_FLOOR).
- pca(dims, variance): decorrelation by the Karhunen-Loeve expansion [EB 4.3]:
  center, then project onto the principal axes of the training covariance, in
  order of decreasing variance. Output i has variance lambda_i (the i-th
  eigenvalue) and the outputs are uncorrelated. `dims = k` keeps the first k
  axes; `variance = f` (0 < f <= 1) keeps the fewest axes whose eigenvalues sum
  to at least the fraction f of the total variance [PR 3.2]. Without either all
  axes are kept (a pure rotation).
- whiten(eps, dims, variance): PCA whitening: pca, then divide output i by
  sqrt(lambda_i + eps * lambda_max). eps (default 1e-2) is RELATIVE to the
  largest eigenvalue lambda_max, so it does not depend on the units of x: axes
  with much more variance than eps * lambda_max come out with unit variance,
  the noise axes below it are damped instead of blown up. eps = 0 is exact
  whitening (identity covariance); even then an eigenvalue is never taken
  smaller than MIN_EIGEN * lambda_max, so a direction that is constant on the
  training set (an MNIST border pixel) stays finite.
- zca(eps): ZCA whitening: whiten without reduction, then rotate back onto the
  original axes, x -> U diag(1/sqrt(lambda + eps lambda_max)) U^T (x - mean).
  Of all whitening transforms it is the one that moves the data least (it keeps
  images looking like images); eps as for whiten.
- uniformize(knots): per-feature uniformization by the empirical quantiles of
  the training set (Mesnil et al. 2011, [PR 3.2]): each feature is replaced by
  its approximate normalized rank, F_i(x_i), mapped to [-1, 1] (mean 0, so the
  mean cancellation of [EB 4.3] still holds). The quantiles at `knots` (default
  101) equally spaced levels are stored per feature and interpolated linearly;
  values outside the training range map to -1 or 1. A value tied on many
  training examples (MNIST's zeros) maps to the middle of the levels it spans
  (its mid-rank); a feature constant on the training set maps to 0.
- log: sign(x) log(1 + |x|); sqrt: sign(x) sqrt(|x|): squashing of heavy tails
  [PR 3.2], fixed odd monotone functions with nothing to fit, usually followed
  by a standardization: `normalize = [log, standardize]`.

Statistics are computed in float64 in chunks of rows, so a float32 training set
is never copied whole in float64 (the d x d covariance is). They are stored as
plain arrays (`to_arrays`, keys "norm.*") so a model .npz never needs pickle.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netc.compiler.errors import DataError

__all__ = ["Normalizer", "Step", "FitError", "fit", "step", "parse", "KINDS", "PARAMS",
           "MIN_STD", "RELATIVE_FLOOR", "MIN_EIGEN", "WHITEN_EPS", "KNOTS"]

KINDS = ("none", "center", "standardize", "pca", "whiten", "zca", "uniformize", "log", "sqrt")

# The named arguments each kind takes (None: not given).
WHITEN_EPS = 1e-2  # default eps of whiten and zca, relative to the largest eigenvalue
KNOTS = 101        # default quantile knots per feature for uniformize (every 1%)
PARAMS: dict[str, dict[str, Any]] = {
    "none": {}, "center": {}, "standardize": {},
    "pca": {"dims": None, "variance": None},
    "whiten": {"eps": WHITEN_EPS, "dims": None, "variance": None},
    "zca": {"eps": WHITEN_EPS},
    "uniformize": {"knots": KNOTS},
    "log": {}, "sqrt": {},
}

# Features whose training std is below this (e.g. MNIST border pixels, always 0)
# are divided by 1 instead: dividing by ~0 would give inf/nan on train and blow up
# any test value that differs from the constant. Centering alone maps them to ~0.
MIN_STD = 1e-8

# Near-constant features are divided by at least this fraction of the typical
# (RMS) feature std: an MNIST pixel that is almost always 0 has a std of ~1e-3,
# and dividing by it turns its rare nonzero values into outliers of several
# hundred that saturate the first layer.
RELATIVE_FLOOR = 0.1

# whiten/zca never divide by the root of an eigenvalue below this fraction of the
# largest one (it matters only with eps = 0): a direction with no variance on the
# training set is amplified at most 1/sqrt(MIN_EIGEN) = 1000 times more than the
# principal one, instead of to inf.
MIN_EIGEN = 1e-6

_NEEDS = {"none": (), "center": ("mean",), "standardize": ("mean", "scale"),
          "pca": ("mean", "axes"), "whiten": ("mean", "axes", "scale"), "zca": ("mean", "matrix"),
          "uniformize": ("knots",), "log": (), "sqrt": (), "pipeline": ()}
_CHUNK = 8192  # rows per pass, so float64 statistics never need a float64 copy of x
_COLS = 64     # columns per pass when sorting for uniformize


class FitError(DataError, ValueError):
    """The training data does not suit the normalization (shape, too few features)."""


# ---- the spec side: which normalization, with which arguments ----------------------


@dataclass(frozen=True)
class Step:
    """One normalization as written in the spec: a kind and its explicit arguments."""
    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.params)

    def get(self, name: str):
        return self.kw.get(name, PARAMS[self.kind][name])

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        return f"{self.kind}({', '.join(f'{k} = {v}' for k, v in self.params)})"


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def step(kind: str, **params) -> Step:
    """A validated Step; ValueError names the bad kind, argument or value.
    An argument given as None (or "none") means its default."""
    kind = str(kind)
    if kind not in PARAMS:
        raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(KINDS)}")
    allowed = PARAMS[kind]
    given = {}
    for k, v in params.items():
        if k not in allowed:
            takes = f"it takes {', '.join(allowed)}" if allowed else "it takes no arguments"
            raise ValueError(f"{kind} has no argument '{k}'; {takes}")
        if v is None or (isinstance(v, str) and v == "none"):
            continue
        if k == "dims" and not (_is_int(v) and v >= 1):
            raise ValueError(f"dims must be a whole number >= 1, got {v!r}")
        if k == "variance" and not (_is_real(v) and 0 < v <= 1):
            raise ValueError(f"variance is the fraction of the variance to keep, 0 < variance <= 1, got {v!r}")
        if k == "eps" and not (_is_real(v) and v >= 0):
            raise ValueError(f"eps must be a number >= 0 (relative to the largest eigenvalue), got {v!r}")
        if k == "knots" and not (_is_int(v) and 2 <= v <= 100001):
            raise ValueError(f"knots must be a whole number from 2 to 100001, got {v!r}")
        given[k] = int(v) if k in ("dims", "knots") else float(v)
    if "dims" in given and "variance" in given:
        raise ValueError("give dims or variance, not both")
    return Step(kind, tuple((k, given[k]) for k in allowed if k in given))


_NAME = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$", re.S)


def _split(text: str) -> list[str]:
    """Split at the commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur] if cur.strip() or parts else parts


def _number(text: str):
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    try:
        return float(t)
    except ValueError:
        return t


def _parse_text(text: str) -> list[Step]:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    steps = []
    for item in _split(t):
        m = _NAME.match(item)
        if not m:
            raise ValueError(f"cannot read normalization {item.strip()!r}; write e.g. zca, pca(dims = 50)")
        kw = {}
        for arg in _split(m.group(2) or ""):
            k, eq, v = arg.partition("=")
            if not eq:
                raise ValueError(f"{m.group(1)}(...) takes named arguments, like pca(dims = 50)")
            kw[k.strip()] = _number(v)
        steps.append(step(m.group(1), **kw))
    return steps


def parse(spec) -> tuple[Step, ...]:
    """The steps of a normalization given as a name ("zca"), text ("pca(dims = 50)",
    "[log, standardize]"), a Step, or a list of these; `none` steps are dropped
    (so "none" gives ())."""
    if isinstance(spec, Step):
        steps = [step(spec.kind, **spec.kw)]  # validated even if built by hand
    elif isinstance(spec, str):
        steps = _parse_text(spec)
    elif isinstance(spec, (list, tuple)):
        steps = [s for item in spec for s in parse(item)]
    else:
        raise ValueError(f"a normalization is a name, a Step or a list of them, got {spec!r}")
    return tuple(s for s in steps if s.kind != "none")


# ---- the fitted statistics ------------------------------------------------------------


@dataclass
class Normalizer:
    """A fitted normalization: `kind` and its float64 statistics `arrays`, or
    kind "pipeline" with fitted `steps` applied in order."""
    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    steps: list["Normalizer"] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in _NEEDS:
            raise ValueError(f"unknown normalization {self.kind!r}; choose one of {KINDS}")
        missing = [k for k in _NEEDS[self.kind] if k not in self.arrays]
        if missing:
            raise ValueError(f"{self.kind} normalizer is missing statistics {missing}")
        if (self.kind == "pipeline") != bool(self.steps):
            raise ValueError("only a pipeline normalizer has steps, and it needs at least one")

    def __str__(self) -> str:
        return f"[{', '.join(map(str, self.steps))}]" if self.kind == "pipeline" else self.kind

    # -- widths ------------------------------------------------------------------------
    @property
    def in_width(self) -> int | None:
        """The number of features it was fitted on (None: any, e.g. log)."""
        if self.kind == "pipeline":
            return next((s.in_width for s in self.steps if s.in_width is not None), None)
        a = self.arrays
        if "mean" in a:
            return int(a["mean"].shape[0])
        if "knots" in a:
            return int(a["knots"].shape[1])
        return None

    def out_width(self, n_in: int) -> int:
        """Features per example after normalizing `n_in` features (ValueError if the
        normalizer was fitted on another number)."""
        if self.kind == "pipeline":
            for s in self.steps:
                n_in = s.out_width(n_in)
            return n_in
        w = self.in_width
        if w is not None and n_in != w:
            raise ValueError(f"normalizer was fitted on {w} features, data has {n_in}")
        return int(self.arrays["axes"].shape[1]) if "axes" in self.arrays else n_in

    # -- use ---------------------------------------------------------------------------
    def apply(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The normalized features as a new array (or into `out`); x is never modified.

        float32 unless x is float64, so the training step keeps its precision.
        The last axis holds the features; pca/whiten may change its length.
        """
        x = np.asarray(x)
        dt = np.float64 if x.dtype == np.float64 else np.float32
        if self.kind == "pipeline":
            if out is not None and np.shares_memory(out, x):
                raise ValueError("out must not overlap x (apply never modifies its input)")
            y = x
            for s in self.steps[:-1]:
                y = s.apply(y)
            return self.steps[-1].apply(y, out)
        if x.ndim == 0:
            raise ValueError("normalizer needs an array of features, got a scalar")
        shape = x.shape[:-1] + (self.out_width(x.shape[-1]),)
        if out is None:
            out = np.empty(shape, dt)
        elif out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        elif np.shares_memory(out, x):
            raise ValueError("out must not overlap x (apply never modifies its input)")
        if self.kind == "none":
            np.copyto(out, x, casting="unsafe")
        elif self.kind in ("center", "standardize"):
            np.subtract(x, self.arrays["mean"].astype(out.dtype), out=out, casting="unsafe")
            if self.kind == "standardize":
                np.divide(out, self.arrays["scale"].astype(out.dtype), out=out)
        elif self.kind in ("log", "sqrt"):
            np.copyto(out, x, casting="unsafe")
            f = np.log1p if self.kind == "log" else np.sqrt
            o = out.reshape(-1, out.shape[-1]) if out.ndim != 2 else out
            for i in range(0, o.shape[0], _CHUNK):
                c = o[i:i + _CHUNK]
                np.copysign(f(np.abs(c)), c, out=c)  # odd: f(-x) = -f(x) exactly
            if o is not out and not np.shares_memory(o, out):
                out[...] = o.reshape(out.shape)
        elif x.ndim != 2:
            np.copyto(out, self.apply(x.reshape(-1, x.shape[-1])).reshape(shape))
        elif self.kind == "uniformize":
            self._uniformize(x, out)
        else:
            if self.kind == "zca":
                m = self.arrays["matrix"]
            elif self.kind == "whiten":
                m = self.arrays["axes"] * self.arrays["scale"]
            else:
                m = self.arrays["axes"]
            m = m.astype(out.dtype)
            mean = self.arrays["mean"].astype(out.dtype)
            buf = np.empty((min(_CHUNK, x.shape[0]), x.shape[1]), out.dtype)
            for i in range(0, x.shape[0], _CHUNK):
                c = buf[:len(x[i:i + _CHUNK])]
                np.subtract(x[i:i + _CHUNK], mean, out=c, casting="unsafe")
                np.matmul(c, m, out=out[i:i + _CHUNK])
        return out

    def _uniformize(self, x: np.ndarray, out: np.ndarray) -> None:
        q_all = np.ascontiguousarray(self.arrays["knots"].T)  # [features, K]
        k = q_all.shape[1]
        # first[j, m]: where the run of knots equal to q_all[j, m] starts (ties)
        idx = np.broadcast_to(np.arange(k), q_all.shape)
        starts = np.concatenate([np.ones((q_all.shape[0], 1), bool), q_all[:, 1:] != q_all[:, :-1]], axis=1)
        first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
        const = q_all[:, 0] == q_all[:, -1]
        for i in range(0, x.shape[0], _CHUNK):
            xt = np.array(x[i:i + _CHUNK].T, dtype=np.float64, order="C")  # [features, rows]
            for j in range(xt.shape[0]):
                if const[j]:  # no information on the training set: the middle, 0
                    xt[j] = np.where(np.isnan(xt[j]), np.nan, (k - 1) / 2)
                else:
                    xt[j] = _levels(q_all[j], first[j], xt[j])
            # level p in [0, K-1] -> (2 p - (K-1)) / (K-1) in [-1, 1], the middle exactly 0
            xt *= 2.0
            xt -= k - 1
            xt /= k - 1
            np.copyto(out[i:i + _CHUNK], xt.T, casting="unsafe")

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """The values whose normalization is `y` (float64): the target normalization's way
        back to the target's own units (`normalize_target`: none, center, standardize)."""
        y = np.asarray(y, np.float64)
        if self.kind == "none":
            return y
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"{self.kind} has no inverse here; target normalizations are {TARGET_KINDS}")
        scale = self.arrays.get("scale")
        return (y if scale is None else y * scale) + self.arrays["mean"]

    # -- storage -----------------------------------------------------------------------
    def to_arrays(self, prefix: str = "norm.") -> dict[str, np.ndarray]:
        """Flat, pickle-free arrays for a model .npz: "norm.kind" plus "norm.<stat>";
        a pipeline stores "norm.steps" (the count) and each step under "norm.<i>."."""
        d = {prefix + "kind": np.array(self.kind)}
        if self.kind == "pipeline":
            d[prefix + "steps"] = np.array(len(self.steps))
            for i, s in enumerate(self.steps):
                d.update(s.to_arrays(f"{prefix}{i}."))
        d.update({prefix + k: np.asarray(v) for k, v in self.arrays.items()})
        return d

    @staticmethod
    def from_arrays(d, prefix: str = "norm.") -> "Normalizer":
        """Inverse of to_arrays; `d` may be a whole model .npz (other keys ignored)."""
        if prefix + "kind" not in d:
            raise ValueError(f"no '{prefix}kind' entry: these arrays hold no normalizer")
        kind = str(np.asarray(d[prefix + "kind"])[()])
        if kind == "pipeline":
            if prefix + "steps" not in d:
                raise ValueError(f"pipeline normalizer without a '{prefix}steps' count")
            n = int(np.asarray(d[prefix + "steps"])[()])
            return Normalizer("pipeline", {}, [Normalizer.from_arrays(d, f"{prefix}{i}.") for i in range(n)])
        stats = {k[len(prefix):]: np.asarray(d[k]) for k in d.keys()
                 if k.startswith(prefix) and k != prefix + "kind" and "." not in k[len(prefix):]}
        return Normalizer(kind, stats)


def _levels(q: np.ndarray, first: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Level (0..K-1) of each value v among the sorted knots q, linear between knots
    and clipped outside them; a value equal to a run of knots q[first[e]..e] gets
    the middle of the run (its mid-rank); NaN stays NaN."""
    k = q.shape[0]
    hi = np.searchsorted(q, v, "right")  # q[hi-1] <= v < q[hi]
    i = np.clip(hi, 1, k - 1)
    a = q[i - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (v - a) / (q[i] - a)  # q[i] > a unless v is outside [q[0], q[-1]]
    np.clip(t, 0.0, 1.0, out=t)
    t += i - 1
    e = np.maximum(hi - 1, 0)
    tie = q[e] == v
    t[tie] = (first[e[tie]] + e[tie]) * 0.5
    return t


# ---- fitting ------------------------------------------------------------------------------


TARGET_KINDS = ("none", "center", "standardize")  # invertible, one column at a time


def fit_target(kind: str, t: np.ndarray) -> Normalizer:
    """`normalize_target`: fitted on the training split's real targets t [n, k], per column;
    predictions go back through Normalizer.inverse. A constant column keeps scale 1."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target normalization {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
    return fit(kind, np.asarray(t, np.float64).reshape(len(t), -1))


def fit(kind, x: np.ndarray) -> Normalizer:
    """Fit on training features x [n, features]: statistics in float64.

    `kind` is a name ("standardize"), text ("pca(dims = 50)", "[log, standardize]"),
    a Step, or a list of them (a pipeline: each step fitted on the training
    output of the previous ones). Unknown kinds or arguments raise ValueError;
    data that does not suit raises FitError (a DataError and a ValueError).
    """
    steps = parse(kind)
    if not steps:
        return Normalizer("none", {})
    if len(steps) == 1:
        return _fit_step(steps[0], x)
    fitted, y = [], x
    for i, s in enumerate(steps):
        fitted.append(_fit_step(s, y))
        if i + 1 < len(steps):
            y = fitted[-1].apply(y)  # what the next step sees at predict time too
    return Normalizer("pipeline", {}, fitted)


def _fit_step(s: Step, x) -> Normalizer:
    if s.kind in ("none", "log", "sqrt"):
        return Normalizer(s.kind, {})
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise FitError(f"{s}: fit needs a non-empty [n, features] array, got shape {x.shape}")
    if s.kind == "uniformize":
        return Normalizer("uniformize", {"knots": _quantiles(x, s.get("knots"))})
    mean = _mean(x)
    if s.kind == "center":
        return Normalizer("center", {"mean": mean})
    if s.kind == "standardize":
        # Two-pass variance: numerically safer than E[x^2] - E[x]^2.
        sq = np.zeros(x.shape[1], np.float64)
        buf = np.empty((min(_CHUNK, x.shape[0]), x.shape[1]), np.float64)
        for i in range(0, x.shape[0], _CHUNK):
            d = buf[:len(x[i:i + _CHUNK])]
            np.subtract(x[i:i + _CHUNK], mean, out=d)
            sq += np.einsum("ij,ij->j", d, d)
        std = np.sqrt(sq / x.shape[0])
        live = std >= MIN_STD
        floor = RELATIVE_FLOOR * np.sqrt(np.mean(std[live] ** 2)) if live.any() else 1.0
        scale = np.where(live, np.maximum(std, floor), 1.0)
        return Normalizer("standardize", {"mean": mean, "scale": scale})
    lam, u = _principal(x, mean)  # descending eigenvalues, eigenvectors as columns
    total = lam.sum()
    if s.kind == "zca":
        scale = _whitening_scale(lam, s.get("eps"))
        matrix = (u * scale) @ u.T
        matrix = (matrix + matrix.T) / 2  # exactly symmetric
        return Normalizer("zca", {"mean": mean, "matrix": matrix, "variances": lam,
                                  "eps": np.array(s.get("eps"))})
    k = _components(s, lam, total, x.shape[1])
    stats = {"mean": mean, "axes": np.ascontiguousarray(u[:, :k]), "variances": lam[:k],
             "total_variance": np.array(total)}
    if s.kind == "whiten":
        stats["scale"] = _whitening_scale(lam, s.get("eps"))[:k]
        stats["eps"] = np.array(s.get("eps"))
    return Normalizer(s.kind, stats)


def _mean(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1], np.float64)
    for i in range(0, x.shape[0], _CHUNK):
        total += x[i:i + _CHUNK].sum(axis=0, dtype=np.float64)
    return total / x.shape[0]


def _principal(x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, >= 0) and unit eigenvectors (columns, each with its
    largest-magnitude entry positive, so refits give the same axes) of the
    training covariance, accumulated in float64 one chunk of rows at a time."""
    d = x.shape[1]
    cov = np.zeros((d, d), np.float64)
    buf = np.empty((min(_CHUNK, x.shape[0]), d), np.float64)  # the only float64 rows
    for i in range(0, x.shape[0], _CHUNK):
        c = buf[:len(x[i:i + _CHUNK])]
        np.subtract(x[i:i + _CHUNK], mean, out=c)
        cov += c.T @ c  # a symmetric rank-k update
    cov /= x.shape[0]
    lam, u = np.linalg.eigh(cov)
    lam, u = np.maximum(lam[::-1], 0.0), u[:, ::-1]
    big = np.abs(u).argmax(axis=0)
    u = u * np.where(u[big, np.arange(d)] < 0, -1.0, 1.0)
    return lam, np.ascontiguousarray(u)


def _whitening_scale(lam: np.ndarray, eps: float) -> np.ndarray:
    """1 / sqrt(max(lambda, MIN_EIGEN lambda_max) + eps lambda_max)."""
    lmax = lam[0] if lam.size else 0.0
    if lmax <= MIN_STD ** 2:  # no variance at all: centering only
        return np.ones_like(lam)
    return 1.0 / np.sqrt(np.maximum(lam, MIN_EIGEN * lmax) + eps * lmax)


def _components(s: Step, lam: np.ndarray, total: float, d: int) -> int:
    dims, frac = s.get("dims"), s.get("variance")
    if dims is not None:
        if dims > d:
            raise FitError(f"{s}: the training data has only {d} features, fewer than dims = {dims}")
        return dims
    if frac is not None:
        if total <= 0:
            return 1
        kept = np.cumsum(lam) / total
        return int(min(d, np.searchsorted(kept, frac - 1e-12) + 1))
    return d


def _quantiles(x: np.ndarray, knots: int) -> np.ndarray:
    """[knots, features]: each feature's training quantiles at levels 0, 1/(K-1), ..., 1
    (linear interpolation between order statistics, as np.quantile), non-decreasing."""
    n, d = x.shape
    pos = np.linspace(0.0, n - 1.0, knots)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    out = np.empty((knots, d), np.float64)
    for j in range(0, d, _COLS):
        col = np.array(x[:, j:j + _COLS].T, dtype=np.float64, order="C")  # [cols, n]
        col.sort(axis=1)
        q = col[:, lo] + frac * (col[:, hi] - col[:, lo])
        out[:, j:j + _COLS] = np.maximum.accumulate(q, axis=1).T
    return out
