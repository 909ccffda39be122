"""The .net language: parsing, elaboration, names, selectors, imports, and
errors that name the place."""
from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.elaborate import ParamSet, elaborate
from netc.compiler.errors import ErrorList, SpecError
from netc.compiler.evaluate import evaluate
from netc.compiler.parse import parse

HEAD = "input x : [4]\ntarget t : class(3)\n"


def spec(text: str, file: str = "t.net", dtype: str = "float64"):
    return elaborate(parse(text, file), dtype)


def error(text: str, file: str = "t.net") -> SpecError:
    with pytest.raises(SpecError) as e:
        spec(text, file)
    return e.value


def where(err: SpecError) -> tuple[int, int]:
    return err.loc.line, err.loc.col


# ---- parsing -------------------------------------------------------------------


def test_precedence_and_transpose():
    s = spec(HEAD + "W = param([4, 4])\na = -x @ W' ^ 2 + 1 * 3\n")
    a = s.named["a"]
    # as in Python: ((-x) @ (W' ^ 2)) + 3 ; ^ binds tighter than unary minus, which binds tighter than @
    assert a.op == "add" and a.inputs[0].op == "matmul" and a.inputs[1].attr("value") == 3
    assert a.inputs[0].inputs[0].op == "neg" and a.inputs[0].inputs[1].op == "pow"
    assert a.inputs[0].inputs[1].inputs[0].op == "transpose"
    assert spec(HEAD + "b = -2 ^ 2\n").named.get("b") is None  # a number, not a tensor


def test_newlines_inside_brackets_and_comments():
    s = spec(HEAD + "h = dense(x,   # a comment\n          5,\n          act = tanh)\n\n# only a comment\ny = h\n")
    assert s.named["y"].shape == (None, 5)


def test_syntax_error_is_located_with_caret():
    e = error(HEAD + "h = dense(x, 3) +\nloss = 1\n")
    assert where(e) == (3, 18)
    text = e.render()
    assert "t.net:3:18:" in text and "expected" in text
    assert text.splitlines()[1].strip() == "h = dense(x, 3) +"
    assert text.splitlines()[2].rstrip().endswith("^")


def test_unexpected_character():
    e = error(HEAD + "h = x $ 2\n")
    assert where(e) == (3, 7) and "unexpected character '$'" in e.message


def test_unclosed_paren_at_end_of_file():
    e = error(HEAD + "h = dense(x, 3\n")
    assert e.loc.line >= 3 and "end of file" in e.message


# ---- names, functions --------------------------------------------------------------


def test_unknown_name_suggests_the_near_one():
    e = error(HEAD + "h = dense(x, 3, act = lecun_tanhh)\n")
    assert where(e) == (3, 23)
    assert "unknown name 'lecun_tanhh'" in e.message and "did you mean 'lecun_tanh'" in e.render()


def test_unknown_argument_names_the_function():
    e = error(HEAD + "h = dense(x, 3, acts = tanh)\n")
    assert "'dense' has no argument 'acts'" in e.message and "did you mean 'act'" in e.render()


def test_recursion_is_rejected():
    e = error(HEAD + "def f(a) = g(a)\ndef g(a) = f(a)\ny = f(x)\n")
    assert "recursive call" in e.message and "f -> g -> f" in e.message
    assert e.loc.line in (3, 4)


def test_functions_are_values_and_defaults_apply():
    s = spec(HEAD + "def twice(f, a, k = 2) = k * f(a)\ny = twice(tanh, x)\nz = twice(tanh, x, k = 3)\n")
    xv = np.linspace(-1, 1, 8).reshape(2, 4)
    y, z = evaluate([s.named["y"], s.named["z"]], {"x": xv})
    np.testing.assert_allclose(y, 2 * np.tanh(xv))
    np.testing.assert_allclose(z, 3 * np.tanh(xv))


