"""The end of a run: the test set evaluated once on the final parameters (per epoch
only with test_every = epoch), the summary table `netc train` prints, and the
machine-readable form scripts read (summary.json, --json)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.compiler.errors import NetcError
from netc.summary import render
from problems import make_problem
from test_cli import TINY

CLASSIFIER = ("input x : [20]\ntarget t : class(3)\nh = dense(x, 16, act = tanh)\ny = dense(h, 3)\n"
              "loss = nll(softmax(y), t)\n")
REGRESSOR = "input x : [5]\ntarget t : [2]\nh = dense(x, 8, act = tanh)\ny = dense(h, 2)\nloss = mse(y, t)\n"


def _train_block(**keys) -> str:
    return "train {\n" + "".join(f"    {k} = {v}\n" for k, v in {"batch": 10, "epochs": 3, **keys}.items()) + "}\n"


def _rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def tiny(tmp_path):
    x, t = make_problem()
    np.savez(tmp_path / "tiny.npz", x=x, t=t)
    (tmp_path / "tiny.net").write_text(TINY)
    return tmp_path / "tiny.net"


def test_the_test_set_is_evaluated_once_at_the_end(tmp_path):
    x, t = make_problem(spread=0.6)
    m = netc.compile(CLASSIFIER + _train_block(method="sgd(lr = 0.1)"))
    m.fit(x[:120], t[:120], valid=(x[120:160], t[120:160]), test=(x[160:], t[160:]), out=tmp_path / "r")
    rows = _rows(tmp_path / "r")
    assert len(rows) == 3 and all("valid_error" in r for r in rows)
    assert not any(k.startswith("test_") for r in rows + m.history_ for k in r)  # no per-epoch test score
    s = m.summary_
    assert s["test_error"] == pytest.approx(1 - m.score(x[160:], t[160:]))  # the final parameters'
    assert np.isfinite(s["test_loss"]) and s["valid_error"] == rows[-1]["valid_error"]


def test_test_every_epoch_adds_per_epoch_rows():
    x, t = make_problem(spread=0.6)
    m = netc.compile(CLASSIFIER + _train_block(method="sgd(lr = 0.1)", test_every="epoch"))
    m.fit(x[:120], t[:120], valid=(x[120:160], t[120:160]), test=(x[160:], t[160:]))
    assert [r["epoch"] for r in m.history_ if "test_error" in r] == [1, 2, 3]
    assert m.summary_["test_error"] == m.history_[-1]["test_error"]  # no early stopping: the same parameters


def test_with_early_stopping_the_test_score_is_the_kept_parameters():
    x, t = make_problem(spread=0.6)
    m = netc.compile(CLASSIFIER + _train_block(method="sgd(lr = 0.5)", epochs=8, stop="early(patience = 1)"))
    m.fit(x[:120], t[:120], valid=(x[120:160], t[120:160]), test=(x[160:], t[160:]))
    assert m.summary_["test_error"] == pytest.approx(1 - m.score(x[160:], t[160:]))


def test_batch_methods_evaluate_the_test_set_once_too():
    x, t = make_problem()
    m = netc.compile(CLASSIFIER + "train {\n    method = lbfgs(iterations = 5)\n    epochs = 2\n}\n")
    m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), test=(x[150:], t[150:]))
    assert not any("test_error" in r for r in m.history_)
    assert m.summary_["test_error"] == pytest.approx(1 - m.score(x[150:], t[150:]))


def test_real_targets_get_r2_and_mse():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    t = np.stack([x[:, 0] - x[:, 1], np.tanh(x[:, 2])], axis=1).astype(np.float32)
    m = netc.compile(REGRESSOR + _train_block(method="sgd(lr = 0.05, momentum = 0.9)", epochs=20))
    m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), test=(x[150:], t[150:]))
    s = m.summary_
    assert s["test_r2"] == pytest.approx(m.score(x[150:], t[150:]), abs=1e-6) and s["test_r2"] > 0.5
    assert s["valid_mse"] == pytest.approx(float(np.mean((m.predict(x[150:]) - t[150:]) ** 2)), rel=1e-5)
    assert s["test_error"] is None
    text = render({"spec": "r.net", **s}, Path("runs/r"))
    header = next(line for line in text.splitlines() if "R^2" in line)
    assert header.split() == ["R^2", "MSE", "loss"]
    test_row = next(line for line in text.splitlines() if line.strip().startswith("test"))
    assert f"{s['test_r2']:.4g}" in test_row and f"{s['test_mse']:.4g}" in test_row


def test_test_every_is_validated_where_it_is_written():
    with pytest.raises(NetcError) as e:
        netc.compile(CLASSIFIER + "train {\n    test_every = epochs\n}\n")
    r = e.value.render()
    assert "<spec>:7:5" in r and "'end'" in r and "'epoch'" in r


def test_doc_train_lists_test_every(capsys):
    assert main(["doc", "train"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("test_every"))
    assert "end" in line and "epoch" in line


def test_netc_train_prints_a_table_and_the_next_commands(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    with pytest.raises(ValueError):
        json.loads(text)  # for people; scripts read summary.json or --json
    s = json.loads((out / "summary.json").read_text())
    lines = text.splitlines()
    assert lines[0].startswith(f"{tiny}: trained 2 epochs")
    valid = next(line for line in lines if line.strip().startswith("validation"))
    test = next(line for line in lines if line.strip().startswith("test "))
    assert f"{s['valid_error'] * 100:.2f}%" in valid and f"{s['test_error'] * 100:.2f}%" in test
    assert f"{s['steps']:,} updates" in text and "ran all its epochs" in text
    for shown in (f"run folder  {out}", f"{out / 'params.npz'}", f"netc report {out}",
                  f"netc export {out} --format onnx --out {out / 'model.onnx'}", f"netc predict {out} "):
        assert shown in text, shown


def test_the_commands_the_summary_names_work(tiny, tmp_path, capsys):
    """The `netc predict` line it prints runs as printed (the data file is the spec's own)."""
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    line = next(line.strip() for line in capsys.readouterr().out.splitlines() if "netc predict" in line)
    assert main(line.split()[1:]) == 0
    assert (out / "predictions.csv").read_text().splitlines()[0] == "label"


def test_resume_of_a_finished_run_prints_its_summary(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny), "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "finished before, after 1 epochs" in text and f"netc train --resume {out} --epochs N" in text
    assert main(["train", "--resume", str(out), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "summary.json").read_text())


def test_a_damaged_summary_still_prints():
    text = render({"spec": 3, "epochs": "many", "valid_error": float("nan"), "valid_loss": [1], "age": True,
                   "steps": 1e3, "stopped": {"x": 1}}, Path("r"))
    assert "1,000 updates" in text and "netc report r" in text
    assert re.search(r"trained 0 epochs", text)


@pytest.mark.parametrize("metric", ["test.error", "test.loss", '"test.error"'])
def test_a_search_on_the_test_set_is_refused_at_its_metric_line(metric):
    text = (CLASSIFIER + "train {\n    method = sgd(lr = loguniform(0.01, 0.1))\n}\n"
            f"search {{\n    trials = 4\n    metric = {metric}\n}}\n")
    with pytest.raises(NetcError) as e:
        netc.compile(text)
    r = e.value.render()
    assert "<spec>:11:5" in r and "tunes the hyper-parameters on it" in r and "valid.error" in r
    assert len(e.value.render().split("<spec>:")) == 2  # one error, not also "unknown value"


def test_doc_search_names_no_test_metric(capsys):
    assert main(["doc", "search"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("metric"))
    assert "valid.error" in line and "refused" in line


def test_the_report_puts_the_final_test_error_beside_the_validation_curve(monkeypatch, tmp_path):
    from netc import report
    panels = []
    monkeypatch.setattr(report.plots, "curves", lambda ps, x_label: panels.extend(ps) or b"png")
    once = report.Run(tmp_path, "once", [{"age": 10, "valid_error": 0.2}, {"age": 20, "valid_error": 0.1}],
                      {"age": 20, "test_error": 0.15})
    report.learning_curves([once])
    assert [p.title for p in panels] == ["validation error"]  # no test-error panel of one point
    assert panels[0].lines == {"once": [(10.0, 0.2), (20.0, 0.1)], "once: test, at the end": [(20.0, 0.15)]}
    panels.clear()
    each = report.Run(tmp_path, "each", [{"age": 10, "valid_error": 0.2, "test_error": 0.3}], {"test_error": 0.3})
    report.learning_curves([each])  # test_every = epoch: its own curve, as before
    assert [p.title for p in panels] == ["validation error", "test error"]
    assert panels[0].lines == {"each": [(10.0, 0.2)]}


def test_a_search_space_run_shows_its_point():
    text = render({"spec": "s.net", "epochs": 1, "sampled": {"method.lr": 0.0123, "batch": 16}}, Path("r"))
    assert "point       method.lr = 0.0123, batch = 16" in text


def test_names_with_control_characters_are_shown_not_sent_to_the_terminal(tmp_path):
    """A data file, a run folder or summary.json's own strings may hold terminal controls
    (clear the screen, set the title): the summary shows them escaped, and the commands
    it suggests are one bash word each that names the same file."""
    import subprocess
    evil = "d\x1b]0;PWN\x07\x1b[2J'.npz"
    text = render({"spec": "s\x1b[2J.net", "stopped": "x\x9b31m", "epochs": 1}, tmp_path / "r\x07un", data=evil)
    assert all(c.isprintable() for line in text.splitlines() for c in line), repr(text)
    assert "\\x1b[2J" in text and "r\\x07un" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("netc predict"))
    words = subprocess.run(["bash", "-c", f'printf "%s\\0" {line.split("netc predict", 1)[1]}'],
                           capture_output=True, check=True).stdout.split(b"\0")[:-1]
    assert [w.decode() for w in words] == [str(tmp_path / "r\x07un"), evil, "--out",
                                           str(tmp_path / "r\x07un" / "predictions.csv")]
