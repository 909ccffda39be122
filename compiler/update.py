"""The parameter update as graph nodes, so the optimizer's arithmetic is part
of the one compiled step (scheduled, and later fused, with the rest).

Scalars that change between steps (the learning rate, momentum, 1/T for
weight decay) enter as `hyper` leaves: schedules change them without
recompiling. Per-parameter optimizer memory (velocities, accumulated squares, Adam's
moments, curvature averages) is `state`, updated in place, so checkpoints hold
it and a resumed run continues exactly.

Each optimizer is one `UpdateRule` in `RULES`: what it builds once for all
parameters (`shared`) and what it builds per parameter (`per_param`). The
train-block side of the same optimizer (its schema, its step inputs, a batch
method's driver) is runtime/optimizers.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .curvature import gauss_newton_diag
from .graph import Graph, Node

ZERO = {"dist": "constant", "value": 0.0}
INF = float("inf")
# What a state's values are while training can go on (`valid`, a closed range, finite
# always): a checkpoint holding others (changed by hand, or saved as its run diverged)
# is refused where it is read (runtime/checkpoint.py).
REAL, NONNEGATIVE, UNIT = (-INF, INF), (0.0, INF), (0.0, 1.0)


@dataclass(frozen=True)
class Optimizer:
    """What the update graph needs to know of the train block's `method`."""
    kind: str = "sgd"  # a key of RULES
    momentum: bool = False  # a momentum hyper is fed (sgd)
    nesterov: bool = False
    eps: float = 1e-8  # adagrad's, adam's and rmsprop's guard (added to the root)
    beta1: float = 0.9  # adam's moment decays
    beta2: float = 0.999
    rho: float = 0.9  # rmsprop's mean-square decay
    mu: float = 0.02  # sdlm's Levenberg-Marquardt term [EB 9.1]
    alpha: float = 0.01  # adaptive: rate of change of the rate [EB 4.7]
    beta: float = 1.0
    delta: float = 0.05
    lr0: float = 0.01  # adaptive: the starting rate
    vsgd_curvature: str = "unit"  # vsgd: "diagonal" (each weight's bbprop h) or "unit" (its unit's fan-in sum)
    l2: dict = field(default_factory=dict)  # param name -> lambda (weight decay, lambda * sum w^2)
    l1: dict = field(default_factory=dict)

    @property
    def needs_curvature_state(self) -> bool:
        """A compiled bbprop function the trainer runs between steps: sdlm re-estimates its
        `{param}.curvature` state before each epoch, vsgd initializes its averages."""
        return _rule(self.kind).curvature_function


@dataclass
class Shared:
    """What an optimizer builds once for all parameters: updates of global state,
    the rate the per-parameter steps use, the curvature diagonal they read."""
    lr: Node
    updates: list[tuple[Node, Node]] = field(default_factory=list)
    curvature: list[Node] | None = None
    scalars: dict[str, Node] = field(default_factory=dict)  # e.g. adam's bias corrections


@dataclass(frozen=True)
class UpdateRule:
    per_param: Callable  # (G, opt, p, g, eps_p, scale, i, shared) -> [(leaf, new value)]
    shared: Callable | None = None  # (G, opt, params, grads, loss, output, shared) -> None
    curvature_function: bool = False  # the trainer runs the bbprop diagonal outside the step


def build_updates(G: Graph, opt: Optimizer, params: list[Node], grads: list[Node],
                  scales: dict[str, float], loss: Node | None = None,
                  output: Node | None = None) -> list[tuple[Node, Node]]:
    """(leaf, new value) pairs applied in place at the end of the step."""
    rule = _rule(opt.kind)
    shared = Shared(G("hyper", name="lr", shape=(), dtype=G.float_dtype))
    grads = with_decay(G, opt, params, grads)
    if rule.shared is not None:
        rule.shared(G, opt, params, grads, loss, output, shared)
    updates = list(shared.updates)
    for i, (p, g) in enumerate(zip(params, grads)):
        scale = scales.get(p.name, 1.0)
        if scale == 0:
            continue  # frozen
        eps_p = G("mul", shared.lr, scale) if scale != 1 else shared.lr
        mark = len(G)
        updates += rule.per_param(G, opt, p, g, eps_p, scale, i, shared)
        G.locate_new(mark, p.loc)  # the update points at the parameter's line
    return updates


