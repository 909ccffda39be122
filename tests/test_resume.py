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


EPOCHS = 200  # about 3 s uninterrupted; each kill lets the run progress about 0.05 s
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


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _wait_for_a_new_checkpoint(run: Path, proc, timeout: float = 60) -> None:
    """Until `proc` has written a checkpoint (params.npz changed since it started)."""
    deadline = time.time() + timeout
    while _mtime(run / "params.npz") in (None, proc.checkpoint) and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.005)


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
    proc.checkpoint = None
    kills, positions = 0, set()
    while kills < KILLS:
        if rng.random() < 0.25:  # while it starts (compiling, loading data, its first steps)
            time.sleep(float(rng.uniform(0.05, 0.6)))
        else:  # once it has written a checkpoint of its own: anywhere in the next few epochs
            _wait_for_a_new_checkpoint(run, proc)
            time.sleep(float(rng.uniform(0.0, 0.1)))
        assert proc.poll() is None, f"the run finished after only {kills} kills: raise EPOCHS"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if (run / "model.json").exists():
            meta = json.loads((run / "model.json").read_text())
            positions.add((meta["epoch"], meta["batch"]))
        again = _netc("train", "--resume", run, "--no-progress") if (run / "spec.net").exists() else start
        before = _mtime(run / "params.npz")
        proc = subprocess.Popen(again, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc.checkpoint = before
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    assert len(positions) >= KILLS // 2, positions  # most kills hit a run in progress, at different places
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
    # still training when Ctrl-C comes: a tiny epoch takes well under a millisecond
    spec.write_text(spec.read_text().replace("patience = 100000", "patience = 1000000000"))
    run = tmp_path / "run"
    proc = subprocess.Popen(_netc("train", spec, "--out", run, "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "model.json").exists():  # the first checkpoint (an epoch's end)
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "interrupted"
    saved = json.loads((run / "model.json").read_text())
    assert summary["saved"]["epoch"] == saved["epoch"] and not saved["final"]
    said = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1 and f"end of epoch {saved['epoch']};" in said[0], err
    code, out, err = _run("train", "--resume", run, "--epochs", str(saved["epoch"] + 1), "--no-progress")
    assert code == 0, err
    assert _epochs(run) == list(range(1, saved["epoch"] + 2))  # the rows after the checkpoint: dropped



def test_ctrl_c_inside_a_checkpoint_waits_until_it_is_written(tmp_path, monkeypatch):
    """SIGINT while a checkpoint is being written (here: just before params.npz) is acted on
    after the checkpoint and the record of what it holds are both done, so params.npz,
    model.json and the interrupted run's 'saved' agree."""
    from netc.runtime import checkpoint, run_folder
    real = checkpoint.save

    def save(*args, **kw):
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kw)

    monkeypatch.setattr(checkpoint, "save", save)
    rf = run_folder.RunFolder(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        rf.checkpoint({"w": np.zeros(3, np.float32)}, {"epoch": 3, "final": False})
    assert json.loads((tmp_path / "model.json").read_text())["epoch"] == 3
    assert rf.saved["epoch"] == 3 and signal.getsignal(signal.SIGINT) is signal.default_int_handler

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
    assert "nothing was saved" in err, err
    assert "the last completed epoch is saved" not in (out + err)
    assert not (run / "params.npz").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and summary["saved"] is None


# ---------------------------------------------------------------------------- every trick, in-process

TRICK_NET = """
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
"""
TRICKS = {
    "momentum": (TRICK_NET, "method = sgd(lr = 0.05, momentum = 0.9, nesterov = true)"),
    "polyak": (TRICK_NET, "method = sgd(lr = 0.05)\naverage = polyak"),
    "early": (TRICK_NET, "method = sgd(lr = 0.05)\nstop = early(patience = 250, grow = 1.2)"),
    "emphasis": (TRICK_NET, "method = sgd(lr = 0.05)\nemphasize = errors(ratio = 3)"),
    "dropout": ("h = dense(x, 16, act = tanh)\ny = dense(dropout(h, 0.3), 3)\nloss = nll(softmax(y), t)",
                "method = sgd(lr = 0.05)"),
    "transforms": ("h = transformed(x, 12)\ny = dense(h, 3) + shortcut(x, 3)\nloss = nll(softmax(y), t)",
                   "method = sgd(lr = 0.02, momentum = 0.5)\ntransforms = every(7)"),
    "sdlm": (TRICK_NET, "method = sdlm(lr = 0.02, samples = 40)"),
    "valid_every": (TRICK_NET, "method = sgd(lr = 0.05)\nvalid_every = 60\nstop = early(patience = 400)"),
    "plateau": (TRICK_NET, "method = sgd(lr = 0.05)\nschedule = plateau(threshold = 0.2, factor = 0.5)"),
    "lbfgs": (TRICK_NET, "method = lbfgs(iterations = 3)"),  # batch methods: epoch ends only
}


def _trick_spec(name: str) -> str:
    net, train = TRICKS[name]
    body = "\n".join("    " + line for line in (train + "\nbatch = 10\nepochs = 4\nseed = 2\n"
                                                 "checkpoint_every = 35").splitlines())
    return f"input  x : [20]\ntarget t : class(3)\n{net}\ntrain {{\n{body}\n}}\n"


def _arrays(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "params.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta.json"}


@pytest.mark.parametrize("stop_at", [2, 5])
@pytest.mark.parametrize("trick", list(TRICKS))
def test_resume_inside_an_epoch_is_exact_for_every_trick(tmp_path, monkeypatch, trick, stop_at):
    """Interrupted right after its `stop_at`-th checkpoint (mostly inside an epoch),
    then resumed from the folder alone: every array of the final checkpoint (the
    parameters, the optimizer's, the average, the live state) and every metrics
    row's numbers equal an uninterrupted run's."""
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    data = dict(valid=(x[150:], t[150:]))
    netc.compile(_trick_spec(trick)).fit(x[:150], t[:150], **data, out=tmp_path / "ref")

    real, calls = run_folder.RunFolder.checkpoint, [0]

    def interrupting(self, arrays, meta):
        real(self, arrays, meta)
        calls[0] += 1
        if calls[0] == (stop_at if trick != "lbfgs" else max(1, stop_at - 2)):  # lbfgs: 4 epoch ends, then the final
            raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.RunFolder, "checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        netc.compile(_trick_spec(trick)).fit(x[:150], t[:150], **data, out=tmp_path / "run")
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped"] == "interrupted"
    m = netc.resume(tmp_path / "run", x[:150], t[:150], **data)
    assert m.resumed == "continued"
    ref, got = _arrays(tmp_path / "ref"), _arrays(tmp_path / "run")
    assert sorted(ref) == sorted(got)
    assert [k for k in ref if not np.array_equal(ref[k], got[k])] == []
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("ref", "run")]
    assert rows[0] == rows[1]


def test_epochs_extend_a_finished_run_exactly(tmp_path):
    """A finished 2-epoch run (Polyak: its final parameters are the average, its
    live state is kept beside them) extended to 4 equals a 4-epoch run."""
    import netc
    x, t = make_problem(n=200, seed=3, spread=0.8)
    text = _trick_spec("polyak")
    netc.compile(text).fit(x[:150], t[:150], epochs=4, out=tmp_path / "four")
    netc.compile(text).fit(x[:150], t[:150], epochs=2, out=tmp_path / "two")
    again = netc.resume(tmp_path / "two", x[:150], t[:150])  # finished: nothing changes
    assert again.resumed == "finished" and json.loads((tmp_path / "two" / "model.json").read_text())["epoch"] == 2
    assert [r["epoch"] for r in again.history_ if "epoch" in r] == [1, 2]  # a finished run still says how it went
    m = netc.resume(tmp_path / "two", x[:150], t[:150], epochs=4)
    assert m.resumed == "continued" and m.summary["epochs"] == 4
    ref, got = _arrays(tmp_path / "four"), _arrays(tmp_path / "two")
    assert [k for k in ref if not np.array_equal(ref[k], got[k])] == []
    assert _epochs(tmp_path / "two") == [1, 2, 3, 4]


def test_force_replaces_the_old_run_at_the_first_checkpoint(tmp_path):
    import netc
    x, t = make_problem(n=200, seed=3, spread=0.8)
    out = tmp_path / "run"
    netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=3, out=out)
    (out / "summary.json").write_text("{}")  # the old run's summary must not outlive it
    with pytest.raises(netc.NetcError, match="--force"):
        netc.compile(_trick_spec("dropout")).fit(x[:150], t[:150], epochs=1, out=out)
    netc.compile(_trick_spec("dropout")).fit(x[:150], t[:150], epochs=1, out=out, force=True)
    assert _epochs(out) == [1] and not (out / ".netc-staging").exists()
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1  # the new run's
    assert "dropout" in (out / "spec.net").read_text()
    assert "dropout" in json.loads((out / "model.json").read_text())["spec"]


def test_a_switch_cut_short_is_completed_at_the_next_start(tmp_path):
    """Killed while moving the staged run's files over the old run's: the next
    resume completes the switch (the staged checkpoint says which run it is)."""
    import shutil
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    old, new = tmp_path / "old", tmp_path / "new"
    netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=old)
    netc.compile(_trick_spec("dropout")).fit(x[:150], t[:150], epochs=2, out=new)
    staging = old / run_folder.STAGING
    staging.mkdir()
    for name in ("params.npz", "model.json", "metrics.jsonl", "run.json", "spec.net"):
        shutil.copy(new / name, staging / name)
    (staging / run_folder.SWITCHING).touch()
    os.replace(staging / "params.npz", old / "params.npz")  # the switch's first move, then the kill
    (old / ".params.npz.abc123.tmp").write_bytes(b"PK half")
    m = netc.resume(old, x[:150], t[:150])
    assert m.resumed == "finished"
    assert sorted(p.name for p in old.iterdir()) == sorted(p.name for p in new.iterdir() if p.name != "summary.json")
    assert (old / "metrics.jsonl").read_bytes() == (new / "metrics.jsonl").read_bytes()


