"""The data and train blocks, validated by pydantic models.

The models are the one place where keys, types and defaults are defined
(`netc doc train` prints them). `from_block` turns the elaborated block
entries into a model and maps every validation failure back to the spec's
file:line:col, with a did-you-mean for unknown keys.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from netc.compiler.blocks import BlockCall, BlockEntry, Formula, Symbol
from netc.compiler.errors import ErrorList, Loc, SpecError, did_you_mean
from netc.runtime import normalize as _norm
from netc.runtime.init_from import source_of as _init_source


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @field_validator("*", mode="before")
    @classmethod
    def _flags_where_flags(cls, v, info):
        """true/false only where a key takes one: pydantic alone reads `threads = true` as 1."""
        if isinstance(v, bool) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expects a number or a setting, not {str(v).lower()}")
        return v


def _takes_bool(annotation) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(a is bool or a is Any or (get_args(a) and _takes_bool(a)) for a in get_args(annotation))


# ---- methods and schedules ------------------------------------------------------


class Auto(_Strict):
    """lr = auto(eigen): eta = 1 / lambda_max of the Hessian, by the power method on
    Hessian-vector products, estimated before training [EB 5, 9.3]."""
    kind: Literal["auto"] = "auto"
    args: tuple[Literal["eigen"]] = ("eigen",)
    examples: int = Field(1000, ge=1, description="training examples the estimate uses")


class SGD(_Strict):
    """Stochastic gradient descent, with classic or Nesterov momentum [EB 4.7, PR 3.1]."""
    kind: Literal["sgd"] = "sgd"
    lr: float | Auto = Field(0.01, description="base learning rate eps0 (> 0), or auto(eigen)")
    momentum: float = Field(0.0, ge=0, lt=1, description="mu in v <- mu v - eps g; 0 = none (PR's default)")
    nesterov: bool = Field(False, description="Nesterov's look-ahead form of momentum")


class AdaGrad(_Strict):
    """AdaGrad: each weight's rate divided by the root of its summed squared gradients [PR 6.2]."""
    kind: Literal["adagrad"] = "adagrad"
    lr: float = Field(0.1, gt=0)
    eps: float = Field(1e-8, gt=0, description="guard against dividing by zero")


