"""The `netc` command line: check, compile, train, gradcheck, doc, exit codes and
error rendering (file:line:col, the source line, a caret, never a traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main
from problems import make_problem

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.net"))

TINY = """\
# a tiny 20-16-3 classifier on a generated, nearly separable problem
input  x : [20]
target t : class(3)

h = dense(x, 16, act = tanh)
y = dense(h, 3)

loss = nll(softmax(y), t)

data {
    train = npz("tiny.npz")[0:150]
    valid = npz("tiny.npz")[150:200]
    test  = npz("tiny.npz", x = "x", t = "t")[150:200]
    normalize = standardize
}

train {
    method = sgd(lr = 0.1, momentum = 0.5)
    batch  = 10
    epochs = 3
    seed   = 4
}
"""



@pytest.fixture
def tiny(tmp_path) -> Path:
    x, t = make_problem()
    np.savez(tmp_path / "tiny.npz", x=x, t=t)
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    return spec


def run_netc(*args, cwd=None, timeout=120):
    """The real console entry point in a subprocess (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "netc.cli", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------------- check

@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_check_shipped_specs(spec, capsys):
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"{spec}: ok" in out
    assert "input  x [B, 784]" in out
    if "target t : class(10)" in spec.read_text():
        assert "target t class(10)" in out
    assert "parameters" in out


def test_check_tiny(tiny, capsys):
    assert main(["check", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "h.W" in out and "[20, 16]" in out and "y.b" in out
    assert "4 parameters, 387 values" in out  # 20*16 + 16 + 16*3 + 3


HEAD = "input x : [4]\ntarget t : class(2)\n"
LOSS = "loss = nll(softmax(y), t)\n"

# (id, spec text, line, col, message pattern, hint pattern or None)
BAD = [
    ("syntax", HEAD + "y = dense(x, 2) +* 3\n" + LOSS, 3, 18, r"unexpected '\*'", None),
    ("unknown-name", HEAD + "h = dense(x, 3, act = rleu)\ny = dense(h, 2)\n" + LOSS,
     3, 23, r"unknown name 'rleu'", r"did you mean 'relu'\?"),
    ("bad-train-key", HEAD + "y = dense(x, 2)\n" + LOSS + "train {\n    batchsize = 3\n}\n",
     6, 5, r"unknown key 'batchsize'", r"did you mean 'batch'\?"),
    ("bad-method-arg", HEAD + "y = dense(x, 2)\n" + LOSS + "train {\n    method = sgd(lr = 0.1, momentun = 0.9)\n}\n",
     6, 14, r"momentun", r"did you mean 'momentum'\?"),
    ("matmul-shapes", HEAD + "W = param([5, 2])\ny = x @ W\n" + LOSS, 4, 5,
     r"shapes \[B, 4\] and \[5, 2\] do not match in @", None),
    ("wrong-argument-name", HEAD + "y = dense(x, 2, activation = relu)\n" + LOSS, 3, 5,
     r"'dense' has no argument 'activation'", r"act"),
    ("recursion", HEAD + "def f(a) = g(a)\ndef g(a) = f(a)\ny = dense(f(x), 2)\n" + LOSS, 4, 12,
     r"recursive call to 'f'", None),
    ("missing-use", 'use "nothere.net"\n' + HEAD + "y = dense(x, 2)\n" + LOSS, 1, 1,
     r"cannot read 'nothere.net'", None),
    ("loss-not-scalar", HEAD + "y = dense(x, 2)\nloss = y * 2\n", 4, 8, r"the loss must be a scalar", None),
]


def _assert_rendered(err: str, name: str, text: str, line: int, col: int, message: str, hint):
    lines = err.splitlines()
    head = f"{name}:{line}:{col}: "
    assert lines and lines[0].startswith(head), err
    assert __import__("re").search(message, lines[0]), err
    src = text.splitlines()[line - 1]
    assert lines[1] == "    " + src, err
    caret = lines[2]
    assert caret.strip() and set(caret.strip()) == {"^"}, err
    assert caret.index("^") == 4 + col - 1, err
    if hint:
        assert any("hint:" in l and __import__("re").search(hint, l) for l in lines[3:]), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_check_malformed_in_process(case, tmp_path, capsys, monkeypatch):
    name, text, line, col, message, hint = case
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.net").write_text(text)
    assert main(["check", "bad.net"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_rendered(captured.err, "bad.net", text, line, col, message, hint)


@pytest.mark.parametrize("case", [BAD[1], BAD[5]], ids=["unknown-name", "wrong-argument-name"])
def test_check_malformed_subprocess(case, tmp_path):
    name, text, line, col, message, hint = case
    (tmp_path / "bad.net").write_text(text)
    rc, out, err = run_netc("check", "bad.net", cwd=tmp_path)
    assert rc == 2
    _assert_rendered(err, "bad.net", text, line, col, message, hint)


def test_check_error_in_used_file_names_that_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.net").write_text("def layer(x) = dense(x, 3, act = tahn)\n")
    (tmp_path / "main.net").write_text('use "lib.net"\n' + HEAD + "y = dense(layer(x), 2)\n" + LOSS)
    assert main(["check", "main.net"]) == 2
    err = capsys.readouterr().err
    assert "lib.net:1:34: unknown name 'tahn'" in err
    assert "def layer(x) = dense(x, 3, act = tahn)" in err  # the used file's line, not main.net's
    assert "did you mean 'tanh'?" in err


def test_check_reports_independent_errors_together(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = HEAD + "a = dense(x, 3, act = rleu)\nb = dense(x, 3, init = glorrot)\ny = dense(x, 2)\n" + LOSS
    (tmp_path / "two.net").write_text(text)
    assert main(["check", "two.net"]) == 2
    err = capsys.readouterr().err
    assert "two.net:3:23: unknown name 'rleu'" in err
    assert "two.net:4:24: unknown name 'glorrot'" in err
    assert "Traceback" not in err


def test_check_unknown_schedule_points_at_value(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = HEAD + "y = dense(x, 2)\n" + LOSS + "train {\n    schedule = inverse_tim\n}\n"
    (tmp_path / "bad.net").write_text(text)
    assert main(["check", "bad.net"]) == 2
    _assert_rendered(capsys.readouterr().err, "bad.net", text, 6, 16, r"unknown schedule 'inverse_tim'",
                     r"inverse_time")


@pytest.mark.parametrize("command", ["check", "compile", "train", "fmt"])
def test_spec_not_utf8_is_a_located_error(tmp_path, command):
    spec = tmp_path / "latin.net"
    spec.write_bytes(b"input x : [8]\n# caf\xe9\ntarget t : class(4)\n")
    extra = ["--out", tmp_path / "run"] if command == "train" else []
    rc, out, err = run_netc(command, spec, *extra)
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"{spec}:2:6: ") and "not UTF-8" in err and "0xe9" in err
    assert not (tmp_path / "run").exists()


def test_missing_spec_file_exits_2(tmp_path):
    rc, out, err = run_netc("check", tmp_path / "nope.net")
    assert rc == 2
    assert "nope.net" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["frobnicate"], ["train"], ["train", "x.net", "--epochs", "abc"],
                                  ["compile", "x.net", "--emit", "llvm"], ["doc", "nonsense"],
                                  ["gradcheck", "x.net", "--tol"]])
def test_bad_command_line_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "netc: error:" in err and "Traceback" not in err


def test_bad_command_line_subprocess():
    rc, out, err = run_netc("train", "x.net", "--epochs", "abc")
    assert rc == 2
    assert "invalid int value" in err and "Traceback" not in err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "check" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"netc {netc.__version__}"


# ---------------------------------------------------------------------------- compile

def _graph_nodes(text: str) -> int:
    return sum(1 for l in text.splitlines() if l.startswith("%"))


def test_compile_graph_stages(tiny, capsys):
    counts = {}
    for stage in ("elaborate", "simplify", "differentiate", "simplify_grads"):
        assert main(["compile", str(tiny), "--emit", "graph", "--after", stage]) == 0
        out = capsys.readouterr().out
        assert "roots: %" in out
        counts[stage] = _graph_nodes(out)
    assert counts["elaborate"] > 5
    assert counts["elaborate"] < counts["simplify_grads"]
    assert counts["elaborate"] < counts["differentiate"]


def test_compile_graph_default_has_params_and_locations(tiny, capsys):
    assert main(["compile", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "param(" in out and "name=h.W" in out
    assert "matmul(" in out
    assert f"# {tiny}:2:1" in out  # nodes remember where they came from: the input declaration,
    assert f"# {tiny}:5:5" in out  # the user's `h = dense(...)` call for the layer's arithmetic
    assert "<prelude>" not in out  # (and its derivative and update), never the prelude's line


def test_compile_numpy(tiny, capsys):
    assert main(["compile", str(tiny), "--emit", "numpy"]) == 0
    src = capsys.readouterr().out
    assert "def train_step(" in src and "np.matmul" in src and "out=" in src
    compile(src, "<generated>", "exec")  # it is valid Python
    for fn in ("evaluate", "predict"):
        assert main(["compile", str(tiny), "--emit", "numpy", "--function", fn]) == 0
        src = capsys.readouterr().out
        assert f"def {fn}(" in src and "np.matmul" in src


def test_compile_numpy_predict_without_loss(tmp_path, capsys):
    spec = tmp_path / "fwd.net"
    spec.write_text("input x : [3]\ny = dense(x, 2)\n")
    assert main(["compile", str(spec), "--emit", "numpy", "--function", "predict"]) == 0
    assert "def predict(" in capsys.readouterr().out
    # no loss: there is no training step, and that is a user error, not a crash
    assert main(["compile", str(spec), "--emit", "numpy", "--function", "train_step"]) == 2
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- train

SUMMARY_KEYS = {"spec", "epochs", "train_loss", "valid_error", "test_error", "seconds",
                "examples_per_second"}


def test_train_tiny_writes_run_directory(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--epochs", "2", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert SUMMARY_KEYS <= set(summary)
    assert summary["epochs"] == 2 and summary["spec"] == str(tiny)
    assert np.isfinite(summary["train_loss"])
    assert 0 <= summary["valid_error"] <= 1 and 0 <= summary["test_error"] <= 1
    assert summary["valid_error"] < 0.2  # the blobs are nearly separable
    assert summary["seconds"] > 0 and summary["examples_per_second"] > 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["age"] for r in rows] == [150, 300]
    assert all("train_loss" in r and "valid_error" in r and "lr" in r for r in rows)
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    with np.load(out / "params.npz", allow_pickle=False) as z:
        names = set(z.files)
        assert "a/state/h.W" in names and z["a/state/h.W"].shape == (20, 16)
    meta = json.loads((out / "model.json").read_text())
    assert meta["epoch"] == 2 and meta["final"] is True

    m1, m2 = netc.load(out), netc.load(out)
    x, t = make_problem()
    p1, p2 = m1.predict_raw(x), m2.predict_raw(x)
    assert p1.shape == (200, 3)
    np.testing.assert_array_equal(p1, p2)
    assert 1 - m1.score(x[150:], t[150:]) == pytest.approx(summary["test_error"])


def test_cli_training_equals_api_training(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    m = netc.compile(tiny)
    summary = m.fit(epochs=2).summary_
    loaded = netc.load(out)
    for k in m.state:
        np.testing.assert_array_equal(loaded.state[k], m.state[k])
    x, _ = make_problem()
    np.testing.assert_array_equal(loaded.predict_raw(x), m.predict_raw(x))
    assert json.loads((out / "summary.json").read_text())["valid_error"] == summary["valid_error"]


def test_train_seed_override_is_reproducible(tiny, tmp_path, capsys):
    params = []
    for k, seed in enumerate([7, 7, 8]):
        out = tmp_path / f"run{k}"
        assert main(["train", str(tiny), "--out", str(out), "--epochs", "1", "--seed", str(seed),
                     "--no-progress"]) == 0
        assert json.loads((out / "summary.json").read_text())["seed"] == seed
        with np.load(out / "params.npz", allow_pickle=False) as z:
            params.append(z["a/state/h.W"].copy())
    capsys.readouterr()
    np.testing.assert_array_equal(params[0], params[1])
    assert not np.array_equal(params[0], params[2])


def test_train_tiny_subprocess_and_debug(tiny, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = run_netc("train", tiny, "--out", out, "--epochs", "1", "--debug", "--no-progress", "--json")
    assert rc == 0, err
    assert np.isfinite(json.loads(stdout)["train_loss"])
    assert "Traceback" not in err


def test_train_bad_labels_is_a_user_error(tmp_path, capsys):
    x, t = make_problem()
    t[17] = 5
    np.savez(tmp_path / "tiny.npz", x=x, t=t)
    (tmp_path / "tiny.net").write_text(TINY)
    assert main(["train", str(tmp_path / "tiny.net"), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "record 17" in err and "label 5" in err and "class(3)" in err
    assert "Traceback" not in err


def test_train_missing_data_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "tiny.net").write_text(TINY)  # no tiny.npz next to it
    assert main(["train", str(tmp_path / "tiny.net"), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tiny.npz" in err and "no such file" in err and "Traceback" not in err


def test_train_shipped_mnist_smoke(tmp_path):
    out = tmp_path / "mnist"
    rc, stdout, err = run_netc("train", ROOT / "specs" / "mnist_mlp.net", "--limit", "500", "--epochs", "1",
                               "--out", out, "--no-progress")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["age"] == 500
    assert np.isfinite(summary["train_loss"])
    assert summary["test_error"] < 0.9  # better than chance after 500 examples
    m = netc.load(out)
    assert set(m.params) == {"h1.W", "h1.b", "h2.W", "h2.b", "y.W", "y.b"}


# ---------------------------------------------------------------------------- gradcheck

GRADCHECK_XFAIL: dict = {}


@pytest.mark.parametrize("spec", [pytest.param(s, marks=GRADCHECK_XFAIL.get(s.name, ())) for s in SPECS],
                         ids=lambda p: p.name)
def test_gradcheck_shipped_specs(spec, capsys):
    rc = main(["gradcheck", str(spec), "--examples", "2", "--entries", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[-1].startswith("ok: worst relative error")


def test_gradcheck_tiny(tiny, capsys):
    assert main(["gradcheck", str(tiny), "--examples", "3", "--entries", "10"]) == 0
    out = capsys.readouterr().out
    for name in ("h.W", "h.b", "y.W", "y.b"):
        assert name in out
    assert "FAIL" not in out


def test_gradcheck_without_data_block(tmp_path, capsys):
    spec = tmp_path / "nodata.net"
    spec.write_text("input x : [6]\ntarget t : class(4)\nh = dense(x, 5, act = softsign)\n"
                    "y = dense(h, 4, act = sigmoid)\nloss = cross_entropy(y, one_hot(t)) + 0.01 * l1(weights)\n")
    assert main(["gradcheck", str(spec), "--examples", "3", "--entries", "10"]) == 0
    capsys.readouterr()


def _wrong_tanh(monkeypatch):
    """tanh's derivative rule off by 10%: what gradcheck is there to catch."""
    import dataclasses

    from netc.compiler import ops
    tanh = ops.OPS["tanh"]
    wrong = dataclasses.replace(tanh, grad=lambda G, n, g: tuple(G("mul", d, 1.1) for d in tanh.grad(G, n, g)))
    monkeypatch.setitem(ops.OPS, "tanh", wrong)


def test_gradcheck_exit_3_on_a_wrong_derivative(tiny, capsys, monkeypatch):
    # a derivative rule that is off by 10% must be caught: a failed check (exit 3) and a FAILED line
    _wrong_tanh(monkeypatch)
    text = tiny.read_text()
    assert "tanh" in text, "the tiny spec must use tanh for this test"
    assert main(["gradcheck", str(tiny), "--examples", "2", "--entries", "5"]) == 3
    out = capsys.readouterr().out
    assert "FAILED" in out


def _gradcheck_rows(out: str) -> dict[str, dict]:
    """The table's rows by parameter: the columns named in its header."""
    lines = out.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("parameter"))
    rows = {}
    for line in lines[head + 1:]:
        parts = line.split()
        if not parts or parts[0] in ("ok:", "FAILED:") or line.startswith(" "):
            continue
        name, rest = parts[0], line.split("]", 1)[1].split()
        rows[name] = {"checked": int(rest[0]), "zero": int(rest[1]), "noise": int(rest[2]),
                      "error": float(rest[3]), "fail": line.rstrip().endswith("FAIL")}
    return rows


def _sparse_spec(tmp_path, loss_offset: str = "") -> Path:
    """64 features of which only the first is ever nonzero: 63 rows of y.W have an
    exactly zero gradient on both sides."""
    rng = np.random.default_rng(0)
    x = np.zeros((50, 64), np.float32)
    x[:, 0] = rng.normal(size=50)
    np.savez(tmp_path / "sparse.npz", x=x, t=rng.integers(0, 4, 50))
    spec = tmp_path / "sparse.net"
    spec.write_text("input x : [64]\ntarget t : class(4)\ny = dense(x, 4, act = tanh)\n"
                    f"loss = nll(softmax(y), t){loss_offset}\n" 'data {\n    train = npz("sparse.npz")\n}\n')
    return spec


def test_gradcheck_counts_entries_zero_on_both_sides_apart(tmp_path, capsys):
    assert main(["gradcheck", str(_sparse_spec(tmp_path)), "--entries", "8"]) == 0
    rows = _gradcheck_rows(capsys.readouterr().out)
    w = rows["y.W"]
    assert w["checked"] == 4  # the only nonzero entries: feature 0's row, all sampled first
    assert w["zero"] >= 1 and w["checked"] + w["zero"] + w["noise"] == 8


def test_gradcheck_one_entry_is_a_nonzero_one(tmp_path, capsys):
    assert main(["gradcheck", str(_sparse_spec(tmp_path)), "--entries", "1"]) == 0
    rows = _gradcheck_rows(capsys.readouterr().out)
    assert rows["y.W"]["checked"] == 1 and rows["y.W"]["zero"] == 0


def test_gradcheck_samples_nonzero_entries_first(tmp_path, capsys, monkeypatch):
    # 252 of y.W's 256 entries have a zero gradient: random picks would miss the 4 that show the bug
    _wrong_tanh(monkeypatch)
    assert main(["gradcheck", str(_sparse_spec(tmp_path)), "--entries", "3"]) == 3
    out = capsys.readouterr().out
    rows = _gradcheck_rows(out)
    assert rows["y.W"]["fail"] and rows["y.W"]["error"] > 0.05 and "FAILED" in out


def test_gradcheck_noise_floor_is_not_a_pass(tmp_path, capsys, monkeypatch):
    # a loss of ~1e10: float64 differences cannot resolve gradients of ~0.1, so nothing is checked:
    # that is not "ok, worst relative error 0" (even with a wrong derivative)
    _wrong_tanh(monkeypatch)
    assert main(["gradcheck", str(_sparse_spec(tmp_path, " + 10000000000")), "--entries", "8"]) == 3
    out = capsys.readouterr().out
    rows = _gradcheck_rows(out)
    assert rows["y.W"]["checked"] == 0 and rows["y.W"]["noise"] >= 4
    assert out.splitlines()[-1].startswith("FAILED") and "noise" in out.splitlines()[-1]


@pytest.mark.parametrize("text, missing", [("input x : [4]\ny = dense(x, 3)\n", "no loss"),
                                           ("input x : [4]\ntarget t : [4]\nloss = mean(sum((x - t) ^ 2, axis = -1))\n",
                                            "no parameters")])
def test_gradcheck_with_nothing_to_check_is_a_user_error(tmp_path, capsys, text, missing):
    spec = tmp_path / "s.net"
    spec.write_text(text)
    assert main(["gradcheck", str(spec)]) == 2  # not an internal error, not "ok" with 0 entries checked
    err = capsys.readouterr().err
    assert missing in err and "Traceback" not in err


def test_gradcheck_fails_when_the_loss_is_not_finite(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(20, 6)).astype(np.float32), t=rng.integers(0, 3, 20))
    spec = tmp_path / "raw.net"
    spec.write_text("input x : [6]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(y, t)\n"
                    'data {\n    train = npz("d.npz")\n}\n')
    assert main(["gradcheck", str(spec)]) == 3
    out = capsys.readouterr().out
    assert not out.splitlines()[-1].startswith("ok") and "FAILED" in out
    assert "not finite" in out and "softmax" in out


# ---------------------------------------------------------------------------- doc

@pytest.mark.parametrize("argv,words", [
    (["doc"], ["dense", "glorot", "lecun_tanh", "nll"]),
    (["doc", "prelude"], ["dense", "relu"]),
    (["doc", "train"], ["momentum", "batch", "inverse_time", "early", "polyak"]),
    (["doc", "data"], ["normalize", "train", "valid", "test", "mnist"]),
    (["doc", "ops"], ["matmul", "softmax", "tanh"]),
])
def test_doc(argv, words, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    for w in words:
        assert w in out


def test_doc_into_closed_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "netc.cli", "doc"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # the reader goes away before netc writes anything, like `| head` that has read enough
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "internal error" not in err
    assert p.returncode != 1


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--epochs", "-2"), ("--limit", "-5"), ("--limit", "0")])
def test_train_refuses_epochs_and_limit_below_one(tiny, tmp_path, capsys, flag, value):
    assert main(["train", str(tiny), "--out", str(tmp_path / "r"), flag, value, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert flag in err and "expected >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
