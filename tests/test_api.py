"""The Python API: netc.compile -> Model.fit / predict / score / save / function, netc.load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netc
from netc import DataError, NetcError, SpecError

SPEC = """\
input  x : [20]
target t : class(3)
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.1, momentum = 0.5)
    batch  = 10
    epochs = 5
}
"""


def make_problem(n=200, features=20, classes=3, seed=0, spread=2.0, offset=0.0, scale=1.0):
    """Gaussian blobs around random centres (nearly linearly separable), optionally
    shifted and scaled so that input normalization matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, features)) * spread
    t = rng.integers(0, classes, n)
    x = (centres[t] + rng.normal(size=(n, features))) * scale + offset
    return x.astype(np.float32), t.astype(np.int64)


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def loss_of(model, x, t) -> float:
    (l,) = model.function("loss")(x.astype(model.program.spec.graph.float_dtype), t)
    return float(l)


# ---------------------------------------------------------------------------- compile

def test_compile_from_text():
    m = netc.compile(SPEC)
    assert isinstance(m, netc.Model)
    assert m.file == "<spec>"
    assert set(m.params) == {"h.W", "h.b", "y.W", "y.b"}
    assert m.params["h.W"].shape == (20, 16) and m.params["h.W"].dtype == np.float32
    assert m.params["y.b"].shape == (3,)
    assert np.all(m.params["h.b"] == 0)  # biases start at zero
    lim = (6 / (20 + 16)) ** 0.5  # glorot
    assert 0 < np.abs(m.params["h.W"]).max() <= lim
    assert m.train_cfg.batch == 10 and m.train_cfg.method.momentum == 0.5


def test_compile_from_path(tmp_path):
    p = tmp_path / "tiny.net"
    p.write_text(SPEC)
    for arg in (p, str(p)):
        m = netc.compile(arg)
        assert m.file == str(p)
        assert set(m.params) == {"h.W", "h.b", "y.W", "y.b"}
    # the same spec compiled from text and from a file starts from the same parameters
    a, b = netc.compile(SPEC), netc.compile(p)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_compile_errors_are_spec_errors(tmp_path):
    with pytest.raises(SpecError) as e:
        netc.compile(SPEC.replace("act = tanh", "act = tnah"))
    assert e.value.loc is not None and (e.value.loc.line, e.value.loc.col) == (3, 24)
    assert "did you mean 'tanh'?" in str(e.value)
    assert isinstance(e.value, NetcError)
    with pytest.raises(NetcError, match="cannot read spec"):
        netc.compile(tmp_path / "missing.net")


def test_dtype_override():
    m = netc.compile(SPEC, dtype="float64")
    assert all(v.dtype == np.float64 for v in m.state.values())
    assert "float64" in m.program.step.source


# ---------------------------------------------------------------------------- fit / predict / score

def test_fit_on_arrays_learns(problem):
    x, t = problem
    m = netc.compile(SPEC, seed=3)
    before_loss, before_acc = loss_of(m, x, t), m.score(x, t)
    lines = []
    assert m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), test=(x[150:], t[150:]), log=lines.append) is m
    summary = m.summary_
    after_loss = loss_of(m, x, t)
    assert before_acc < 0.7  # an untrained net is not already good
    assert after_loss < 0.25 * before_loss
    assert m.score(x[:150], t[:150]) > 0.90
    assert m.score(x[150:], t[150:]) > 0.90
    assert summary["epochs"] == 5 and summary["age"] == 750 and summary["steps"] == 75
    assert summary["stopped"] == "epochs" and summary["recoveries"] == 0
    assert summary["valid_error"] == pytest.approx(1 - m.score(x[150:], t[150:]))
    assert summary["test_error"] == summary["valid_error"]
    assert summary["train_loss"] < before_loss
    assert len([l for l in lines if l.startswith("epoch ")]) == 5
    assert m.summary is summary


