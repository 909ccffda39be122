"""Normalization fitted on training data only, applied with the training statistics."""
from __future__ import annotations

import numpy as np
import pytest

from netc.runtime.data import mnist
from netc.runtime.normalize import KINDS, Normalizer, fit


def make_train(rng):
    x = rng.normal(loc=[3.0, -2.0, 0.0, 7.0], scale=[2.0, 0.5, 1.0, 0.0], size=(2000, 4))
    return x.astype(np.float32)  # column 3 is constant


def test_standardize_train_mean0_std1():
    x = make_train(np.random.default_rng(0))
    z = fit("standardize", x).apply(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1, atol=1e-4)
    assert np.all(np.isfinite(z)) and np.all(z[:, 3] == 0)


def test_center():
    x = make_train(np.random.default_rng(1))
    n = fit("center", x)
    assert set(n.arrays) == {"mean"}
    z = n.apply(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), x.std(axis=0), rtol=1e-4)


def test_uses_training_statistics_on_other_sets():
    rng = np.random.default_rng(2)
    train = make_train(rng)
    shift = np.array([10.0, 1.0, -5.0, 2.0], np.float32)
    valid = train[:500] + shift
    n = fit("standardize", train)
    # Training statistics: the shifted set comes out shifted by shift/std,
    # not re-centred to mean 0 as it would be if fitted on itself.
    expect = n.apply(train[:500]) + shift / n.arrays["scale"].astype(np.float32)
    np.testing.assert_allclose(n.apply(valid), expect, rtol=1e-5, atol=1e-4)
    assert abs(n.apply(valid)[:, 0].mean()) > 1.0


def test_constant_features_stay_finite():
    x = np.zeros((50, 3), np.float32)
    x[:, 1] = np.linspace(0, 1, 50)
    n = fit("standardize", x)
    assert n.arrays["scale"][0] == 1.0 and n.arrays["scale"][2] == 1.0
    other = np.full((4, 3), 0.7, np.float32)  # a constant train pixel that moved at test time
    z = n.apply(other)
    assert np.all(np.isfinite(z)) and np.allclose(z[:, 0], 0.7)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_npz_identical(tmp_path, kind):
    x = make_train(np.random.default_rng(3))
    n = fit(kind, x)
    d = n.to_arrays()
    assert d["norm.kind"].shape == () and d["norm.kind"].dtype.kind == "U"
    assert all(k.startswith("norm.") for k in d)
    np.savez(tmp_path / "m.npz", w=np.ones(3), **d)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        m = Normalizer.from_arrays(f)
    assert m.kind == kind
    assert np.array_equal(n.apply(x), m.apply(x))


@pytest.mark.parametrize("kind", KINDS)
def test_apply_does_not_modify_input_and_dtypes(kind):
    x = make_train(np.random.default_rng(4))
    before = x.copy()
    n = fit(kind, x)
    z = n.apply(x)
    assert z is not x and np.array_equal(x, before)
    assert z.dtype == np.float32
    assert n.apply(x.astype(np.float64)).dtype == np.float64
    out = np.empty_like(x)
    assert n.apply(x, out=out) is out and np.array_equal(out, z)
    assert np.array_equal(x, before)


def test_statistics_in_float64_and_unknown_kind():
    x = make_train(np.random.default_rng(5))
    n = fit("standardize", x)
    assert n.arrays["mean"].dtype == np.float64 and n.arrays["scale"].dtype == np.float64
    with pytest.raises(ValueError, match="unknown normalization"):
        fit("whitening", x)


def test_mnist_standardize_fitted_on_train_split():
    train = mnist("train").slice(0, 50000)
    n = fit("standardize", train.x)
    z = n.apply(train.x[:5000])
    assert np.all(np.isfinite(z))
    const = train.x.min(axis=0) == train.x.max(axis=0)  # border pixels, always 0
    assert const.sum() > 10
    assert np.all(n.arrays["scale"][const] == 1.0) and np.all(z[:, const] == 0)
    zt = n.apply(mnist("t10k").x)
    assert np.all(np.isfinite(zt))