class Adam(_Strict):
    """Adam (Kingma & Ba 2015, Algorithm 1, bias correction included): m <- b1 m + (1-b1) g,
    v <- b2 v + (1-b2) g^2, w <- w - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""
    kind: Literal["adam"] = "adam"
    lr: float = Field(0.001, gt=0, description="alpha, the step size (the paper's and Keras's default)")
    beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first-moment (mean) average")
    beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second-moment (uncentered variance) average")
    eps: float = Field(1e-8, gt=0, description="added to sqrt(v_hat) (outside the root, as in the paper)")


class RMSprop(_Strict):
    """RMSprop (Tieleman & Hinton 2012, lecture 6.5): ms <- rho ms + (1-rho) g^2,
    w <- w - lr g / (sqrt(ms) + eps), eps outside the root as in adam and adagrad here
    (PyTorch's and Keras's placement)."""
    kind: Literal["rmsprop"] = "rmsprop"
    lr: float = Field(0.001, gt=0, description="the global rate")
    rho: float = Field(0.9, ge=0, lt=1, description="decay of the mean-square average (Hinton's 0.9)")
    eps: float = Field(1e-8, gt=0, description="added to sqrt(ms): bounds the step where gradients are tiny")


class SDLM(_Strict):
    """Stochastic diagonal Levenberg-Marquardt: eta_k = lr / (<d2E/dw_k^2> + mu) [EB 9.1],
    the curvature a running Gauss-Newton diagonal (bbprop) re-estimated before each epoch."""
    kind: Literal["sdlm"] = "sdlm"
    lr: float = Field(0.01, gt=0, description="epsilon, the global rate")
    mu: float = Field(0.02, gt=0, description="Levenberg-Marquardt term: bounds the rate where the curvature is small")
    gamma: float = Field(0.05, gt=0, le=1, description="running-average factor of the curvature estimate")
    samples: int = Field(500, ge=1, description="examples used to re-estimate the curvature before each epoch")


class VSGD(_Strict):
    """vSGD, learning-rate free (Schaul, Zhang & LeCun 2013), with bbprop curvature: the
    running averages start from n0 minibatches, v and h scaled up by the slow-start C."""
    kind: Literal["vsgd"] = "vsgd"
    n0: int = Field(10, ge=1, description="minibatches sampled before the first update to start the averages "
                                          "(and the initial memory tau)")
    C: float = Field(2.0, ge=1, description="slow-start constant: the first rates are 1/C of the estimate")
    curvature: Literal["unit", "diagonal"] = Field(
        "unit", description="diagonal: each weight's own bbprop curvature (the paper's vSGD-l); unit: the sum "
                            "over its unit's fan-in, a bound on the unit's largest eigenvalue (correlated "
                            "inputs make the diagonal diverge)")
    lr: None = Field(None, description="(refused: vsgd sets every weight's rate itself)")

    @field_validator("lr", mode="before")
    @classmethod
    def _no_rate(cls, v):
        raise ValueError("vsgd is learning-rate free (it sets every weight's rate itself): remove lr")


class Adaptive(_Strict):
    """Murata & Mueller's adaptive global rate [EB 4.7]: r <- (1-delta) r + delta g,
    eta <- eta + alpha eta (beta |r| - eta). (check)"""
    kind: Literal["adaptive"] = "adaptive"
    lr: float = Field(0.01, gt=0, description="the starting rate")
    alpha: float = Field(0.01, gt=0)
    beta: float = Field(1.0, gt=0)
    delta: float = Field(0.05, gt=0, le=1)


class LBFGS(_Strict):
    """L-BFGS on the whole training set (small sets, regression) [EB 6]."""
    kind: Literal["lbfgs"] = "lbfgs"
    iterations: int = Field(50, ge=1, description="iterations per epoch")
    memory: int = Field(10, ge=1, description="pairs of past steps kept")


class CG(_Strict):
    """Nonlinear conjugate gradient (Polak-Ribiere) on the whole training set [EB 6]."""
    kind: Literal["cg"] = "cg"
    iterations: int = Field(50, ge=1, description="iterations per epoch")


class Constant(_Strict):
    """A constant learning rate."""
    kind: Literal["constant"] = "constant"


class InverseTime(_Strict):
    """eps_t = eps0 * tau / max(t, tau), t counted in updates (minibatches), as PR eq. 2 does."""
    kind: Literal["inverse_time"] = "inverse_time"
    tau: float = Field(10000, gt=0, description="updates before the rate starts to decay")


class StepDecay(_Strict):
    """eps0 * factor ^ floor(t / every), t in examples."""
    kind: Literal["step"] = "step"
    every: int = Field(100000, ge=1, description="examples between cuts")
    factor: float = Field(0.1, gt=0, lt=1)


class Exponential(_Strict):
    """eps0 * decay ^ (t / every), t in examples."""
    kind: Literal["exponential"] = "exponential"
    decay: float = Field(0.9, gt=0, lt=1)
    every: int = Field(50000, ge=1, description="examples per factor of `decay`")


class Plateau(_Strict):
    """Hold the rate until the training criterion stops improving by a relative
    `threshold` over an epoch, then multiply it by `factor` [PR 3.1]."""
    kind: Literal["plateau"] = "plateau"
    threshold: float = Field(0.01, ge=0, lt=1)
    factor: float = Field(0.5, gt=0, lt=1)


class Early(_Strict):
    """Early stopping on the validation error with patience counted in examples [PR 3.1]."""
    kind: Literal["early"] = "early"
    patience: int = Field(10000, gt=0, description="examples to wait for a new best")
    grow: float = Field(2.0, ge=1, description="at a new best, patience = max(patience, grow * age)")


class Every(_Strict):
    """Re-estimate the transformed units' alpha and beta (and gamma) before the first update
    and every N updates after, on a fresh random sample of the training set, re-expressing
    the network so its noise-free function is unchanged [RV] (runtime/transforms.py)."""
    kind: Literal["every"] = "every"
    args: tuple[Annotated[int, Field(ge=1)]] = (1000,)
    gamma: bool = Field(False, description="three transformations: gamma too (Vatanen et al. 2013); false: "
                                           "alpha and beta only (Raiko et al. 2012, the authors' default)")
    sample: int = Field(10000, ge=1, description="training examples drawn afresh at each refresh "
                                                 "(the whole set if it is smaller)")


class Never(_Strict):
    kind: Literal["off"] = "off"


class Seconds(_Strict):
    """checkpoint_every = seconds(N): a checkpoint inside an epoch whenever N seconds
    have passed since the last one (and one at every epoch's end)."""
    kind: Literal["seconds"] = "seconds"
    args: tuple[float] = (60.0,)

    @field_validator("args")
    @classmethod
    def _positive(cls, v):
        if not v[0] > 0 or v[0] == float("inf"):
            raise ValueError("seconds(N) needs a number N > 0")
        return v

    def __str__(self) -> str:
        return f"seconds({self.args[0]:g})"


class Polyak(_Strict):
    """Polyak averaging of the parameters, used for validation and prediction [PR 3.1]."""
    kind: Literal["polyak"] = "polyak"


METHODS = {"sgd": SGD, "adagrad": AdaGrad, "adam": Adam, "rmsprop": RMSprop, "sdlm": SDLM, "vsgd": VSGD, "adaptive": Adaptive, "lbfgs": LBFGS,
           "cg": CG}
BATCH_METHODS = ("lbfgs", "cg")
SCHEDULES = {"constant": Constant, "inverse_time": InverseTime, "step": StepDecay, "exponential": Exponential,
             "plateau": Plateau}
STOPS = {"early": Early, "off": Never, "none": Never}
AVERAGES = {"polyak": Polyak, "off": Never, "none": Never}
class Errors(_Strict):
    """The emphasizing scheme [EB 4.2]: examples the network got wrong when last seen
    are drawn `ratio` times as often as the others (a bounded ratio: emphasis hurts
    with outliers)."""
    kind: Literal["errors"] = "errors"
    ratio: float = Field(3.0, ge=1, le=100, description="how much more often a misclassified example is drawn")


EMPHASIZE = {"off": Never, "none": Never, "errors": Errors}
TRANSFORMS = {"every": Every, "off": Never, "none": Never}


class TrainConfig(_Strict):
    method: SGD | AdaGrad | Adam | RMSprop | SDLM | VSGD | Adaptive | LBFGS | CG = Field(
        default_factory=SGD, description="sgd(lr, momentum, nesterov), adagrad(lr, eps), "
                                         "adam(lr, beta1, beta2, eps), rmsprop(lr, rho, eps), "
                                         "sdlm(lr, mu, gamma, samples), "
                                         "vsgd(n0, C, curvature), adaptive(lr, alpha, beta, delta), "
                                         "lbfgs(iterations, memory), "
                                         "cg(iterations)")
    batch: int = Field(32, ge=1, description="minibatch size B; 1 = true stochastic updates [PR 3.1: 32]")
    epochs: int = Field(10, ge=1, description="passes over the training set (at most, with early stopping)")
    shuffle: bool = Field(True, description="reshuffle the training set each epoch [EB 4.2]")
    seed: int = Field(0, ge=0, lt=2 ** 31, description="one seed for initialization, shuffling and noise")
    lr_scale: Any = Field(1.0, description="per-parameter learning-rate factor: a number or a formula of "
                                          "fan_in, fan_out, size (e.g. fan_in ^ -0.5 [EB 4.7]); "
                                          "`lr_scale SELECTOR = ...` sets it for a group")
    schedule: Constant | InverseTime | StepDecay | Exponential | Plateau = Field(
        default_factory=Constant, description="constant, inverse_time(tau), step(every, factor), "
                                              "exponential(decay, every), plateau(threshold, factor)")
    valid_every: int | None = Field(None, ge=1, description="validate every N examples (at least the validation "
                                                           "set's size) as well as at each epoch's end [PR 3.1]")
    freeze: bool = Field(False, description="`freeze SELECTOR = true` keeps a group's parameters fixed")
    init_scale: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False, description="a global factor on every initialization's scale [PR 3.2]")
    recover: bool = Field(True, description="on divergence, restore the last healthy state and divide the rate by 3")
    stats: bool = Field(True, description="per-layer statistics in metrics.jsonl on the first 500 examples, at "
                                          "the first and last epoch and every k-th, k keeping them near a tenth "
                                          "of training (every epoch from 5000 examples) [PR 4.2]")
    stop: Early | Never = Field(default_factory=Never, description="early(patience, grow) or off")
    average: Polyak | Never = Field(default_factory=Never, description="polyak or off")
    decay: float = Field(0.0, ge=0, description="L2 weight decay lambda on the whole training criterion "
                                               "(lambda * sum w^2; weights only unless `decay SELECTOR = ...`)")
    l1: float = Field(0.0, ge=0, description="L1 weight decay lambda * sum |w| (weights only by default)")
    init: Any = Field(None, description='`init SELECTOR = from("RUN")` copies those parameters from another run\'s '
                                        'checkpoint (a folder relative to the spec); no selector: every parameter '
                                        '[PR 1.1]')
    emphasize: Never | Errors = Field(default_factory=Never, description="off, or errors(ratio): draw the examples "
                                                                        "last misclassified more often [EB 4.2]")
    interleave: bool = Field(False, description="present consecutive examples from different classes [EB 4.2]")
    lr: float | Auto | None = Field(None, description="overrides the method's rate: a number or auto(eigen)")
    transforms: Never | Every = Field(default_factory=Never, description="every(N, gamma = false, sample = 10000): "
                                                                          "before the first update and every N, "
                                                                          "re-estimate the transformed units' alpha, "
                                                                          "beta (and gamma) on a fresh sample, "
                                                                          "keeping the function [RV]")
    dtype: Literal["float32", "float64"] = Field("float32", description="floating-point type of the compiled step")
    eval_batch: int = Field(1000, ge=1, description="batch size for validation, test and prediction")
    threads: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] | None = Field(
        None, description="threads of the native backend's GEMMs and loops: a number, or auto (the default: "
                          "$NETC_THREADS, else the cores no other process is busy on; a tiny step runs on one)")
    test_every: Literal["end", "epoch"] = Field(
        "end", description="end: the test set is evaluated once, on the final parameters (nothing "
                           "is tuned on it); epoch: also at each epoch's end (metrics.jsonl)")
    checkpoint_every: Annotated[int, Field(ge=1)] | Seconds = Field(
        default_factory=Seconds, description="with a run folder, a checkpoint inside an epoch every N examples, "
                                             "or seconds(N) (default seconds(60)); always one at each epoch's "
                                             "end. `netc train --resume DIR` continues from the last one "
                                             "(batch methods: epoch ends only)")
    groups: list = Field(default_factory=list, description="(internal) per-selector settings")


