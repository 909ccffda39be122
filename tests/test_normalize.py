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
    with pytest.raises(ValueError):
        fit("whiten", x)


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