def test_near_constant_features_are_not_blown_up():
    """A feature that is almost always 0 (MNIST's border pixels) is divided by at
    least RELATIVE_FLOOR x the typical std, so its rare values stay moderate."""
    from netc.runtime.normalize import RELATIVE_FLOOR
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    x[:, 2] = 0.0
    x[0, 2] = 1.0  # std ~ 0.03
    n = fit("standardize", x)
    rms = np.sqrt(np.mean(x.std(axis=0, dtype=np.float64) ** 2))
    assert n.arrays["scale"][2] == pytest.approx(RELATIVE_FLOOR * rms, rel=1e-6)
    assert abs(n.apply(x)[0, 2]) < 1.0 / (RELATIVE_FLOOR * 0.5)
    np.testing.assert_allclose(n.apply(x)[:, :2].std(axis=0), 1, atol=1e-4)


# ---- decorrelation, whitening, uniformization, squashing, pipelines -------------------

import tracemalloc  # noqa: E402

import netc  # noqa: E402
from netc import DataError, SpecError  # noqa: E402
from netc.runtime.normalize import FitError, Step, parse, step  # noqa: E402

SIGMAS = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])


def correlated(rng, n=4000, shift=0.0):
    """Strongly correlated features with very different variances, off-centre."""
    mix = np.random.default_rng(99).normal(size=(6, 6))  # the same mixing for every set
    z = rng.normal(size=(n, 6)) * SIGMAS
    return z @ mix + np.arange(6) * 3.0 + shift


def cov(z):
    z = z - z.mean(axis=0)
    return z.T @ z / len(z)


def test_pca_decorrelates_onto_principal_axes():
    x = correlated(np.random.default_rng(0))
    n = fit("pca", x)
    z = n.apply(x)
    assert z.dtype == np.float64 and z.shape == x.shape
    lam = np.linalg.eigvalsh(cov(x))[::-1]
    np.testing.assert_allclose(n.arrays["variances"], lam, rtol=1e-9)
    assert np.all(np.diff(n.arrays["variances"]) <= 0)  # decreasing variance
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    c = cov(z)
    np.testing.assert_allclose(c, np.diag(lam), atol=1e-9 * lam[0])  # diagonal: decorrelated
    # a rotation: distances are preserved
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), np.linalg.norm(x - x.mean(axis=0), axis=1), rtol=1e-9)
    # float32 data: float32 output, still decorrelated to float32 precision
    z32 = fit("pca", x.astype(np.float32)).apply(x.astype(np.float32))
    assert z32.dtype == np.float32
    c32 = cov(z32.astype(np.float64))
    assert np.abs(c32 - np.diag(np.diag(c32))).max() < 1e-4 * lam[0]


