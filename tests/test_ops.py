"""Every op in the op table, checked four ways against its reference `impl`:

1. the shape/dtype rule agrees with what the reference implementation returns;
2. the generated NumPy code (`lower`) computes what `evaluate` computes;
3. the derivative rule agrees with centered finite differences (float64);
4. the derivative of the derivative agrees with finite differences of the
   first derivative (double reverse mode, Hessian-vector form).

RECIPES maps every op name to one or more small test graphs rooted at that op.
A new op without a recipe (and not listed as a leaf) fails `test_every_op_has_a_recipe`.
tests/test_forward.py checks every recipe's forward-mode rule against these.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from netc.compiler.differentiate import grad
from netc.compiler.evaluate import evaluate
from netc.compiler.graph import Graph, Node, toposort
from netc.compiler.lower_numpy import lower
from netc.compiler.ops import OPS, concrete

# lower(debug=True) fills int64 buffers (argmax) with NaN, which NumPy warns about when casting
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

B = 2  # the batch size used for values (distinct from every static dim below)
EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-7

# ---------------------------------------------------------------------------
# samplers: (rng, concrete shape) -> array, chosen so every op is smooth there


def normal(rng, shape):
    return rng.uniform(-1.5, 1.5, shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def above_minus_one(rng, shape):
    return rng.uniform(-0.5, 2.0, shape)


def away_from_zero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)


def half_integers(rng, shape):
    """k + 1/2 (+-0.1): never within 0.3 of a value from `whole`."""
    return rng.integers(-2, 3, shape) + 0.5 + rng.uniform(-0.1, 0.1, shape)


def whole(rng, shape):
    return rng.integers(-2, 3, shape) + rng.uniform(-0.1, 0.1, shape)


def small_ints(rng, shape):
    """Integer-valued floats, so comparisons see ties."""
    return rng.integers(0, 2, shape).astype(np.float64)


def labels(n):
    return lambda rng, shape: rng.integers(0, n, shape).astype(np.int64)


def distinct(rng, shape):
    """All entries different, at least 0.2 apart (no ties for max/min)."""
    size = int(np.prod(shape, dtype=np.int64))
    v = (rng.permutation(size) - size / 2) * 0.3 + rng.uniform(-0.05, 0.05, size)
    return v.reshape(shape)


def steps(rng, shape):
    return rng.integers(0, 1000, shape).astype(np.int64)


# ---------------------------------------------------------------------------
# recipes


@dataclass
class Arg:
    name: str
    shape: tuple
    sample: Callable = normal
    diff: bool = True  # differentiable: a `param` leaf; otherwise a fed `input`
    dtype: str = "float64"


@dataclass
class Recipe:
    id: str
    args: list[Arg]
    build: Callable  # (G, *leaves) -> Node, rooted at the op under test
    dtype: str = "float64"  # expected output dtype
    nondiff: bool = False  # the op's derivative rule returns None for every input


def op_recipe(op, shapes, samplers=None, id=None, nondiff=False, dtype="float64", **attrs):
    """A recipe applying `op` (with `attrs`) to one leaf per shape."""
    samplers = samplers or [normal] * len(shapes)
    names = "xyzw"
    args = [Arg(names[i], tuple(s), samplers[i], diff=not nondiff) for i, s in enumerate(shapes)]
    label = id or "_".join(_shape_id(s) for s in shapes) + "".join(f"_{k}={v}" for k, v in attrs.items())
    return Recipe(label, args, lambda G, *xs: G(op, *xs, **attrs), dtype=dtype, nondiff=nondiff)


def _shape_id(shape):
    return "[" + ",".join("B" if d is None else str(d) for d in shape) + "]"


BCAST_SHAPES = [
    ((None, 3), (None, 3)),
    ((None, 3), (3,)),
    ((None, 3), (None, 1)),
    ((), (None, 3)),
    ((None, 1), (1, 3)),
]


def binary_recipes(op, sa, sb):
    return [op_recipe(op, shapes, [sa, sb]) for shapes in BCAST_SHAPES]


def where_recipe(cs, xs, ys, csample=small_ints):
    return Recipe(f"{_shape_id(cs)}_{_shape_id(xs)}_{_shape_id(ys)}",
                  [Arg("c", cs, csample, diff=False), Arg("x", xs), Arg("y", ys)],
                  lambda G, c, x, y: G("where", c, x, y))


def random_recipe(op, shape=(None, 3), id=None, x_sample=normal, x_dtype="float64", **attrs):
    """A random op over a fed tensor and an explicit int64 `step` input."""
    label = id or _shape_id(shape) + "".join(f"_{k}={v}" for k, v in attrs.items())
    return Recipe(label, [Arg("x", shape, x_sample, diff=False, dtype=x_dtype),
                          Arg("step", (), steps, diff=False, dtype="int64")],
                  lambda G, x, step: G(op, x, step, **attrs), nondiff=True)


def take_recipe(table, idx, rows):
    return Recipe(f"{_shape_id(table)}_at_{_shape_id(idx)}",
                  [Arg("W", table), Arg("i", idx, labels(rows), diff=False, dtype="int64")],
                  lambda G, w, i: G("take", w, i))


def pow_const(value):
    return Recipe(f"x^{value}", [Arg("x", (None, 3), positive)], lambda G, x: G("pow", x, value))


RECIPES: dict[str, list[Recipe]] = {
    # unary elementwise
    "neg": [op_recipe("neg", [(None, 3)])],
    "exp": [op_recipe("exp", [(None, 3)])],
    "log": [op_recipe("log", [(None, 3)], [positive])],
    "tanh": [op_recipe("tanh", [(None, 3)])],
    "sigmoid": [op_recipe("sigmoid", [(None, 3)])],
    "abs": [op_recipe("abs", [(None, 3)], [away_from_zero])],
    "sign": [op_recipe("sign", [(None, 3)], [away_from_zero], nondiff=True),
             # exact zeros too: sign(0) = 0
             op_recipe("sign", [(None, 3)], [lambda r, s: r.integers(-1, 2, s).astype(float)],
                       id="ties", nondiff=True)],
    "sqrt": [op_recipe("sqrt", [(None, 3)], [positive])],
    "square": [op_recipe("square", [(None, 3)])],
    "log1p": [op_recipe("log1p", [(None, 3)], [above_minus_one])],
    "expm1": [op_recipe("expm1", [(None, 3)])],
    "softplus": [op_recipe("softplus", [(None, 3)]),
                 op_recipe("softplus", [(None, 3)], [lambda r, s: r.uniform(-40, 40, s)], id="wide")],
    # binary elementwise, with broadcasting
    "add": binary_recipes("add", normal, normal),
    "sub": binary_recipes("sub", normal, normal),
    "mul": binary_recipes("mul", normal, normal),
    "div": binary_recipes("div", normal, away_from_zero),
    "pow": binary_recipes("pow", positive, normal)
    + [pow_const(v) for v in (2.0, 0.5, -1.0, 1.0, 3.0, -2.5)],
    "maximum": binary_recipes("maximum", half_integers, whole),
    "minimum": binary_recipes("minimum", half_integers, whole),
    **{cmp: [op_recipe(cmp, [(None, 3), (None, 3)], [small_ints] * 2, nondiff=True),
             op_recipe(cmp, [(None, 3), (3,)], [small_ints] * 2, nondiff=True),
             op_recipe(cmp, [(None, 3), ()], [small_ints] * 2, nondiff=True)]
       for cmp in ("gt", "ge", "lt", "le", "eq", "ne")},
    # reductions
    "sum": [op_recipe("sum", [(None, 4)], axis=axis, keepdims=kd)
            for axis in (None, 0, 1, -1, (0, 1)) for kd in (False, True)]
    + [op_recipe("sum", [(None, 3, 4)], axis=(0, 2), keepdims=kd) for kd in (False, True)]
    + [op_recipe("sum", [()], id="scalar")],
    "mean": [op_recipe("mean", [(None, 4)], axis=axis, keepdims=kd)
             for axis in (None, 0, 1, -1) for kd in (False, True)]
    + [op_recipe("mean", [(None, 3, 4)], axis=(0, 2), keepdims=kd) for kd in (False, True)],
    "argmax": [op_recipe("argmax", [(None, 4)], axis=ax, nondiff=True, dtype="int64")
               for ax in (0, 1, -1)]
    + [op_recipe("argmax", [(None, 3, 4)], axis=1, nondiff=True, dtype="int64")],
    "sum_to": [op_recipe("sum_to", [src], shape=dst) for src, dst in [
        ((None, 3), (3,)), ((None, 3), (1, 3)), ((None, 3), (None, 1)),
        ((None, 2, 3), (2, 1)), ((None, 3), ()), ((None, 1), (1,))]],
    "broadcast": [op_recipe("broadcast", [src], shape=dst) for src, dst in [
        ((3,), (None, 3)), ((None, 1), (None, 3)), ((), (None, 3)), ((None, 3), (2, None, 3))]]
    + [op_recipe("broadcast", [src], shape=dst, axes=axes) for src, dst, axes in [
        ((None,), (None, 3), (1,)), ((3,), (None, 3), (0,)), ((2,), (None, 2, 4), (0, 2)),
        ((), (None, 3), (0, 1))]],
    # linear algebra
    "matmul": [op_recipe("matmul", [(None, 4), (4, 3)]),
               op_recipe("matmul", [(3, 4), (4, None)]),
               Recipe("xT@y", [Arg("x", (None, 3)), Arg("y", (None, 4))],
                      lambda G, x, y: G("matmul", G("transpose", x), y)),
               Recipe("x@yT", [Arg("x", (None, 4)), Arg("y", (3, 4))],
                      lambda G, x, y: G("matmul", x, G("transpose", y)))],
    "transpose": [op_recipe("transpose", [(None, 3)]), op_recipe("transpose", [(3, 4)])],
    # normalized exponentials
    "log_softmax": [op_recipe("log_softmax", [(None, 4)], axis=ax) for ax in (0, 1, -1)]
    + [op_recipe("log_softmax", [(None, 4)], [lambda r, s: r.uniform(-1e3, 1e3, s)], id="huge",
                 axis=-1)],
    "softmax": [op_recipe("softmax", [(None, 4)], axis=ax) for ax in (0, 1, -1)]
    + [op_recipe("softmax", [(None, 3, 4)], axis=1)],
    # class targets and counts
    "one_hot": [Recipe("labels", [Arg("t", (None,), labels(4), diff=False, dtype="int64")],
                       lambda G, t: G("one_hot", t, n=4), nondiff=True),
                Recipe("labels2d", [Arg("t", (None, 2), labels(3), diff=False, dtype="int64")],
                       lambda G, t: G("one_hot", t, n=3), nondiff=True),
                Recipe("of_argmax", [Arg("x", (None, 4), normal, diff=False)],
                       lambda G, x: G("one_hot", G("argmax", x, axis=1), n=4), nondiff=True)],
    "count": [Recipe(f"dims={dims}", [], lambda G, dims=dims: G("count", dims=dims, dtype="float64"),
                     nondiff=True) for dims in [(None, 3), (None,), (), (3, 4)]],
    # clipping and selection
    "clip": [op_recipe("clip", [(None, 3)], [whole], lo=-0.5, hi=0.5),
             op_recipe("clip", [(None, 3)], [whole], lo=-0.5, hi=np.inf),
             op_recipe("clip", [(None, 3)], [whole], lo=-np.inf, hi=1.5),
             op_recipe("clip", [(3, 2)], [whole], lo=0.5, hi=0.5)],
    "where": [where_recipe(*shapes) for shapes in [
        ((None, 3), (None, 3), (None, 3)), ((None, 1), (3,), ()), ((3,), (None, 3), (None, 1)),
        ((), (None, 3), (3,)), ((None, 3), (1, 3), (None, 1))]]
    + [where_recipe((None, 3), (None, 3), (None, 3), csample=normal)],  # any nonzero is true
    # max and min reductions
    **{op: [op_recipe(op, [(None, 4)], [distinct], axis=axis, keepdims=kd)
            for axis in (None, 0, 1, -1) for kd in (False, True)]
       + [op_recipe(op, [(None, 3, 4)], [distinct], axis=(0, 2), keepdims=kd) for kd in (False, True)]
       + [op_recipe(op, [()], id="scalar")]
       for op in ("max", "min")},
    "logsumexp": [op_recipe("logsumexp", [(None, 4)], axis=ax) for ax in (0, 1, -1)]
    + [op_recipe("logsumexp", [(None, 4)], axis=-1, keepdims=True),
       op_recipe("logsumexp", [(None, 3, 4)], axis=1),
       op_recipe("logsumexp", [(None, 3, 4)], axis=0, keepdims=True),
       op_recipe("logsumexp", [(None, 4)], [lambda r, s: r.uniform(-1e3, 1e3, s)], id="huge",
                 axis=-1)],
    # shapes: reshape, slice, pad, concat
    "reshape": [op_recipe("reshape", [src], shape=dst) for src, dst in [
        ((None, 6), (2, 3)), ((None, 2, 3), (6,)), ((None, 6), (3, -1)), ((4, 6), (3, 8)),
        ((4, 6), (-1,)), ((), (1, 1)), ((None,), (1,))]]
    + [Recipe("of_transpose", [Arg("x", (3, 4))],
              lambda G, x: G("reshape", G("transpose", x), shape=(2, 6))),
       Recipe("of_slice", [Arg("x", (None, 6))],
              lambda G, x: G("reshape", G("slice", x, lo=1, hi=5), shape=(2, 2)))],
    "slice": [op_recipe("slice", [(None, 5)], lo=1, hi=4),
              op_recipe("slice", [(None, 5)], lo=-3),
              op_recipe("slice", [(None, 5)], hi=1),
              op_recipe("slice", [(None, 3, 4)], axis=1, lo=0, hi=2),
              op_recipe("slice", [(4, 5)], axis=0, lo=1, hi=3),
              Recipe("of_transpose", [Arg("x", (None, 4))],
                     lambda G, x: G("slice", G("transpose", x), axis=0, lo=1, hi=3))],
    "pad": [op_recipe("pad", [(None, 3)], before=1, after=2),
            op_recipe("pad", [(None, 3)], after=2),
            op_recipe("pad", [(None, 2, 3)], axis=1, before=2),
            op_recipe("pad", [(3, 4)], axis=0, after=1)],
    "concat": [op_recipe("concat", shapes, **kw) for shapes, kw in [
        ([(None, 2), (None, 3)], {}), ([(None, 2, 3), (None, 1, 3)], {"axis": 1}),
        ([(2, 3), (4, 3)], {"axis": 0}), ([(None, 3), (None, 3)], {"axis": -1})]]
    + [Recipe("param_and_input", [Arg("x", (None, 2)), Arg("y", (None, 2), diff=False)],
              lambda G, x, y: G("concat", x, y))],
    # gathering rows
    "take": [take_recipe((5, 3), (None,), 5), take_recipe((5, 3), (None, 2), 5),
             take_recipe((6,), (None, 3), 6), take_recipe((4, 2, 3), (None,), 4)],
    "scatter_add": [Recipe("rows", [Arg("g", (None, 2, 3)),
                                    Arg("i", (None, 2), labels(4), diff=False, dtype="int64")],
                           lambda G, g, i: G("scatter_add", g, i, shape=(4, 3))),
                    Recipe("scalars", [Arg("g", (None,)),
                                       Arg("i", (None,), labels(3), diff=False, dtype="int64")],
                           lambda G, g, i: G("scatter_add", g, i, shape=(3,)))],
    # training-time only values
    "training_only": [Recipe("noisy_clean", [Arg("x", (None, 3)), Arg("y", (None, 3), diff=False)],
                             lambda G, x, y: G("training_only", G("mul", x, 2.0), y))],
    # random streams
    "uniform_noise": [random_recipe("uniform_noise", seed=1),
                      random_recipe("uniform_noise", (None, 2, 3), seed=2, lo=-1.0, hi=2.0),
                      random_recipe("uniform_noise", (None,), id="of_labels", x_sample=labels(3),
                                    x_dtype="int64", seed=3)],
    "normal_noise": [random_recipe("normal_noise", seed=1),
                     random_recipe("normal_noise", (None, 4), seed=5, mean=1.0, std=0.5)],
    "bernoulli_mask": [random_recipe("bernoulli_mask", seed=1, keep=0.7),
                       random_recipe("bernoulli_mask", (None, 5), seed=2, keep=0.0),
                       random_recipe("bernoulli_mask", (None, 5), seed=2, keep=1.0)],
}

# leaves have no reference semantics of their own beyond "look up the value"
LEAF_OPS = {"input", "param", "state", "hyper", "const"}
# ops whose derivative rule returns None for every input
NONDIFF_OPS = {"gt", "ge", "lt", "le", "eq", "ne", "argmax", "one_hot", "sign",
               "uniform_noise", "normal_noise", "bernoulli_mask"}

CASES = [(op, r) for op, rs in RECIPES.items() for r in rs]
CASE_IDS = [f"{op}-{r.id}" for op, r in CASES]
DIFF_CASES = [(op, r) for op, r in CASES if not r.nondiff]
DIFF_IDS = [f"{op}-{r.id}" for op, r in DIFF_CASES]


# ---------------------------------------------------------------------------
# harness


@dataclass
class Case:
    G: Graph
    leaves: list[Node]
    node: Node
    values: dict = field(default_factory=dict)
    rng: np.random.Generator | None = None

    @property
    def params(self):
        return [n for n in self.leaves if n.op == "param"]

    def feed(self, name, shape):
        """A fed float64 input leaf with fixed random values."""
        leaf = self.G("input", name=name, shape=tuple(shape), dtype="float64")
        if name not in self.values:
            self.values[name] = self.rng.uniform(-1.0, 1.0, concrete(shape, B))
        return leaf


def make_case(op: str, recipe: Recipe) -> Case:
    G = Graph("float64")
    rng = np.random.default_rng(zlib.crc32(f"{op}-{recipe.id}".encode()))
    leaves = [G("param" if a.diff else "input", name=a.name, shape=a.shape, dtype=a.dtype)
              for a in recipe.args]
    node = recipe.build(G, *leaves)
    assert node.op == op, f"recipe built {node!r}, not a {op} node"
    values = {a.name: np.asarray(a.sample(rng, concrete(a.shape, B)), dtype=a.dtype)
              for a in recipe.args}
    return Case(G, leaves, node, values, rng)


def ev(outputs, values, batch=B):
    return evaluate(list(outputs), values, batch=batch)


def run_lowered(outputs, values, batch=B):
    """Generate code for `outputs` (NaN-filled buffers) and run it once."""
    order = toposort(outputs)
    feeds = [n for n in order if n.op in ("input", "hyper")]
    fn = lower(list(outputs), feeds=feeds, debug=True)
    state = {n.name: np.array(values[n.name]) for n in order if n.op in ("param", "state")}
    res = fn.bind(state, batch)(*[np.asarray(values[f.name], dtype=f.dtype) for f in feeds])
    return [np.array(r) for r in res], fn


def assert_values_equal(got, want, what, rtol=1e-12, atol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def finite_diff(f, values, name, eps=EPS):
    """Centered differences of the scalar f(values) in every entry of values[name]."""
    x = values[name]
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + eps
        fp = f(values)
        x[idx] = orig - eps
        fm = f(values)
        x[idx] = orig
        out[idx] = (fp - fm) / (2 * eps)
    return out


def assert_matches_fd(analytic, numeric, what, rtol=RTOL, atol=ATOL):
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric)
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} != {numeric.shape}"
    assert np.all(np.isfinite(analytic)), f"{what}: non-finite derivative {analytic}"
    scale = max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    err = np.abs(analytic - numeric)
    tol = rtol * np.maximum(np.abs(analytic), np.abs(numeric)) + atol * scale
    worst = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else ()
    assert np.all(err <= tol), (f"{what}: analytic {analytic[worst]} vs finite difference "
                                f"{numeric[worst]} at {worst}\nanalytic=\n{analytic}\nnumeric=\n{numeric}")


def scalar_fn(node):
    return lambda values: float(ev([node], values)[0])


def weighted_loss(case: Case) -> Node:
    """sum(op(inputs) * R) for a fixed random R."""
    G = case.G
    R = case.feed("R", case.node.shape)
    return G("sum", G("mul", case.node, R))


# ---------------------------------------------------------------------------
# the table is covered


def test_every_op_has_a_recipe():
    assert not set(RECIPES) & LEAF_OPS
    assert set(RECIPES) | LEAF_OPS == set(OPS), (
        f"ops without a recipe: {sorted(set(OPS) - set(RECIPES) - LEAF_OPS)}; "
        f"recipes for unknown ops: {sorted(set(RECIPES) - set(OPS))}")
    assert all(RECIPES[op] for op in RECIPES)
    assert NONDIFF_OPS <= set(RECIPES)


def test_every_op_with_inputs_has_impl_emit_and_grad():
    for name, op in OPS.items():
        if name in LEAF_OPS:
            continue
        assert op.impl is not None and op.emit is not None, name
        if name != "count":  # count has no inputs, so nothing to differentiate
            assert op.grad is not None and op.jvp is not None, name
        if op.kind == "elementwise":
            assert op.cuda, name


# ---------------------------------------------------------------------------
# 1. shape and dtype rule vs reference implementation


@pytest.mark.parametrize("op,recipe", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("batch", [1, 5])
def test_shape_rule_matches_impl(op, recipe, batch):
    case = make_case(op, recipe)
    rng = np.random.default_rng(batch)
    values = {a.name: np.asarray(a.sample(rng, concrete(a.shape, batch)), dtype=a.dtype)
              for a in recipe.args}
    ins = ev(case.node.inputs, values, batch) if case.node.inputs else []
    out = np.asarray(OPS[op].impl(ins, case.node.a, batch))
    assert out.shape == concrete(case.node.shape, batch), (
        f"{case.node!r}: rule says {case.node.shape}, impl returned {out.shape}")
    assert case.node.dtype == recipe.dtype
    assert np.can_cast(out.dtype, case.node.dtype, "same_kind"), (out.dtype, case.node.dtype)


# ---------------------------------------------------------------------------
# 2. generated code vs reference interpreter


@pytest.mark.parametrize("op,recipe", CASES, ids=CASE_IDS)
def test_lowered_matches_evaluate(op, recipe):
    case = make_case(op, recipe)
    (want,) = ev([case.node], case.values)
    (got,), fn = run_lowered([case.node], case.values)
    assert got.dtype == np.dtype(case.node.dtype), fn.source
    assert_values_equal(got, want, f"{op}:\n{fn.source}")


@pytest.mark.parametrize("op,recipe", CASES, ids=CASE_IDS)
def test_lowered_in_a_larger_graph(op, recipe):
    """The op's output consumed by another op (and twice), so it is an intermediate buffer."""
    case = make_case(op, recipe)
    G, n = case.G, case.node
    if n.dtype != "float64":
        n = G("one_hot", n, n=4)
    out = G("sum", G("mul", G("exp", G("mul", n, 0.5)), G("add", n, 1.0)))
    (want,) = ev([out], case.values)
    (got,), fn = run_lowered([out], case.values)
    assert_values_equal(got, want, fn.source)