class Source(_Strict):
    kind: Literal["mnist", "csv", "npz"]
    args: tuple = ()
    kwargs: dict = Field(default_factory=dict)
    slice: tuple | None = None
    loc: Loc | None = None


class DataConfig(_Strict):
    train: Source | None = Field(None, description='training set, e.g. mnist("train")[0:50000], csv("f.csv"), npz("f.npz")')
    labels: int | None = Field(None, ge=1, description="keep the labels of the first N training examples only: a "
                                                       "spec with a target trains on those N, one without (an "
                                                       "auto-encoder) on every example; the normalization is "
                                                       "fitted on every example [PR 1.1]")
    valid: Source | None = Field(None, description="validation set (early stopping, model selection)")
    test: Source | None = Field(None, description="test set, evaluated once at the end "
                                                "(train key test_every = epoch: each epoch too)")
    normalize: Any = Field(
        "none", description="input normalization fitted on the training set: center, standardize, "
                            "pca(dims | variance), whiten(eps, dims | variance), zca(eps) [EB 4.3], "
                            "uniformize(knots), log, sqrt [PR 3.2], or a list applied in order, "
                            "e.g. [log, standardize]")
    normalize_target: Literal["none", "center", "standardize"] = Field(
        "none", description="real targets: standardize (or center) each column on the training set; the "
                            "model trains on the scaled targets, predict, score and the exported model "
                            "give the target's own units; refused for class targets")

    @field_validator("normalize")
    @classmethod
    def _normalize_steps(cls, v):
        """Any form normalize.parse reads (a name, text, Steps, a list) -> a tuple of Steps."""
        return _norm.parse(v)


