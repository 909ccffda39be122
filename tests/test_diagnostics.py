"""netc overfit and netc lr-probe [PR 2.1, 4.1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netc.cli import main


def write_spec(tmp_path, lr: float, width: int = 32) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    t = rng.integers(0, 4, 300)  # random labels: only memorizing can fit them
    np.savez(tmp_path / "d.npz", x=x, t=t)
    spec = tmp_path / "s.net"
    spec.write_text(f"""input x : [8]
target t : class(4)
h = dense(x, {width}, act = tanh)
y = dense(h, 4)
loss = nll(softmax(y), t)
data {{
    train = npz("d.npz")
}}
train {{
    method = sgd(lr = {lr}, momentum = 0.9)
    batch = 10
}}
""")
    return str(spec)


def test_overfit_learns_random_labels_by_heart(tmp_path, capsys):
    assert main(["overfit", write_spec(tmp_path, 0.1), "--examples", "40"]) == 0
    assert "training error 0.00%" in capsys.readouterr().out


def test_overfit_reports_failure_with_advice(tmp_path, capsys):
    # a rate far too small cannot memorize in the budget: a failed check (exit 3); say what to suspect
    assert main(["overfit", write_spec(tmp_path, 1e-6), "--examples", "40", "--max-epochs", "20"]) == 3
    assert "could not overfit" in capsys.readouterr().out


def test_lr_probe_returns_the_first_rate_that_trains(tmp_path, capsys):
    spec = write_spec(tmp_path, 0.01)
    assert main(["lr-probe", spec, "--start", "100", "--examples", "200"]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.strip().startswith("lr ")]
    assert "diverges" in lines[0]  # 100 is far too large
    assert lines[-1].rstrip().endswith("trains")
    found = float(out.split("largest rate that trains: ")[1].split()[0])
    assert found == pytest.approx(100 / 3 ** (len(lines) - 1), rel=1e-3)


# ------------------------------------------------- a loss that is not finite at the start
# (issue 10 item 8: it was reported as a divergence, nine times, with "lower method.lr")

def write_broken(tmp_path, layers: str, loss: str, target: str = "class(4)", method: str = "sgd(lr = 0.1)") -> str:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(100, 8)).astype(np.float32),
             t=rng.integers(0, 4, 100) if target.startswith("class") else rng.normal(size=(100, 4)))
    spec = tmp_path / "broken.net"
    spec.write_text(f"input x : [8]\ntarget t : {target}\n{layers}\nloss = {loss}\n"
                    'data {\n    train = npz("d.npz")\n}\n'
                    f"train {{\n    method = {method}\n    batch = 10\n    epochs = 2\n}}\n")
    return str(spec)


RAW_SCORES = ("h = dense(x, 16, act = tanh)\ny = dense(h, 4)", "nll(y, t)")


@pytest.mark.parametrize("method", ["sgd(lr = 0.1)", "lbfgs(iterations = 5)"])
def test_nll_of_raw_scores_is_not_a_divergence(tmp_path, capsys, method):
    # a batch method used to "train" it silently, to a train_loss of NaN
    spec = write_broken(tmp_path, *RAW_SCORES, method=method)
    assert main(["train", spec, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not finite at the initial parameters" in err
    assert "unnormalized scores" in err and "softmax" in err
    assert "broken.net:5:8" in err  # where the log-likelihood is taken (loss = nll(y, t))
    assert "lower method.lr" not in err and "diverging" not in err and "Traceback" not in err


def test_a_non_finite_first_layer_is_named(tmp_path, capsys):
    spec = write_broken(tmp_path, "h = dense(x, 16, act = sqrt)\ny = dense(h, 4)", "nll(softmax(y), t)")
    assert main(["train", spec, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not finite at the initial parameters" in err
    assert "layer 'h'" in err and "broken.net:3:5" in err and "sqrt" in err
    assert "lower method.lr" not in err


@pytest.mark.parametrize("method", ["sgd(lr = 0.1)", "lbfgs(iterations = 5)"])
def test_a_gradient_not_finite_at_the_start_is_not_a_divergence(tmp_path, capsys, method):
    # sqrt of relu units: a finite loss, but an infinite derivative wherever a unit is 0. The rate
    # used to be cut nine times ("lower method.lr"); lbfgs "trained" to NaN silently
    spec = write_broken(tmp_path, "h = sqrt(dense(x, 16, act = relu))\ny = dense(h, 4)", "nll(softmax(y), t)",
                        method=method)
    assert main(["train", spec, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "gradient of the loss is not finite at the initial parameters" in err and "h.W" in err
    assert "broken.net:3:5" in err and "lower method.lr" not in err and "diverging" not in err


def test_log_of_a_negative_regression_loss(tmp_path):
    import netc
    spec = write_broken(tmp_path, "y = dense(x, 4)", "mean(sum(log(y - t), axis = -1))", target="[4]")
    m = netc.compile(Path(spec))
    with pytest.raises(netc.NetcError) as e:
        m.fit()
    msg = str(e.value)
    assert "not finite at the initial parameters" in msg and "log" in msg and ":4:" in msg
    assert "unnormalized" not in msg  # a regression target: no class advice
    assert type(e.value).__name__ != "Diverged"


def test_lr_probe_stops_at_a_loss_not_finite_at_the_start(tmp_path, capsys):
    spec = write_broken(tmp_path, *RAW_SCORES)
    assert main(["lr-probe", spec, "--examples", "50"]) == 2  # no rate can help: a user error, at once
    out, err = capsys.readouterr()
    assert "not finite at the initial parameters" in err and "softmax" in err
    assert "no rate tried trains" not in out and out.count(" lr ") <= 1


# ------------------------------------------------- lr-probe: the probed rate wins

def test_lr_probe_rate_wins_over_a_train_level_rate(tmp_path, capsys):
    # train { lr = ... } overrides the method's rate; the probe's rate must override both
    spec = Path(write_spec(tmp_path, 0.1))
    spec.write_text(spec.read_text().replace("    batch = 10\n", "    batch = 10\n    lr = 1e-9\n"))
    assert main(["lr-probe", str(spec), "--start", "100", "--examples", "200"]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.strip().startswith("lr ")]
    assert "diverges" in lines[0] and lines[-1].rstrip().endswith("trains")


# ------------------------------------------------- command-line values

@pytest.mark.parametrize("argv", [
    ["overfit", "S", "--examples", "0"], ["overfit", "S", "--max-epochs", "-1"],
    ["lr-probe", "S", "--examples", "0"], ["lr-probe", "S", "--epochs", "0"],
    ["lr-probe", "S", "--start", "0"], ["lr-probe", "S", "--start", "nan"], ["lr-probe", "S", "--start", "inf"],
    ["gradcheck", "S", "--examples", "0"], ["gradcheck", "S", "--entries", "-3"],
    ["gradcheck", "S", "--tol", "-1"], ["gradcheck", "S", "--tol", "nan"],
    ["gradcheck", "S", "--seed", "-1"], ["gradcheck", "S", "--seed", str(2 ** 31)],
    ["train", "S", "--seed", "-1"], ["train", "S", "--seed", "1e3"],
])
def test_diagnostic_flags_out_of_range_are_user_errors(tmp_path, capsys, argv):
    spec = write_spec(tmp_path, 0.1)
    argv = [spec if a == "S" else a for a in argv]
    try:
        rc = main(argv + (["--out", str(tmp_path / "run")] if argv[0] == "train" else []))
    except SystemExit as e:  # argparse refuses it
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert argv[2] in err and "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "run").exists()
