"""`netc hessian`: Lanczos eigenvalues against numpy.linalg.eigvalsh of the exact
Hessian and of an independently built Gauss-Newton matrix (J^T H_z J with J by
finite differences), the per-parameter diagonal against the exact one, the
command's table, JSON and located errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.compiler.errors import NetcError
from netc.compiler.gauss_newton import gauss_newton_vector_function
from netc.gradcheck import sample_batch
from netc.hessian import analyze
from netc.runtime.eigen import lanczos
from test_eigen import SPEC, data, exact_hessian


def _vec(m):
    names = list(m.program.spec.params)
    return names, np.concatenate([m.state[n].reshape(-1) for n in names])


def _set(m, names, w):
    k = 0
    for n in names:
        s = m.state[n].size
        m.state[n][...] = w[k:k + s].reshape(m.state[n].shape)
        k += s


def gauss_newton_by_hand(m, x):
    """J^T H_z J for z = the logits y, J by centered differences, H_z of the mean
    nll of softmax: (diag(p) - p p^T) / B per example."""
    names, w0 = _vec(m)
    pred = m.program.function([m.program.output], [m.program.spec.inputs["x"]])

    def z(w):
        _set(m, names, w)
        return pred(m.state, x)[0].reshape(-1).copy()

    J = np.zeros((len(z(w0)), len(w0)))
    for j in range(len(w0)):
        e = np.zeros(len(w0))
        e[j] = 1e-6
        J[:, j] = (z(w0 + e) - z(w0 - e)) / 2e-6
    _set(m, names, w0)
    y = pred(m.state, x)[0]
    p = np.exp(y - y.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    B, c = p.shape
    Hz = np.zeros((B * c, B * c))
    for b in range(B):
        Hz[c * b:c * b + c, c * b:c * b + c] = (np.diag(p[b]) - np.outer(p[b], p[b])) / B
    return J.T @ Hz @ J


def test_lanczos_finds_the_extremes_of_a_known_spectrum():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(200, 200)))
    lam = np.concatenate([[50.0, 20.0, 10.0, 5.0], rng.uniform(-1, 1, 196)])
    A = (Q * lam) @ Q.T
    theta, res, steps, closed = lanczos(lambda v: A @ v, 200, 60, rng)
    np.testing.assert_allclose(np.sort(theta)[::-1][:4], [50, 20, 10, 5], rtol=1e-9)
    assert not closed and steps == 60 and theta.min() >= -1 - 1e-9
    assert np.all(res[np.argsort(theta)[::-1][:4]] < 1e-6)


def test_hessian_eigenvalues_match_eigvalsh_of_the_exact_hessian():
    m = netc.compile(SPEC)
    x, t = data()
    want = np.sort(np.linalg.eigvalsh(exact_hessian(m, x, t)))[::-1]
    r = analyze(m, x, t, k=5, steps=43)
    np.testing.assert_allclose(r.eigenvalues, want[:5], rtol=1e-9, atol=1e-12)
    assert r.smallest == pytest.approx(want[-1], rel=1e-8, abs=1e-12)
    assert want[-1] < 0  # a tanh net's Hessian is indefinite: the smallest Ritz value says so
    assert r.spread == pytest.approx(want[0] / want[4], rel=1e-8)
    # a few steps already pin the largest, with an honest residual
    short = analyze(m, x, t, k=2, steps=12)
    assert abs(short.eigenvalues[0] - want[0]) <= max(short.residuals[0], 1e-9 * want[0])


def test_gauss_newton_products_and_eigenvalues_match_a_matrix_built_by_hand():
    m = netc.compile(SPEC)
    x, t = data()
    ref = gauss_newton_by_hand(m, x)
    gv = gauss_newton_vector_function(m.program)
    names, w = _vec(m)
    v = np.random.default_rng(1).normal(size=len(w))
    parts, k = [], 0
    for n in names:
        s = m.state[n].size
        parts.append(v[k:k + s].reshape(m.state[n].shape))
        k += s
    got = np.concatenate([a.reshape(-1) for a in gv(m.state, x, t, *parts)])
    np.testing.assert_allclose(got, ref @ v, rtol=1e-7, atol=1e-9)
    want = np.sort(np.linalg.eigvalsh(ref))[::-1]
    r = analyze(m, x, t, k=4, matrix="gauss-newton", steps=43)
    np.testing.assert_allclose(r.eigenvalues, want[:4], rtol=1e-6)
    assert r.smallest > -1e-10  # positive semi-definite


def test_per_parameter_diagonal_against_the_exact_gauss_newton_diagonal():
    """bbprop is exact for the output layer (its units' curvature enters whole) and drops
    the cross terms between units below it. The diagonal column is exact for blocks of
    at most `probes` entries (the biases here), Hutchinson's unbiased mean for the others."""
    m = netc.compile(SPEC)
    x, t = data()
    diag = np.diag(gauss_newton_by_hand(m, x))
    r = analyze(m, x, t, k=2, matrix="gauss-newton", steps=20, probes=12)
    k = 0
    for row in r.rows:
        size = int(np.prod(row.shape))
        exact = diag[k:k + size].mean()
        k += size
        if row.name.startswith("y."):
            assert row.bbprop == pytest.approx(exact, rel=1e-6), row
        else:  # the hidden layer: an approximation, within a factor 2 here
            assert 0.5 * exact < row.bbprop < 2 * exact, row
        if row.name.endswith(".b"):  # 5 and 3 entries: by unit vectors
            assert row.diagonal_se == 0 and row.diagonal == pytest.approx(exact, rel=1e-8)
        else:  # 20 and 15 entries: 12 random-sign probes of the block
            assert 0 < row.diagonal_se < 0.3 * exact and abs(row.diagonal - exact) < 3 * row.diagonal_se, (row, exact)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.net")),
                         ids=lambda p: p.name)