_CALL_FIELDS = {"method": METHODS, "schedule": SCHEDULES, "stop": STOPS, "average": AVERAGES,
                "emphasize": EMPHASIZE, "transforms": TRANSFORMS}
_SELECTOR_KEYS = {"lr_scale", "decay", "l1", "freeze", "init"}
_SOURCES = {"mnist", "csv", "npz"}


def from_block(model: type[_Strict], entries: list[BlockEntry] | None, source: str | None,
               block_loc: Loc | None = None):
    """Validate block entries into `model`; every error names its file:line:col."""
    values: dict[str, Any] = {}
    locs: dict[str, Loc] = {}
    groups: list = []
    errors: list[SpecError] = []
    fields = [f for f in model.model_fields if f != "groups"]
    for e in entries or []:
        try:
            if e.key not in fields:
                raise SpecError(f"unknown key '{e.key}' in this block", e.loc, source,
                                hint=did_you_mean(e.key, fields) or f"known keys: {', '.join(fields)}")
            if e.selector is not None:
                if e.key not in _SELECTOR_KEYS:
                    raise SpecError(f"'{e.key}' cannot be set per parameter group", e.loc, source)
                value = _scale(e.value, e.loc, source) if e.key == "lr_scale" else \
                    _init_source(e.value, e.loc, source) if e.key == "init" else e.value
                groups.append((e.key, e.selector, value, e.loc))
                continue
            if e.key in values:
                raise SpecError(f"'{e.key}' is set twice", e.loc, source)
            values[e.key] = _convert(e.key, e.value, e.loc, source)
            locs[e.key] = e.loc
        except SpecError as err:
            errors.append(err)
    if groups:
        values["groups"] = groups
    _refuse_rates(values, locs, source, errors)
    try:
        cfg = model(**values)
    except ValidationError as v:
        for err in v.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            where = " ".join(str(x) for x in err["loc"])
            errors.append(SpecError(f"{where}: {err['msg']}", locs.get(key, block_loc), source))
        cfg = None
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    return cfg


