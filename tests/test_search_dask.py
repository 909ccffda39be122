"""`netc search --scheduler` (issue 12): trials on a real Dask cluster started
from here with the CLI users run (`dask scheduler`, two `dask worker`s, on
127.0.0.1 only) and on `--scheduler local:2`. Each trial's metric and
parameters equal the local pool's for the same seed, bit for bit; a worker
killed mid-search loses no trial and records none twice; a client killed
with SIGKILL resumes with the same command and leaves no local worker behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import netc.search_dask
from netc.cli import main
from test_search import _alive, _children, read_trials, spec_text

try:
    import distributed
except ImportError:  # the extra is optional: `pip install 'netc[dask]'`
    distributed = None

needs_dask = pytest.mark.skipif(distributed is None, reason="needs Dask's distributed: pip install 'netc[dask]'")
ROOT = Path(__file__).resolve().parents[1]
TRIALS, EPOCHS = 4, 200  # a trial trains for most of a second: long enough to be killed mid-way
SEARCH = "\nsearch {\n    trials  = 4\n    metric  = valid.loss\n    workers = 2\n}\n"
STARTUP = 60  # seconds a scheduler or worker may take to come up (a loaded CI machine)


def _dask_cli() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else (shutil.which("dask") or "dask")


def _start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child holds its own copy of the file
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL `p`'s whole process group (a `dask worker` is a nanny and its worker process)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def problem(tmp_path_factory) -> Path:
    """specs/space.net using specs/lib/layer.net, its data one folder up (../tiny.npz):
    the workers get both shipped (they never read the client's folder)."""
    root = tmp_path_factory.mktemp("dask-problem")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 2.0
    t = rng.integers(0, 3, 200)
    x = (centres[t] + rng.normal(size=(200, 20))).astype(np.float32)
    np.savez(root / "tiny.npz", x=x, t=t.astype(np.int64))
    (root / "specs" / "lib").mkdir(parents=True)
    (root / "specs" / "lib" / "layer.net").write_text("def hidden(x) = dense(x, 16, act = tanh)\n")
    text = spec_text(search=SEARCH).replace("h = dense(x, 16, act = tanh)", "h = hidden(x)")
    text = 'use "lib/layer.net"\n' + text.replace('"tiny.npz"', '"../tiny.npz"')
    (root / "specs" / "space.net").write_text(text)
    return root


def _search_args(problem: Path, out: str, *extra: str) -> list[str]:
    return ["search", str(problem / "specs" / "space.net"), "--epochs", str(EPOCHS), "--out",
            str(problem / out), *extra]


def _client(problem: Path, out: str, *extra: str, log: str, tmp: Path | None = None) -> subprocess.Popen:
    """`netc search` in a process of its own; `tmp`: its TMPDIR (and its local workers')"""
    args = [sys.executable, "-m", "netc.cli", *_search_args(problem, out, *extra)]
    return _start(args, problem / log, None if tmp is None else {**os.environ, "TMPDIR": str(tmp)})


@pytest.fixture(scope="module")
def reference(problem) -> dict[int, dict]:
    """The local pool's search: what every cluster search must reproduce."""
    assert main(_search_args(problem, "local")) == 0
    return {r["trial"]: r for r in read_trials(problem / "local")}


def _same_as_reference(problem: Path, out: str, reference: dict[int, dict]) -> None:
    recs = read_trials(problem / out)
    assert sorted(r["trial"] for r in recs) == list(range(1, TRIALS + 1))  # every trial, none twice
    for r in recs:
        ref = reference[r["trial"]]
        assert r["status"] == "ok" and r["seed"] == ref["seed"] and r["sampled"] == ref["sampled"]
        assert r["metric"] == ref["metric"]  # bit for bit
        assert r["summary"]["train_loss"] == ref["summary"]["train_loss"]
        assert r["dir"] == str(problem / out / Path(ref["dir"]).name)
        with np.load(Path(r["dir"]) / "params.npz") as got, np.load(Path(ref["dir"]) / "params.npz") as want:
            names = [n for n in want.files if not n.startswith("meta")]
            assert names and all(np.array_equal(got[n], want[n]) for n in names)
        assert (Path(r["dir"]) / "summary.json").exists() and (Path(r["dir"]) / "metrics.jsonl").exists()
    best = json.loads((problem / out / "best_so_far.json").read_text())["best"]
    assert best["metric"] == min(ref["metric"] for ref in reference.values())


def _wait_for(what: str, ready, timeout: float = STARTUP) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _json_or_empty(path: Path) -> dict:
    """The JSON object in `path`, or {} while it does not exist or is being written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.fixture(scope="module")
def cluster(problem):
    """A `dask scheduler` and two `dask worker`s on 127.0.0.1 (free ports, chosen by them)."""
    if distributed is None:
        pytest.skip("needs Dask's distributed: pip install 'netc[dask]'")
    folder = problem / "cluster"
    folder.mkdir()
    file = folder / "scheduler.json"
    dask = _dask_cli()
    quiet = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # loopback only
    procs = [_start([dask, "scheduler", *quiet, "--port", "0", "--scheduler-file", str(file)],
                    folder / "scheduler.log")]
    workers = []
    try:
        _wait_for("the scheduler", lambda: "address" in _json_or_empty(file))
        for i in range(2):
            workers.append(_start([dask, "worker", "--scheduler-file", str(file), *quiet, "--nworkers", "1",
                                   "--nthreads", "1", "--death-timeout", "60", "--name", f"w{i}"],
                                  folder / f"worker{i}.log"))
        procs += workers
        client = distributed.Client(scheduler_file=str(file), timeout="30s")
        client.wait_for_workers(2, timeout=STARTUP)
        yield {"address": client.scheduler.address, "client": client, "workers": workers, "folder": folder}
        client.close()
    finally:
        for p in reversed(procs):
            _kill(p)


# ---------------------------------------------------------------------------- a remote cluster


@needs_dask
def test_trials_on_a_cluster_equal_the_local_ones_and_survive_a_worker_kill(problem, reference, cluster):
    client, address = cluster["client"], cluster["address"]
    p = _client(problem, "remote", "--scheduler", address, log="remote.log")
    try:
        # a worker running a trial is killed (nanny and worker process, SIGKILL): Dask reschedules it
        _wait_for("both workers to run a trial", lambda: sum(1 for keys in client.processing().values() if keys) == 2,
                  timeout=STARTUP)
        _kill(cluster["workers"][0])
        assert p.wait(timeout=120) == 0, (problem / "remote.log").read_text()
    finally:
        _kill(p)
    log = (problem / "remote.log").read_text()
    assert f"on the Dask cluster at {address}" in log and "Traceback" not in log
    _same_as_reference(problem, "remote", reference)
    assert len(client.scheduler_info()["workers"]) == 1  # the other one did all that was left


@needs_dask
def test_a_killed_client_resumes_with_the_same_command(problem, reference, cluster, capsys, monkeypatch):
    address = cluster["address"]
    if not cluster["client"].scheduler_info()["workers"]:
        pytest.skip("no worker left")
    store = problem / "resumed" / "trials.jsonl"
    p = _client(problem, "resumed", "--scheduler", address, log="resumed.log")
    try:
        _wait_for("the first finished trial", lambda: _lines(store) >= 1, timeout=120)
        _kill(p)  # SIGKILL: the trials in flight are lost
    finally:
        _kill(p)
    kept = read_trials(problem / "resumed")
    assert 1 <= len(kept) < TRIALS, "the search ended before it was killed"
    monkeypatch.setattr(netc.search_dask, "PROGRESS_SECONDS", 0.2)
    assert main(_search_args(problem, "resumed", "--scheduler", address)) == 0
    err = capsys.readouterr().err
    assert f"{len(kept)} of {TRIALS} trials already done, {TRIALS - len(kept)} to run" in err
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress and " running, " in progress[0] and " failed; best so far valid.loss " in progress[0]
    recs = read_trials(problem / "resumed")
    assert recs[:len(kept)] == kept  # the finished trials are kept, not rerun
    _same_as_reference(problem, "resumed", reference)


@needs_dask
def test_data_at_an_absolute_path_needs_shared_data(problem, cluster, capsys):
    text = (problem / "specs" / "space.net").read_text().replace('"../tiny.npz"', f'"{problem / "tiny.npz"}"')
    spec = problem / "specs" / "absolute.net"
    spec.write_text(text)
    args = ["search", str(spec), "--trials", "1", "--out", str(problem / "abs"), "--scheduler", cluster["address"]]
    assert main(args) == 2
    assert "pass --shared-data" in capsys.readouterr().err
    assert main([*args, "--shared-data"]) == 0  # the workers read it there (one machine: they can)
    assert [r["status"] for r in read_trials(problem / "abs")] == ["ok"]


@needs_dask
def test_a_failing_trial_on_the_cluster_is_recorded_with_its_error(problem, cluster):
    text = (problem / "specs" / "space.net").read_text()
    text = text.replace("sgd(lr = loguniform(1e-3, 1e-1), momentum = choice(0, 0.5, 0.9))",
                        "sgd(lr = choice(0.1, 1e6))")
    spec = problem / "specs" / "failing.net"
    spec.write_text(text.replace("epochs = 1", "epochs = 1\n    recover = false"))
    assert main(["search", str(spec), "--out", str(problem / "failing"), "--scheduler", cluster["address"]]) == 0
    recs = read_trials(problem / "failing")
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(recs) == TRIALS and failed and len(failed) < TRIALS  # both happen for this seed
    assert all(r["sampled"]["method.lr"] == 1e6 and "diverged" in r["error"] for r in failed)


@needs_dask
def test_a_worker_without_this_netc_is_refused(problem, cluster, capsys, monkeypatch):
    monkeypatch.setattr(netc.search_dask, "netc_version", lambda: "9.9.9")
    assert main(_search_args(problem, "other", "--scheduler", cluster["address"])) == 2
    err = capsys.readouterr().err
    assert "without this machine's netc 9.9.9" in err and "(netc " in err and "pip install 'netc[dask]'" in err
    assert not (problem / "other" / "trials.jsonl").exists()  # nothing recorded: no trial ran


# ---------------------------------------------------------------------------- --scheduler local:2


@needs_dask
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_local_cluster_survives_a_worker_kill_and_a_client_kill(problem, reference):
    def workers(pid):
        return {w for w, cmd in _children(pid).items() if "spawn_main" in cmd}

    # a worker process killed mid-search: its nanny starts another, its trial runs again
    tmp = problem / "lc-tmp"
    tmp.mkdir()
    p = _client(problem, "lc", "--scheduler", "local:2", log="lc.log", tmp=tmp)
    try:
        # a trial runs in a temporary folder of its worker's
        _wait_for("a trial to start", lambda: any(tmp.glob("netc-trial-*")))
        os.kill(sorted(workers(p.pid))[0], signal.SIGKILL)
        assert p.wait(timeout=120) == 0, (problem / "lc.log").read_text()
    finally:
        _kill(p)
    _same_as_reference(problem, "lc", reference)

    # the client killed (SIGKILL): no worker goes on; the same command resumes
    store = problem / "lc2" / "trials.jsonl"
    p = _client(problem, "lc2", "--scheduler", "local:2", log="lc2.log")
    everyone: set[int] = set()
    try:
        _wait_for("the first finished trial", lambda: _lines(store) >= 1, timeout=120)
        everyone = set(_children(p.pid))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        _wait_for("the workers to end", lambda: not any(_alive(w) for w in everyone), timeout=15)
    finally:
        _kill(p)
        for w in everyone:
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass
    kept = read_trials(problem / "lc2")
    assert 1 <= len(kept) < TRIALS, "the search ended before it was killed"
    assert main(_search_args(problem, "lc2", "--scheduler", "local:2")) == 0
    assert read_trials(problem / "lc2")[:len(kept)] == kept
    _same_as_reference(problem, "lc2", reference)


# ---------------------------------------------------------------------------- without Dask


def test_without_dask_the_message_says_how_to_install_it(problem, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails, as when missing
    assert main(["search", str(problem / "specs" / "space.net"), "--trials", "1", "--out", str(problem / "nd"),
                 "--scheduler", "local:2"]) == 2
    assert "pip install 'netc[dask]'" in capsys.readouterr().err
    assert not (problem / "nd").exists()  # refused before anything was written


def test_without_scheduler_the_search_never_imports_dask(problem):
    code = ("import sys; from netc.cli import main; "
            f"rc = main({_search_args(problem, 'plain', '--trials', '1', '--workers', '1')!r}); "
            "assert rc == 0, rc; assert 'distributed' not in sys.modules and 'dask' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_trials(problem / "plain")) == 1


def test_a_bad_scheduler_address_is_refused(problem, capsys):
    for bad in ("local:0", "local:x"):
        assert main(_search_args(problem, "bad", "--scheduler", bad)) == 2
        assert "expected local:N" in capsys.readouterr().err
