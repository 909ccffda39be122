"""The builtin functions of the language: every op of the op table that the
language exposes, plus `param`, `buffer`, `dim`, `grad`, `jacobian`, the init
constructors and the constants `pi` and `e`.

A builtin is called as fn(ctx, args, kwargs, loc); `ctx` is the elaborator's
context, of which a builtin uses the graph (`ctx.G`) and `ctx.param(...)` only.
"""
from __future__ import annotations

import math

from .differentiate import grad as _grad
from .errors import SpecError
from .graph import Node, shape_str
from .ops import language_ops
from .simplify import simplify
from .values import Builtin, Env, ParamSet, as_tensor, bind, kind_of, whole_number


def builtins_env() -> Env:
    """A fresh environment holding every builtin (the outermost scope)."""
    env = Env()
    v = env.vars
    for name, op in language_ops().items():
        v[name] = Builtin(name, _op_builtin(name, op), op.doc)
    v["param"] = Builtin("param", lambda c, a, k, loc: c.param(a, k, loc),
                         "param(shape, init = glorot): a trainable tensor named by where it is assigned")
    v["dim"] = Builtin("dim", _dim, "dim(x, axis = -1): the size of one axis of x")
    v["classes"] = Builtin("classes", _classes, "classes(t): the number of classes of a class(n) target "
                                                "(class(_) takes it from the data)")
    v["buffer"] = Builtin("buffer", lambda c, a, k, loc: c.param(a, k, loc, kind="state"),
                          "buffer(shape, init = zeros): a tensor kept with the model but not trained "
                          "(set by the trainer, e.g. the transformation statistics)")
    v["grad"] = Builtin("grad", _grad_builtin, "grad(e, x): the derivative of scalar e with respect to x")
    v["jacobian"] = Builtin("jacobian", _jacobian_builtin,
                            "jacobian(y, x): per-example d y/d x, [B, m, n] for y [B, m] and x [B, n]")
    v["noise_free"] = Builtin("noise_free", _noise_free_builtin,
                              "noise_free(e): e with every noise replaced by its expected value "
                              "(what evaluation computes), also while training")
    v["gaussian_init"] = Builtin("gaussian_init", _init("normal", "std"), "gaussian_init(std): N(0, std^2)")
    v["uniform_init"] = Builtin("uniform_init", _init("uniform", "limit"), "uniform_init(limit): U(-limit, limit)")
    v["constant_init"] = Builtin("constant_init", _init("constant", "value"), "constant_init(value)")
    for const, val in (("pi", math.pi), ("e", math.e)):
        v[const] = val
    return env


def _op_builtin(name, op):
    params, defaults = op.lang
    tensors = [p for p in params if p not in defaults]

    def call(ctx, args, kwargs, loc):
        a = bind(name, list(params), defaults, args, kwargs, loc)
        attrs = {k: a[k] for k in params if k in defaults}
        if name == "one_hot" and attrs.get("n") is None:
            t = a["t"]
            attrs["n"] = t.attr("classes") if isinstance(t, Node) else None
            if attrs["n"] is None:
                raise SpecError("one_hot(t, n) needs n unless t is a class(n) target", loc)
        for k in ("axis",):
            if k in attrs and attrs[k] is not None:
                ax = attrs[k]
                attrs[k] = tuple(whole_number(x, loc, "an axis") for x in ax) if isinstance(ax, list) else whole_number(ax, loc, "an axis")
        if "n" in attrs:
            attrs["n"] = whole_number(attrs["n"], loc, "n")
        vals = [a[t] for t in tensors]
        sets = [v for v in vals if isinstance(v, ParamSet)]
        if sets:
            if name in ("sum", "mean") and len(vals) == 1:
                parts = [ctx.G(name, p, loc=loc, **attrs) for p in sets[0].nodes]
                if not parts:
                    return ctx.G.const(0.0)
                total = parts[0]
                for p in parts[1:]:
                    total = ctx.G("add", total, p, loc=loc)
                return total if name == "sum" else ctx.G("div", total, float(len(parts)), loc=loc)
            if len(sets) > 1:
                raise SpecError("cannot combine two parameter selectors elementwise", loc)
            return ParamSet(tuple(
                ctx.G(name, *[p if isinstance(v, ParamSet) else as_tensor(ctx.G, v, loc, name, True) for v in vals],
                      loc=loc, **attrs) for p in sets[0].nodes))
        ins = [as_tensor(ctx.G, v, loc, f"{name}()", allow_number=True) for v in vals]
        if all(i.op == "const" for i in ins) and all(isinstance(v, (int, float)) for v in vals) and op.kind == "elementwise":
            from .evaluate import evaluate
            return float(evaluate([ctx.G(name, *ins, loc=loc, **attrs)], {})[0])
        return ctx.G(name, *ins, loc=loc, **attrs)
    return call


def _dim(ctx, args, kwargs, loc):
    a = bind("dim", ["x", "axis"], {"axis": -1}, args, kwargs, loc)
    x = as_tensor(ctx.G, a["x"], loc, "dim()")
    ax = whole_number(a["axis"], loc, "an axis")
    if not -x.ndim <= ax < x.ndim:
        raise SpecError(f"axis {ax} is out of range for shape {shape_str(x.shape)}", loc)
    d = x.shape[ax]
    if d is None:
        raise SpecError("the batch dimension has no size at compile time", loc)
    return d


def _classes(ctx, args, kwargs, loc):
    a = bind("classes", ["t"], {}, args, kwargs, loc)
    n = a["t"].attr("classes") if isinstance(a["t"], Node) else None
    if n is None:
        raise SpecError(f"classes(t) needs a class(n) target, got {kind_of(a['t'])}", loc)
    return n


def _grad_builtin(ctx, args, kwargs, loc):
    a = bind("grad", ["e", "x"], {}, args, kwargs, loc)
    e, x = as_tensor(ctx.G, a["e"], loc, "grad()"), a["x"]
    (e,) = simplify(ctx.G, [e])  # differentiate the stabilized forms, not the naive ones
    if isinstance(x, ParamSet):
        return ParamSet(tuple(_grad(ctx.G, e, list(x.nodes))))
    return _grad(ctx.G, e, [as_tensor(ctx.G, x, loc, "grad()")])[0]


def _noise_free_builtin(ctx, args, kwargs, loc):
    from .ops import expected
    a = bind("noise_free", ["e"], {}, args, kwargs, loc)
    return expected(ctx.G, [as_tensor(ctx.G, a["e"], loc, "noise_free()")])[0]


def _jacobian_builtin(ctx, args, kwargs, loc):
    from .jacobian import jacobian
    a = bind("jacobian", ["y", "x"], {}, args, kwargs, loc)
    y, x = as_tensor(ctx.G, a["y"], loc, "jacobian()"), as_tensor(ctx.G, a["x"], loc, "jacobian()")
    return jacobian(ctx.G, y, x, loc)


def _init(dist: str, key: str):
    def make(ctx, args, kwargs, loc):
        a = bind(f"{dist}_init", [key], {}, args, kwargs, loc)
        val = a[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise SpecError(f"{key} must be a finite number, got {kind_of(val)}", loc)
        if key != "value" and val < 0:
            raise SpecError(f"{key} must be >= 0, got {val:g}", loc)
        return {"dist": dist, key: float(val)}
    return make