def test_fit_epochs_argument_and_continuation(problem):
    x, t = problem
    m = netc.compile(SPEC)
    s1 = m.fit(x, t, epochs=1).summary_
    assert s1["epochs"] == 1 and s1["age"] == 200
    l1 = loss_of(m, x, t)
    s2 = m.fit(x, t, epochs=2).summary_  # fit again continues from the current parameters
    assert s2["epochs"] == 2
    assert loss_of(m, x, t) < l1


def test_predict_and_score(problem):
    x, t = problem
    m = netc.compile(SPEC)
    m.fit(x, t)
    y = m.predict_raw(x)
    assert y.shape == (200, 3) and np.all(np.isfinite(y))
    acc = m.score(x, t)
    assert acc == pytest.approx(np.mean(np.argmax(y, axis=1) == t))
    # a single example, a list, a float64 array: all accepted
    np.testing.assert_allclose(m.predict_raw(x[:1]), y[:1], rtol=1e-6)
    np.testing.assert_allclose(m.predict_raw(x[:3].tolist()), y[:3], rtol=1e-6)
    np.testing.assert_allclose(m.predict_raw(x[:5].astype(np.float64)), y[:5], rtol=1e-5)


def test_predict_independent_of_eval_batch(problem):
    x, t = problem
    big = netc.compile(SPEC)
    small = netc.compile(SPEC.replace("epochs = 5", "epochs = 5\n    eval_batch = 7"))
    for m in (big, small):
        m.fit(x, t, epochs=1)
    np.testing.assert_array_equal(big.params["h.W"], small.params["h.W"])
    np.testing.assert_allclose(small.predict_raw(x), big.predict_raw(x), rtol=1e-5, atol=1e-6)
    assert small.score(x, t) == big.score(x, t)


def test_regression_target_scores_r2():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    w = rng.normal(size=(4, 2)).astype(np.float32)
    t = x @ w
    m = netc.compile("input x : [4]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n"
                     "train {\n    method = sgd(lr = 0.05)\n    batch = 8\n    epochs = 20\n}\n")
    before = m.score(x, t)
    m.fit(x, t)
    after = m.score(x, t)
    assert before < 0.5 and after > 0.99  # R^2: higher is better
    assert m.predict(x).shape == (64, 2)


def test_spec_without_data_and_without_arrays():
    m = netc.compile(SPEC)
    with pytest.raises(SpecError, match="no training data"):
        m.fit()


# ---------------------------------------------------------------------------- save / load

def test_save_load_round_trip(problem, tmp_path):
    x, t = problem
    m = netc.compile(SPEC, seed=11)
    m.fit(x, t, epochs=2)
    path = m.save(tmp_path / "model")
    assert Path(path).name == "params.npz"
    m2 = netc.load(tmp_path / "model")
    assert set(m2.state) == set(m.state)  # parameters and momentum velocities
    assert any(k.endswith(".velocity") for k in m2.state)
    for k in m.state:
        np.testing.assert_array_equal(m2.state[k], m.state[k])
        assert m2.state[k].dtype == m.state[k].dtype
    np.testing.assert_array_equal(m2.predict_raw(x), m.predict_raw(x))
    assert m2.score(x, t) == m.score(x, t)
    assert m2.summary["epochs"] == 2
    assert m2.train_cfg.seed == 11
    # a loaded model can keep training
    m2.fit(x, t, epochs=1)
    assert not np.array_equal(m2.params["h.W"], m.params["h.W"])


def test_save_writes_plain_npz_and_json(problem, tmp_path):
    x, t = problem
    m = netc.compile(SPEC)
    m.fit(x, t, epochs=1)
    m.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "params.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
        meta = json.loads(str(z["meta.json"]))
    assert meta["spec"] == SPEC and meta["params"]["h.W"] == [20, 16]
    assert json.loads((tmp_path / "m" / "model.json").read_text())["format"] == meta["format"]


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        netc.load(tmp_path)
    (tmp_path / "params.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a netc checkpoint"):
        netc.load(tmp_path)


