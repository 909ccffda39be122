"""Where training draws its progress: a redrawn bar on a terminal and in a notebook
(a Jupyter kernel, faked here), nothing when asked (progress=False) or in a
script's captured output, one finished line per epoch in a log when asked."""
from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest

import netc
from netc.runtime.progress import Progress, in_notebook
from problems import make_problem

NET = ("input x : [20]\ntarget t : class(3)\nh = dense(x, 8, act = tanh)\ny = dense(h, 3)\n"
       "loss = nll(softmax(y), t)\ntrain {\n    batch = 10\n    epochs = 2\n}\n")


def _fake_ipython(monkeypatch, shell_name: str):
    shell_class = type(shell_name, (), {})
    kernel_shell = type("Shell", (shell_class,), {})  # Colab's shell subclasses Jupyter's
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: kernel_shell()
    monkeypatch.setitem(sys.modules, "IPython", module)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fit_in_a_notebook_draws_a_bar_on_the_cells_stdout(monkeypatch, capsys):
    _fake_ipython(monkeypatch, "ZMQInteractiveShell")
    assert in_notebook()
    x, t = make_problem()
    netc.compile(NET).fit(x[:150], t[:150], valid=(x[150:], t[150:]))
    out = capsys.readouterr()
    assert "\r" in out.out and "epoch 1/2 [" in out.out and "epoch 2/2 [" in out.out
    assert "\x1b" not in out.out  # no terminal escapes in a notebook: spaces cover a longer line
    finished = out.out.split("\n")[:-1]
    last = [line.rsplit("\r", 1)[-1] for line in finished]  # what each epoch's line shows in the end
    assert len(last) == 2 and all("100.0%" in line and "valid_error" in line for line in last)
    assert out.err == ""


def test_progress_false_is_silent_even_in_a_notebook(monkeypatch, capsys):
    _fake_ipython(monkeypatch, "ZMQInteractiveShell")
    x, t = make_problem()
    netc.compile(NET).fit(x, t, progress=False)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_ipython_is_not_a_notebook(monkeypatch):
    _fake_ipython(monkeypatch, "TerminalInteractiveShell")
    assert not in_notebook()
    monkeypatch.delitem(sys.modules, "IPython")
    assert not in_notebook()


def test_a_script_whose_output_is_not_a_terminal_gets_no_bar(capsys):
    x, t = make_problem()
    netc.compile(NET).fit(x, t)
    assert capsys.readouterr() == ("", "")


def test_a_log_gets_one_line_per_epoch_when_asked():
    log = io.StringIO()
    for epoch in (1, 2):
        bar = Progress(100, f"epoch {epoch}/2", stream=log, enabled=True)
        for _ in range(10):
            bar.update(10, loss=0.5)
        bar.close()
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and len(lines) == 3 and lines[-1] == ""
    assert lines[0].startswith("epoch 1/2 [") and "100.0%" in lines[0] and "loss 0.5" in lines[0]


def test_a_terminal_gets_a_redrawn_line():
    tty = _Tty()
    bar = Progress(50, "epoch 1/1", stream=tty)
    bar.update(50, loss=0.25)
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\r") and "\x1b[K" in text and text.endswith("\n") and text.count("\n") == 1


@pytest.mark.parametrize("enabled", [None, False])
def test_auto_and_off_write_nothing_to_a_log(enabled):
    log = io.StringIO()
    bar = Progress(10, "epoch 1/1", stream=log, enabled=enabled)
    bar.update(10)
    bar.close()
    assert log.getvalue() == "" and bar.enabled is False


def test_the_cli_keeps_one_log_line_per_epoch(tmp_path):
    """netc train in a log (stderr not a terminal): the epoch lines, no bar."""
    import subprocess
    x, t = make_problem()
    np.savez(tmp_path / "d.npz", x=x, t=t)
    (tmp_path / "s.net").write_text(NET.replace("train {", 'data {\n    train = npz("d.npz")\n}\ntrain {'))
    p = subprocess.run([sys.executable, "-m", "netc", "train", str(tmp_path / "s.net"), "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and [l.split("  ")[0] for l in p.stderr.splitlines() if l.startswith("epoch")] \
        == ["epoch 1/2", "epoch 2/2"]