def test_gauss_newton_products_of_every_shipped_spec_are_symmetric_and_positive(path):
    """u^T G v = v^T G u and v^T G v >= 0 for random u, v on a few real examples (the
    contractive penalty, shortcuts and convolutions included)."""
    m = netc.compile(path, dtype="float64")
    names = list(m.program.spec.params)
    gv = gauss_newton_vector_function(m.program)
    rng = np.random.default_rng(0)
    feeds = sample_batch(m, 4, rng)[:len(gv.feeds) - len(names)]
    u, v = ([rng.normal(size=m.state[n].shape) for n in names] for _ in range(2))
    gu, gv_ = ([o.copy() for o in gv(m.state, *feeds, *w)] for w in (u, v))
    dot = lambda a, b: sum(float(np.sum(x * y)) for x, y in zip(a, b))  # noqa: E731
    assert dot(u, gv_) == pytest.approx(dot(v, gu), rel=1e-10)
    assert dot(v, gv_) > 0 and dot(u, gu) > 0


def test_single_layer_bbprop_is_the_exact_diagonal():
    m = netc.compile(SPEC.replace("h = dense(x, 5, act = tanh)\ny = dense(h, 3)", "y = dense(x, 3)"))
    x, t = data()
    r = analyze(m, x, t, k=2, matrix="gauss-newton", steps=15)
    G = gauss_newton_by_hand(m, x)
    d = np.diag(G)
    np.testing.assert_allclose([row.bbprop for row in r.rows], [d[:12].mean(), d[12:].mean()], rtol=1e-6)


# ---------------------------------------------------------------------------- the command

DATA_SPEC = SPEC.replace("train {", 'data {\n    train = npz("tiny.npz")\n    normalize = standardize\n}\n'
                                      "train {\n    batch = 10\n    epochs = 30\n    method = sgd(lr = 0.3)")


@pytest.fixture
def spec_file(tmp_path):
    x, t = data(n=60)
    np.savez(tmp_path / "tiny.npz", x=x, t=t)
    p = tmp_path / "tiny.net"
    p.write_text(DATA_SPEC)
    return p