def test_normalization_restored_by_load(tmp_path):
    # features far from zero mean / unit variance: standardize matters
    x, t = make_problem(offset=50.0, scale=30.0)
    spec = SPEC.replace("train {", "data {\n    normalize = standardize\n}\ntrain {")
    m = netc.compile(spec)
    m.fit(x, t, epochs=3)
    assert m.normalizer.kind == "standardize"
    np.testing.assert_allclose(m.normalizer.arrays["mean"], x.mean(axis=0, dtype=np.float64), rtol=1e-5)
    assert m.score(x, t) > 0.90
    m.save(tmp_path / "m")
    m2 = netc.load(tmp_path / "m")
    assert m2.normalizer.kind == "standardize"
    for k in ("mean", "scale"):
        np.testing.assert_array_equal(m2.normalizer.arrays[k], m.normalizer.arrays[k])
    np.testing.assert_array_equal(m2.predict_raw(x), m.predict_raw(x))
    assert m2.score(x, t) == m.score(x, t)
    # and the statistics really matter: the same parameters without them predict differently
    m3 = netc.compile(spec)
    for k in m3.state:
        np.copyto(m3.state[k], m.state[k])
    assert not np.allclose(m3.predict_raw(x), m.predict_raw(x))


# ---------------------------------------------------------------------------- function()

def test_function_loss_and_gradients_match_finite_differences():
    spec = ("input x : [5]\ntarget t : class(3)\nh = dense(x, 4, act = tanh)\n"
            "y = dense(h, 3, act = sigmoid)\nloss = nll(softmax(y), t) + 0.1 * l2(weights)\n")
    m = netc.compile(spec, dtype="float64", seed=2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 5))
    t = rng.integers(0, 3, 6)
    names = list(m.params)
    f = m.function("loss", wrt=names)
    out = f(x, t)
    assert len(out) == 1 + len(names)
    loss, grads = float(out[0]), out[1:]
    assert np.isfinite(loss)
    for name, g in zip(names, grads):
        assert g.shape == m.params[name].shape and g.dtype == np.float64
    # the returned arrays are copies: a second call does not change them
    kept = [g.copy() for g in grads]
    x2 = rng.normal(size=(6, 5))
    f(x2, t)
    for a, b in zip(kept, grads):
        np.testing.assert_array_equal(a, b)
    eps = 1e-6
    for name, g in zip(names, grads):
        w = m.state[name]
        flat = w.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = float(f(x, t)[0])
            flat[i] = old - eps
            fm = float(f(x, t)[0])
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            assert num == pytest.approx(g.reshape(-1)[i], rel=1e-6, abs=1e-9), (name, i)
    assert float(f(x, t)[0]) == loss  # parameters restored exactly


def test_function_output_matches_predict(problem):
    x, t = problem
    m = netc.compile(SPEC)
    (y,) = m.function("output")(x)
    np.testing.assert_allclose(y, m.predict_raw(x), rtol=1e-6)
    with pytest.raises(NetcError, match="unknown function"):
        m.function("gradient")


# ---------------------------------------------------------------------------- seeds

def test_seed_determines_initial_parameters():
    a, b, c = netc.compile(SPEC, seed=1), netc.compile(SPEC, seed=1), netc.compile(SPEC, seed=2)
    for k in ("h.W", "y.W"):
        np.testing.assert_array_equal(a.params[k], b.params[k])
        assert not np.array_equal(a.params[k], c.params[k])
    # the spec's own seed is the default
    d = netc.compile(SPEC.replace("epochs = 5", "epochs = 5\n    seed = 1"))
    np.testing.assert_array_equal(d.params["h.W"], a.params["h.W"])


def test_seed_determines_training(problem):
    x, t = problem
    runs = []
    for seed in (1, 1, 2):
        m = netc.compile(SPEC, seed=seed)
        m.fit(x, t, epochs=2)
        runs.append(m.params)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
    assert not np.array_equal(runs[0]["h.W"], runs[2]["h.W"])


# ---------------------------------------------------------------------------- data errors