# ---------------------------------------------------------------------------
# 3. first derivatives


@pytest.mark.parametrize("op,recipe", CASES, ids=CASE_IDS)
def test_first_derivative(op, recipe):
    case = make_case(op, recipe)
    if recipe.nondiff:
        _check_no_derivative(case)
        return
    L = weighted_loss(case)
    params = case.params
    grads = grad(case.G, L, params)
    for p, g in zip(params, grads):
        assert g.shape == p.shape and g.dtype == p.dtype, f"d/d{p.name}: {g!r} for {p!r}"
    analytic = ev(grads, case.values)
    for p, a in zip(params, analytic):
        numeric = finite_diff(scalar_fn(L), case.values, p.name)
        assert_matches_fd(a, numeric, f"d/d{p.name} of {case.node!r}")
    # and the generated code for the gradient graph agrees with the interpreter
    lowered, fn = run_lowered(grads, case.values)
    for p, got, want in zip(params, lowered, analytic):
        assert_values_equal(got, want, f"lowered d/d{p.name}:\n{fn.source}", rtol=1e-11)


def _check_no_derivative(case: Case):
    """The op's rule returns None for every input, and grad() gives zeros."""
    n = case.node
    op = OPS[n.op]
    if not n.inputs:
        assert op.grad is None
        return
    gy = case.feed("gy", n.shape) if n.dtype == "float64" else case.G.const(1.0)
    parts = op.grad(case.G, n, gy)
    assert len(parts) == len(n.inputs) and all(p is None for p in parts), parts
    float_leaves = [leaf for leaf in case.leaves if leaf.dtype == "float64"]
    if float_leaves and n.dtype == "float64":
        L = weighted_loss(case)
        for leaf, g in zip(float_leaves, grad(case.G, L, float_leaves)):
            assert g.shape == leaf.shape
            (v,) = ev([g], case.values)
            assert v.shape == case.values[leaf.name].shape and not v.any()