def test_command_prints_the_table(spec_file, capsys):
    assert main(["hessian", str(spec_file), "--k", "3", "--batches", "3"]) == 0
    out = capsys.readouterr().out
    assert "Hessian of the mean loss on 30 training examples, parameters at initialization" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1] in "123" and "e" in line]
    assert [r[0] for r in rows[:3]] == ["1", "2", "3"]
    lams = [float(r[1]) for r in rows[:3]]
    assert lams == sorted(lams, reverse=True) and lams[0] > 0
    assert "condition estimate lambda_1/lambda_3" in out and "smallest Ritz value" in out
    assert "momentum" not in out  # the spec's sgd has none: plain SGD's limit is the one printed
    plain = next(x for x in out.splitlines() if "lr < 2/lambda_max = " in x)
    assert float(plain.split("= ")[1].split()[0]) == pytest.approx(2 / lams[0], rel=1e-3)
    heavy = spec_file.with_name("heavy.net")
    heavy.write_text(DATA_SPEC.replace("sgd(lr = 0.3)", "sgd(lr = 0.3, momentum = 0.5)"))
    assert main(["hessian", str(heavy), "--k", "3", "--batches", "3"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "momentum 0.5" in x)
    limit = float(line.split("lr < ")[1].split()[0])
    assert limit == pytest.approx(2 * 1.5 / lams[0], rel=1e-3) and "(its lr: 0.3)" in line  # 2(1 + mu)/lambda
    for name in ("h.W", "h.b", "y.W", "y.b"):
        assert f"  {name} " in out


def test_sizes_from_the_data(spec_file, capsys):
    free = spec_file.with_name("free.net")
    free.write_text(DATA_SPEC.replace("input x : [4]", "input x : [_]").replace("class(3)", "class(_)"))
    assert main(["hessian", str(free), "--json", "--k", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 4 * 5 + 5 + 5 * 3 + 3


def test_json_and_a_trained_run(spec_file, tmp_path, capsys):
    assert main(["hessian", str(spec_file), "--json", "--k", "2", "--batches", "6", "--matrix", "gauss-newton"]) == 0
    init = json.loads(capsys.readouterr().out)
    assert init["matrix"] == "gauss-newton" and init["examples"] == 60 and len(init["eigenvalues"]) == 2
    assert {r["name"] for r in init["rows"]} == {"h.W", "h.b", "y.W", "y.b"}
    netc.compile(spec_file).fit(out=tmp_path / "run")
    assert main(["hessian", str(spec_file), "--run", str(tmp_path / "run"), "--json", "--k", "2",
                 "--batches", "6", "--matrix", "gauss-newton"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["where"].startswith("run ")
    assert trained["eigenvalues"] != init["eigenvalues"]  # the trained parameters were used


def test_errors_are_located(spec_file, tmp_path, capsys):
    nodata = tmp_path / "nodata.net"
    nodata.write_text(SPEC)
    assert main(["hessian", str(nodata)]) == 2
    err = capsys.readouterr().err
    assert f"{nodata}:" in err and "training data" in err
    assert main(["hessian", str(spec_file), "--k", "500"]) == 2
    assert "--k 500" in capsys.readouterr().err
    other = tmp_path / "other.net"
    other.write_text(DATA_SPEC.replace("dense(x, 5,", "dense(x, 7,"))
    netc.compile(spec_file).fit(epochs=1, out=tmp_path / "run")
    assert main(["hessian", str(other), "--run", str(tmp_path / "run")]) == 2
    assert "h.W" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse names the choices
        main(["hessian", str(spec_file), "--matrix", "fisher"])
    assert e.value.code == 2 and "gauss-newton" in capsys.readouterr().err
    with pytest.raises(NetcError):
        analyze(netc.compile(SPEC), *data(), matrix="fisher")


def test_a_loss_linear_in_the_parameters_has_a_zero_hessian_reported():
    """mean(y) + nll(softmax(y * 0), t) is linear in y's weights: its Hessian is zero and
    its curvature functions read other feeds than (x, t) in order (bbprop's reads none),
    which are given by name: eigenvalue 0, zero diagonals, no internal error."""
    spec = SPEC.replace("h = dense(x, 5, act = tanh)\ny = dense(h, 3)\n", "y = dense(x, 3)\n") \
        .replace("loss = nll(softmax(y), t)", "loss = mean(y) + nll(softmax(y * 0), t)")
    m = netc.compile(spec)
    x, t = data()
    r = analyze(m, x, t, k=1, steps=5)
    assert abs(r.eigenvalues[0]) < 1e-12 and all(row.bbprop == 0 and row.diagonal == 0 for row in r.rows), r