def test_label_outside_classes_names_the_record(problem):
    x, t = problem
    t = t.copy()
    t[37] = 3
    m = netc.compile(SPEC)
    with pytest.raises(DataError) as e:
        m.fit(x, t)
    msg = str(e.value)
    assert "record 37" in msg and "label 3" in msg and "class(3)" in msg
    t[37] = -1
    with pytest.raises(DataError, match="record 37"):
        m.fit(x, t)
    good = problem[1].copy()
    bad_valid = good[150:].copy()
    bad_valid[4] = 9
    with pytest.raises(DataError, match=r"valid: record 4: label 9"):
        m.fit(x[:150], good[:150], valid=(x[150:], bad_valid))
    with pytest.raises(DataError, match="record 4"):
        m.score(x[150:], bad_valid)


def test_feature_count_mismatch(problem):
    x, t = problem
    m = netc.compile(SPEC)
    with pytest.raises(DataError, match=r"input 'x' is declared \[20\]"):
        m.fit(x[:, :19], t)
    with pytest.raises(DataError):
        m.fit(x, t, valid=(x[:, :19], t))
    with pytest.raises(DataError):
        m.score(x[:, :19], t)


def test_record_count_mismatch(problem):
    x, t = problem
    m = netc.compile(SPEC)
    with pytest.raises(DataError, match="200 records"):
        m.fit(x, t[:100])


def test_data_block_npz_source(tmp_path, problem):
    x, t = problem
    np.savez(tmp_path / "d.npz", feats=x, labels=t)
    spec = SPEC.replace("train {", 'data {\n    train = npz("d.npz", x = "feats", t = "labels")[0:150]\n'
                                   '    valid = npz("d.npz", x = "feats", t = "labels")[150:]\n}\ntrain {')
    (tmp_path / "s.net").write_text(spec)
    m = netc.compile(tmp_path / "s.net")
    s = m.fit(epochs=3).summary_
    assert s["age"] == 450 and s["valid_error"] < 0.15
    # a missing array name is a DataError naming the file, with a suggestion
    (tmp_path / "s2.net").write_text(spec.replace('t = "labels"', 't = "label"'))
    with pytest.raises(DataError) as e:
        netc.compile(tmp_path / "s2.net").fit()
    assert "d.npz" in str(e.value) and "label" in str(e.value)


def test_data_block_csv_source(tmp_path, problem):
    x, t = problem
    rows = "\n".join(",".join(f"{v:.5f}" for v in xi) + f",{ti}" for xi, ti in zip(x, t))
    (tmp_path / "d.csv").write_text(rows + "\n")
    spec = SPEC.replace("train {", 'data {\n    train = csv("d.csv")\n}\ntrain {')
    (tmp_path / "s.net").write_text(spec)
    m = netc.compile(tmp_path / "s.net")
    s = m.fit(epochs=2, limit=120).summary_
    assert s["age"] == 240
    assert m.score(x, t) > 0.85


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"epochs": -1}, {"epochs": 1.5}, {"epochs": True},
                                {"limit": -5}, {"limit": 0}, {"limit": "10"}])
def test_fit_refuses_epochs_and_limit_that_are_not_whole_numbers_above_zero(kw):
    m = netc.compile("input x : [2]\ntarget t : class(2)\ny = dense(x, 2)\nloss = nll(softmax(y), t)\n")
    x, t = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(NetcError, match=f"fit\\({next(iter(kw))}="):
        m.fit(x, t, **kw)


# ---------------------------------------------------------------------------- hostile arrays (predict, score, save)

@pytest.fixture(scope="module")
def trained(problem):
    m = netc.compile(SPEC)
    m.fit(*problem, epochs=1)
    return m


@pytest.mark.parametrize("call", ["predict", "predict_proba", "predict_raw", "score"])
@pytest.mark.parametrize("x, shown", [(np.ones((5, 19)), r"\[5, 19\]"), (np.ones((5, 4, 5)), r"\[5, 4, 5\]"),
                                      (np.ones((5, 20, 1)), r"\[5, 20, 1\]")],
                         ids=["19 features", "3-D", "3-D of 20"])
