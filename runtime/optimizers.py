"""Each training method as one object: its train-block schema (runtime/config.py),
the update graph it compiles to (compiler/update.py's rule of the same kind),
the scalars its step is fed, and, for a batch method, the driver that runs it
on the compiled objective.

Also what the train block asks of the update graph per parameter: the rate
factors (`lr_scale`, `freeze`) and the weight decay (`decay`, `l1`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from netc.compiler.blocks import Formula, select_params
from netc.compiler.errors import SpecError
from netc.compiler.spec import Spec
from netc.compiler.update import Optimizer

from . import config
from .batch_methods import conjugate_gradient, lbfgs


@dataclass(frozen=True)
class Method:
    kind: str
    schema: type  # the train block's `method = kind(...)` model
    update: Callable[[object, float, dict, dict], Optimizer]  # (method cfg, base rate, l2, l1) -> update graph
    hypers: Callable[[object], dict] = lambda m: {}  # scalars the step is fed besides lr and step
    batch: Callable | None = None  # (fg, w, method cfg) -> (w, f, evaluations): drives the objective itself
    prepare: Callable | None = None  # (Sampler, arrays, method cfg) before each epoch: curvature, averages

    @property
    def is_batch(self) -> bool:
        return self.batch is not None


def _extra(m) -> dict:
    out = {k: getattr(m, k) for k in ("eps", "mu", "alpha", "beta", "delta", "beta1", "beta2", "rho")
           if hasattr(m, k)}
    if m.kind == "vsgd":
        out["vsgd_curvature"] = m.curvature
    return out


def _stochastic(kind: str) -> Callable:
    def update(m, lr: float, l2: dict, l1: dict) -> Optimizer:
        return Optimizer(kind=kind, momentum=getattr(m, "momentum", 0) > 0, nesterov=getattr(m, "nesterov", False),
                         l2=l2, l1=l1, lr0=lr, **_extra(m))
    return update


def _decay_only(m, lr: float, l2: dict, l1: dict) -> Optimizer:
    """Batch methods drive the compiled objective themselves; the step only carries the decay."""
    return Optimizer(kind="sgd", l2=l2, l1=l1)


METHODS: dict[str, Method] = {
    "sgd": Method("sgd", config.SGD, _stochastic("sgd"), hypers=lambda m: {"momentum": m.momentum}),
    "adagrad": Method("adagrad", config.AdaGrad, _stochastic("adagrad")),
    "adam": Method("adam", config.Adam, _stochastic("adam")),
    "rmsprop": Method("rmsprop", config.RMSprop, _stochastic("rmsprop")),
    "sdlm": Method("sdlm", config.SDLM, _stochastic("sdlm"), prepare=lambda s, a, m: sdlm_curvature(s, a, m)),
    "vsgd": Method("vsgd", config.VSGD, _stochastic("vsgd"), prepare=lambda s, a, m: vsgd_start(s, a, m)),
    "adaptive": Method("adaptive", config.Adaptive, _stochastic("adaptive")),
    "lbfgs": Method("lbfgs", config.LBFGS, _decay_only,
                    batch=lambda fg, w, m: lbfgs(fg, w, m.iterations, memory=m.memory)),
    "cg": Method("cg", config.CG, _decay_only, batch=lambda fg, w, m: conjugate_gradient(fg, w, m.iterations)),
}
assert set(METHODS) == set(config.METHODS), "every method in the train block's schema has its object here"


def method_of(cfg: config.TrainConfig) -> Method:
    return METHODS[cfg.method.kind]


def base_rate(cfg: config.TrainConfig):
    """The rate the train block asks for: `lr` (a number or auto(eigen)) over the method's own;
    vsgd, learning-rate free, has 1 (a factor only a divergence cuts)."""
    if cfg.method.kind == "vsgd":
        return 1.0
    return cfg.lr if cfg.lr is not None else getattr(cfg.method, "lr", None)


def optimizer_for(spec: Spec, cfg: config.TrainConfig) -> Optimizer:
    """The update-graph description of the train block's method and decay keys."""
    l2, l1 = weight_decay(spec, cfg)
    m = cfg.method
    lr = cfg.lr if isinstance(cfg.lr, (int, float)) else getattr(m, "lr", None)
    lr = lr if isinstance(lr, (int, float)) else 0.01  # adaptive's starting rate
    return method_of(cfg).update(m, lr, l2, l1)


def weight_decay(spec: Spec, cfg: config.TrainConfig) -> tuple[dict[str, float], dict[str, float]]:
    """(L2, L1) lambda per parameter."""
    return _group_values(spec, cfg, "decay"), _group_values(spec, cfg, "l1")


