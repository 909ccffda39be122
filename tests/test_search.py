"""Search spaces and `netc search` (Bergstra & Bengio random search [PR 3.4]):
distributions in the data/train blocks, their checks (located), sampling from a
seed, `netc check`/`netc train` on a space, and the search itself: the results
store, resuming, failed trials, the best-so-far curve and the border warning."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main
from netc.search_space import Dist, SearchConfig, parse_dist, trial_seed
from netc.search_store import border_warnings, best_so_far

ROOT = Path(__file__).resolve().parents[1]

HEAD = """\
input  x : [20]
target t : class(3)

h = dense(x, 16, act = tanh)
y = dense(h, 3)

loss = nll(softmax(y), t)
"""

DATA = """
data {
    train = npz("tiny.npz")[0:150]
    valid = npz("tiny.npz")[150:200]
}
"""

TRAIN = """
train {
    method = sgd(lr = loguniform(1e-3, 1e-1), momentum = choice(0, 0.5, 0.9))
    batch  = choice(8, 16, 32)
    epochs = 1
}
"""

SEARCH = """
search {
    trials  = 4
    metric  = valid.error
    workers = 2
}
"""


def spec_text(train=TRAIN, search=SEARCH, data=DATA) -> str:
    return HEAD + data + train + search


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 2.0
    t = rng.integers(0, 3, 200)
    x = (centres[t] + rng.normal(size=(200, 20))).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, t=t.astype(np.int64))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, text: str, name="space.net") -> Path:
    p = folder / name
    p.write_text(text)
    return p


def error_of(text: str) -> netc.NetcError:
    with pytest.raises(netc.NetcError) as e:
        netc.compile(text)
    return e.value


def line_col(text: str, needle: str) -> str:
    """`line:col` of the first occurrence of `needle` (1-based, as errors print it)."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f"{i}:{line.index(needle) + 1}"
    raise AssertionError(needle)


def read_trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- the distributions


@pytest.mark.parametrize("value, message", [
    ("loguniform(0, 1)", "positive ends"),
    ("loguniform(-1e-3, 1e-1)", "positive ends"),
    ("uniform(0.5, 0.1)", "lower end must be below the upper end"),
    ("uniform(0.1, 0.1)", "lower end must be below the upper end"),
    ("uniform(0.1)", "takes two numbers"),
    ("uniform(0.1, \"x\")", "finite numbers"),
    ("intrange(1.5, 8)", "whole numbers"),
    ("intrange(8, 2)", "lower end must be below"),
    ("intrange(0, 8, log = true)", "positive ends"),
    ("intrange(1, 8, lg = true)", "unknown argument 'lg'"),
    ("choice()", "at least one option"),
    ("choice(choice(1, 2), 3)", "cannot be nested"),
])
def test_bad_distribution_arguments_are_located(value, message):
    text = spec_text(train=f"\ntrain {{\n    decay = {value}\n}}\n", search="")
    e = error_of(text)
    rendered = e.render()
    assert message in rendered
    assert f"<spec>:{line_col(text, value)}:" in rendered  # at the distribution itself
    assert "^" in rendered


def test_did_you_mean_for_a_misspelt_argument():
    e = error_of(spec_text(train="\ntrain {\n    batch = intrange(8, 64, lg = true)\n}\n", search=""))
    assert "did you mean 'log'?" in e.render()


@pytest.mark.parametrize("entry, needle, message", [
    ("batch = choice(0, 32)", "choice(0, 32)", "the option 0 fails: batch"),
    ("batch = choice(16, -1, 0)", "choice(16, -1, 0)", "the option -1 fails"),
    ("epochs = uniform(1, 5)", "uniform(1, 5)", "a draw such as"),
    ("method = sgd(momentum = choice(0, 0.5, 1.5))", "choice(0, 0.5, 1.5)", "the option 1.5 fails: sgd: momentum"),
    ("method = sgd(lr = choice(0.1, -1))", "choice(0.1, -1)", "the option -1 fails: sgd: lr must be > 0"),
    ("method = sgd(lr = uniform(-0.1, 0.1))", "uniform(-0.1, 0.1)", "the lower end -0.1 fails"),
    ("average = choice(polyak, sometimes)", "choice(polyak, sometimes)", "the option sometimes fails"),
    ("dtype = choice(\"float32\", \"float16\")", "choice(", "the option \"float16\" fails"),
])
def test_every_value_a_distribution_can_draw_is_validated_at_check_time(entry, needle, message):
    text = spec_text(train=f"\ntrain {{\n    {entry}\n}}\n", search="")
    e = error_of(text)
    assert message in e.render()
    assert f"<spec>:{line_col(text, needle)}:" in e.render()


