"""ONNX export (netc/export_onnx.py, `netc export`): the exported predictor, run by
onnxruntime, agrees with netc's predict_raw / predict_proba / predict to 1e-5,
input normalization included; ops without a translation are refused with the op
and its .net line; the command's exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.compiler.errors import NetcError
from netc.runtime import normalize
from problems import make_problem

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'netc[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the export tests run models with onnxruntime")

from netc import export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5

TINY = """\
input  x : [20]
target t : class(3)
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
data {
    normalize = standardize
}
train {
    method = sgd(lr = 0.1, momentum = 0.5)
    batch  = 10
    epochs = 2
}
"""

# nearly every op a predict graph can hold, in one network (dropout disappears: its expected value)
OPS_SPEC = """\
input x : [12]
target t : class(3)
h = dense(x, 8, act = tanh)
a = softplus(h[0:4]) + sqrt(abs(h[4:8])) - log1p(h[0:4] ^ 2) * expm1(clip(h[4:8], -1, 0.5))
b = concat(a, sigmoid(h), axis = -1)
r = reshape(b, [3, 4])
s = sum(r, axis = 1) + mean(r, axis = 1) + max(r, axis = 1) - min(r, axis = 1)
u = pad(s, 1, 2) + logsumexp(s, axis = -1, keepdims = true) * 0.5 + where(gt(x[0:7], 0), x[0:7], -x[0:7])
v = log_softmax(u) + exp(-square(u)) + maximum(u, 0.1) + minimum(u, 0.2) + dropout(u, 0.3) / (1 + abs(u))
y = dense(v, 3)
loss = nll(softmax(y), t)
"""


def session(model):
    return ort.InferenceSession(export_onnx.to_onnx(model).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def run(model, x) -> dict:
    s = session(model)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x})))


def agree(model, x) -> dict:
    """The exported model's outputs, checked against netc's own."""
    out = run(model, x)
    np.testing.assert_allclose(out["output"], model.predict_raw(x), atol=TOL, rtol=TOL)
    if "probabilities" in out:
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), atol=TOL, rtol=TOL)
    if "labels" in out:
        np.testing.assert_array_equal(out["labels"], model.predict(x))
    return out


def test_trained_classifier_with_standardize_agrees(tmp_path):
    x, t = make_problem(n=120, features=20, classes=3)
    x = x * 30 + 50  # far from standardized: the normalization must be in the export
    m = netc.compile(TINY).fit(x, t)
    assert m.normalizer.kind == "standardize"
    m.save(tmp_path / "run")
    loaded = netc.load(tmp_path / "run")
    path, sig = export_onnx.export(loaded, tmp_path / "out" / "model.onnx")
    assert sig == ("x [N, 20] float32 -> output [N, 3] float32, probabilities [N, 3] float32, "
                   "labels [N] int64")
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x})))
    np.testing.assert_allclose(got["output"], m.predict_raw(x), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got["probabilities"], m.predict_proba(x), atol=TOL, rtol=TOL)
    np.testing.assert_array_equal(got["labels"], m.predict(x))
    assert np.mean(got["labels"] == t) > 0.8  # it learned, and the export kept it
    assert len(s.run(None, {"x": x[:0]})[0]) == 0  # the batch dimension is symbolic, even 0


def test_shipped_mnist_mlp_untrained_agrees():
    m = netc.compile(ROOT / "specs" / "mnist_mlp.net")
    x = np.random.default_rng(0).random((7, 784)).astype(np.float32)
    out = agree(m, x)
    assert set(out) == {"output", "probabilities", "labels"}


@pytest.mark.parametrize("spec", ["mnist_500_150.net", "denoising_cae.net", "transformed.net"])
def test_other_shipped_specs_agree(spec):
    m = netc.compile(ROOT / "specs" / spec)
    agree(m, np.random.default_rng(1).random((4, 784)).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_translated_op_agrees(dtype):
    m = netc.compile(OPS_SPEC, dtype=dtype)
    x = np.random.default_rng(2).normal(size=(6, 12)).astype(dtype)
    agree(m, x)


@pytest.mark.parametrize("kind", ["center", "pca(dims = 5)", "whiten(eps = 0.01)", "zca", "[log, standardize]",
                                  "[sqrt, center]"])
def test_normalizations_agree(kind):
    x, _ = make_problem(n=80, features=12, classes=3, seed=3)
    x = x * 4 + 1
    width = 5 if kind.startswith("pca") else 12
    m = netc.compile(TINY.replace("[20]", f"[{width}]"))
    m.normalizer = normalize.fit(kind, x)
    agree(m, x[:9])


def test_uniformize_is_refused_with_the_reason():
    x, _ = make_problem(n=50, features=20)
    m = netc.compile(TINY)
    m.normalizer = normalize.fit("uniformize", x)
    with pytest.raises(NetcError, match="normalization 'uniformize' has no ONNX translation"):
        export_onnx.to_onnx(m)


@pytest.mark.parametrize("head", ["act = sigmoid", "act = identity"])
def test_one_sigmoid_output_gives_two_probability_columns(head):
    loss = "cross_entropy(y, one_hot(t, 2)[1:2])" if head == "act = sigmoid" else \
        "cross_entropy(sigmoid(y), one_hot(t, 2)[1:2])"
    m = netc.compile(f"input x : [20]\ntarget t : class(2)\ny = dense(x, 1, {head})\nloss = {loss}\n")
    x, _ = make_problem(n=30, classes=2)
    out = agree(m, x)
    assert out["probabilities"].shape == (30, 2)


def test_regression_output_has_no_probabilities():
    m = netc.compile("input x : [4]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n")
    out = agree(m, np.ones((3, 4), np.float32))
    assert set(out) == {"output"}


def test_an_op_without_translation_is_refused_with_the_op_and_line(monkeypatch):
    monkeypatch.delitem(export_onnx.TRANSLATE, "tanh")
    m = netc.compile(TINY)
    with pytest.raises(NetcError) as e:
        export_onnx.to_onnx(m)
    text = e.value.render()
    assert "op 'tanh' has no ONNX translation" in text
    assert e.value.loc is not None and e.value.loc.line == 3
    assert "h = dense(x, 16, act = tanh)" in text  # the .net line, with a caret


def test_cli_export_and_exit_codes(tmp_path, capsys):
    m = netc.compile(TINY)
    m.save(tmp_path / "run")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(out)]) == 0
    assert f"wrote {out}: x [N, 20]" in capsys.readouterr().out
    x = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(s.run(["output"], {"x": x})[0], m.predict_raw(x), atol=TOL, rtol=TOL)
    assert main(["export", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no checkpoint here" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "run")])  # --out is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "run"), "--format", "tflite", "--out", str(out)])
    assert e.value.code == 2


def test_missing_onnx_says_how_to_install(tmp_path):
    """Without the onnx package (hidden here), the command exits 2 and names the extra."""
    netc.compile(TINY).save(tmp_path / "run")
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from netc.cli import main\n"
            f"sys.exit(main(['export', {str(tmp_path / 'run')!r}, '--out', {str(tmp_path / 'm.onnx')!r}]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "pip install 'netc[onnx]'" in p.stderr
    assert not (tmp_path / "m.onnx").exists()