def lr_scales(spec: Spec, cfg: config.TrainConfig) -> dict[str, float]:
    """Per-parameter learning-rate factors from `lr_scale` (a number, or a formula
    of fan_in, fan_out and size), then the `lr_scale SELECTOR = ...` groups in order."""
    params = spec.params
    out: dict[str, float] = {}
    for name, p in params.items():
        out[name] = _scale_value(cfg.lr_scale, _fan_names(params, name))
    for key, selector, value, loc in cfg.groups:
        if key == "lr_scale":
            for p in select_params(params, selector, loc):
                out[p.name] = _scale_value(value, _fan_names(params, p.name))
        elif key == "freeze":
            if not isinstance(value, bool):
                raise SpecError(f"freeze {selector} takes true or false, got {value!r}", loc)
            for p in select_params(params, selector, loc):
                if value:
                    out[p.name] = 0.0
    return out


def _group_values(spec: Spec, cfg: config.TrainConfig, key: str) -> dict[str, float]:
    """Per-parameter values of `key`: its plain value on the weights (biases excluded,
    [PR 3.2]), then `key SELECTOR = value` entries in order."""
    base = float(getattr(cfg, key))
    out = {name: base for name, p in spec.params.items() if p.ndim >= 2 and base}
    for k, selector, value, loc in cfg.groups:
        if k != key:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SpecError(f"{key} {selector} must be a number >= 0, got {value!r}", loc)
        for p in select_params(spec.params, selector, loc):
            out[p.name] = float(value)
    return {k: v for k, v in out.items() if v}


def _fan_names(params: dict, name: str) -> dict[str, float]:
    p = params[name]
    if p.ndim >= 2:
        return {"fan_in": float(p.shape[0]), "fan_out": float(p.shape[-1]), "size": float(np.prod(p.shape))}
    # a bias: the fan-in of the weight feeding the same units in the same layer
    prefix = name.rsplit(".", 1)[0] if "." in name else ""
    for other in params.values():
        if other.ndim == 2 and other.shape[-1] == p.shape[-1] and other.name.rsplit(".", 1)[0] == prefix:
            return {"fan_in": float(other.shape[0]), "fan_out": float(p.shape[-1]), "size": float(p.shape[0])}
    return {"fan_in": 1.0, "fan_out": float(p.shape[-1] if p.shape else 1), "size": float(np.prod(p.shape))}


def _scale_value(value, names) -> float:
    """The train block validated the value (runtime/config._scale); formulas are
    checked for a finite real result as they are evaluated."""
    v = float(value.evaluate(names)) if isinstance(value, Formula) else float(value)
    if v < 0:
        raise SpecError(f"lr_scale came out negative ({v:g})", value.expr.loc if isinstance(value, Formula) else None)
    return v


# ---------------------------------------------------------------------------- between steps


@dataclass(frozen=True)
class Sampler:
    """What a method's `prepare` reads: the compiled program, its training set, the
    minibatch size and the run's generator (random examples for the estimates)."""
    program: object
    x: np.ndarray
    t: np.ndarray | None
    batch: int
    rng: np.random.Generator

    def indices(self, n: int) -> np.ndarray:
        return self.rng.choice(len(self.x), size=min(n, len(self.x)), replace=False)

    def curvature(self, arrays: dict, sel) -> list[np.ndarray]:
        """The bbprop diagonal of the mean loss over the examples `sel`, per parameter."""
        from .evaluation import call
        t = None if self.t is None else self.t[sel]
        with np.errstate(all="ignore"):
            return call(self.program.curvature, arrays, self.program, self.x[sel], t)

    def gradient(self, arrays: dict, sel) -> list[np.ndarray]:
        """The gradient of the mean loss (decay terms included) over the examples `sel`."""
        from .evaluation import feeds_for
        fn = self.program.named("value_and_grad")
        data = feeds_for(self.program, self.x[sel], None if self.t is None else self.t[sel])
        hyper = {"inv_examples": 1.0 / len(self.x)}
        with np.errstate(all="ignore"):
            return fn(arrays, *data, *[hyper[k] for k in fn.feeds[len(data):]])[1:]


def _host(a) -> np.ndarray:
    """A float64 NumPy copy of a state or output array (a CuPy one is fetched)."""
    return np.asarray(a.get() if hasattr(a, "get") else a, dtype=np.float64)