@pytest.mark.parametrize("kind", ["whiten(eps = 0)", "zca(eps = 0)"])
def test_whiten_and_zca_give_identity_covariance_on_train(kind):
    x = correlated(np.random.default_rng(1))
    n = fit(kind, x)
    z = n.apply(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(cov(z), np.eye(6), atol=1e-8)
    z32 = n.apply(x.astype(np.float32))
    np.testing.assert_allclose(cov(z32.astype(np.float64)), np.eye(6), atol=1e-4)


@pytest.mark.parametrize("kind", ["pca", "whiten(eps = 0)", "zca(eps = 0)", "pca(dims = 2)"])
def test_valid_and_test_sets_use_training_statistics(kind):
    rng = np.random.default_rng(2)
    train, valid = correlated(rng), correlated(rng, n=1000, shift=4.0)
    n = fit(kind, train)
    a = n.arrays
    m = a["matrix"] if "matrix" in a else a["axes"] * a.get("scale", 1.0)
    np.testing.assert_allclose(n.apply(valid), (valid - a["mean"]) @ m, rtol=1e-12, atol=1e-12)
    refit = fit(kind, valid).apply(valid)
    assert np.abs(refit.mean(axis=0)).max() < 1e-9
    assert np.abs(n.apply(valid).mean(axis=0)).max() > 0.5  # the shift shows: not re-centred


def test_whiten_eps_is_relative_to_the_largest_eigenvalue():
    x = correlated(np.random.default_rng(3))
    for scale in (1.0, 1000.0):  # the same result in other units
        n = fit("whiten(eps = 0.1)", x * scale)
        lam = n.arrays["variances"]
        np.testing.assert_allclose(np.diag(cov(n.apply(x * scale))), lam / (lam + 0.1 * lam[0]), rtol=1e-8)
    assert float(fit("whiten", x).arrays["eps"]) == 1e-2  # the documented default


def test_zca_is_the_whitening_closest_to_the_input():
    rng = np.random.default_rng(4)
    x = correlated(rng)
    xc = x - x.mean(axis=0)
    n = fit("zca(eps = 0)", x)
    w = n.arrays["matrix"]
    np.testing.assert_array_equal(w, w.T)  # symmetric
    zca, pw = n.apply(x), fit("whiten(eps = 0)", x).apply(x)
    dist = np.linalg.norm(zca - xc)
    assert dist < np.linalg.norm(pw - xc)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # any rotation of a whitening whitens too
    assert dist < np.linalg.norm(pw @ q - xc)
    # inputs already near-white come out nearly unchanged
    y = rng.normal(size=(4000, 6)) * 1.0 + 1.0
    np.testing.assert_allclose(fit("zca(eps = 0)", y).apply(y), y - y.mean(axis=0), atol=0.1)


def test_dims_and_variance_reduce_the_width():
    x = correlated(np.random.default_rng(5))
    lam = np.linalg.eigvalsh(cov(x))[::-1]
    n = fit("pca(dims = 3)", x)
    z = n.apply(x)
    assert z.shape == (len(x), 3) and n.out_width(6) == 3 and n.in_width == 6
    np.testing.assert_allclose(n.arrays["variances"], lam[:3], rtol=1e-9)
    np.testing.assert_allclose(np.diag(cov(z)), lam[:3], rtol=1e-9)
    np.testing.assert_allclose(float(n.arrays["total_variance"]), lam.sum(), rtol=1e-9)
    frac = np.cumsum(lam) / lam.sum()
    for f in (0.5, 0.9, 0.999, 1.0):
        k = fit(f"pca(variance = {f})", x).arrays["variances"].size
        assert frac[k - 1] >= f - 1e-12 and (k == 1 or frac[k - 2] < f)  # the fewest that keep f
    w = fit("whiten(eps = 0, dims = 2)", x)
    np.testing.assert_allclose(cov(w.apply(x)), np.eye(2), atol=1e-8)
    with pytest.raises(FitError, match="only 6 features") as e:
        fit("pca(dims = 7)", x)
    assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="fitted on 6 features, data has 5"):
        n.apply(x[:, :5])


def uniform_data(rng, n=5000):
    return np.column_stack([
        rng.exponential(size=n),                                   # skewed
        rng.normal(size=n) * 100 - 7,                              # wide
        np.where(rng.random(n) < 0.6, 0.0, rng.random(n) + 0.5),   # 60% ties at 0
        np.full(n, 3.0),                                           # constant
        rng.integers(0, 5, n),                                     # discrete
    ]).astype(np.float32)