@pytest.mark.parametrize("op", sorted(NONDIFF_OPS))
def test_nondifferentiable_rules_return_none(op):
    for recipe in RECIPES[op]:
        case = make_case(op, recipe)
        parts = OPS[op].grad(case.G, case.node, case.G.const(1.0))
        assert list(parts) == [None] * len(case.node.inputs)


# ---------------------------------------------------------------------------
# 4. second derivatives: d/dx sum(grad(L, x) * V) vs finite differences of it


@pytest.mark.parametrize("op,recipe", DIFF_CASES, ids=DIFF_IDS)
def test_second_derivative(op, recipe):
    case = make_case(op, recipe)
    G = case.G
    L = weighted_loss(case)
    params = case.params
    grads = grad(G, L, params)
    S = None
    for p, g in zip(params, grads):
        term = G("sum", G("mul", g, case.feed(f"V_{p.name}", p.shape)))
        S = term if S is None else G("add", S, term)
    hv = grad(G, S, params)
    analytic = ev(hv, case.values)
    for p, a in zip(params, analytic):
        assert a.shape == case.values[p.name].shape
        numeric = finite_diff(scalar_fn(S), case.values, p.name)
        assert_matches_fd(a, numeric, f"second derivative d/d{p.name} of {case.node!r}")
    lowered, fn = run_lowered(hv, case.values)
    for p, got, want in zip(params, lowered, analytic):
        assert_values_equal(got, want, f"lowered Hv d/d{p.name}:\n{fn.source}", rtol=1e-10,
                            atol=1e-11)