def test_a_real_draw_for_an_integer_key_suggests_intrange():
    e = error_of(spec_text(train="\ntrain {\n    batch = uniform(8, 64)\n}\n", search=""))
    assert "intrange" in e.render() and "a draw such as" in e.render()


def test_valid_values_and_other_errors_of_the_block_still_reported():
    text = spec_text(train="\ntrain {\n    batch = choice(0, 32)\n    shuffle = 3\n    epoks = 2\n}\n", search="")
    e = error_of(text)
    r = e.render()
    assert "the option 0 fails" in r and "shuffle" in r and "did you mean 'epochs'?" in r
    assert "option 32" not in r


def test_the_seed_cannot_be_searched():
    e = error_of(spec_text(train="\ntrain {\n    seed = intrange(0, 10)\n}\n", search=""))
    assert "seed cannot be searched" in e.render()


def test_a_distribution_in_the_network_is_refused_with_a_reason():
    e = error_of("input x : [4]\ntarget t : class(2)\nh = dense(x, choice(8, 16))\n"
                 "y = dense(h, 2)\nloss = nll(softmax(y), t)\n")
    assert "search distribution" in e.render() and "<spec>:3:14" in e.render()


def test_search_block_is_validated_with_located_errors():
    text = spec_text(search="\nsearch {\n    trials = 0\n    metrc = valid.error\n    workers = choice(1, 2)\n}\n")
    r = error_of(text).render()
    assert f"<spec>:{line_col(text, 'trials = 0')}: trials" in r
    assert "unknown key 'metrc'" in r and "did you mean 'metric'?" in r
    assert "distributions belong in the data and train blocks" in r
    r = error_of(spec_text(search="\nsearch {\n    metric = valid.eror\n}\n")).render()
    assert "'valid.error'" in r and "'train.loss'" in r


def test_search_block_values():
    m = netc.compile(spec_text(search="\nsearch {\n    trials = 9\n    metric = train.loss\n"
                                      "    workers = 3\n    seed = 7\n}\n"))
    assert m.search_cfg == SearchConfig(trials=9, metric="train.loss", workers=3, seed=7)
    assert netc.compile(spec_text(search="")).search_cfg is None


# ---------------------------------------------------------------------------- sampling


def test_a_point_is_a_function_of_the_seed():
    text = spec_text()
    a, b, c = netc.compile(text, seed=3), netc.compile(text, seed=3), netc.compile(text, seed=4)
    assert list(a.space) == ["method.lr", "method.momentum", "batch"]
    assert a.sampled == b.sampled and a.sampled != c.sampled
    # the drawn values are the ones trained with, and the seed is the training seed
    assert a.train_cfg.method.lr == a.sampled["method.lr"]
    assert a.train_cfg.method.momentum == a.sampled["method.momentum"]
    assert a.train_cfg.batch == a.sampled["batch"] and a.train_cfg.seed == 3
    assert 1e-3 <= a.sampled["method.lr"] <= 1e-1 and a.sampled["batch"] in (8, 16, 32)
    # no seed given: the spec's train seed
    assert netc.compile(text).sampled == netc.compile(text, seed=0).sampled
    assert trial_seed(0, 1) == trial_seed(0, 1) != trial_seed(0, 2) != trial_seed(1, 2)


def _call(text) -> Dist:
    """The distribution written as `text` in a block."""
    from netc.compiler.pipeline import parse_and_elaborate
    blocks = {}
    parse_and_elaborate(f"train {{\n    x = {text}\n}}\n", "<t>",
                        check_block=lambda name, entries, loc: blocks.setdefault(name, entries))
    return parse_dist(blocks["train"][0].value)


