"""Sizes from the data: `input x : [_]`, `target t : class(_)` / `[_]` (netc/dims.py,
compiler/free_dims.py). One spec trains on datasets of different widths and class
counts; `netc check` shows the sizes as ?; what a run stores is the bound spec."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netc
from netc import DataError, SpecError
from netc.cli import main

SPEC = """\
input x : [_]
target t : class(_)

h = dense(x, 16, act = tanh)
y = dense(h, classes(t))
loss = nll(softmax(y), t)

train {
    method = sgd(lr = 0.1)
    batch = 16
    epochs = 15
    seed = 3
}
"""

REGRESSION = """\
input x : [_]
target t : [_]
h = dense(x, 16, act = tanh)
y = dense(h, dim(t))
loss = mse(y, t)
train {
    method = sgd(lr = 0.05)
    batch = 16
    epochs = 20
}
"""


def blobs(n: int, features: int, classes: int, seed: int):
    """Separable classes: each a Gaussian blob around its own centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, features))
    t = rng.integers(0, classes, n)
    return centres[t] + rng.normal(0, 1, (n, features)), t


def test_one_spec_trains_on_two_datasets_of_different_widths_and_class_counts():
    for features, classes in ((5, 3), (12, 6)):
        x, t = blobs(300, features, classes, seed=features)
        m = netc.compile(SPEC).fit(x, t)
        assert m.program.spec.inputs["x"].shape[1:] == (features,)
        assert m.program.spec.targets["t"].attr("classes") == classes
        assert m.predict_proba(x).shape == (300, classes)
        assert m.score(x, t) > 0.9  # chance is 1/classes
        assert f"input x : [{features}]" in m.text and f"class({classes})" in m.text


def test_real_target_width_from_the_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    t = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=1)
    m = netc.compile(REGRESSION).fit(x, t)
    assert m.predict(x).shape == (200, 2)
    assert m.score(x, t) > 0.8