def test_what_cannot_be_resumed_is_refused_clearly(tmp_path):
    import netc
    x, t = make_problem(n=200, seed=3, spread=0.8)
    m = netc.compile(_trick_spec("momentum"))
    m.fit(x[:150], t[:150], epochs=1)
    m.save(tmp_path / "saved")
    with pytest.raises(netc.DataError, match="saved model"):
        netc.resume(tmp_path / "saved")
    with pytest.raises(netc.DataError, match="no such run folder"):
        netc.resume(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(netc.DataError, match="not a run folder"):
        netc.resume(tmp_path / "empty")
    m.fit(x[:150], t[:150], epochs=1, out=tmp_path / "arrays")
    with pytest.raises(netc.NetcError, match="same arrays"):
        netc.resume(tmp_path / "arrays", epochs=3)
    with pytest.raises(netc.DataError, match="does not fit"):  # other data than the run's
        netc.resume(tmp_path / "arrays", x[:120], t[:120], epochs=3)


@pytest.mark.parametrize("field, value", [("format", "netc-run-9"), ("options", {"seed": "1; rm -rf"}),
                                          ("options", {"dtype": "float32) or (1"}), ("data", "pickle"),
                                          ("epochs", -3), ("spec_file", "a\nb"), ("options", {"evil": 1})])
def test_a_hostile_run_record_is_refused(tmp_path, field, value):
    """run.json (a run killed before its first checkpoint) is read as hostile."""
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    out = tmp_path / "run"
    netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=out)
    (out / "params.npz").unlink()
    record = json.loads((out / "run.json").read_text())
    record[field] = value
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(netc.DataError, match="run.json"):
        run_folder.read_record(out)
    with pytest.raises(netc.DataError):
        netc.resume(out, x[:150], t[:150])