def test_uniformize_gives_uniform_training_features():
    rng = np.random.default_rng(6)
    x = uniform_data(rng)
    n = fit("uniformize", x)
    assert n.arrays["knots"].shape == (101, 5) and n.arrays["knots"].dtype == np.float64
    z = n.apply(x)
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    assert z.min() >= -1 and z.max() <= 1
    levels = np.linspace(0.02, 0.98, 49)
    for j in (0, 1):  # continuous: uniform on [-1, 1]
        np.testing.assert_allclose(np.quantile(z[:, j], levels), 2 * levels - 1, atol=0.02)
        np.testing.assert_allclose(z[:, j].mean(), 0, atol=0.01)
    zero = x[:, 2] == 0
    p0 = zero.mean()
    np.testing.assert_allclose(z[zero, 2], p0 - 1, atol=0.02)  # the tie gets its mid-rank 2 (p0/2) - 1
    np.testing.assert_allclose(np.quantile(z[~zero, 2], levels), (2 * p0 - 1) + (2 - 2 * p0) * levels, atol=0.03)
    assert np.all(z[:, 3] == 0)  # constant on the training set: no information
    for v in range(5):  # discrete values: mid-ranks, in order
        below, here = (x[:, 4] < v).mean(), (x[:, 4] == v).mean()
        np.testing.assert_allclose(z[x[:, 4] == v, 4], 2 * (below + here / 2) - 1, atol=0.02)


def test_uniformize_maps_unseen_values_monotonically_within_range():
    rng = np.random.default_rng(7)
    x = uniform_data(rng)
    n = fit("uniformize(knots = 1001)", x)
    grid = np.repeat(np.linspace(-600, 600, 24001)[:, None], 5, axis=1)
    grid[::7] += 0.3  # values between the training ones
    grid.sort(axis=0)
    z = n.apply(grid)
    assert np.all(np.isfinite(z)) and z.min() >= -1 and z.max() <= 1
    assert np.all(np.diff(z, axis=0) >= 0)  # monotone in every feature
    assert np.all(z[0, [0, 1, 2, 4]] == -1) and np.all(z[-1, [0, 1, 2, 4]] == 1)  # outside: the ends
    assert np.all(z[:, 3] == 0)
    # the training table, not a refit: a shifted set stays shifted
    valid = uniform_data(rng) + 1.0
    assert n.apply(valid)[:, 0].mean() > 0.3
    assert np.isnan(n.apply(np.full((1, 5), np.nan))).all()


@pytest.mark.parametrize("kind, f", [("log", lambda v: np.log1p(v)), ("sqrt", np.sqrt)])
def test_log_and_sqrt_squash_are_odd_and_monotone(kind, f):
    n = fit(kind, np.zeros((1, 1)))
    assert n.arrays == {}
    v = np.linspace(-1000, 1000, 20001)[:, None]
    z = n.apply(v)
    np.testing.assert_array_equal(n.apply(-v), -z)  # odd, exactly
    assert np.all(np.diff(z[:, 0]) > 0)              # strictly increasing
    np.testing.assert_allclose(z[v > 0], f(v[v > 0]), rtol=1e-15)
    assert n.apply(np.array([[0.0]]))[0, 0] == 0
    z32 = n.apply(v.astype(np.float32))
    assert z32.dtype == np.float32 and np.array_equal(n.apply(-v.astype(np.float32)), -z32)
    assert np.all(np.diff(z32[:, 0]) >= 0)
    if kind == "log":
        np.testing.assert_allclose(n.apply(np.array([[np.e - 1, -(np.e - 1)]])), [[1, -1]], rtol=1e-15)
    else:
        np.testing.assert_array_equal(n.apply(np.array([[-4.0, 9.0]])), [[-2.0, 3.0]])