def test_user_def_as_powerful_as_prelude():
    s = spec(HEAD + "def layer(x, n) {\n  W = param([dim(x), n], init = fan_in)\n  b = param([n])\n"
                    "  return lecun_tanh(x @ W + b)\n}\nh1 = layer(x, 5)\nh2 = dense(h1, 3)\n")
    assert list(s.params) == ["h1.W", "h1.b", "h2.W", "h2.b"]
    assert dict(s.params["h1.W"].attr("init"))["dist"] == "normal"


# ---- parameters and selectors ------------------------------------------------------


def test_parameters_named_by_call_path_and_disambiguated():
    s = spec(HEAD + "def shortcut(x, n) {\n  W = param([dim(x), n])\n  return x @ W\n}\n"
                    "y = dense(x, 3) + shortcut(x, 3) + shortcut(x, 3)\nV = param([3, 3])\n"
                    "z = y @ V + param([3])\n")
    assert list(s.params) == ["y.W", "y.b", "y.shortcut.W", "y.shortcut_2.W", "V", "z.param"]


def test_parameter_read_back_by_dotted_name():
    s = spec(HEAD + "h1 = dense(x, 3)\nr = h1.W'\n")
    assert s.named["r"].op == "transpose" and s.named["r"].inputs[0] is s.params["h1.W"]


def test_weights_and_selectors_in_expressions():
    s = spec(HEAD + "h1 = dense(x, 5)\nh2 = dense(h1, 3)\nr = l2(weights)\nq = l1(params(h2))\n"
                    "p = sum(params(\"h*.b\"))\n")
    vals = {"h1.W": np.ones((4, 5)), "h1.b": np.full(5, 2.0), "h2.W": np.full((5, 3), 3.0), "h2.b": np.full(3, -1.0)}
    r, q, p = evaluate([s.named["r"], s.named["q"], s.named["p"]], vals, batch=1)
    assert float(r) == 20 + 9 * 15
    assert float(q) == 3 * 15 + 3
    assert float(p) == 10 - 3


def test_selector_that_selects_nothing():
    e = error(HEAD + "h1 = dense(x, 5)\nr = l2(params(h9))\n")
    assert "'h9' selects no parameter" in e.message


# ---- shapes ----------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    e = error(HEAD + "W = param([5, 3])\ny = x @ W\n")
    assert where(e) == (4, 5)
    assert "[B, 4]" in e.message and "[5, 3]" in e.message


def test_broadcast_mismatch():
    e = error(HEAD + "h = dense(x, 5)\ny = h + dense(x, 3)\n")
    assert "[B, 5]" in e.message and "[B, 3]" in e.message and e.loc.line == 4


def test_loss_must_be_scalar():
    e = error(HEAD + "y = dense(x, 3)\nloss = y\n")
    assert "scalar" in e.message and "mean" in e.message


# ---- many errors, imports --------------------------------------------------------------


def test_independent_errors_are_all_reported():
    with pytest.raises(ErrorList) as e:
        spec(HEAD + "a = dense(x, 3, act = tanhh)\nb = foo + 1\nc = dense(a, 2)\nd = x @ x\n")
    lines = [err.loc.line for err in e.value.errors]
    assert lines == [3, 4, 6]  # c depends on a: not reported twice


def test_use_brings_definitions(tmp_path):
    (tmp_path / "layers.net").write_text("def block(x, n) = dense(x, n, act = relu)\n")
    main = tmp_path / "main.net"
    main.write_text('use "layers.net"\n' + HEAD + "h = block(x, 5)\n")
    s = elaborate(parse(main.read_text(), str(main)))
    assert list(s.params) == ["h.W", "h.b"]


def test_use_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.net").write_text('use "b.net"\n')
    (tmp_path / "b.net").write_text('use "a.net"\n')
    main = tmp_path / "main.net"
    main.write_text('use "a.net"\nuse "nope.net"\n' + HEAD)
    with pytest.raises(ErrorList) as e:
        elaborate(parse(main.read_text(), str(main)))
    messages = [err.message for err in e.value.errors]
    assert any("circular use" in m and "a.net -> b.net -> a.net" in m for m in messages)
    assert any("cannot read 'nope.net'" in m for m in messages)


