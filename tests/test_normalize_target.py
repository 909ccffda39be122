"""normalize_target = standardize (data block): real targets scaled per column on the
training split only, stored with the model (arrays "tnorm.*", read as hostile), undone
by predict, score and the ONNX export; refused for class targets."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import netc
from netc import DataError, NetcError, SpecError

pytest.importorskip("sklearn")
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402

# a plain Keras-style MLP at the default rate (sgd, lr 0.01, batch 32)
DIABETES = """\
input x : [10]
target t : [1]
h1 = dense(x, 64, act = relu)
h2 = dense(h1, 64, act = relu)
y = dense(h2, 1)
loss = mse(y, t)
data {
    normalize = standardize
    normalize_target = KIND
}
train {
    epochs = 30
    seed = SEED
}
"""


@pytest.fixture(scope="module")
def diabetes():
    """scikit-learn's diabetes data (targets 25..346), shuffled, 350 to train and 92 to validate."""
    x, t = load_diabetes(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, t = x[order], t[order]
    return (x[:350], t[:350]), (x[350:], t[350:])


def spec(kind: str = "standardize", seed: int = 1, epochs: int = 30) -> str:
    return DIABETES.replace("KIND", kind).replace("SEED", str(seed)).replace("epochs = 30", f"epochs = {epochs}")


def test_diabetes_trains_at_the_default_rate_with_it_and_not_without(diabetes):
    """With it every seed ends near least squares (R^2 0.34 on this split) and finite;
    without it the same network, rate and seeds mostly end worse than predicting the
    mean (R^2 < 0) or diverge: the unscaled errors (targets 25..346) make steps too big."""
    (x, t), (xv, tv) = diabetes
    seeds = (1, 2, 3, 4)
    scores = {}
    for kind in ("standardize", "none"):
        for seed in seeds:
            try:
                m = netc.compile(spec(kind, seed)).fit(x, t, valid=(xv, tv))
                scores[kind, seed] = m.score(xv, tv)
                assert np.isfinite(m.history_[-1]["train_loss"])
            except NetcError as e:  # the divergence guard gave up
                assert kind == "none" and "diverged" in str(e)
                scores[kind, seed] = -np.inf
    scaled = [scores["standardize", s] for s in seeds]
    assert min(scaled) > 0.3 and max(scaled) - min(scaled) < 0.1, str(scores)
    bad = [s for s in seeds if scores["none", s] < 0]
    assert len(bad) >= len(seeds) // 2, str(scores)
    assert np.mean([max(scores["none", s], -1.0) for s in seeds]) < 0 < min(scaled), str(scores)


def test_statistics_come_from_the_training_split_only(diabetes):
    (x, t), (xv, tv) = diabetes
    m = netc.compile(spec(epochs=1)).fit(x, t, valid=(xv, tv + 1000.0))
    assert m.target_scaler.kind == "standardize"
    np.testing.assert_allclose(m.target_scaler.arrays["mean"], [t.mean()], rtol=1e-12)
    np.testing.assert_allclose(m.target_scaler.arrays["scale"], [t.std()], rtol=1e-12)


def test_predict_is_in_the_targets_units_and_predict_raw_on_the_trained_scale(diabetes, tmp_path):
    (x, t), (xv, tv) = diabetes
    m = netc.compile(spec(epochs=10)).fit(x, t)
    raw, pred = m.predict_raw(xv), m.predict(xv)
    np.testing.assert_allclose(pred, raw * t.std() + t.mean(), rtol=1e-5)
    assert abs(raw.mean()) < 1 and 100 < pred.mean() < 200
    assert m.score(xv, tv) == pytest.approx(r2_score(tv, pred[:, 0]), abs=1e-6)
    mse = float(np.mean((pred[:, 0].astype(np.float64) - tv) ** 2))
    m2 = netc.compile(spec(epochs=10)).fit(x, t, valid=(xv, tv), out=tmp_path / "run")
    # the summary's MSE and R^2 in the target's units: in memory, summary.json and the checkpoint
    for summary in (m2.summary_, json.loads((tmp_path / "run" / "summary.json").read_text()),
                    netc.load(tmp_path / "run").summary):
        assert summary["valid_mse"] == pytest.approx(mse, rel=1e-4)
        assert summary["valid_r2"] == pytest.approx(r2_score(tv, pred[:, 0]), abs=1e-4)


def test_class_targets_refuse_it_where_written():
    text = ("input x : [2]\ntarget t : class(2)\ny = dense(x, 2)\nloss = nll(softmax(y), t)\n"
            "data {\n    normalize_target = standardize\n}\n")
    with pytest.raises(SpecError) as e:
        netc.compile(text)
    assert "is a class(n) target" in e.value.message and (e.value.loc.line, e.value.loc.col) == (6, 5)
    with pytest.raises(SpecError, match="but the spec has output \\[3\\] per example"):
        netc.compile("input x : [2]\ntarget t : [1]\ny = dense(x, 3)\nloss = mean((sum(y, axis = -1) - t) ^ 2)\n"
                     "data {\n    normalize_target = standardize\n}\n")
    with pytest.raises(SpecError, match="unknown key|normalize_target"):
        netc.compile(text.replace("normalize_target = standardize", "normalize_target = whiten"))


def test_save_load_and_resume_keep_the_statistics(diabetes, tmp_path):
    (x, t), (xv, tv) = diabetes
    m = netc.compile(spec(epochs=2)).fit(x, t, out=tmp_path / "run")
    loaded = netc.load(m.save(tmp_path / "saved"))
    np.testing.assert_array_equal(loaded.predict(xv), m.predict(xv))
    np.testing.assert_array_equal(loaded.target_scaler.arrays["scale"], m.target_scaler.arrays["scale"])
    run = netc.load(tmp_path / "run")
    np.testing.assert_array_equal(run.predict(xv), m.predict(xv))
    r = netc.resume(tmp_path / "run", x, t, epochs=3)
    assert len(r.history_) == 3
    np.testing.assert_allclose(r.target_scaler.arrays["mean"], [t.mean()], rtol=1e-12)
    assert 100 < r.predict(xv).mean() < 200
    again = netc.resume(tmp_path / "run")  # finished: read from the checkpoint alone
    np.testing.assert_array_equal(again.predict(xv), r.predict(xv))


def test_onnx_prediction_agrees_with_predict(diabetes, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from netc.export_onnx import export
    (x, t), (xv, _) = diabetes
    m = netc.compile(spec(epochs=3)).fit(x, t)
    path, signature = export(m, tmp_path / "m.onnx")
    assert "prediction [N, 1]" in signature
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {"x": xv.astype(np.float32)})))
    np.testing.assert_allclose(got["prediction"], m.predict(xv), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["output"], m.predict_raw(xv), rtol=1e-5, atol=1e-5)


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write(path, ms: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for k, v in ms.items():
            z.writestr(k, v)
    return path


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a))
    return buf.getvalue()