def regularized_objective(G: Graph, opt: Optimizer, params: list[Node], loss: Node,
                          grads: list[Node]) -> list[Node]:
    """[loss + R / T, gradients + dR/dw / T]: the whole training criterion the batch
    methods minimize, with the same decay terms (and the same `inv_examples` feed)
    as the step's gradients."""
    grads = with_decay(G, opt, params, grads)
    if not opt.l2 and not opt.l1:
        return [loss] + grads
    inv_t = G("hyper", name="inv_examples", shape=(), dtype=G.float_dtype)
    penalty = None
    for p in params:
        lam2, lam1 = opt.l2.get(p.name, 0.0), opt.l1.get(p.name, 0.0)
        for lam, r in ((lam2, lambda: G("sum", G("mul", p, p))), (lam1, lambda: G("sum", G("abs", p)))):
            if lam:
                term = G("mul", float(lam), r())
                penalty = term if penalty is None else G("add", penalty, term)
    objective = loss if penalty is None else G("add", loss, G("mul", inv_t, penalty))
    return [objective] + grads


def _rule(kind: str) -> UpdateRule:
    rule = RULES.get(kind)
    if rule is None:
        raise ValueError(f"unknown optimizer {kind!r}")
    return rule


def _state(G: Graph, p: Node, what: str, init=ZERO, shape=None, valid=None) -> Node:
    return G("state", name=f"{p.name}.{what}", shape=p.shape if shape is None else shape,
             dtype=p.dtype, init=init, valid=valid)


def state_ranges(leaves: list[Node]) -> dict[str, tuple[float, float]]:
    """The declared range (`valid`) of each state leaf that has one: what a checkpoint's
    copy must hold (runtime/checkpoint.py)."""
    return {n.name: n.attr("valid") for n in leaves if n.op == "state" and n.attr("valid") is not None}


def with_decay(G: Graph, opt: Optimizer, params, grads) -> list[Node]:
    """g + (2 lambda / T) w for L2 and + (lambda / T) sign(w) for L1: the train block's
    decay is on the whole training criterion sum_t L_t + lambda R, so a minibatch of
    the mean loss carries lambda R / T [PR 3.2]; `inv_examples` = 1/T is fed."""
    if not opt.l2 and not opt.l1:
        return list(grads)
    inv_t = G("hyper", name="inv_examples", shape=(), dtype=G.float_dtype)
    out = []
    for p, g in zip(params, grads):
        lam2, lam1 = opt.l2.get(p.name, 0.0), opt.l1.get(p.name, 0.0)
        if lam2:
            g = G("add", g, G("mul", G("mul", inv_t, 2.0 * lam2), p))
        if lam1:
            g = G("add", g, G("mul", G("mul", inv_t, lam1), G("sign", p)))
        out.append(g)
    return out


# ---------------------------------------------------------------------------- the rules


def _sgd(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, *_) -> list[tuple[Node, Node]]:
    """w <- w - eps g; with momentum v <- mu v - eps g, w <- w + v
    (Nesterov: w <- w + mu v - eps g) [EB 4.7, PR 3.1]."""
    step = G("mul", eps_p, g)
    if not opt.momentum:
        return [(p, G("sub", p, step))]
    mu = G("hyper", name="momentum", shape=(), dtype=G.float_dtype)
    v = _state(G, p, "velocity", valid=REAL)
    v_new = G("sub", G("mul", mu, v), step)
    p_new = G("sub", G("add", p, G("mul", mu, v_new)), step) if opt.nesterov else G("add", p, v_new)
    return [(v, v_new), (p, p_new)]


def _adagrad(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, *_) -> list[tuple[Node, Node]]:
    """Each weight's rate divided by the root of its summed squared gradients [PR 6.2]."""
    acc = _state(G, p, "sum_sq", valid=NONNEGATIVE)
    acc_new = G("add", acc, G("mul", g, g))
    step = G("div", G("mul", eps_p, g), G("add", G("sqrt", acc_new), opt.eps))
    return [(acc, acc_new), (p, G("sub", p, step))]


