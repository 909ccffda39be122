"""The memory budget (runtime/memory.py): `netc check` estimates parameters,
optimizer state, training copies and buffers without allocating them; a spec
that needs more than the machine has is refused before anything of its size
exists, quickly, without a traceback (exit 2).

The hostile spec declares 8 layers of [16384, 16384] float32 (8 GiB) with
momentum (8 GiB more). Subprocesses run it under RLIMIT_AS, so code that does
allocate fails fast with a MemoryError instead of exhausting the machine."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import netc
from netc import NetcError
from netc.cli import main
from netc.runtime import memory


def layers(n: int, width: int, train: str = "method = sgd(lr = 0.01, momentum = 0.9)") -> str:
    body = [f"input x : [{width}]", f"target t : [{width}]", "h0 = x"]
    body += [f"h{i} = dense(h{i - 1}, {width})" for i in range(1, n + 1)]
    return "\n".join(body + [f"loss = mse(h{n}, t)", f"train {{\n    {train}\n}}", ""])


BIG = layers(8, 16384)  # 8 GiB of parameters + 8 GiB of velocities
GiB = 1 << 30


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (6 * GiB, 6 * GiB))


def run_limited(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "netc.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=e, timeout=120, preexec_fn=_limit_address_space)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


@pytest.mark.parametrize("command", ["check", "train"])
def test_cli_refuses_a_spec_bigger_than_the_budget_before_allocating(tmp_path, command):
    (tmp_path / "big.net").write_text(BIG)
    rc, out, err, seconds = run_limited(command, "big.net", env={memory.ENV: "2G"}, cwd=tmp_path)
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err and "MemoryError" not in err
    assert "refused before allocating" in err and "2 GiB allowed" in err and memory.ENV in err
    assert "[16384, 16384] float32 1 GiB" in err  # the biggest tensors, named
    assert "parameters 8 GiB" in err and "optimizer state 8 GiB" in err
    assert seconds < 5
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("params.npz"))


def test_api_refuses_before_allocating_anything():
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(NetcError, match="refused before allocating") as e:
            netc.compile(BIG, memory_limit="1G")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert peak < 64 << 20  # nothing of a layer's size (1 GiB) was allocated
    msg = str(e.value)
    assert "h1.W [16384, 16384] float32 1 GiB" in msg and "1 GiB allowed (memory_limit)" in msg


def test_the_default_budget_is_most_of_memavailable(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    monkeypatch.setattr(memory, "available", lambda meminfo="/proc/meminfo": 4 * GiB)
    with pytest.raises(NetcError, match=r"3.6 GiB allowed \(90% of the 4 GiB available\)"):
        netc.compile(BIG)
    monkeypatch.setenv(memory.ENV, "off")
    m = netc.compile(BIG, allocate=False)  # the check is off, nothing is allocated
    assert m.state is None and m.memory.total > 32 * GiB


def test_check_prints_the_estimate_without_allocating_the_parameters(tmp_path, capsys, monkeypatch):
    (tmp_path / "mid.net").write_text(layers(8, 2048))  # 128 MiB of parameters, 128 MiB of velocities
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(memory.ENV, "off")
    tracemalloc.start()
    try:
        assert main(["check", "mid.net"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # baseline allocated every parameter and velocity here: 256 MiB
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("memory")]
    assert "to train at batch 32" in line and "parameters 128 MiB" in line and "optimizer state 128 MiB" in line
    monkeypatch.setenv(memory.ENV, "100M")
    assert main(["check", "mid.net"]) == 2
    err = capsys.readouterr().err
    assert "refused before allocating" in err and "h1.W [2048, 2048] float32 16 MiB" in err


SMALL = layers(2, 8, "METHOD\n    STOP")


@pytest.mark.parametrize("method, stop, state, copies", [
    ("sgd(lr = 0.1)", "", 0, 1),
    ("sgd(lr = 0.1, momentum = 0.9)", "", 1, 2),
    ("adagrad(lr = 0.1)", "", 1, 2),
    ("sgd(lr = 0.1)", "average = polyak", 0, 3),
    ("sgd(lr = 0.1, momentum = 0.5)", "stop = early(patience = 100)", 1, 3),
])
def test_the_estimate_counts_optimizer_state_and_copies_per_method(method, stop, state, copies):
    m = netc.compile(SMALL.replace("METHOD", f"method = {method}").replace("STOP", stop), allocate=False)
    p = 2 * (8 * 8 + 8) * 4  # two dense layers of float32
    kinds = m.memory.by_kind()
    assert kinds["parameters"] == p
    assert kinds.get("optimizer state", 0) == state * p
    assert kinds["training copies"] == (1 + state) * p + (copies - 1 - state) * p


def test_the_buffers_counted_are_those_bind_allocates():
    m = netc.compile(layers(3, 256))
    fn, batch = m.program.step, 100
    tracemalloc.start()
    try:
        fn.bind(m.state, batch)
        got = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert fn.buffer_bytes(batch) > 3 * 256 * 256 * 4  # the weight gradients at least
    assert abs(got - fn.buffer_bytes(batch)) < 0.05 * fn.buffer_bytes(batch) + 65536
    est = {p.name: p.bytes for p in m.memory.parts}
    assert est["train step buffers at batch 32"] == fn.buffer_bytes(32)


def test_a_model_compiled_without_allocating_refuses_to_train():
    m = netc.compile(SMALL.replace("METHOD", "method = sgd(lr = 0.1)").replace("STOP", ""), allocate=False)
    for call in (lambda: m.fit(np.zeros((4, 8)), np.zeros((4, 8))), lambda: m.predict_raw(np.zeros((1, 8))),
                 lambda: m.save("x"), lambda: m.params):
        with pytest.raises(NetcError, match="allocate=False"):
            call()


@pytest.mark.parametrize("text, expected", [("8G", 8 * GiB), ("512M", 512 << 20), ("1.5GiB", 3 * GiB // 2),
                                            ("1000", 1000), (" 2 gb ", 2 * GiB), (4096, 4096), ("off", None)])
def test_limits_are_read_in_binary_units(text, expected):
    assert memory.parse_limit(text, "limit") == expected


@pytest.mark.parametrize("bad", ["", "lots", "-1G", "0", "inf", "nanG", 0, -5, True, 1.5, None, [1]])
def test_bad_limits_are_netc_errors(bad, monkeypatch):
    with pytest.raises(NetcError, match="limit"):
        memory.parse_limit(bad, "memory_limit")
    if isinstance(bad, str):
        monkeypatch.setenv(memory.ENV, bad)
        with pytest.raises(NetcError, match=memory.ENV):
            netc.compile(SMALL.replace("METHOD", "").replace("STOP", ""))


def test_memavailable_is_read_from_meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24683656 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n")
    assert memory.available(f) == 2048 * 1024
    f.write_text("garbage\n")
    assert memory.available(f) is None
    assert memory.available(tmp_path / "none") is None


def test_human_units():
    assert [memory.human(n) for n in (0, 1023, 1024, 1536, 8 * GiB, 3 << 40)] == \
        ["0 B", "1023 B", "1 KiB", "1.5 KiB", "8 GiB", "3 TiB"]


def test_a_loaded_model_needs_only_what_using_it_needs(tmp_path, monkeypatch):
    """Trained on a big machine, used on a small one: netc.load checks the parameters,
    optimizer state and prediction buffers; fit checks the training copies too."""
    monkeypatch.delenv(memory.ENV, raising=False)
    m = netc.compile(layers(2, 1024))
    m.save(tmp_path / "m")
    est = m.memory
    assert est.use() < 40 << 20 < est.total
    monkeypatch.setenv(memory.ENV, "40M")
    with pytest.raises(NetcError, match="to train at batch 32"):
        netc.compile(layers(2, 1024))
    loaded = netc.load(tmp_path / "m")
    assert loaded.predict_raw(np.ones((3, 1024))).shape == (3, 1024)
    with pytest.raises(NetcError, match="refused before allocating"):
        loaded.fit(np.ones((4, 1024)), np.ones((4, 1024)))
    monkeypatch.setenv(memory.ENV, "20M")
    with pytest.raises(NetcError, match="to hold and use"):
        netc.load(tmp_path / "m")


@pytest.mark.parametrize("bad", ["training", None, 1])
def test_purpose_is_train_or_use(bad):
    with pytest.raises(NetcError, match="purpose"):
        netc.compile(SMALL.replace("METHOD", "").replace("STOP", ""), purpose=bad)