def _refuse_rates(values: dict, locs: dict, source, errors: list) -> None:
    """vsgd is learning-rate free: a train-level `lr` or a `schedule` would be ignored.
    adagrad, adam and rmsprop divide by a gradient scale, not by curvature: lr = auto(eigen)
    (1/lambda_max of the matrix the step multiplies by) does not describe their step."""
    kind = getattr(values.get("method"), "kind", None)
    if kind in ("adagrad", "adam", "rmsprop") and isinstance(values.get("lr"), Auto):
        errors.append(SpecError(f"lr = auto(eigen) with {kind}: {kind} divides each step by a gradient "
                                f"scale (the root of its averaged squares), so the Hessian's largest "
                                f"eigenvalue does not bound its rate; give a number (default "
                                f"{METHODS[kind]().lr:g})", locs["lr"], source))
    if kind != "vsgd":
        return
    for key in ("lr", "schedule"):
        if key in values:
            errors.append(SpecError(f"'{key}' with vsgd: vsgd is learning-rate free (it sets every weight's "
                                    f"rate itself); remove '{key}'", locs[key], source))


def _convert(key: str, value, loc: Loc, source):
    kinds = _CALL_FIELDS.get(key)
    if kinds is not None:
        if isinstance(value, Symbol):
            value = BlockCall(str(value), (), (), value.loc or loc)
        if isinstance(value, bool) and not value:
            value = BlockCall("off", (), (), loc)
        if not isinstance(value, BlockCall):
            raise SpecError(f"'{key}' expects one of {', '.join(kinds)}, got {value!r}", loc, source)
        cls = kinds.get(value.name)
        if cls is None:
            raise SpecError(f"unknown {key} '{value.name}'", value.loc, source,
                            hint=did_you_mean(value.name, kinds) or f"choose one of: {', '.join(kinds)}")
        if value.args and "args" not in cls.model_fields:
            raise SpecError(f"{value.name}(...) takes named arguments, like {value.name}(lr = 0.1)",
                            value.loc, source)
        try:
            kw = {k: _plain(v) for k, v in value.kw.items()}
            if value.args:
                kw["args"] = tuple(value.args)
            obj = cls(**kw)
            lr = getattr(obj, "lr", None)
            if isinstance(lr, (int, float)) and lr <= 0:
                raise SpecError(f"{value.name}: lr must be > 0, got {lr}", value.loc, source)
            return obj
        except ValidationError as v:
            err = v.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            hint = did_you_mean(field, cls.model_fields) if err["type"] == "extra_forbidden" else None
            raise SpecError(f"{value.name}: {field}: {err['msg']}", value.loc, source, hint=hint) from None
    if key == "normalize":
        return _normalization(value, loc, source)
    if key == "checkpoint_every" and isinstance(value, BlockCall):
        if value.name != "seconds" or value.kw or value.slice is not None or len(value.args) != 1:
            raise SpecError("checkpoint_every takes a number of examples or seconds(N)", value.loc, source)
        try:
            return Seconds(args=(value.args[0],))
        except ValidationError:
            raise SpecError(f"seconds(N) needs a number N > 0, got {value.args[0]!r}", value.loc, source) from None
    if key in ("train", "valid", "test"):
        if not isinstance(value, BlockCall) or value.name not in _SOURCES:
            name = value.name if isinstance(value, BlockCall) else repr(value)
            raise SpecError(f"'{key}' expects a data source (mnist, csv or npz), got {name}", loc, source,
                            hint=did_you_mean(name, _SOURCES))
        return Source(kind=value.name, args=value.args, kwargs=value.kw, slice=value.slice, loc=value.loc)
    if key == "lr_scale":
        return _scale(value, loc, source)
    if key == "init":
        return _init_source(value, loc, source)
    if key == "lr" and isinstance(value, BlockCall):
        try:
            return Auto(**_plain(value))
        except ValidationError:
            raise SpecError(f"lr takes a number or auto(eigen), got {value.name}(...)", value.loc, source) from None
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, BlockCall):
        raise SpecError(f"'{key}' does not take a call", value.loc, source)
    return value