def _adam_corrections(G: Graph, opt: Optimizer, params, grads, loss, output, shared: Shared) -> None:
    """beta^t for t the update count, kept as running products (state, so a resumed
    run continues the same t): 1/(1 - beta1^t) and 1/(1 - beta2^t) undo the moments'
    bias toward their zero start [Kingma & Ba 2015, Alg. 1]."""
    one = {"dist": "constant", "value": 1.0}
    for k, beta in (("1", opt.beta1), ("2", opt.beta2)):
        power = G("state", name=f"adam.beta{k}_power", shape=(), dtype=G.float_dtype, init=one,
                  valid=UNIT)  # 0 once it underflows
        new = G("mul", power, float(beta))
        shared.updates.append((power, new))
        shared.scalars[f"correction{k}"] = G("div", 1.0, G("sub", 1.0, new))


def _adam(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, scale: float, i: int,
          shared: Shared) -> list[tuple[Node, Node]]:
    """m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
    w <- w - eps (m c1) / (sqrt(v c2) + e), c the bias corrections [Kingma & Ba 2015, Alg. 1]:
    the first step moves each weight by about eps, whatever the gradient's scale."""
    m, v = _state(G, p, "moment1", valid=REAL), _state(G, p, "moment2", valid=NONNEGATIVE)
    m_new = G("add", G("mul", opt.beta1, m), G("mul", 1.0 - opt.beta1, g))
    v_new = G("add", G("mul", opt.beta2, v), G("mul", 1.0 - opt.beta2, G("mul", g, g)))
    m_hat = G("mul", m_new, shared.scalars["correction1"])
    v_hat = G("mul", v_new, shared.scalars["correction2"])
    step = G("div", G("mul", eps_p, m_hat), G("add", G("sqrt", v_hat), opt.eps))
    return [(m, m_new), (v, v_new), (p, G("sub", p, step))]


def _rmsprop(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, *_) -> list[tuple[Node, Node]]:
    """ms <- rho ms + (1-rho) g^2, w <- w - eps g / (sqrt(ms) + e) [Tieleman & Hinton 2012]."""
    ms = _state(G, p, "mean_sq", valid=NONNEGATIVE)
    ms_new = G("add", G("mul", opt.rho, ms), G("mul", 1.0 - opt.rho, G("mul", g, g)))
    step = G("div", G("mul", eps_p, g), G("add", G("sqrt", ms_new), opt.eps))
    return [(ms, ms_new), (p, G("sub", p, step))]


def _sdlm(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, *_) -> list[tuple[Node, Node]]:
    """eta_k = eps / (h_k + mu) with h a running Gauss-Newton diagonal kept by the trainer [EB 9.1]."""
    h = _state(G, p, "curvature", valid=REAL)  # the loss's own second derivative may be negative
    return [(p, G("sub", p, G("mul", G("div", eps_p, G("add", h, opt.mu)), g)))]


def _adaptive_rate(G: Graph, opt: Optimizer, params, grads, loss, output, shared: Shared) -> None:
    """Murata/Mueller's adaptive global rate [EB 4.7]: r <- (1 - delta) r + delta g,
    eta <- eta + alpha eta (beta |r| - eta), with the step using the new eta."""
    norm_sq = None
    for p, g in zip(params, grads):
        r = _state(G, p, "flow", valid=REAL)
        r_new = G("add", G("mul", 1.0 - opt.delta, r), G("mul", opt.delta, g))
        shared.updates.append((r, r_new))
        s = G("sum", G("mul", r_new, r_new))
        norm_sq = s if norm_sq is None else G("add", norm_sq, s)
    lr0 = G("hyper", name="lr", shape=(), dtype=G.float_dtype)
    eta = G("state", name="adaptive.eta", shape=(), dtype=G.float_dtype, init={"dist": "constant", "value": opt.lr0},
            valid=NONNEGATIVE)
    eta_new = G("add", eta, G("mul", G("mul", opt.alpha, eta), G("sub", G("mul", opt.beta, G("sqrt", norm_sq)), eta)))
    eta_new = G("minimum", G("maximum", eta_new, G("mul", lr0, 1e-3)), G("mul", lr0, 1e3))  # keep it sane
    shared.updates.append((eta, eta_new))
    shared.lr = eta_new  # the new global rate