# ---------------------------------------------------------------------------
# specific properties


def test_count_is_the_runtime_size():
    G = Graph("float64")
    c = G("count", dims=(None, 3), dtype="float64")
    for batch in (1, 7):
        (v,) = ev([c], {}, batch)
        assert v == 3 * batch
        (got,), _ = run_lowered([c], {}, batch)
        assert got == 3 * batch


def test_const_output_is_an_array():
    G = Graph("float64")
    c = G.const(2.5)
    assert c.shape == () and c.dtype == "float64"
    (got,), _ = run_lowered([c], {})
    assert isinstance(got, np.ndarray) and got == 2.5


def test_reductions_normalize_axis():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 4))
    assert G("sum", x, axis=1) is G("sum", x, axis=-1) is G("sum", x, axis=(1,))
    assert G("sum", x) is G("sum", x, axis=(0, 1)) is G("sum", x, axis=None, keepdims=False)
    assert G("mean", x, axis=0, keepdims=True).shape == (1, 4)
    assert G("softmax", x) is G("softmax", x, axis=1)
    assert G("argmax", x).shape == (None,)


def test_sum_to_of_same_shape_is_identity_and_double_transpose_cancels():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 4))
    assert G("sum_to", x, shape=(None, 4)) is x
    assert G("broadcast", x, shape=(None, 4)) is x
    assert G("transpose", G("transpose", x)) is x