def _normalization(value, loc: Loc, source) -> tuple:
    """normalize = zca | pca(dims = 50) | [log, standardize] -> a tuple of normalize.Step."""
    steps = []
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, Symbol):
            name, args, kw, where = str(v), (), {}, v.loc or loc
        elif isinstance(v, BlockCall) and v.slice is None:
            name, args, kw, where = v.name, v.args, v.kw, v.loc
        else:
            raise SpecError(f"'normalize' expects a normalization such as standardize, pca(dims = 50) "
                            f"or a list such as [log, standardize], got {v!r}", loc, source)
        params = _norm.PARAMS.get(name)
        if params is None:
            raise SpecError(f"unknown normalization '{name}'", where, source,
                            hint=did_you_mean(name, _norm.KINDS) or f"choose one of: {', '.join(_norm.KINDS)}")
        if args:
            raise SpecError(f"{name}(...) takes named arguments, like pca(dims = 50)", where, source)
        for k in kw:
            if k not in params:
                takes = f"{name} takes {', '.join(params)}" if params else f"{name} takes no arguments"
                raise SpecError(f"{name}: unknown argument '{k}'", where, source,
                                hint=did_you_mean(k, params) or takes)
        try:
            steps.append(_norm.step(name, **{k: str(x) if isinstance(x, Symbol) else x for k, x in kw.items()}))
        except ValueError as e:
            raise SpecError(f"{name}: {e}", where, source) from None
    return _norm.parse(steps)


def _scale(value, loc: Loc, source):
    """An lr_scale value: a number, or a formula of fan_in, fan_out and size (a bare
    name is a formula too)."""
    if isinstance(value, Symbol):
        return Formula.of_name(str(value), value.loc or loc)
    if isinstance(value, Formula) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    where = value.loc if isinstance(value, BlockCall) else loc
    shown = f"{value.name}(...)" if isinstance(value, BlockCall) else repr(value)
    raise SpecError(f"lr_scale must be a number or a formula of fan_in, fan_out and size, got {shown}",
                    where, source)


def _plain(v):
    """A call written as a value (lr = auto(eigen)) as the dict pydantic validates."""
    if isinstance(v, BlockCall):
        return {"kind": v.name, "args": tuple(str(a) for a in v.args), **{k: _plain(x) for k, x in v.kwargs}}
    return v


def describe(model: type[_Strict]) -> str:
    """A reference of a block's keys, defaults and meanings (`netc doc train`)."""
    lines = []
    for name, f in model.model_fields.items():
        if name == "groups":
            continue
        default = f.default_factory() if f.default_factory else f.default
        shown = str(default) if isinstance(default, Seconds) else getattr(default, "kind", None) or repr(default)
        lines.append(f"  {name:<10} default {shown:<14} {f.description or ''}")
    return "\n".join(lines)