def test_pipelines_apply_in_order_each_fitted_on_the_previous_output():
    rng = np.random.default_rng(8)
    x = (rng.lognormal(size=(3000, 4)) * 10 - 2).astype(np.float32)
    p = fit(["log", "standardize"], x)
    assert p.kind == "pipeline" and [s.kind for s in p.steps] == ["log", "standardize"]
    lx = fit("log", x).apply(x)
    np.testing.assert_allclose(p.steps[1].arrays["mean"], lx.mean(axis=0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_array_equal(p.apply(x), fit("standardize", lx).apply(lx))
    # the same from text, from Steps, and the other order differs
    np.testing.assert_array_equal(fit("[log, standardize]", x).apply(x), p.apply(x))
    np.testing.assert_array_equal(fit([step("log"), Step("standardize")], x).apply(x), p.apply(x))
    assert not np.allclose(fit(["standardize", "log"], x).apply(x), p.apply(x))
    # a reducing step in the middle: the next step sees its width
    q = fit("[standardize, pca(dims = 2), uniformize]", x)
    assert q.apply(x).shape == (3000, 2) and q.out_width(4) == 2 and q.steps[2].in_width == 2
    assert str(q) == "[standardize, pca, uniformize]"
    # none steps vanish; a single step is not a pipeline
    assert fit(["none", "center"], x).kind == "center" and fit([], x).kind == "none"


ROUND_TRIP = ["pca(dims = 2)", "pca(variance = 0.9)", "whiten(eps = 0.1, variance = 0.95)", "zca(eps = 0.1)",
              "uniformize(knots = 11)", "[log, standardize]", "[sqrt, zca, uniformize]",
              "[center, whiten(dims = 3), log]"]


@pytest.mark.parametrize("kind", ROUND_TRIP)
def test_round_trip_of_parameters_and_pipelines(tmp_path, kind):
    x = make_train(np.random.default_rng(9))
    x[:, 3] = np.random.default_rng(10).normal(size=len(x))  # no constant column: dims up to 4
    n = fit(kind, x)
    d = n.to_arrays()
    assert all(k.startswith("norm.") and v.dtype != object for k, v in d.items())
    np.savez(tmp_path / "m.npz", w=np.ones(3), **d)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        m = Normalizer.from_arrays(f)
    assert str(m) == str(n)
    assert np.array_equal(n.apply(x), m.apply(x))
    assert np.array_equal(n.apply(x.astype(np.float64)), m.apply(x.astype(np.float64)))
    assert Normalizer.from_arrays(m.to_arrays()).to_arrays().keys() == d.keys()


@pytest.mark.parametrize("kind", ROUND_TRIP)
def test_apply_keeps_input_and_dtypes_for_parameters_and_pipelines(kind):
    x = make_train(np.random.default_rng(13))
    x[:, 3] = np.random.default_rng(14).normal(size=len(x))
    before = x.copy()
    n = fit(kind, x)
    z = n.apply(x)
    assert np.array_equal(x, before) and z.dtype == np.float32 and z.shape == (len(x), n.out_width(4))
    assert n.apply(x.astype(np.float64)).dtype == np.float64
    out = np.empty_like(z)
    assert n.apply(x, out=out) is out and np.array_equal(out, z)
    np.testing.assert_allclose(n.apply(x[5]), z[5], rtol=1e-6, atol=1e-6)  # one example, no batch axis
    buf = np.zeros((len(x), 4), np.float32)  # out sharing memory with x is refused
    with pytest.raises(ValueError, match="overlap"):
        n.apply(buf, out=buf[:, :z.shape[1]])


def test_parse_and_step_validate_names_and_arguments():
    assert parse("none") == () and parse(["none"]) == ()
    assert parse("pca(dims = 50)") == (Step("pca", (("dims", 50),)),)
    assert parse("[log, whiten(variance=0.99, eps=0)]") == (
        Step("log"), Step("whiten", (("eps", 0.0), ("variance", 0.99))))
    assert str(step("whiten", dims=5, eps=0.1)) == "whiten(eps = 0.1, dims = 5)"
    assert step("pca", dims=None) == Step("pca")
    for kind, kw, msg in [("pca", {"dim": 5}, "no argument 'dim'"), ("zca", {"dims": 5}, "no argument"),
                          ("pca", {"dims": 0}, "dims must"), ("pca", {"dims": 2.5}, "dims must"),
                          ("pca", {"variance": 1.5}, "0 < variance <= 1"),
                          ("pca", {"dims": 2, "variance": 0.5}, "not both"),
                          ("whiten", {"eps": -1}, "eps must"), ("uniformize", {"knots": 1}, "knots"),
                          ("log", {"eps": 1}, "takes no arguments"), ("zcaa", {}, "unknown normalization")]:
        with pytest.raises(ValueError, match=msg):
            step(kind, **kw)
    with pytest.raises(ValueError, match="named arguments"):
        parse("pca(50)")


# ---- in a spec -------------------------------------------------------------------------

SPEC = """\
input  x : [6]
target t : class(3)
h = dense(x, 8, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
data {
    normalize = NORM
}
train {
    method = sgd(lr = 0.1)
    batch  = 20
}
"""


def blobs(rng, n=300, d=6):
    centres = rng.normal(size=(3, d)) * 3
    t = rng.integers(0, 3, n)
    x = (centres[t] + rng.normal(size=(n, d))) @ rng.normal(size=(d, d)) * 20 + 50
    return x.astype(np.float32), t.astype(np.int64)


def test_zca_spec_trains_end_to_end_and_predicts_identically_after_load(tmp_path):
    x, t = blobs(np.random.default_rng(11))
    m = netc.compile(SPEC.replace("NORM", "zca(eps = 0.1)"))
    assert m.data_cfg.normalize == (Step("zca", (("eps", 0.1),)),)
    m.fit(x, t, epochs=1)
    assert m.normalizer.kind == "zca" and float(m.normalizer.arrays["eps"]) == 0.1
    np.testing.assert_allclose(m.normalizer.arrays["mean"], x.mean(axis=0, dtype=np.float64), rtol=1e-5)
    p = m.predict_raw(x)
    m.save(tmp_path / "m")
    m2 = netc.load(tmp_path / "m")
    assert m2.normalizer.kind == "zca"
    for k, v in m.normalizer.arrays.items():
        np.testing.assert_array_equal(m2.normalizer.arrays[k], v)
    np.testing.assert_array_equal(m2.predict_raw(x), p)


def test_spec_dims_reduction_sets_the_input_width(tmp_path):
    x, t = blobs(np.random.default_rng(12), d=10)
    spec = SPEC.replace("NORM", "[log, pca(dims = 6)]")  # 10 features -> 6 = input x : [6]
    m = netc.compile(spec)
    m.fit(x, t, epochs=1)
    assert m.predict_raw(x).shape == (len(x), 3)
    m.save(tmp_path / "m")
    np.testing.assert_array_equal(netc.load(tmp_path / "m").predict_raw(x), m.predict_raw(x))
    with pytest.raises(DataError, match=r"into 5, but input 'x' is declared \[6\]"):
        netc.compile(SPEC.replace("NORM", "pca(dims = 5)")).fit(x, t, epochs=1)
    with pytest.raises(DataError, match=r"10 features"):
        netc.compile(SPEC.replace("NORM", "whiten(dims = 5)")).fit(x, t, epochs=1)
    with pytest.raises(DataError, match=r"only 10 features"):
        netc.compile(SPEC.replace("NORM", "pca(dims = 12)")).fit(x, t, epochs=1)
    with pytest.raises(DataError, match=r"fitted on 10 features, data has 6"):
        m.score(x[:, :6], t)


@pytest.mark.parametrize("norm, msg, hint, col", [
    ("zcaa", "unknown normalization 'zcaa'", "zca", 17),
    ("pca(dim = 50)", "pca: unknown argument 'dim'", "dims", 17),
    ("pca(50)", "named arguments", None, 17),
    ("pca(dims = 0)", "dims must be", None, 17),
    ("whiten(dims = 5, variance = 0.9)", "not both", None, 17),
    ("[log, stndardize]", "unknown normalization 'stndardize'", "standardize", 23),
    ("zca(eps = -1)", "eps must be", None, 17),
    ('"zca"', "expects a normalization", None, 5),
])
def test_spec_errors_name_the_place_with_did_you_mean(norm, msg, hint, col):
    with pytest.raises(SpecError, match=msg) as e:
        netc.compile(SPEC.replace("NORM", norm))
    assert e.value.loc.line == 7 and e.value.loc.col == col
    if hint:
        assert hint in e.value.hint


def test_mnist_pca_fits_in_chunks_without_a_float64_copy():
    x = mnist("train").x[:30000]
    tracemalloc.start()
    try:
        n = fit("pca(variance = 0.9)", x)
        pca_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        u = fit("uniformize", x)
        uni_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a float64 copy of 30000 x 784 would be 188 MB; one float64 chunk of rows is 51 MB
    assert pca_peak < 100e6 and uni_peak < 100e6, (pca_peak, uni_peak)
    k = n.arrays["variances"].size
    assert 50 < k < 150  # MNIST keeps 90% of its variance in ~87 components
    assert n.arrays["variances"].sum() / n.arrays["total_variance"] >= 0.9
    test = mnist("t10k").x[:2000]
    zt = n.apply(test)
    assert zt.shape == (2000, k) and np.all(np.isfinite(zt))
    w = fit("whiten", x[:8000]).apply(test)  # dead border pixels stay finite
    assert np.all(np.isfinite(w)) and np.abs(w).max() < 1e3
    zu = u.apply(test)
    dead = x.min(axis=0) == x.max(axis=0)
    assert zu.min() >= -1 and zu.max() <= 1 and dead.sum() > 10 and np.all(zu[:, dead] == 0)


def test_normalize_none_trains_on_the_callers_array_not_a_copy():
    """normalize = none: fit reads a float32 C-contiguous x in place (no copy of the training
    set), never writes it (a read-only x trains), and gives the same parameters as a copy."""
    from netc.runtime import data
    spec = ("input x : [5]\ntarget t : class(2)\nh = dense(x, 4, act = tanh)\ny = dense(h, 2)\n"
            "loss = nll(softmax(y), t)\ntrain {\n    batch = 8\n    epochs = 2\n}\n")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    t = (x[:, 0] > 0).astype(np.int64)
    m = netc.compile(spec, seed=3)
    assert np.shares_memory(m._prepare(data.arrays(x, t), "float32").x, x)
    assert not np.shares_memory(m._prepare(data.arrays(x.astype(np.float64), t), "float32").x, x)
    frozen = x.copy()
    frozen.flags.writeable = False
    a = netc.compile(spec, seed=3).fit(frozen, t)
    b = netc.compile(spec, seed=3).fit(x.copy(), t)
    np.testing.assert_array_equal(frozen, x)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


@pytest.mark.parametrize("norm", ["standardize", "whiten", "[center, standardize]", "uniformize"])
def test_a_checkpoint_whose_input_statistics_no_fit_makes_is_refused(tmp_path, norm):
    """NaN/inf in any statistic of the saved input normalization (each step of a pipeline),
    or a scale <= 0 (apply divides by it), is refused by field on load, not applied to
    every prediction."""
    spec = (f"input x : [3]\ntarget t : class(2)\ny = dense(x, 2)\nloss = nll(softmax(y), t)\n"
            f"data {{ normalize = {norm} }}\n")
    rng = np.random.default_rng(0)
    m = netc.compile(spec, backend="numpy").fit(rng.random((40, 3)).astype(np.float32), np.arange(40) % 2, epochs=1)
    with np.load(m.save(tmp_path / "m"), allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    stats = [k for k in saved if k.startswith("a/norm.") and saved[k].dtype.kind == "f"]
    assert stats
    for k in stats:
        for value in [np.nan, np.inf] + ([0.0, -1.0] if k.endswith(".scale") else []):
            bad = dict(saved)
            bad[k] = saved[k].copy()
            bad[k].flat[0] = value
            np.savez(tmp_path / "bad.npz", **bad)
            with pytest.raises(DataError, match=r"bad\.npz: field 'norm\.\*': not a usable input normalization"):
                netc.load(tmp_path / "bad.npz")