@pytest.mark.parametrize("bad", [
    lambda G, x, w: G("add", x, G("param", name="v", shape=(4,))),
    lambda G, x, w: G("matmul", x, x),
    lambda G, x, w: G("matmul", w, x),
    lambda G, x, w: G("sum_to", x, shape=(2, 3)),
    lambda G, x, w: G("broadcast", x, shape=(None, 4)),
    lambda G, x, w: G("sum", x, axis=2),
    lambda G, x, w: G("transpose", G("sum", x, axis=1)),
    lambda G, x, w: G("one_hot", x, n=3),
])
def test_shape_errors(bad):
    from netc.compiler.errors import SpecError
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 3))
    w = G("param", name="W", shape=(4, 2))
    with pytest.raises(SpecError):
        bad(G, x, w)


def test_broadcast_gradients_sum_back_to_operand_shapes():
    """[B,3] op [3], [B,3] op [B,1] and scalar op [B,3]: each gradient has its operand's
    shape and equals the broadcast gradient summed over the broadcast axes."""
    G = Graph("float64")
    rng = np.random.default_rng(0)
    x = G("param", name="x", shape=(None, 3))
    R = G("input", name="R", shape=(None, 3))
    values = {"x": rng.normal(size=(B, 3)), "R": rng.normal(size=(B, 3))}
    for shape, axes in [((3,), (0,)), ((None, 1), (1,)), ((), (0, 1)), ((1, 3), (0,))]:
        y = G("param", name=f"y{len(shape)}{shape[0] if shape else ''}", shape=shape)
        values[y.name] = rng.normal(size=concrete(shape, B))
        for op in ("add", "mul"):
            L = G("sum", G("mul", G(op, x, y), R))
            gx, gy = grad(G, L, [x, y])
            assert gy.shape == shape
            vgx, vgy = ev([gx, gy], values)
            full = values["R"] * (1.0 if op == "add" else values["x"])
            want = full.sum(axis=axes, keepdims=True).reshape(concrete(shape, B))
            assert_values_equal(vgy, want, f"{op} {shape}")
            assert_values_equal(vgx, values["R"] * (1.0 if op == "add" else values[y.name])
                                * np.ones((B, 3)), f"{op} {shape} (x side)")