def test_checkpoint_every_key():
    import netc
    from netc.cli import main
    m = netc.compile(_trick_spec("momentum").replace("checkpoint_every = 35", "checkpoint_every = seconds(2.5)"))
    assert m.train_cfg.checkpoint_every.args == (2.5,)
    assert netc.compile(_trick_spec("momentum").replace("checkpoint_every = 35", "seed = 3")
                        .replace("seed = 2\n", "")).train_cfg.checkpoint_every.args == (60.0,)
    for bad in ("seconds(0)", "minutes(3)", "0", "seconds(a = 1)"):
        with pytest.raises(netc.SpecError):
            netc.compile(_trick_spec("momentum").replace("checkpoint_every = 35", f"checkpoint_every = {bad}"))
    assert main(["doc", "train"]) == 0


@pytest.mark.parametrize("argv", [["train"], ["train", "x.net", "--resume", "r"]])
def test_train_takes_a_spec_or_resume(argv, capsys):
    from netc.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err


def test_resume_takes_its_settings_from_the_run_folder(tmp_path, capsys):
    from netc.cli import main
    assert main(["train", "--resume", str(tmp_path), "--seed", "3", "--limit", "5"]) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "--limit" in err
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_folder_in_use_is_refused(tmp_path):
    """Two processes never write one run folder (a lock held until the run ends)."""
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    out = tmp_path / "run"
    netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=out)
    code = f"""
import sys, time
from pathlib import Path
from netc.runtime import run_folder
held = run_folder.Lock(Path({str(out)!r}))
print("held", flush=True)
time.sleep(30)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(netc.NetcError, match="in use"):
            netc.resume(out, x[:150], t[:150], epochs=2)
        with pytest.raises(netc.NetcError, match="in use"):
            netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=out, force=True)
    finally:
        p.kill()
        p.wait()
    assert netc.resume(out, x[:150], t[:150], epochs=2).resumed == "continued"  # a dead holder holds nothing
    with pytest.raises(netc.NetcError, match="a file"):
        netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=out / "params.npz")


def _rewrite(run: Path, change) -> None:
    """params.npz with some arrays changed (as a hostile or damaged file would be)."""
    with np.load(run / "params.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(run / "params.npz", "wb") as f:
        np.savez(f, **arrays)


CORRUPTIONS = {
    "order out of range": lambda a: a["a/cursor/order"].__setitem__(0, 10 ** 9),
    "order negative": lambda a: a["a/cursor/order"].__setitem__(0, -1),
    "position negative": lambda a: a.__setitem__("a/cursor/position", np.array([-3, 0])),
    "position past the end": lambda a: a.__setitem__("a/cursor/position", np.array([10 ** 6, 0])),
    "sizes not the order's": lambda a: a.__setitem__("a/cursor/sizes", a["a/cursor/sizes"][:-1]),
    "counters float": lambda a: a.__setitem__("a/train/counters", a["a/train/counters"].astype(float)),
    "counters negative": lambda a: a.__setitem__("a/train/counters", np.array([-1, 5, 0])),
    "rng short": lambda a: a.__setitem__("a/train/rng", a["a/train/rng"][:5]),
    "healthy shape": lambda a: a.__setitem__("a/watch/healthy/h.W", np.zeros((3, 3), np.float32)),
    "missed length": lambda a: a.__setitem__("a/emphasis/missed", np.ones(7, bool)),
    "no training state": lambda a: a.pop("a/train/counters"),
    "watch not a number": lambda a: a.__setitem__("a/watch/ema", np.zeros(3)),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_damaged_training_state_is_refused(tmp_path, monkeypatch, how):
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    text = _trick_spec("emphasis")
    real = run_folder.RunFolder.checkpoint

    def interrupting(self, arrays, meta):
        real(self, arrays, meta)
        if meta.get("batch"):
            raise KeyboardInterrupt  # a checkpoint inside an epoch: the cursor is there

    monkeypatch.setattr(run_folder.RunFolder, "checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        netc.compile(text).fit(x[:150], t[:150], out=tmp_path / "run")
    monkeypatch.undo()
    _rewrite(tmp_path / "run", CORRUPTIONS[how])
    with pytest.raises(netc.DataError):
        netc.resume(tmp_path / "run", x[:150], t[:150])


def test_a_run_that_saved_nothing_is_replaced_without_force(tmp_path):
    """A run that failed before writing anything but its record (bad data, say) does
    not block the corrected command: nothing of value is lost."""
    import netc
    x, t = make_problem(n=200, seed=3, spread=0.8)
    out = tmp_path / "run"
    with pytest.raises(netc.DataError):
        netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150] + 5, epochs=1, out=out)
    assert (out / "spec.net").exists() and not (out / "params.npz").exists()
    netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], epochs=1, out=out)
    assert _epochs(out) == [1]


def test_resume_elsewhere_reads_the_recorded_spec_uses_and_data_folder(tmp_path):
    """Started with a relative spec path that `use`s another file; resumed from
    another working folder after the used file was deleted and the spec changed:
    the run folder's records (the used files, the data's folder) are enough."""
    _problem(tmp_path)
    (tmp_path / "lib.net").write_text("def act(z) = tanh(z)\n")
    text = SPEC.format(epochs=3, every=40).replace("act = tanh", "act = act")
    (tmp_path / "main.net").write_text('use "lib.net"\n' + text)
    (tmp_path / "ref.net").write_text('use "lib.net"\n' + text)
    p = subprocess.run(_netc("train", "ref.net", "--out", "ref", "--no-progress"), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(_netc("train", "main.net", "--out", "run", "--epochs", "1", "--no-progress"), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    (tmp_path / "lib.net").unlink()
    (tmp_path / "main.net").write_text("garbage")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = subprocess.run(_netc("train", "--resume", tmp_path / "run", "--epochs", "3", "--no-progress"),
                       cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert _same(_state(tmp_path / "run"), _state(tmp_path / "ref")) == []
    assert _epochs(tmp_path / "run") == [1, 2, 3]


def test_epochs_below_what_was_trained_is_refused(tmp_path, monkeypatch):
    import netc
    from netc.runtime import run_folder
    x, t = make_problem(n=200, seed=3, spread=0.8)
    real = run_folder.RunFolder.checkpoint

    def interrupting(self, arrays, meta):
        real(self, arrays, meta)
        if meta["epoch"] == 2 and meta.get("batch"):
            raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.RunFolder, "checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        netc.compile(_trick_spec("momentum")).fit(x[:150], t[:150], out=tmp_path / "run")
    monkeypatch.undo()
    for epochs in (1, 2):
        with pytest.raises(netc.NetcError, match="at least 3"):
            netc.resume(tmp_path / "run", x[:150], t[:150], epochs=epochs)
    assert netc.resume(tmp_path / "run", x[:150], t[:150], epochs=3).summary["epochs"] == 3