# ---- blocks ----------------------------------------------------------------------------


def test_block_values_and_formulas():
    s = spec(HEAD + 'train {\n  method = sgd(lr = 0.1, momentum = 0.9)\n  lr_scale = fan_in ^ -0.5\n'
                    '  lr_scale h1.* = 2\n}\n')
    entries = {e.key + (e.selector or ""): e for e in s.blocks["train"]}
    assert entries["method"].value.name == "sgd" and entries["method"].value.kw == {"lr": 0.1, "momentum": 0.9}
    assert entries["lr_scale"].value.evaluate({"fan_in": 4.0}) == 0.5
    assert entries["lr_scaleh1.*"].value == 2


def test_unknown_block():
    e = error(HEAD + "trian {\n  batch = 3\n}\n")
    assert "unknown block 'trian'" in e.message and "did you mean 'train'" in e.render()


def test_paramset_type():
    s = spec(HEAD + "h = dense(x, 3)\nw = weights\n")
    assert "w" not in s.named  # a selector is not a tensor
    assert isinstance(ParamSet((s.params["h.W"],)), ParamSet)


def test_shape_mismatch_names_the_expressions():
    e = error(HEAD + "h = dense(x, 5)\nz = dense(x, 3)\ny = h + z\n")
    assert "left: `h` is [B, 5]" in e.message and "right: `z` is [B, 3]" in e.message


def test_freeze_selector_keeps_a_group_fixed():
    import netc
    m = netc.compile(HEAD + "h1 = dense(x, 5, act = tanh)\ny = dense(h1, 3)\nloss = nll(softmax(y), t)\n"
                            "train {\n    method = sgd(lr = 0.5)\n    freeze h1 = true\n}\n")
    before = {k: v.copy() for k, v in m.params.items()}
    rng = np.random.default_rng(0)
    m.fit(rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, 40), epochs=2)
    assert all((m.params[k] == before[k]).all() for k in ("h1.W", "h1.b"))
    assert not (m.params["y.W"] == before["y.W"]).all()


def test_slicing_a_tensor_takes_features_of_the_last_axis():
    s = spec(HEAD + "a = x[1:3]\nb = x[:2] * 2\n")
    xv = np.arange(8.0).reshape(2, 4)
    a, b = evaluate([s.named["a"], s.named["b"]], {"x": xv})
    np.testing.assert_array_equal(a, xv[:, 1:3])
    np.testing.assert_array_equal(b, 2 * xv[:, :2])
    e = error(HEAD + "a = x[1]\n")
    assert "cannot index a tensor [B, 4]" in e.message and "x[lo:hi]" in e.message


def test_independent_syntax_errors_are_all_reported():
    with pytest.raises(ErrorList) as e:
        spec(HEAD + "h = dense(x, 5,, act = tanh)\ny = dense(h 3)\nloss = nll(softmax(y), t)\nz = = 2\n")
    assert [(err.loc.line, err.loc.col) for err in e.value.errors] == [(3, 16), (4, 13), (6, 5)]
    assert all(err.source_line() is not None for err in e.value.errors)



def test_a_located_error_shows_control_characters_escaped_with_the_caret_under_them():
    """A spec's text and the names it quotes reach the terminal through error messages:
    controls (clear screen, bell, a title) are shown as escapes, never sent, and the caret
    still points at the offending text in the escaped line."""
    import netc
    from netc.compiler.errors import NetcError, visible
    spec = 'input x : [3]\nz = "\x1b[2J" + \x07\n'
    with pytest.raises(NetcError) as e:
        netc.compile(spec)
    text = e.value.render()
    assert all(c.isprintable() or c == "\n" for c in text), repr(text)
    line, caret = text.splitlines()[1:3]
    assert line == '    z = "\\x1b[2J" + \\x07' and caret.index("^") == line.index("\\x07") and caret.count("^") == 4
    assert visible("a\tb\nc\x9b\u202e") == "a\tb\nc\\x9b\\u202e"