def test_loguniform_spreads_evenly_in_log_space():
    d = _call("loguniform(1e-4, 1)")
    rng = np.random.default_rng(0)
    v = np.array([d.sample(rng) for _ in range(4000)])
    assert v.min() >= 1e-4 and v.max() <= 1
    decades = np.histogram(np.log10(v), bins=4, range=(-4, 0))[0] / len(v)
    assert np.all(np.abs(decades - 0.25) < 0.03), decades  # a uniform draw would put ~90% in the top decade
    assert v.min() < 1.3e-4 and v.max() > 0.75


def test_uniform_intrange_and_choice_cover_their_ranges():
    rng = np.random.default_rng(1)
    u = np.array([_call("uniform(2, 4)").sample(rng) for _ in range(2000)])
    assert 2 <= u.min() < 2.05 and 3.95 < u.max() <= 4 and abs(u.mean() - 3) < 0.05
    d = _call("intrange(1, 5)")
    ints = [d.sample(rng) for _ in range(1000)]
    assert set(ints) == {1, 2, 3, 4, 5} and all(isinstance(i, int) for i in ints)  # both ends included
    d = _call("intrange(1, 1000, log = true)")
    logs = np.array([d.sample(rng) for _ in range(3000)])
    assert logs.min() >= 1 and logs.max() <= 1000 and 0.2 < np.mean(logs < 32) < 0.6  # log10(32)/3 ~ 0.5
    d = _call("choice(0, 0.5, 0.9)")
    counts = {k: 0 for k in (0, 0.5, 0.9)}
    for _ in range(900):
        counts[d.sample(rng)] += 1
    assert all(250 < c < 350 for c in counts.values()), counts


def test_border_warnings():
    space = {"lr": Dist("loguniform", (1e-4, 1e-1)), "mom": Dist("choice", (0, 0.5, 0.9)),
             "n": Dist("intrange", (10, 20)), "u": Dist("uniform", (0.0, 1.0))}
    assert border_warnings(space, {"lr": 1e-2, "mom": 0.9, "n": 15, "u": 0.5}) == []  # choice: never
    w = border_warnings(space, {"lr": 0.08, "mom": 0, "n": 10, "u": 0.95})
    assert len(w) == 3
    assert "lr" in w[0] and "upper border" in w[0] and "log space" in w[0] and "above 0.1" in w[0]
    assert "n = 10" in w[1] and "lower border" in w[1] and "below 10" in w[1]
    assert "u = 0.95" in w[2] and "upper" in w[2]
    # 10% of the range in log space: 1.5e-4 is 6% of the way from 1e-4 to 1e-1 in log space
    assert border_warnings({"lr": space["lr"]}, {"lr": 1.5e-4}) and not border_warnings({"lr": space["lr"]},
                                                                                        {"lr": 5e-4})


def test_best_so_far_curve():
    recs = [{"trial": 3, "status": "ok", "metric": 0.2}, {"trial": 1, "status": "failed", "metric": None},
            {"trial": 2, "status": "ok", "metric": 0.5}, {"trial": 4, "status": "ok", "metric": 0.3}]
    best, curve = best_so_far(recs)
    assert best["trial"] == 3
    assert [c["metric"] for c in curve] == [None, 0.5, 0.2, 0.2]


# ---------------------------------------------------------------------------- check and train


def test_check_prints_the_space(folder, capsys):
    path = write(folder, spec_text())
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "search space: 3 hyper-parameters" in out
    assert "method.lr        loguniform(0.001, 0.1)" in out
    assert "method.momentum  choice(0, 0.5, 0.9)" in out
    assert "batch            choice(8, 16, 32)" in out
    assert "search: 4 trials, metric valid.error" in out


def test_shipped_search_spec_checks(capsys):
    path = ROOT / "specs" / "search.net"
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "method.lr        loguniform(0.0001, 0.1)" in out and "batch            choice(16, 32, 64, 128)" in out
    assert "search: 64 trials, metric valid.error" in out


