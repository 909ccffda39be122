"""netc overfit and netc lr-probe [PR 2.1, 4.1]."""
from __future__ import annotations

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
    # a rate far too small cannot memorize in the budget: exit 1 and say what to suspect
    assert main(["overfit", write_spec(tmp_path, 1e-6), "--examples", "40", "--max-epochs", "20"]) == 1
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