def test_mean_of_integer_labels_is_float():
    G = Graph("float64")
    t = G("input", name="t", shape=(None,), dtype="int64")
    m = G("mean", t)
    values = {"t": np.array([0, 1, 1, 0, 1])}
    assert m.dtype == "float64"
    (want,) = ev([m], values, batch=5)
    assert want == pytest.approx(0.6)
    (got,), _ = run_lowered([m], values, batch=5)
    assert got == pytest.approx(0.6)


# ---------------------------------------------------------------------------
# clip, where, max/min, logsumexp, shapes, take, random streams


def _lower_and_run(outputs, values, batch, updates=(), state_names=()):
    order = toposort(list(outputs) + [u for _, u in updates])
    feeds = [n for n in order if n.op in ("input", "hyper")]
    fn = lower(list(outputs), list(updates), feeds=feeds, debug=True)
    state = {n.name: np.array(values[n.name]) for n in order if n.op in ("param", "state")}
    res = fn.bind(state, batch)(*[np.asarray(values[f.name], dtype=f.dtype) for f in feeds])
    return res, state, fn


def test_new_ops_normalize_their_attributes():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 5))
    assert G("slice", x, lo=-3) is G("slice", x, lo=2, hi=5, axis=1) is G("slice", x, lo=2.0, axis=-1)
    assert G("slice", x, lo=0, hi=5) is x and G("pad", x) is x and G("pad", x, before=0, after=0) is x
    assert G("reshape", x, shape=(5,)) is x and G("reshape", x, shape=(-1,)) is x
    assert G("reshape", x, shape=(5, 1)) is G("reshape", x, shape=(-1, 1)) is G("reshape", x, shape=[5, 1])
    assert G("reshape", x, shape=(5, 1)).shape == (None, 5, 1)
    assert G("clip", x, lo=-np.inf, hi=np.inf) is x and G("clip", x, lo=-1, hi=1) is G("clip", x, lo=-1.0, hi=1.0)
    assert G("max", x, axis=-1) is G("max", x, axis=1) is G("max", x, axis=(1,), keepdims=False)
    assert G("min", x).shape == () and G("max", x, axis=0, keepdims=True).shape == (1, 5)
    assert G("logsumexp", x) is G("logsumexp", x, axis=1) and G("logsumexp", x, keepdims=True).shape == (None, 1)
    assert G("concat", x, x) is G("concat", x, x, axis=1) and G("concat", x, x).shape == (None, 10)


@pytest.mark.parametrize("bad,message", [
    (lambda G, x, t, E: G("reshape", x, shape=(4,)), "cannot reshape"),
    (lambda G, x, t, E: G("reshape", x, shape=(2, -1, -1)), "at most one -1"),
    (lambda G, x, t, E: G("reshape", G("transpose", x), shape=(6,)), "batch dimension first"),
    (lambda G, x, t, E: G("slice", x, lo=2, hi=9), "out of range"),
    (lambda G, x, t, E: G("slice", x, lo=2, hi=2), "empty"),
    (lambda G, x, t, E: G("slice", x, axis=0, hi=1), "batch dimension"),
    (lambda G, x, t, E: G("pad", x, before=-1), "sizes >= 0"),
    (lambda G, x, t, E: G("concat", x, E), "differ in another axis"),
    (lambda G, x, t, E: G("concat", x, x, axis=0), "batch dimension"),
    (lambda G, x, t, E: G("take", E, x), "integer indices"),
    (lambda G, x, t, E: G("take", E), "takes 2 tensors"),
    (lambda G, x, t, E: G("clip", x, lo=1, hi=0), "above"),
    (lambda G, x, t, E: G("clip", x, -1, 1), "takes 1 tensor"),
    (lambda G, x, t, E: G("clip", x, lo=x, hi=1), "must be a number"),
    (lambda G, x, t, E: G("max", x, axis=2), "out of range"),
    (lambda G, x, t, E: G("sum", x, axis=2), "out of range"),
    (lambda G, x, t, E: G("logsumexp", x, axis=(0, 1)), "one axis"),
    (lambda G, x, t, E: G("where", x, x), "condition and two tensors"),
    (lambda G, x, t, E: G("bernoulli_mask", x, keep=1.5), "keep"),
    (lambda G, x, t, E: G("normal_noise", x, std=-1.0), "std"),
    (lambda G, x, t, E: G("uniform_noise", x, seed=0.5), "seed"),
])
def test_new_op_errors_name_the_place(bad, message):
    from netc.compiler.errors import Loc, SpecError
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 6))
    t = G("input", name="t", shape=(None,), dtype="int64")
    E = G("param", name="E", shape=(3, 4))
    here = Loc("spec.net", 7, 3)
    G0 = G

    def located(op, *ins, **attrs):
        return G0(op, *ins, loc=here, **attrs)
    with pytest.raises(SpecError, match=message) as e:
        bad(located, x, t, E)
    assert e.value.loc == here