@pytest.mark.parametrize("change, field", [
    ({"a/tnorm.scale.npy": [0.0]}, "tnorm"), ({"a/tnorm.scale.npy": [np.nan]}, "tnorm"),
    ({"a/tnorm.mean.npy": [1.0, 2.0]}, "tnorm"), ({"a/tnorm.kind.npy": "center"}, "tnorm"),
    ({"a/tnorm.scale.npy": None, "a/tnorm.mean.npy": None, "a/tnorm.kind.npy": None}, "tnorm.*"),
])
def test_damaged_target_statistics_are_refused_with_the_field(diabetes, tmp_path, change, field):
    (x, t), _ = diabetes
    saved = netc.compile(spec(epochs=1)).fit(x, t).save(tmp_path / "m")
    ms = _members(saved)
    assert {"a/tnorm.kind.npy", "a/tnorm.mean.npy", "a/tnorm.scale.npy"} <= set(ms)
    for k, v in change.items():
        if v is None:
            del ms[k]
        else:
            ms[k] = _npy(np.array(v))
    bad = _write(tmp_path / "bad.npz", ms)
    with pytest.raises(DataError) as e:
        netc.load(bad)
    assert str(bad) in str(e.value) and field in str(e.value)
    assert json.loads(str(np.load(io.BytesIO(ms["meta.json.npy"]))[()]))["spec"].count("standardize") == 2


def test_each_column_is_scaled_by_its_own_statistics_also_with_sizes_from_the_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    t = np.stack([100 + 50 * x[:, 0], 7 - 30 * x[:, 1]], axis=1)
    text = ("input x : [_]\ntarget t : [_]\nh = dense(x, 16, act = tanh)\ny = dense(h, dim(t))\n"
            "loss = mse(y, t)\ndata {\n    normalize_target = standardize\n}\ntrain {\n    epochs = 30\n}\n")
    m = netc.compile(text).fit(x, t)
    assert "target t : [2]" in m.text
    np.testing.assert_allclose(m.target_scaler.arrays["mean"], t.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.target_scaler.arrays["scale"], t.std(axis=0), rtol=1e-12)
    assert m.score(x, t) > 0.9
    assert abs(m.predict(x).mean(axis=0) - t.mean(axis=0)).max() < 5
