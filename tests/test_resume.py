"""Resumable training, attacked: runs killed with SIGKILL at random moments
(inside checkpoint writes too) and resumed with `netc train --resume DIR` end
with parameters bit-identical to an uninterrupted run; run folders are never
damaged by a new run; Ctrl-C tells the truth."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from problems import make_problem

SPEC = """\
input  x : [20]
target t : class(3)

h = dense(x, 16, act = tanh)
y = dense(dropout(h, 0.2), 3)

loss = nll(softmax(y), t) + 1e-4 * l2(weights)

data {{
    train = npz("tiny.npz")[0:150]
    valid = npz("tiny.npz")[150:200]
    normalize = standardize
}}

train {{
    method = sgd(lr = 0.05, momentum = 0.9)
    schedule = inverse_time(tau = 50)
    batch  = 10
    epochs = {epochs}
    seed   = 4
    average = polyak
    stop = early(patience = 100000)
    checkpoint_every = {every}
}}
"""


EPOCHS = 400  # about 6 s uninterrupted: 20 kills 0.1-1.2 s apart (most of it start-up) leave work to do
KILLS = 20


def _problem(folder: Path, epochs: int = 40, every: int = 30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, t = make_problem(n=200, seed=3, spread=0.8)
    np.savez(folder / "tiny.npz", x=x, t=t)
    spec = folder / "tiny.net"
    spec.write_text(SPEC.format(epochs=epochs, every=every))
    return spec


def _netc(*args):
    return [sys.executable, "-m", "netc.cli", *map(str, args)]


def _run(*args, timeout=180):
    p = subprocess.run(_netc(*args), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def _state(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "params.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("a/state/")}


def _epochs(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["epoch"] for r in rows if not r.get("partial")]


def _same(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k])]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: what every resumed run must reproduce bit for bit."""
    folder = tmp_path_factory.mktemp("ref")
    spec = _problem(folder)
    code, out, err = _run("train", spec, "--out", folder / "run", "--no-progress")
    assert code == 0, err
    return folder / "run"


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    spec = _problem(folder, epochs=EPOCHS)
    code, out, err = _run("train", spec, "--out", folder / "run", "--no-progress")
    assert code == 0, err
    return folder / "run"