def test_max_and_min_split_the_derivative_between_ties():
    G = Graph("float64")
    x = G("param", name="x", shape=(None, 4))
    values = {"x": np.array([[1.0, 3.0, 3.0, 0.0], [2.0, -1.0, 2.0, 2.0]])}
    for op, want in [("max", [[0, .5, .5, 0], [1 / 3, 0, 1 / 3, 1 / 3]]),
                     ("min", [[0, 0, 0, 1], [0, 1, 0, 0]])]:
        (g,) = grad(G, G("sum", G(op, x, axis=1)), [x])
        (v,) = ev([g], values)
        np.testing.assert_allclose(v, want)
        (got,), _ = run_lowered([g], values)
        np.testing.assert_allclose(got, want)
    # a reduction over all axes: the gradient sums to one
    (g,) = grad(G, G("max", x), [x])
    assert ev([g], values)[0].sum() == pytest.approx(1.0)


def test_logsumexp_is_stable_where_the_naive_form_overflows():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 3))
    values = {"x": np.array([[1000.0, 1000.0, -1000.0], [-1000.0, -1001.0, -2000.0]])}
    want = np.array([1000.0 + np.log(2.0), -1000.0 + np.log1p(np.exp(-1.0))])
    (v,) = ev([G("logsumexp", x)], values)
    np.testing.assert_allclose(v, want, rtol=1e-14)
    (got,), fn = run_lowered([G("logsumexp", x)], values)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    (g,) = grad(G, G("sum", G("logsumexp", x)), [x])
    (gv,) = ev([g], values)
    assert np.all(np.isfinite(gv)) and np.allclose(gv.sum(axis=1), 1.0)


def test_reshape_and_slice_are_views_of_their_input():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 6))
    outs = [G("reshape", x, shape=(2, 3)), G("slice", x, lo=1, hi=4),
            G("reshape", G("reshape", x, shape=(3, 2)), shape=(-1,))]
    feed = np.arange(12.0).reshape(2, 6)
    fn = lower(outs, feeds=[x])
    for r in fn.bind({}, 2)(feed):
        assert np.shares_memory(r, feed)
    assert "np.empty" not in fn.source


def test_take_gathers_rows_and_its_gradient_adds_repeated_rows():
    G = Graph("float64")
    E = G("param", name="E", shape=(4, 2))
    i = G("input", name="i", shape=(None,), dtype="int64")
    rows = G("take", E, i)
    (g,) = grad(G, G("sum", rows), [E])
    values = {"E": np.arange(8.0).reshape(4, 2), "i": np.array([3, 0, 3, -1])}
    (r, gv), _, fn = _lower_and_run([rows, g], values, 4)
    np.testing.assert_array_equal(r, values["E"][[3, 0, 3, 3]])
    np.testing.assert_array_equal(gv, [[1, 1], [0, 0], [0, 0], [3, 3]])
    with pytest.raises(IndexError, match="out of range for a table of 4 rows"):
        _lower_and_run([rows], {**values, "i": np.array([0, 4, 1, 1])}, 4)
    with pytest.raises(IndexError):
        ev([rows], {**values, "i": np.array([0, 4, 1, 1])}, 4)


@pytest.mark.parametrize("make", [
    lambda G, p, c: G("where", c, p, 0.0),
    lambda G, p, c: G("where", c, 0.0, p),
    lambda G, p, c: G("where", c, G("neg", p), p),
    lambda G, p, c: G("softplus", p),
    lambda G, p, c: G("clip", p, lo=-0.5, hi=0.25),
], ids=["where-x", "where-y", "where-both", "softplus", "clip"])
def test_updates_written_in_place_read_their_old_value_first(make):
    """An elementwise update may be computed into the parameter's own storage:
    multi-step emitters must read the old value before they overwrite it."""
    G = Graph("float64")
    p = G("param", name="p", shape=(None, 3))
    c = G("input", name="c", shape=(None, 3))
    new = make(G, p, c)
    rng = np.random.default_rng(0)
    values = {"p": rng.normal(size=(2, 3)), "c": rng.integers(0, 2, (2, 3)).astype(float)}
    (want,) = ev([new], values)
    _, state, fn = _lower_and_run([], values, 2, updates=[(p, new)])
    # really in place: computed into the parameter's storage, not copied there at the end
    assert not re.search(r"np\.copyto\(s0, b\d+\)$", fn.source, re.M), fn.source
    np.testing.assert_allclose(state["p"], want, rtol=1e-15)


def test_cuda_expressions_render_attributes():
    from netc.compiler.ops import cuda_expr
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 3))
    assert cuda_expr(G("clip", x, lo=-1, hi=2), ["a"], "float") == \
        "fmin(fmax(a,((float)-1.0)),((float)2.0))"
    assert cuda_expr(G("clip", x, lo=0, hi=np.inf), ["a"]) == \
        "fmin(fmax(a,((double)0.0)),((double)(1.0/0.0)))"
    assert cuda_expr(G("where", x, x, 0.0), ["c", "a", "b"]) == "((c!=0)?(a):(b))"
    assert cuda_expr(G("tanh", x), ["a"]) == "tanh(a)"
    assert cuda_expr(G("softplus", x), ["a"], "float") == "(log1p(exp(-fabs(a)))+fmax(a,(float)0))"
    # every elementwise template renders for every recipe
    for op, recipe in CASES:
        n = make_case(op, recipe).node
        if OPS[op].kind == "elementwise":
            cuda_expr(n, [f"a{i}" for i in range(len(n.inputs))], "float")


# -- random streams ------------------------------------------------------------


RANDOM_OPS = ("uniform_noise", "normal_noise", "bernoulli_mask")


def _draw(G, op, step, batch=3, dtype="float64", **attrs):
    x = G("input", name="x", shape=(None, 4), dtype=dtype)
    n = G(op, x, **attrs)
    values = {"x": np.zeros((batch, 4), dtype=dtype), "step": np.int64(step)}
    (v,) = ev([n], values, batch)
    (got,), _, _ = _lower_and_run([n], values, batch)
    return n, v, np.array(got)