def test_wrong_shape_is_refused_naming_the_expected_shape(trained, call, x, shown):
    args = (x, np.zeros(len(x), np.int64)) if call == "score" else (x,)
    with pytest.raises(NetcError, match=rf"^{call}\(x.*\[n, 20\].*{shown}") as e:
        getattr(trained, call)(*args)
    assert "input 'x'" in str(e.value)


@pytest.mark.parametrize("call", ["predict", "predict_proba", "predict_raw", "score"])
@pytest.mark.parametrize("x", [np.array([[object()] * 20] * 2, dtype=object), np.full((2, 20), "1.0"),
                               np.ones((2, 20), complex)], ids=["object", "str", "complex"])
def test_non_numeric_arrays_are_refused(trained, call, x):
    args = (x, np.zeros(len(x), np.int64)) if call == "score" else (x,)
    with pytest.raises(NetcError, match=rf"^{call}\(x.*dtype"):
        getattr(trained, call)(*args)


@pytest.mark.parametrize("x", [np.ones(20), np.ones(4), [0.5] * 20])
def test_predict_refuses_one_dimensional_input_suggesting_a_reshape(trained, x):
    with pytest.raises(NetcError, match=r"x\.reshape\(1, -1\)"):
        trained.predict(x)
    with pytest.raises(NetcError, match=r"x\.reshape\(1, -1\)"):
        trained.score(x, [0])


def test_one_feature_input_suggests_the_other_reshape():
    m = netc.compile("input x : [1]\ntarget t : [1]\ny = dense(x, 1)\nloss = mse(y, t)\n")
    with pytest.raises(NetcError, match=r"x\.reshape\(-1, 1\)"):
        m.predict(np.ones(7))


def test_predict_on_no_rows_is_an_empty_array_of_the_output_shape(trained):
    y = trained.predict_raw(np.zeros((0, 20), np.float32))
    assert isinstance(y, np.ndarray) and y.shape == (0, 3) and y.dtype == np.float32
    assert trained.predict(np.zeros((0, 20))).shape == (0,)
    assert trained.predict_proba(np.zeros((0, 20))).shape == (0, 3)
    with pytest.raises(NetcError, match=r"\[n, 20\]"):
        trained.predict(np.zeros((0, 19)))


def test_constant_output_predicts_and_scores():
    m = netc.compile("input x : [4]\ntarget t : class(2)\ny = dense(x, 2) * 0\nloss = nll(softmax(y), t)\n")
    x, t = np.ones((3, 4), np.float32), np.array([0, 1, 1])
    np.testing.assert_array_equal(m.predict_raw(x), np.zeros((3, 2), np.float32))
    assert m.predict_raw(x[:0]).shape == (0, 2)
    assert m.score(x, t) in (1 / 3, 2 / 3)  # argmax of a tie, but a number, not a crash
    r = netc.compile("input x : [4]\ntarget t : [4]\ny = x * 0\nloss = mse(y, t)\n")
    assert r.predict(np.ones((5, 4))).shape == (5, 4)
    assert r.score(np.ones((2, 4)), np.full((2, 4), 3.0)) == pytest.approx(r.score(np.zeros((2, 4)), np.full((2, 4), 3.0)))


@pytest.mark.parametrize("path", [None, 123, 1.5, b"\0", ["m"]])
def test_save_refuses_a_path_that_is_not_one(trained, path):
    with pytest.raises(NetcError):
        trained.save(path)


# ---------------------------------------------------------------------------- scikit-learn conventions

def test_fit_returns_the_model_and_keeps_the_history_in_memory(problem, tmp_path):
    x, t = problem
    m = netc.compile(SPEC)
    assert m.history_ == [] and m.summary_ is None
    assert m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), epochs=3) is m
    assert [r["epoch"] for r in m.history_] == [1, 2, 3] and m.summary_["epochs"] == 3
    assert m.history_[-1]["valid_error"] == pytest.approx(m.summary_["valid_error"])
    assert all(r["train_loss"] > 0 for r in m.history_)
    assert m.fit(x, t, epochs=2, out=tmp_path / "run") is m  # a run folder too: the same rows as metrics.jsonl
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m.history_ == [r for r in rows if not r.get("partial")] and len(m.history_) == 2