def test_resume_after_random_kills_is_bit_identical(tmp_path, long_reference):
    """A chain of SIGKILLs at random moments (while starting, training, writing
    checkpoints), each followed by --resume, ends exactly where the uninterrupted
    run ended. A kill before the run folder has its record (spec.net) leaves
    nothing to resume: that run is started again."""
    spec = _problem(tmp_path, epochs=EPOCHS)
    run = tmp_path / "run"
    rng = np.random.default_rng(11)
    start = _netc("train", spec, "--out", run, "--no-progress")
    proc = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kills = 0
    while kills < KILLS:
        time.sleep(float(rng.uniform(0.1, 1.2)))
        assert proc.poll() is None, f"the run finished after only {kills} kills: raise EPOCHS"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        again = _netc("train", "--resume", run, "--no-progress") if (run / "spec.net").exists() else start
        proc = subprocess.Popen(again, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    assert _same(_state(run), _state(long_reference)) == []
    assert _epochs(run) == _epochs(long_reference)  # appended, no epoch twice
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".netc-staging"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "epochs" and summary["epochs"] == EPOCHS


def test_resume_of_a_finished_run_changes_nothing(tmp_path, reference):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = _state(run)
    code, out, err = _run("train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert "finished" in (out + err)
    assert _same(_state(run), before) == []


def test_resume_without_a_checkpoint_starts_from_the_recorded_spec(tmp_path, reference):
    """Killed before its first checkpoint: the run folder's copy of the spec
    (and its data reference) is enough to resume; the user's file may have changed."""
    spec = _problem(tmp_path)
    run = tmp_path / "run"
    proc = subprocess.Popen(_netc("train", spec, "--out", run, "--no-progress"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (run / "spec.net").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spec.write_text("this is no longer a spec")
    code, out, err = _run("train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert _same(_state(run), _state(reference)) == []


def test_kill_inside_a_checkpoint_write(tmp_path, reference):
    """The process dies half-way through writing params.npz: the old checkpoint
    stays valid, the temporary is cleaned at the next start, resume is exact."""
    spec = _problem(tmp_path)
    run = tmp_path / "run"
    # die inside the 5th checkpoint write, after part of the temporary file is written
    code = f"""
import os, sys, numpy as np
import netc.runtime.checkpoint as atomic
calls = [0]
real = atomic.atomic_write
def dying(path, write):
    def partial(f):
        calls[0] += 1
        if calls[0] == 5 and str(path).endswith("params.npz"):
            f.write(b"PK\\x03\\x04 half a zip")
            f.flush()
            os._exit(9)
        write(f)
    return real(path, partial)
atomic.atomic_write = dying
sys.argv = ["netc", "train", {str(spec)!r}, "--out", {str(run)!r}, "--no-progress"]
from netc.cli import main
sys.exit(main())
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert p.returncode == 9, p.stderr
    assert list(run.glob(".*tmp*")) or list(run.glob("*tmp*"))  # the half-written temporary
    code, out, err = _run("train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert not list(run.glob(".*tmp*")) and not list(run.glob("*tmp*"))
    assert _same(_state(run), _state(reference)) == []
    assert _epochs(run) == _epochs(reference)


def test_out_holding_another_run_is_refused(tmp_path, reference):
    import shutil
    run = tmp_path / "old"
    shutil.copytree(reference, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    spec = _problem(tmp_path / "new")
    code, out, err = _run("train", spec, "--out", run, "--no-progress")
    assert code == 2
    assert "--resume" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_force_replaces_only_after_the_first_checkpoint(tmp_path, reference):
    """--force: a new run that fails before its first checkpoint (bad data found
    late) leaves the old run as it was."""
    import shutil
    run = tmp_path / "old"
    shutil.copytree(reference, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    bad = tmp_path / "bad"
    spec = _problem(bad)
    x, t = make_problem(n=200, seed=3)
    t = t.astype(np.int64)
    t[170] = 7  # out of range for class(3), in the validation split
    np.savez(bad / "tiny.npz", x=x, t=t)
    code, out, err = _run("train", spec, "--out", run, "--force", "--no-progress")
    assert code == 2, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_ctrl_c_writes_an_honest_summary(tmp_path):
    spec = _problem(tmp_path, epochs=100000, every=100000)
    run = tmp_path / "run"
    proc = subprocess.Popen(_netc("train", spec, "--out", run, "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "metrics.jsonl").exists() or not _epochs(run):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "interrupted"
    saved = json.loads((run / "model.json").read_text())
    assert f"epoch {saved['epoch']}" in (out + err) or "saved" in (out + err)
    code, out, err = _run("train", "--resume", run, "--epochs", str(saved["epoch"] + 1), "--no-progress")
    assert code == 0, err
    assert _epochs(run)[-1] == saved["epoch"] + 1


def test_ctrl_c_before_any_checkpoint_says_nothing_was_saved(tmp_path):
    spec = _problem(tmp_path, epochs=100000, every=10 ** 9)
    spec.write_text(spec.read_text().replace("train = npz(\"tiny.npz\")[0:150]",
                                             "train = npz(\"big.npz\")"))
    x = np.random.default_rng(0).normal(size=(400000, 20)).astype(np.float32)
    np.savez(tmp_path / "big.npz", x=x, t=np.zeros(len(x), np.int64))
    run = tmp_path / "run"
    proc = subprocess.Popen(_netc("train", spec, "--out", run, "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "spec.net").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "nothing was saved" in (out + err) or "no checkpoint" in (out + err)
    assert "the last completed epoch is saved" not in (out + err)