@pytest.mark.parametrize("op", RANDOM_OPS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_streams_are_keyed_by_seed_and_step(op, dtype):
    G = Graph(dtype)
    n, a, la = _draw(G, op, 5, dtype=dtype, seed=1)
    assert n.dtype == dtype and a.dtype == np.dtype(dtype)
    # the step is the `step` hyper, read each call: nothing carries over between calls
    (step,) = [i for i in n.inputs if i.op == "hyper"]
    assert step.name == "step" and step.dtype == "int64" and step.shape == ()
    np.testing.assert_array_equal(a, la)  # the generated code draws the reference's numbers
    _, b, lb = _draw(Graph(dtype), op, 5, dtype=dtype, seed=1)
    np.testing.assert_array_equal(a, b)  # another compilation, the same (seed, step): the same
    _, c, _ = _draw(Graph(dtype), op, 6, dtype=dtype, seed=1)
    _, d, _ = _draw(Graph(dtype), op, 5, dtype=dtype, seed=2)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # the batch size does not change the first rows... it is one stream, filled in order
    _, e, _ = _draw(Graph(dtype), op, 5, batch=6, dtype=dtype, seed=1)
    np.testing.assert_array_equal(e[:3], a)


def test_random_draws_have_their_distribution():
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 1000))
    ops = [G("uniform_noise", x, lo=-1.0, hi=3.0, seed=1), G("normal_noise", x, mean=2.0, std=0.5, seed=1),
           G("bernoulli_mask", x, keep=0.3, seed=1)]
    values = {"x": np.zeros((20, 1000)), "step": np.int64(0)}
    u, z, m = _lower_and_run(ops, values, 20)[0]
    N = u.size
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1.0) < 5 * (4 / np.sqrt(12 * N))
    assert abs(z.mean() - 2.0) < 5 * 0.5 / np.sqrt(N) and abs(z.std() - 0.5) < 0.01
    assert set(np.unique(m)) == {0.0, 1.0} and abs(m.mean() - 0.3) < 5 * np.sqrt(0.21 / N)
    # different ops with the same seed still draw different numbers from different streams
    # only through their transforms; independent defaults differ per op and per tensor
    a = G("bernoulli_mask", x, keep=0.5)
    b = G("uniform_noise", x)
    y = G("input", name="y", shape=(None, 1000))
    c = G("bernoulli_mask", y, keep=0.5)
    assert len({a.attr("seed"), b.attr("seed"), c.attr("seed")}) == 3
    assert G("bernoulli_mask", x, keep=0.5) is a  # one call, one node: give seeds to draw twice


def test_random_ops_have_no_derivative_and_are_not_folded():
    from netc.compiler.simplify import simplify
    G = Graph("float64")
    w = G("param", name="w", shape=(None, 3))
    m = G("bernoulli_mask", w, keep=0.5, seed=3)
    (g,) = grad(G, G("sum", G("mul", w, m)), [w])
    values = {"w": np.ones((4, 3)), "step": np.int64(9)}
    gv, mv = ev([g, m], values, 4)
    np.testing.assert_array_equal(gv, mv)  # d(w * mask)/dw = mask
    assert simplify(G, [m])[0] is m


def test_new_ops_in_the_language():
    from netc.compiler.elaborate import elaborate
    from netc.compiler.parse import parse
    text = "\n".join([
        "input x : [6]", "target t : class(3)", "E = param([3, 4])",
        "a = clip(x, -1, 1)", "b = clip(x, lo = 0)", "c = where(gt(x, 0), x, 0)",
        "d = max(x, axis = -1)", "e = min(x, keepdims = true)", "f = reshape(x, [3, -1])",
        "g = concat(x, a, axis = -1)", "h = slice(x, 1, 4)", "i = pad(x, 1, 2)", "j = take(E, t)",
        "k = logsumexp(x)", "l = uniform_noise(x, lo = -1, hi = 1, seed = 4)",
        "m = normal_noise(x, std = 0.1)", "n = bernoulli_mask(x, keep = 0.8, seed = 7)",
        "o = clip(weights, -1, 1)", ""])
    s = elaborate(parse(text, "t.net"), "float64")
    shapes = {k: v.shape for k, v in s.named.items()}
    assert shapes == {"E": (3, 4), "a": (None, 6), "b": (None, 6), "c": (None, 6), "d": (None,),
                      "e": (1, 1), "f": (None, 3, 2), "g": (None, 12), "h": (None, 3), "i": (None, 9),
                      "j": (None, 4), "k": (None,), "l": (None, 6), "m": (None, 6), "n": (None, 6)}
    assert s.named["b"].attr("hi") == np.inf and s.named["n"].attr("seed") == 7
    values = {"x": np.linspace(-2, 2, 12).reshape(2, 6), "t": np.array([2, 0]),
              "E": np.arange(12.0).reshape(3, 4), "step": np.int64(1)}
    j, c = ev([s.named["j"], s.named["c"]], values)
    np.testing.assert_array_equal(j, values["E"][[2, 0]])
    np.testing.assert_array_equal(c, np.maximum(values["x"], 0))


def test_expected_graph_replaces_random_ops_by_their_means():
    from netc.compiler.ops import expected
    G = Graph("float64")
    x = G("input", name="x", shape=(None, 3))
    keep = 0.8
    y = G("add", G("div", G("mul", x, G("bernoulli_mask", x, keep=keep, seed=1)), keep),
          G("normal_noise", x, mean=0.25, std=2.0, seed=2))
    z = G("uniform_noise", x, lo=-1.0, hi=3.0, seed=3)
    ey, ez = expected(G, [y, z])
    assert not any(n.op == "hyper" for n in toposort([ey, ez]))  # no step to feed
    values = {"x": np.arange(6.0).reshape(2, 3)}
    vy, vz = ev([ey, ez], values)
    np.testing.assert_allclose(vy, values["x"] + 0.25)
    np.testing.assert_allclose(vz, np.ones((2, 3)))
    assert expected(G, [x]) == [x]