def test_train_trains_the_point_drawn_from_the_seed(folder, capsys):
    path = write(folder, spec_text())
    assert main(["train", str(path), "--out", "run", "--seed", "5", "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads((folder / "run" / "summary.json").read_text())
    expected = netc.compile(path, seed=5).sampled
    assert summary["sampled"] == expected and summary["seed"] == 5
    assert "training the point drawn from seed 5" in captured.err
    assert f"method.lr = {expected['method.lr']:g}" in captured.err
    assert summary["lr"] == pytest.approx(expected["method.lr"])


# ---------------------------------------------------------------------------- search


def test_search_writes_the_store_and_resumes_without_rerunning(folder, capsys):
    path = write(folder, spec_text())
    assert main(["search", str(path), "--trials", "3", "--out", "s"]) == 0
    cap = capsys.readouterr()
    out = folder / "s"
    first = (out / "trials.jsonl").read_bytes()
    recs = read_trials(out)
    assert sorted(r["trial"] for r in recs) == [1, 2, 3]
    for r in recs:
        assert r["status"] == "ok" and 0 <= r["metric"] <= 1 and r["seconds"] > 0
        assert r["seed"] == trial_seed(0, r["trial"])
        assert r["summary"]["valid_error"] == r["metric"] and r["summary"]["sampled"] == r["sampled"]
        # the point is a pure function of (search seed, trial): netc train --seed reproduces it
        assert netc.compile(path, seed=r["seed"]).sampled == r["sampled"]
        assert (folder / r["dir"] / "summary.json").exists() and (folder / r["dir"] / "params.npz").exists()
    assert cap.err.count("valid.error") >= 3 and "best: trial" in cap.out
    curve = json.loads((out / "best_so_far.json").read_text())
    values = [c["metric"] for c in curve["curve"]]
    assert len(values) == 3 and all(b <= a for a, b in zip(values, values[1:]))
    assert curve["best"]["metric"] == min(r["metric"] for r in recs)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("trial-*/summary.json")}

    # more trials: only the new ones run
    assert main(["search", str(path), "--trials", "5", "--out", "s", "--workers", "1"]) == 0
    cap = capsys.readouterr()
    assert "3 of 5 trials already done, 2 to run" in cap.err
    assert [line.split()[1] for line in cap.err.splitlines() if line.startswith("trial ")] in (["4/5", "5/5"],
                                                                                                 ["5/5", "4/5"])
    assert (out / "trials.jsonl").read_bytes().startswith(first)
    assert sorted(r["trial"] for r in read_trials(out)) == [1, 2, 3, 4, 5]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("trial-*/summary.json")
            if p.parent.name in {"trial-001", "trial-002", "trial-003"}} == mtimes
    values = [c["metric"] for c in json.loads((out / "best_so_far.json").read_text())["curve"]]
    assert len(values) == 5 and all(b <= a for a, b in zip(values, values[1:]))

    # the same command again: nothing to run
    before = (out / "trials.jsonl").read_bytes()
    assert main(["search", str(path), "--trials", "5", "--out", "s"]) == 0
    cap = capsys.readouterr()
    assert "0 run now" in cap.out and (out / "trials.jsonl").read_bytes() == before

    # another spec in the same folder is refused, not mixed in
    write(folder, spec_text().replace("epochs = 1", "epochs = 2"))
    assert main(["search", str(path), "--out", "s"]) == 2
    assert "holds another search" in capsys.readouterr().err


def test_a_failing_trial_is_recorded_and_the_search_goes_on(folder, capsys):
    train = "\ntrain {\n    method = sgd(lr = choice(0.1, 1e6))\n    recover = false\n    epochs = 1\n}\n"
    path = write(folder, spec_text(train=train))
    assert main(["search", str(path), "--trials", "6", "--out", "f"]) == 0
    cap = capsys.readouterr()
    recs = read_trials(folder / "f")
    assert len(recs) == 6
    failed = [r for r in recs if r["status"] == "failed"]
    ok = [r for r in recs if r["status"] == "ok"]
    assert failed and ok  # both happen for this seed; every 1e6 diverges, every 0.1 trains
    assert all(r["sampled"]["method.lr"] == 1e6 and "diverged" in r["error"] and r["metric"] is None
               for r in failed)
    assert all(r["sampled"]["method.lr"] == 0.1 for r in ok)
    assert "FAILED: training diverged" in cap.err and "failed: training diverged" in cap.out
    assert json.loads((folder / "f" / "best_so_far.json").read_text())["best"]["trial"] in {r["trial"] for r in ok}


