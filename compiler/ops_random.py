"""Random streams: stateless ops keyed by (seed, step).

A random op's inputs are a tensor giving the shape and the `step` hyper (the
trainer feeds the step number); its numbers come from a Philox generator
keyed by (seed, step), so the same (seed, step) gives the same numbers in
every run and every lowering, and nothing carries over between steps. The
derivative with respect to everything is zero; `expect` gives each op's
expected value (ops.expected builds the evaluation graph from it).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import SpecError
from .node import Node
from .ops_core import OPS, Emit, Op, integer_attr, no_jvp, number_attr, py_float, register
from .rewrite import rule


_KEY = 2 ** 63  # Philox key words are taken modulo this (NumPy warns above it)


def step_hyper(G) -> Node:
    """The `step` hyper every random op reads (int64, fed by the trainer)."""
    return G("hyper", name="step", shape=(), dtype="int64")


def _default_seed(op: str, x: Node, loc) -> int:
    """A seed for an op built without one: different ops, shape tensors and
    call sites (where the build knows its location) get different streams,
    deterministic for a given spec. Identical calls are one node (hash-consing),
    hence one stream: give them different seeds to draw twice."""
    import zlib
    where = f"{loc.line}:{loc.col}" if loc is not None else ""
    return zlib.crc32(f"{op}:{x.id}:{where}".encode())


def _generator(seed, step) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[int(seed) % _KEY, int(step) % _KEY]))


def _random_op(name: str, params: dict, check: Callable, fill: Callable, ref: Callable,
               mean: Callable, doc: str):
    """`params` are the op's numeric attributes with their defaults; `fill(gen,
    out, attrs)` returns the code lines that fill `out` from the generator
    expression `gen`; `ref(generator, shape, attrs)` is the reference and
    `mean(attrs)` the expected value."""
    def numbers(a, loc) -> dict:
        if "seed" in a:
            integer_attr(name, a, "seed", loc)
        v = {k: number_attr(name, {**params, **a}, k, loc) for k in params}
        check(v, loc)
        return v

    def infer(G, ins, a, loc):
        numbers(a, loc)
        if len(ins) != 2 or ins[1].shape != ():
            raise SpecError(f"{name} takes a tensor giving the shape and the scalar step", loc)
        return ins[0].shape, a["dtype"]

    def generator(a, step: str) -> str:
        return (f"np.random.Generator(np.random.Philox(key=[{int(a['seed']) % _KEY}, "
                f"int({step}) % {_KEY}]))")

    def emit(e: Emit):
        e("; ".join(fill(generator(e.node.a, e.args[1]), e.out, e.node.a)))

    def impl(xs, a, B):
        return ref(_generator(a["seed"], xs[1]), np.shape(xs[0]), a)

    lang = (("x", *params, "seed"), {**params, "seed": None})
    def expect(G, n):
        return G("broadcast", G.const(mean(n.a), n.dtype), shape=n.shape)

    return register(Op(name, "other", infer, impl=impl, emit=emit,
                       grad=lambda G, n, g: (None, None), jvp=no_jvp, lang=lang,
                       canonical=lambda ins, a, loc: {**a, **numbers(a, loc)},
                       expect=expect, doc=doc))


_RANDOM_OPS = ("uniform_noise", "normal_noise", "bernoulli_mask")


@rule("random_stream", _RANDOM_OPS, stage="build")
def _random_stream(G, op, ins, a, loc=None):
    """A random op's stream made explicit: its numbers, a seed (a default one per
    op, shape tensor and call site), its dtype and the `step` hyper as second input."""
    if len(ins) not in (1, 2):
        return None
    try:
        b = OPS[op].canonical(ins, a, loc)
    except SpecError:
        return None  # `infer` reports it, with the location
    x = ins[0]
    b["seed"] = int(a["seed"]) if "seed" in a else _default_seed(op, x, loc)
    b.setdefault("dtype", x.dtype if x.dtype.startswith("float") else G.float_dtype)
    if len(ins) == 2 and repr(sorted(b.items())) == repr(sorted(a.items())):
        return None
    return G(op, x, ins[1] if len(ins) == 2 else step_hyper(G), loc=loc, **b)


def _dt(a) -> str:
    return f"np.{a['dtype']}"


def _check_uniform(v, loc):
    if not v["lo"] <= v["hi"]:
        raise SpecError(f"uniform_noise needs lo <= hi, got lo = {v['lo']:g}, hi = {v['hi']:g}", loc)


def _check_normal(v, loc):
    if not v["std"] >= 0:
        raise SpecError(f"normal_noise needs std >= 0, got {v['std']:g}", loc)


def _check_keep(v, loc):
    if not 0 <= v["keep"] <= 1:
        raise SpecError(f"bernoulli_mask needs 0 <= keep <= 1, got {v['keep']:g}", loc)


def _fill_uniform(gen, o, a):
    lines = [f"{gen}.random(dtype={_dt(a)}, out={o})"]
    lo, hi = float(a["lo"]), float(a["hi"])
    if (lo, hi) != (0.0, 1.0):
        lines += [f"np.multiply({o}, {py_float(hi - lo)}, out={o})", f"np.add({o}, {py_float(lo)}, out={o})"]
    return lines


def _fill_normal(gen, o, a):
    lines = [f"{gen}.standard_normal(dtype={_dt(a)}, out={o})"]
    mean, std = float(a["mean"]), float(a["std"])
    if std != 1.0:
        lines.append(f"np.multiply({o}, {py_float(std)}, out={o})")
    if mean != 0.0:
        lines.append(f"np.add({o}, {py_float(mean)}, out={o})")
    return lines


def _fill_bernoulli(gen, o, a):
    return [f"{gen}.random(dtype={_dt(a)}, out={o})", f"np.less({o}, {py_float(a['keep'])}, out={o})"]


def _ref_uniform(gen, shape, a):
    u = gen.random(shape, dtype=a["dtype"])
    lo, hi = float(a["lo"]), float(a["hi"])
    return u if (lo, hi) == (0.0, 1.0) else u * (hi - lo) + lo


def _ref_normal(gen, shape, a):
    z = gen.standard_normal(shape, dtype=a["dtype"])
    z = z if float(a["std"]) == 1.0 else z * float(a["std"])
    return z if float(a["mean"]) == 0.0 else z + float(a["mean"])


def _ref_bernoulli(gen, shape, a):
    return (gen.random(shape, dtype=a["dtype"]) < float(a["keep"])).astype(a["dtype"])


_random_op("uniform_noise", {"lo": 0.0, "hi": 1.0}, _check_uniform, _fill_uniform, _ref_uniform,
           lambda a: (a["lo"] + a["hi"]) / 2,
           "uniform_noise(x, lo = 0, hi = 1, seed): numbers uniform in [lo, hi), shaped like x, "
           "drawn afresh each step from the stream (seed, step)")
_random_op("normal_noise", {"mean": 0.0, "std": 1.0}, _check_normal, _fill_normal, _ref_normal,
           lambda a: a["mean"],
           "normal_noise(x, mean = 0, std = 1, seed): Gaussian numbers shaped like x, drawn "
           "afresh each step from the stream (seed, step)")
_random_op("bernoulli_mask", {"keep": 0.5}, _check_keep, _fill_bernoulli, _ref_bernoulli, lambda a: a["keep"],
           "bernoulli_mask(x, keep = 0.5, seed): 1 with probability `keep`, else 0, shaped like "
           "x, drawn afresh each step from the stream (seed, step)")