def test_check_shows_the_data_sizes_as_unknown(tmp_path, capsys):
    p = tmp_path / "free.net"
    p.write_text(SPEC)
    assert main(["check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "input  x [B, ?]" in out and "target t class(?)" in out
    assert "h.W              [?, 16]" in out and "h.b              [16]" in out
    assert "y.W              [16, ?]" in out
    assert "memory: estimated once the data gives the sizes" in out


def test_check_still_finds_errors_that_do_not_depend_on_the_data():
    with pytest.raises(SpecError) as e:
        netc.compile(SPEC.replace("h = dense(x, 16, act = tanh)", "h = dense(x, 16, act = tanhh)"))
    assert "unknown name 'tanhh'" in e.value.message and e.value.loc.line == 4
    assert "data" not in e.value.message


def test_a_shape_that_holds_for_some_sizes_only_is_located():
    text = SPEC.replace("h = dense(x, 16, act = tanh)", "W = param([13, 16])\nh = tanh(x @ W)")
    with pytest.raises(SpecError) as e:
        netc.compile(text)
    msg = e.value.message
    assert msg.startswith("cannot be checked until the data gives the sizes written `_` (at 1:12, 2:18)")
    assert "[B, ?]" in msg and "101" not in msg and e.value.loc.line == 5
    bound = text.replace("[_]", "[13]")  # the fix the hint names: write the size
    netc.compile(bound.replace("class(_)", "class(3)"))


def test_underscore_elsewhere_is_refused_where_written():
    with pytest.raises(SpecError) as e:
        netc.compile(SPEC.replace("dense(x, 16,", "dense(x, _,"))
    assert "only in a declaration" in e.value.message and (e.value.loc.line, e.value.loc.col) == (4, 14)


def test_class_count_is_the_largest_label_plus_one():
    x, t = blobs(100, 3, 3, seed=1)
    t[t == 1] = 4  # labels 0, 2, 4: five classes, two never seen
    m = netc.compile(SPEC, train={"epochs": 1}).fit(x, t)
    assert m.program.spec.targets["t"].attr("classes") == 5


@pytest.mark.parametrize("bad, why", [(-1, "cannot be a class"), (1.5, "cannot be a class"),
                                      (np.nan, "nan of 't'"), (2 ** 21, "would make 2,097,153 classes")])
def test_labels_that_do_not_fit_the_rule_are_refused_with_their_record(bad, why):
    x, t = blobs(50, 3, 3, seed=2)
    t = t.astype(np.float64)
    t[7] = bad
    with pytest.raises(DataError) as e:
        netc.compile(SPEC).fit(x, t)
    assert "record 7" in e.value.message and why in e.value.message


def test_one_class_is_refused():
    x, _ = blobs(20, 3, 3, seed=2)
    with pytest.raises(DataError, match="needs at least two classes"):
        netc.compile(SPEC).fit(x, np.zeros(20, np.int64))


def test_data_that_does_not_fit_the_declared_axes_or_the_bound_sizes_is_named():
    t = np.arange(10) % 2
    text = SPEC.replace("input x : [_]", "input x : [_, 4]")
    with pytest.raises(DataError) as e:  # examples are rows of features: one axis
        netc.compile(text.replace("dense(x, 16", "dense(sum(x, axis = 1), 16")).fit(np.ones((10, 12)), t)
    assert "fit(x, t): examples have shape [12], but input 'x' declares 2 axes (<spec>:1:12)" in e.value.message
    m = netc.compile(SPEC, train={"epochs": 1}).fit(np.ones((10, 5)), t)  # bound: [5], class(2)
    with pytest.raises(DataError) as e:
        m.fit(np.ones((10, 6)), t)
    assert "fit(x, t): examples have (6,) features, but input 'x' was bound to [5] by the first fit" in e.value.message
    with pytest.raises(DataError) as e:
        m.fit(np.ones((10, 5)), t + 1)
    assert "record 1: label 2 is outside class(2)" in e.value.message


def test_train_with_data_block_stores_the_bound_spec_for_resume_load_and_predict(tmp_path):
    x, t = blobs(120, 7, 4, seed=5)
    np.savez(tmp_path / "d.npz", x=x, t=t)
    xv, tv = blobs(40, 7, 4, seed=5)
    np.savez(tmp_path / "v.npz", x=xv, t=tv)
    spec = tmp_path / "free.net"
    spec.write_text(SPEC.replace("epochs = 15", "epochs = 2")
                    + 'data {\n    train = npz("d.npz")\n    valid = npz("v.npz")\n    normalize = standardize\n}\n')
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run), "--no-progress"]) == 0
    record = json.loads((run / "run.json").read_text())
    assert "_" not in (run / "spec.net").read_text().split("train {")[0]
    m = netc.load(run)
    assert "input x : [7]" in m.text and "class(4)" in m.text and "_" not in m.text.split("train {")[0]
    assert m.predict(x).shape == (120,)
    assert record["data"] == "spec"
    r = netc.resume(run, epochs=3)
    assert r.program.spec.targets["t"].attr("classes") == 4 and len(r.history_) == 3


def test_validation_labels_beyond_the_bound_count_name_their_record(tmp_path):
    x, t = blobs(60, 3, 3, seed=6)
    tv = t[:20].copy()
    tv[4] = 3  # training labels go to 2: class(3)
    with pytest.raises(DataError) as e:
        netc.compile(SPEC).fit(x, t, valid=(x[:20], tv))
    assert "record 4" in e.value.message and "class(3)" in e.value.message


def test_unbound_model_cannot_predict_before_fit():
    m = netc.compile(SPEC)
    with pytest.raises(netc.NetcError, match="fit it first"):
        m.predict(np.zeros((2, 3)))


def test_fmt_keeps_the_underscores(tmp_path, capsys):
    p = tmp_path / "free.net"
    p.write_text(SPEC)
    assert main(["fmt", str(p)]) == 0
    out = capsys.readouterr().out
    assert "input x : [_]" in out and "target t : class(_)" in out


def test_sklearn_classifier_with_a_free_spec():
    pytest.importorskip("sklearn")
    from netc.sklearn import NetcClassifier
    for features, classes in ((4, 2), (9, 5)):
        x, t = blobs(200, features, classes, seed=features)
        c = NetcClassifier(SPEC, epochs=10).fit(x, t)
        assert c.score(x, t) > 0.9


def test_input_width_is_counted_after_the_input_normalization():
    x, t = blobs(150, 8, 3, seed=7)
    m = netc.compile(SPEC + "data {\n    normalize = pca(dims = 3)\n}\n", train={"epochs": 1}).fit(x, t)
    assert m.program.spec.inputs["x"].shape[1:] == (3,)
    assert m.predict(x).shape == (150,)