def test_warns_when_the_best_value_is_on_the_border(folder, capsys):
    # every rate of the range is far below the good ones: the larger, the better, so
    # the best trial is the one with the largest rate, near the top of the range
    # (a small init_scale: every trial starts near the same loss, whatever its seed)
    train = ("\ntrain {\n    method = sgd(lr = loguniform(1e-3, 3e-2))\n    batch = 16\n    epochs = 2\n"
             "    init_scale = 0.1\n}\n")
    search = "\nsearch {\n    metric = valid.loss\n    seed = 1\n}\n"
    path = write(folder, spec_text(train=train, search=search))
    assert main(["search", str(path), "--trials", "6", "--out", "b"]) == 0
    out = capsys.readouterr().out
    recs = read_trials(folder / "b")
    best = min(recs, key=lambda r: r["metric"])
    assert best["sampled"]["method.lr"] == max(r["sampled"]["method.lr"] for r in recs)
    pos = (math.log(best["sampled"]["method.lr"]) - math.log(1e-3)) / (math.log(3e-2) - math.log(1e-3))
    assert pos >= 0.9
    warning = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "method.lr" in warning[0] and "upper border" in warning[0]
    assert "extend the range above 0.03" in warning[0]


def test_search_refuses_what_it_cannot_do(folder, capsys):
    plain = write(folder, spec_text(train="\ntrain {\n    epochs = 1\n}\n"), "plain.net")
    assert main(["search", str(plain)]) == 2
    assert "no distributions" in capsys.readouterr().err
    text = spec_text(data='\ndata {\n    train = npz("tiny.npz")[0:150]\n}\n')
    assert main(["search", str(write(folder, text))]) == 2
    err = capsys.readouterr().err
    assert "metric = valid.error needs a validation set" in err and f":{line_col(text, 'metric')}:" in err


def test_ctrl_c_keeps_the_finished_trials(folder):
    path = write(folder, spec_text(search="\nsearch {\n    workers = 1\n}\n"))
    args = [sys.executable, "-m", "netc.cli", "search", str(path), "--trials", "6", "--epochs", "40", "--out", "i"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    store = folder / "i" / "trials.jsonl"
    deadline = time.time() + 40
    while time.time() < deadline and not (store.exists() and store.read_text().count("\n") >= 1):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    kept = read_trials(folder / "i")
    assert 1 <= len(kept) < 6
    done = {r["trial"] for r in kept}
    assert main(["search", str(path), "--trials", "6", "--epochs", "40", "--out", "i"]) == 0
    recs = read_trials(folder / "i")
    assert sorted(r["trial"] for r in recs) == [1, 2, 3, 4, 5, 6]  # no trial twice
    assert [r for r in recs if r["trial"] in done] == [r for r in kept]


def _children(pid: int) -> dict[int, str]:
    """The live (not zombie) child processes of `pid`: {pid: command line}."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ...
            if int(fields[1]) == pid and fields[0] != "Z":
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"  # a zombie has finished


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_kill_9_of_the_search_leaves_no_worker_behind(folder):
    path = write(folder, spec_text(search="\nsearch {\n    workers = 2\n}\n"))
    args = [sys.executable, "-m", "netc.cli", "search", str(path), "--trials", "8", "--epochs", "200",
            "--workers", "2", "--out", "k"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    everyone: set[int] = set()
    try:
        deadline, workers = time.time() + 60, {}
        while time.time() < deadline and len(workers) < 2:
            workers = {pid: cmd for pid, cmd in _children(p.pid).items() if "spawn_main" in cmd}
            time.sleep(0.1)
        assert len(workers) >= 2, f"the search did not start its workers: {_children(p.pid)}"
        time.sleep(1.0)  # the workers are running trials now
        everyone = set(_children(p.pid))  # the workers and any helper process of the pool
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(pid) for pid in everyone):
            time.sleep(0.1)
        left = sorted(pid for pid in everyone if _alive(pid))
        assert not left, f"processes left running after kill -9 of the search: {left}"
    finally:
        for pid in [p.pid, *_children(p.pid), *everyone]:  # whatever happened, leave nothing behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