def _vsgd_curvature(G: Graph, opt: Optimizer, params, grads, loss, output, shared: Shared) -> None:
    shared.curvature = gauss_newton_diag(G, loss, params, output)


def _vsgd(G: Graph, opt: Optimizer, p: Node, g: Node, eps_p: Node, scale: float, i: int,
          shared: Shared) -> list[tuple[Node, Node]]:
    """vSGD-l, "no more pesky learning rates" (Schaul, Zhang & LeCun 2013), with the
    bbprop diagonal as the curvature estimate and the minibatch gradient as the sample:
    g_ <- (1-1/tau) g_ + g/tau, v_ <- (1-1/tau) v_ + g^2/tau, h_ <- (1-1/tau) h_ + h/tau,
    eta = g_^2 / (h_ v_), tau <- (1 - g_^2/v_) tau + 1.
    The averages start from n0 minibatches, v_ and h_ scaled up by the slow-start
    constant C and tau = n0 (the trainer's `vsgd_start`, runtime/optimizers.py), as
    the paper and its reference code do: starting them at zero makes the first rate
    1/h, a full diagonal Newton step. `lr` (1 unless a divergence cut it) and
    lr_scale multiply eta."""
    h_now = shared.curvature[i]
    if opt.vsgd_curvature == "unit" and len(p.shape) == 2:
        # each weight sees its unit's fan-in total: the trace of the unit's Gauss-Newton
        # block, an upper bound on its largest eigenvalue (the diagonal alone under-
        # estimates it by up to the fan-in when inputs are correlated, and then diverges)
        h_now = G("broadcast", G("sum", h_now, axis=(0,), keepdims=True), shape=p.shape)
    tau_s = _state(G, p, "tau", valid=REAL)
    gb, vb = _state(G, p, "g_avg", valid=REAL), _state(G, p, "v_avg", valid=NONNEGATIVE)
    hb = _state(G, p, "h_avg", valid=REAL)
    # a gradient farther from g_ than one standard deviation slows the averages (tau + 1),
    # as the reference code's outlier detection does
    dev = G("sub", g, gb)
    outlier = G("gt", G("mul", dev, dev), G("sub", vb, G("mul", gb, gb)))
    tau = G("add", G("maximum", tau_s, 1.0), outlier)  # tau_s = 0: never initialized (a bare step)
    inv = G("div", 1.0, tau)
    keep = G("sub", 1.0, inv)
    gb_new = G("add", G("mul", keep, gb), G("mul", inv, g))
    vb_new = G("add", G("mul", keep, vb), G("mul", inv, G("mul", g, g)))
    hb_new = G("add", G("mul", keep, hb), G("mul", inv, h_now))
    g2 = G("mul", gb_new, gb_new)
    ratio = G("div", g2, G("add", vb_new, 1e-12))
    eta = G("div", ratio, G("add", hb_new, 1e-8))
    tau_new = G("add", G("mul", G("sub", 1.0, ratio), tau), 1.0)
    step = G("mul", G("mul", eta, eps_p), g)
    return [(gb, gb_new), (vb, vb_new), (hb, hb_new), (tau_s, tau_new), (p, G("sub", p, step))]


RULES: dict[str, UpdateRule] = {
    "sgd": UpdateRule(_sgd),
    "adagrad": UpdateRule(_adagrad),
    "adam": UpdateRule(_adam, shared=_adam_corrections),
    "rmsprop": UpdateRule(_rmsprop),
    "sdlm": UpdateRule(_sdlm, curvature_function=True),
    "vsgd": UpdateRule(_vsgd, shared=_vsgd_curvature, curvature_function=True),
    "adaptive": UpdateRule(_sgd, shared=_adaptive_rate),
}