def test_history_of_a_resumed_run_holds_the_epochs_before_it(problem, tmp_path):
    x, t = problem
    netc.compile(SPEC).fit(x, t, epochs=2, out=tmp_path / "run")
    m = netc.resume(tmp_path / "run", x, t, epochs=3)
    assert [r["epoch"] for r in m.history_] == [1, 2, 3]


def test_predict_gives_labels_and_predict_proba_the_softmax_of_the_scores(trained, problem):
    x, t = problem
    raw = trained.predict_raw(x)
    labels = trained.predict(x)
    assert labels.shape == (len(x),) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.argmax(raw, axis=1))
    p = trained.predict_proba(x)  # the loss is nll(softmax(y), t): y is scores
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-9)
    np.testing.assert_array_equal(np.argmax(p, axis=1), labels)
    assert trained.score(x, t) == pytest.approx(np.mean(labels == t))  # accuracy


def test_predict_proba_of_a_softmax_output_is_the_output(problem):
    x, t = problem
    m = netc.compile(SPEC.replace("y = dense(h, 3)", "y = softmax(dense(h, 3))").replace("softmax(y)", "y"))
    m.fit(x, t, epochs=1)
    np.testing.assert_allclose(m.predict_proba(x), m.predict_raw(x), rtol=1e-6)
    np.testing.assert_array_equal(m.predict(x), np.argmax(m.predict_raw(x), axis=1))


@pytest.mark.parametrize("head", ["act = sigmoid", "act = identity"])
def test_one_sigmoid_output_is_a_binary_classifier(head):
    x, t = make_problem(classes=2)
    loss = "cross_entropy(y, one_hot(t, 2)[1:2])" if head == "act = sigmoid" else \
        "cross_entropy(sigmoid(y), one_hot(t, 2)[1:2])"
    m = netc.compile(f"input x : [20]\ntarget t : class(2)\ny = dense(x, 1, {head})\nloss = {loss}\n"
                     "train {\n    method = sgd(lr = 0.1)\n    batch = 10\n    epochs = 5\n}\n")
    m.fit(x, t)
    p = m.predict_proba(x)
    assert p.shape == (len(x), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-9)
    labels = m.predict(x)
    np.testing.assert_array_equal(labels, (p[:, 1] > 0.5).astype(np.int64))
    assert m.score(x, t) == pytest.approx(np.mean(labels == t)) and m.score(x, t) > 0.9


def test_predict_proba_is_refused_for_outputs_that_are_not_probabilities():
    r = netc.compile("input x : [4]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n")
    with pytest.raises(NetcError, match=r"predict_proba: the output 'y' is not probabilities.*predict_raw"):
        r.predict_proba(np.ones((3, 4)))
    h = netc.compile("input x : [4]\ntarget t : class(2)\ny = dense(x, 2)\nloss = hinge(y, t)\n")
    assert h.predict(np.ones((3, 4))).shape == (3,)  # labels still: the argmax
    with pytest.raises(NetcError, match="not probabilities"):
        h.predict_proba(np.ones((3, 4)))


def test_score_of_real_targets_is_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    m = netc.compile("input x : [4]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n")
    y = m.predict(x).astype(np.float64)
    t = y + rng.normal(size=y.shape) * 0.1
    expect = np.mean([1 - ((t[:, j] - y[:, j]) ** 2).sum() / ((t[:, j] - t[:, j].mean()) ** 2).sum()
                      for j in range(2)])
    assert m.score(x, t) == pytest.approx(expect, rel=1e-5)
    assert m.score(x, y) == pytest.approx(1.0, abs=1e-6)


def test_predict_proba_follows_the_loss_when_it_applies_a_softmax_to_a_sigmoid_output(problem):
    x, t = problem
    m = netc.compile(SPEC.replace("y = dense(h, 3)", "y = dense(h, 3, act = sigmoid)"))
    raw = m.predict_raw(x)
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    np.testing.assert_allclose(m.predict_proba(x), e / e.sum(axis=1, keepdims=True), rtol=1e-6)