def sdlm_curvature(s: Sampler, arrays: dict, m) -> None:
    """SDLM [EB 9.1]: before each epoch, the Gauss-Newton diagonal (bbprop) on `samples`
    random training examples, in chunks; each chunk's mean enters the running average
    h <- (1 - gamma) h + gamma h_chunk. A state never estimated (all zero: a fresh
    run) starts at the mean over all the samples instead of at zero, so the rates
    are unbiased from the first update (from zero, h after one estimate is
    1 - (1 - gamma)^chunks of the truth: 0.23x at 5 chunks)."""
    names = list(s.program.spec.params)
    idx = s.indices(m.samples)
    chunk = max(1, min(s.batch, 100)) if s.batch > 1 else 25
    fresh = all(not np.any(_host(arrays[f"{n}.curvature"])) for n in names)
    total = [np.zeros_like(arrays[f"{n}.curvature"], dtype=np.float64) for n in names]
    for lo in range(0, len(idx), chunk):
        sel = idx[lo:lo + chunk]
        for k, (name, c) in enumerate(zip(names, s.curvature(arrays, sel))):
            if fresh:
                total[k] += _host(c) * len(sel)
            else:
                h = arrays[f"{name}.curvature"]
                h *= 1 - m.gamma
                h += m.gamma * c
    if fresh:
        for name, tot in zip(names, total):
            arrays[f"{name}.curvature"][...] = tot / len(idx)


def vsgd_start(s: Sampler, arrays: dict, m) -> None:
    """vSGD's initialization (Schaul, Zhang & LeCun 2013, and their reference code):
    before the first update, g_ is the mean of n0 minibatch gradients, v_ the mean of
    their squares and h_ the mean bbprop diagonal, v_ and h_ scaled up by the
    slow-start constant C (the first rates are about 1/C of the estimate) and the
    memory tau = n0. A run that has started (tau > 0) is left alone."""
    names = [n for n in s.program.spec.params if f"{n}.tau" in arrays]
    if not names or any(np.any(_host(arrays[f"{n}.tau"])) for n in names):
        return
    all_names = list(s.program.spec.params)
    g1 = {n: np.zeros(arrays[n].shape) for n in names}
    g2 = {n: np.zeros(arrays[n].shape) for n in names}
    hs = {n: np.zeros(arrays[n].shape) for n in names}
    for _ in range(m.n0):
        sel = s.indices(s.batch)
        grads = dict(zip(all_names, s.gradient(arrays, sel)))
        curv = dict(zip(all_names, s.curvature(arrays, sel)))
        for n in names:
            g = _host(grads[n])
            g1[n] += g / m.n0
            g2[n] += g * g / m.n0
            hs[n] += _host(curv[n]) / m.n0
    for n in names:
        arrays[f"{n}.g_avg"][...] = g1[n]
        arrays[f"{n}.v_avg"][...] = m.C * g2[n] + 1e-12
        arrays[f"{n}.h_avg"][...] = m.C * np.clip(hs[n], 1.0, 1e9)  # as the reference code: h >= 1
        arrays[f"{n}.tau"][...] = m.n0


def preconditioner(cfg: config.TrainConfig, scales: dict[str, float], arrays: dict, names: list[str]):
    """Per parameter, the diagonal P the update multiplies the gradient by besides the
    global rate: lr_scale, and for sdlm 1/(h + mu). `lr = auto(eigen)` estimates
    lambda_max(P H), whose 2/lambda_max is the stability limit of w <- w - eps P g."""
    out = []
    for n in names:
        p = np.full(arrays[n].shape, scales.get(n, 1.0), dtype=np.float64)
        if cfg.method.kind == "sdlm":
            p = p / (_host(arrays[f"{n}.curvature"]) + cfg.method.mu)
        out.append(p)
    return out


def eigen_rate(cfg: config.TrainConfig, lam: float) -> tuple[float, str]:
    """lr = auto(eigen): half the stability limit of the method's iteration along the
    top eigenvector of P H (eigenvalue `lam`), and how it was chosen.

    On a quadratic, w <- w - eps P g diverges for eps lam > 2, so eps = 1/lam [EB 5].
    Heavy-ball momentum mu (v <- mu v - eps g, w <- w + v) is stable for eps lam < 2(1 + mu):
    eps = (1 + mu)/lam, also the middle of the band where that direction converges fastest
    (rate sqrt(mu)). Nesterov's form is stable for eps lam < 2(1 + mu)/(1 + 2 mu)."""
    mu = getattr(cfg.method, "momentum", 0.0) or 0.0
    if not mu:
        return 1.0 / lam, ""
    if getattr(cfg.method, "nesterov", False):
        factor, limit = (1 + mu) / (1 + 2 * mu), "2(1 + mu)/(1 + 2 mu)/lambda_max, Nesterov"
    else:
        factor, limit = 1 + mu, "2(1 + mu)/lambda_max, heavy ball"
    return factor / lam, f" (momentum {mu:g}: half the stability limit {limit})"