def test_commands_that_need_sizes_bind_them_from_the_data_block_or_say_why(tmp_path, capsys):
    x, t = blobs(60, 5, 3, seed=8)
    np.savez(tmp_path / "d.npz", x=x, t=t)
    bare = tmp_path / "bare.net"
    bare.write_text(SPEC)
    with_data = tmp_path / "data.net"
    with_data.write_text(SPEC + 'data {\n    train = npz("d.npz")\n}\n')
    assert main(["compile", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "netc compile needs concrete sizes" in err and "bare.net:1:12" in err
    assert main(["compile", str(with_data)]) == 0
    assert "[16, 3]" in capsys.readouterr().out  # y.W, sized by the data's 3 classes
    assert main(["gradcheck", str(with_data)]) == 0


def test_a_model_bound_from_the_data_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from netc.export_onnx import export
    x, t = blobs(100, 6, 4, seed=9)
    m = netc.compile(SPEC, train={"epochs": 2}).fit(x, t)
    path, signature = export(m, tmp_path / "m.onnx")
    assert "x [N, 6]" in signature and "labels [N]" in signature
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["labels"], {"x": x.astype(np.float32)})[0]
    np.testing.assert_array_equal(got, m.predict(x))


def test_sizes_derived_from_the_stand_ins_are_written_as_unknown_too():
    """An error that depends on the data's sizes shows no stand-in size, nor one derived
    from them (a product of two: the entries per example), only `?`."""
    from netc.compiler.free_dims import PROBES
    spec = ("input x : [_, _]\ntarget t : class(3)\nh = reshape(x, [dim(x)])\ny = dense(h, 3)\n"
            "loss = nll(softmax(y), t)\n")
    with pytest.raises(SpecError) as e:
        netc.compile(spec, backend="numpy")
    text = str(e.value)
    assert "cannot reshape [B, ?, ?] (? entries per example) to [?]" in text, text
    stand_ins = {a * b for run in PROBES for a in run for b in run} | {p for run in PROBES for p in run}
    assert not any(str(n) in text for n in stand_ins), text


@pytest.mark.parametrize("size, shape", [("abs(10)", (10,)), ("[abs(2), 3]", (2, 3)), ("class(3)", ())])
def test_a_declared_size_may_be_any_expression_not_only_class(size, shape):
    """Only class(...) is a class count; any other call in a declaration is a size expression
    (a TypeError inside the elaborator before: an internal error found by the fuzzer)."""
    m = netc.compile(f"input x : {size}\ntarget t : {size}\ny = x\nloss = sum(y)\n", backend="numpy") \
        if size != "class(3)" else None
    if m is not None:
        assert m.program.spec.inputs["x"].shape[1:] == shape == m.program.spec.targets["t"].shape[1:]
    m = netc.compile(f"input x : [4]\ntarget t : {size}\ny = dense(x, 3)\nloss = sum(y)\n", backend="numpy")
    assert m.program.spec.targets["t"].shape[1:] == shape


def test_a_second_fit_of_other_width_says_the_first_fit_bound_the_size():
    """The user wrote [_]: a second fit (or predict) with another width is told the first
    fit's data bound it, not that the input 'is declared [3]'."""
    m = netc.compile("input x : [_]\ntarget t : class(_)\ny = dense(x, classes(t))\nloss = nll(softmax(y), t)\n",
                     backend="numpy")
    m.fit(np.zeros((8, 3), np.float32), np.arange(8) % 3, epochs=1)
    for attempt in (lambda: m.fit(np.zeros((8, 5), np.float32), np.arange(8) % 3, epochs=1),
                    lambda: m.predict(np.zeros((2, 5), np.float32))):
        with pytest.raises(DataError) as e:
            attempt()
        assert "was bound to [3] by the first fit's data" in str(e.value), str(e.value)
    fixed = netc.compile("input x : [3]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(softmax(y), t)\n",
                         backend="numpy")
    with pytest.raises(DataError, match=r"is declared \[3\]"):
        fixed.fit(np.zeros((8, 5), np.float32), np.arange(8) % 3, epochs=1)
