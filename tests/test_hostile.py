"""Hostile inputs (issue 10): nothing from a checkpoint or an API keyword runs,
every malformed checkpoint is refused with a DataError naming the file and the
field, and a checkpoint's spec reads no file but those saved in it.

Each attack that would run code writes a marker file if it succeeds; every
test asserts the marker never appears.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pathlib
import threading
import time
import zipfile

import numpy as np
import pytest

import netc
from netc import DataError, NetcError, SpecError

# parameterless: with nothing to initialise, a hostile dtype used to reach the generated source
BARE = """\
input  x : [4]
target t : [4]
y = tanh(x)
loss = mean((y - t) * (y - t))
"""

SPEC = """\
input  x : [4]
target t : class(3)
h = dense(x, 5, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
data { normalize = standardize }
train { batch = 8 }
"""

X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
T = np.array([0, 1, 2, 0, 1, 2])


@pytest.fixture
def marker(tmp_path):
    """A file that hostile code would create; asserted absent after each test."""
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "hostile input ran code"


def code(marker) -> str:
    return f"__import__('os').system('touch {marker}')"


def hostile_strings(marker) -> list[str]:
    c = code(marker)
    return [
        f"float32) if not {c} else (np.float32",  # the reproduced injection
        f"float32; {c}", "float32; import os",
        f"float32\n{c}", "float32\r\nimport os", "float32 # \n" + c,
        "'\"\\", "\x00", "float32\x00", "a" * 200_000,
        "ｆｌｏａｔ３２", "float32\u202e", "\U0001F4A3", "", " float32",
        "{}", "__import__", "np.float32", "float32)", "$(touch x)", "`touch x`",
    ]


NOT_STRINGS = [None, 1.5, float("nan"), -1, 2 ** 80, True, [], {}, ["float32"], {"a": 1}]


# ---------------------------------------------------------------------------- helpers

def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=True)
    return buf.getvalue()


def raw_npy(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy with a hand-written header (to declare what the data is not)."""
    h = header.encode("latin1")
    pre = 10 if version == (1, 0) else 12
    h += b" " * ((-(pre + len(h) + 1)) % 64) + b"\n"
    size = len(h).to_bytes(2 if version == (1, 0) else 4, "little")
    return b"\x93NUMPY" + bytes(version) + size + h + data


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def meta_of(ms: dict[str, bytes]) -> dict:
    return json.loads(str(np.load(io.BytesIO(ms["meta.json.npy"]))[()]))


def write_zip(path, ms: dict[str, bytes], compression=zipfile.ZIP_STORED) -> pathlib.Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for k, v in ms.items():
            z.writestr(k, v)
    return pathlib.Path(path)


def with_meta(ms: dict[str, bytes], meta) -> dict[str, bytes]:
    return {**ms, "meta.json.npy": npy(np.array(json.dumps(meta)))}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A trained checkpoint of SPEC: (its members, its predictions on X)."""
    d = tmp_path_factory.mktemp("good")
    m = netc.compile(SPEC, seed=3)
    m.fit(np.tile(X, (4, 1)), np.tile(T, 4), epochs=1)
    path = m.save(d / "run")
    return members(path), m.predict_raw(X)


def refused(path, *fields: str) -> DataError:
    """netc.load(path) is a DataError naming the file and each of `fields`."""
    with pytest.raises(DataError) as e:
        netc.load(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fields:
        assert f"'{f}'" in msg or f"{f}" in msg, (f, msg)
    return e.value


# ---------------------------------------------------------------------------- code from a checkpoint

def test_dtype_from_checkpoint_runs_nothing(tmp_path, marker):
    m = netc.compile(BARE)
    p = m.save(tmp_path / "run")
    meta = meta_of(members(p))
    meta["dtype"] = f"float32) if not {code(marker)} else (np.float32"
    write_zip(p, with_meta(members(p), meta))
    with pytest.raises(NetcError) as e:
        m2 = netc.load(tmp_path / "run")
        m2.function("output")(X)
        m2.predict_raw(X)
    assert isinstance(e.value, DataError)
    assert str(p) in str(e.value) and "'dtype'" in str(e.value)


FIELDS = ["format", "netc", "spec", "spec_file", "dtype", "seed", "params", "sources",
          "summary", "epoch", "age", "final"]


def _harmless(field, value) -> bool:
    """Values a field may legitimately hold: loaded, and inert."""
    if field in ("netc", "spec_file"):
        limit = 64 if field == "netc" else 4096
        return isinstance(value, str) and value != "" and value.isprintable() and len(value) <= limit
    if field == "summary":
        return value is None or isinstance(value, dict)
    if field == "sources":
        return value == {}
    if field == "final":
        return isinstance(value, bool)
    return False


def test_hostile_values_in_every_checkpoint_field(good, tmp_path, marker):
    ms, expected = good
    base = meta_of(ms)
    tried = refused_n = 0
    for field in FIELDS:
        for k, value in enumerate(hostile_strings(marker) + NOT_STRINGS):
            path = write_zip(tmp_path / f"{field}-{k}.npz", with_meta(ms, {**base, field: value}))
            tried += 1
            if _harmless(field, value):
                m = netc.load(path)
                np.testing.assert_array_equal(m.predict_raw(X), expected)
                m.function("output")(m.normalizer.apply(X))
            else:
                refused(path, field)
                refused_n += 1
            assert not marker.exists(), (field, value)
    assert tried == len(FIELDS) * (len(hostile_strings(marker)) + len(NOT_STRINGS))
    # hostile text inside a free-form field stays data
    evil = {s[:50]: s for s in hostile_strings(marker)}
    m = netc.load(write_zip(tmp_path / "summary.npz", with_meta(ms, {**base, "summary": evil})))
    assert m.summary == evil
    np.testing.assert_array_equal(m.predict_raw(X), expected)
    assert refused_n > 0.8 * tried
    print(f"hostile metadata values: {tried} tried, {refused_n} refused, {tried - refused_n} inert")


def test_huge_spec_in_checkpoint_is_refused_before_allocating(good, tmp_path):
    """A checkpoint whose spec declares 200 GiB of parameters (each under the
    per-tensor limit): refused from the metadata, or from the elaborated shapes
    when the metadata lies, before any parameter is allocated."""
    ms, _ = good
    meta = meta_of(ms)
    n, wide = 200, 16_000  # 200 layers of 16000 x 16000 float32: 1 GiB each
    lines = ["input  x : [4]", "target t : class(3)", f"h0 = dense(x, {wide})"]
    lines += [f"h{i} = dense(h{i - 1}, {wide})" for i in range(1, n)]
    lines += [f"y = dense(h{n - 1}, 3)", "loss = nll(softmax(y), t)"]
    honest = {"h0.W": [4, wide], "h0.b": [wide], "y.W": [wide, 3], "y.b": [3]}
    honest.update({f"h{i}.{k}": s for i in range(1, n) for k, s in (("W", [wide, wide]), ("b", [wide]))})
    for k, m in enumerate([{**meta, "spec": "\n".join(lines)}, {**meta, "spec": "\n".join(lines), "params": honest}]):
        t = time.time()
        refused(write_zip(tmp_path / f"huge{k}.npz", with_meta(ms, m)), "params")
        assert time.time() - t < 30


def test_hostile_spec_in_checkpoint_is_only_a_spec(good, tmp_path, marker):
    ms, _ = good
    for k, spec in enumerate([f"x = {code(marker)}", f"def f(x) = {code(marker)}\n", "input x : [4]\n" * 3,
                              "use \"x\" " * 1000, "(" * 100_000, "\x00" * 10]):
        path = write_zip(tmp_path / f"s{k}.npz", with_meta(ms, {**meta_of(ms), "spec": spec}))
        refused(path, "spec")


# ---------------------------------------------------------------------------- API keywords

def test_hostile_compile_keywords(marker, tmp_path):
    bad = {
        "dtype": hostile_strings(marker) + ["int8", "int64", "float16", "complex64", "object", "bool",
                                            np.int8, np.float16, 32, 1.5, True, [], b"float32"],
        "seed": [-1, "x", "0", 1.5, True, 2 ** 31, 2 ** 80, -2 ** 80, [], float("nan")] + hostile_strings(marker)[:3],
        "device": ["GPU", "cuda", "", "cpu\n", "cpu; x", 1, None, True] + hostile_strings(marker)[:3],
        "debug": ["yes", "", 2, None, [], code(marker)],
        "train": ["x", [1], {1: 2}, {"evil": 1}, {"seed": -1}, {"batch": "a" * 100_000}]
        + [{"dtype": v} for v in hostile_strings(marker)[:4] + ["int8"]],
    }
    tried = 0
    for kw, values in bad.items():
        for v in values:
            with pytest.raises(NetcError) as e:
                netc.compile(SPEC, **{kw: v})
            assert kw in str(e.value), (kw, v, str(e.value))
            assert len(str(e.value)) < 500  # a long hostile value is not echoed whole
            tried += 1
    for kw in ["epochs", "sed", "path", "text", "file", "__class__", "a" * 10_000]:
        with pytest.raises(NetcError, match="unknown keyword"):
            netc.compile(SPEC, **{kw: 1})
        tried += 1
    # the good values still work, NumPy's types included
    assert netc.compile(SPEC, dtype=np.float64, seed=np.int64(5)).program.spec.graph.float_dtype == "float64"
    print(f"hostile compile keywords: {tried} tried, {tried} refused")


def test_hostile_fit_keywords(marker):
    m = netc.compile(SPEC)
    tried = 0
    for kw, values in {"epochs": [0, -1, -2 ** 80, "x", "1", 1.5, float("nan"), True, [], code(marker)],
                       "limit": [0, -5, "x", 1.5, True, [], code(marker)]}.items():
        for v in values:
            with pytest.raises(NetcError) as e:
                m.fit(X, T, **{kw: v})
            assert kw in str(e.value) and len(str(e.value)) < 500
            tried += 1
    print(f"hostile fit keywords: {tried} tried, {tried} refused")


def test_hostile_spec_arguments(marker, tmp_path):
    big = tmp_path / "big.net"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    latin = tmp_path / "latin.net"
    latin.write_bytes(b"input x : [4]\n# caf\xe9\n")
    os.mkdir(tmp_path / "folder.net")
    fifo = tmp_path / "fifo.net"
    os.mkfifo(fifo)
    _unblock(fifo, BARE)
    for arg in [None, 123, 1.5, b"input x : [4]", ["input x : [4]"], "x\x00.net", "a" * 100_000 + ".net",
                "/dev/zero", pathlib.Path("/dev/zero"), big, latin, tmp_path / "folder.net", fifo,
                code(marker), "float32; import os"]:
        with pytest.raises(NetcError) as e:
            netc.compile(arg)
        assert len(str(e.value)) < 1000
    with pytest.raises(SpecError) as e:
        netc.compile(latin)
    assert e.value.loc is not None and (e.value.loc.line, e.value.loc.col) == (2, 6)


def test_hostile_load_arguments(marker, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _unblock(fifo, "")
    os.symlink("/dev/zero", tmp_path / "params.npz")
    for arg in [None, 123, b"run", "", "x\x00", "a" * 100_000, "/dev/zero", fifo, tmp_path,
                tmp_path / "missing", code(marker)]:
        with pytest.raises(DataError) as e:
            netc.load(arg)
        assert len(str(e.value)) < 1000


def test_hostile_save_paths(tmp_path):
    m = netc.compile(SPEC)
    for arg in ["x\x00", "a" * 100_000, tmp_path / "b\x00"]:
        with pytest.raises(NetcError):
            m.save(arg)


def _unblock(fifo, text: str, seconds: float = 3.0) -> None:
    """If something opens the FIFO for reading, give it `text` and EOF, so a
    regression fails the test instead of hanging it."""
    def feed():
        end = time.time() + seconds
        while time.time() < end:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            os.write(fd, text.encode())
            os.close(fd)
            return
    threading.Thread(target=feed, daemon=True).start()


# ---------------------------------------------------------------------------- malformed checkpoints

def _damaged(good, tmp_path):
    """(name, bytes or a builder, fields the message must name) for every malformed checkpoint."""
    ms, _ = good
    whole = (tmp_path / "whole.npz")
    write_zip(whole, ms)
    data = whole.read_bytes()
    meta = meta_of(ms)
    W = "a/state/h.W.npy"
    cases = [("empty", b"", ())]
    for cut in (1, 4, 22, 30, 100, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 22, len(data) - 1):
        cases.append((f"truncated-{cut}", data[:cut], ()))
    cases += [
        ("text", b"not a zip file", ()),
        ("random", np.random.default_rng(0).bytes(5000), ()),
        ("npy-not-npz", npy(np.zeros(3)), ()),
        ("no-meta", {k: v for k, v in ms.items() if k != "meta.json.npy"}, ("meta.json",)),
        ("meta-plain-text", {**ms, "meta.json.npy": json.dumps(meta).encode()}, ("meta.json",)),
        ("meta-not-json", {**ms, "meta.json.npy": npy(np.array("{not json"))}, ("meta.json",)),
        ("meta-deep-json", {**ms, "meta.json.npy": npy(np.array("[" * 100_000))}, ("meta.json",)),
        ("meta-int-array", {**ms, "meta.json.npy": npy(np.arange(3))}, ("meta.json",)),
        ("meta-two-texts", {**ms, "meta.json.npy": npy(np.array([json.dumps(meta)] * 2))}, ("meta.json",)),
        ("meta-object", {**ms, "meta.json.npy": npy(np.array([meta], dtype=object))}, ("meta.json",)),
        ("meta-bytes", {**ms, "meta.json.npy": npy(np.array(json.dumps(meta).encode()))}, ("meta.json",)),
        ("meta-huge-header", {**ms, "meta.json.npy": raw_npy("{'descr': '<U2147483647', 'fortran_order': "
                                                               "False, 'shape': (), }")}, ("meta.json",)),
    ]
    for k, v in enumerate(([], 3, "x", None, [meta], True)):
        cases.append((f"meta-{k}-{type(v).__name__}", with_meta(ms, v), ("meta.json",)))
    for key in ("format", "spec", "dtype", "seed", "params"):
        cases.append((f"missing-{key}", with_meta(ms, {k: v for k, v in meta.items() if k != key}), (key,)))
    cases += [
        ("params-wrong", with_meta(ms, {**meta, "params": {**meta["params"], "h.W": [5, 4]}}), ("params",)),
        ("params-huge", with_meta(ms, {**meta, "params": {**meta["params"], "h.W": [2 ** 40, 2 ** 20]}}), ("params",)),
        ("params-extra", with_meta(ms, {**meta, "params": {**meta["params"], "z": [1]}}), ("params",)),
        ("string-array", {**ms, W: npy(np.full((4, 5), "abcde"))}, ("state/h.W",)),
        ("complex-array", {**ms, W: npy(np.zeros((4, 5), np.complex64))}, ("state/h.W",)),
        ("object-array", {**ms, W: npy(np.full((4, 5), None, dtype=object))}, ("state/h.W",)),
        ("pickled-array", {**ms, W: npy(np.array([[{}] * 5] * 4, dtype=object))}, ("state/h.W",)),
        ("structured-array", {**ms, W: npy(np.zeros((4, 5), [("a", "<f4")]))}, ("state/h.W",)),
        ("float64-array", {**ms, W: npy(np.zeros((4, 5)))}, ("state/h.W",)),
        ("float16-array", {**ms, W: npy(np.zeros((4, 5), np.float16))}, ("state/h.W",)),
        ("int-array", {**ms, W: npy(np.zeros((4, 5), np.int32))}, ("state/h.W",)),
        ("wrong-shape", {**ms, W: npy(np.zeros((5, 4), np.float32))}, ("state/h.W",)),
        ("scalar-for-matrix", {**ms, W: npy(np.float32(1))}, ("state/h.W",)),
        ("missing-array", {k: v for k, v in ms.items() if k != W}, ("state/h.W",)),
        ("huge-shape", {**ms, W: raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                          "(1099511627776, 1048576), }", b"\0" * 80)}, ("state/h.W",)),
        ("huge-extra-array", {**ms, "a/junk.npy": raw_npy("{'descr': '<f8', 'fortran_order': False, "
                                                           "'shape': (4294967296, 4294967296), }")}, ("junk",)),
        ("negative-shape", {**ms, W: raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4, -5), }",
                                             b"\0" * 80)}, ("state/h.W",)),
        ("short-data", {**ms, W: raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 5), }",
                                         b"\0" * 40)}, ("state/h.W",)),
        ("unknown-dtype", {**ms, W: raw_npy("{'descr': '<q99', 'fortran_order': False, 'shape': (4, 5), }",
                                            b"\0" * 80)}, ("state/h.W",)),
        ("code-in-header", {**ms, W: raw_npy("{'descr': __import__('os').system('true'), 'fortran_order': "
                                             "False, 'shape': (4, 5), }", b"\0" * 80)}, ("state/h.W",)),
        ("bad-magic", {**ms, W: b"\x93NUMPX\x01\x00" + ms[W][8:]}, ("state/h.W",)),
        ("version-9", {**ms, W: b"\x93NUMPY\x09\x00" + ms[W][8:]}, ("state/h.W",)),
        ("long-header", {**ms, W: raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 5), }"
                                          + " " * 200_000, b"\0" * 80, version=(2, 0))}, ("state/h.W",)),
        ("norm-kind-hostile", {**ms, "a/norm.kind.npy": npy(np.array("evil"))}, ("norm",)),
        ("norm-kind-long", {**ms, "a/norm.kind.npy": npy(np.array("s" * 10_000))}, ("norm.kind",)),
        ("norm-mean-shape", {**ms, "a/norm.mean.npy": npy(np.zeros(7))}, ("norm",)),
        ("norm-mean-text", {**ms, "a/norm.mean.npy": npy(np.array("0"))}, ("norm",)),
    ]
    return cases


def test_malformed_checkpoints_are_refused(good, tmp_path, marker):
    ms, expected = good
    np.testing.assert_array_equal(netc.load(write_zip(tmp_path / "ok.npz", ms)).predict_raw(X), expected)
    cases = _damaged(good, tmp_path)
    for name, content, fields in cases:
        d = tmp_path / name
        d.mkdir()
        p = d / "params.npz"
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            write_zip(p, content)
        e = refused(d, *fields)
        assert "Traceback" not in str(e)
    print(f"malformed checkpoints: {len(cases)} tried, {len(cases)} refused")


def test_zip_tricks_are_refused(good, tmp_path):
    ms, _ = good
    # a deflated member that claims to expand 10^9-fold: refused before inflating
    p = write_zip(tmp_path / "bomb.npz", {**ms, "a/state/h.W.npy": npy(np.zeros((4, 5), np.float32))},
                  zipfile.ZIP_DEFLATED)
    b = bytearray(p.read_bytes())
    cd = _central_entry(b, "a/state/h.W.npy")
    b[cd + 24:cd + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # its uncompressed size
    p.write_bytes(bytes(b))
    refused(p)
    # an unknown compression method
    p = write_zip(tmp_path / "method.npz", ms)
    b = bytearray(p.read_bytes())
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = b.index(sig)
        b[i + off:i + off + 2] = (99).to_bytes(2, "little")
    p.write_bytes(bytes(b))
    refused(p)
    # a member that appears twice
    p = tmp_path / "twice.npz"
    with pytest.warns(UserWarning), zipfile.ZipFile(p, "w") as z:
        for k, v in ms.items():
            z.writestr(k, v)
        z.writestr("a/state/h.W.npy", npy(np.zeros((4, 5), np.float32)))
    refused(p, "state/h.W")
    # hostile member names: never used as paths or code, shown escaped
    for k, name in enumerate(["../../../etc/passwd", "a/state/x\n__import__('os').system('x')", "\x1b[2J", "a\x00b"]):
        p = write_zip(tmp_path / f"name{k}.npz", {**ms, name + ".npy": npy(np.full(3, None, dtype=object))})
        e = refused(p)
        assert "\x1b" not in str(e) and "\n__import__" not in str(e)
    # a FIFO, a folder and a device where params.npz should be
    fifo = tmp_path / "f" / "params.npz"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    _unblock(fifo, "")
    refused(fifo.parent)
    (tmp_path / "d" / "params.npz").mkdir(parents=True)
    refused(tmp_path / "d")
    refused(pathlib.Path("/dev/zero"))


def _central_entry(b: bytes, name: str) -> int:
    """Offset of `name`'s record in a zip's central directory."""
    i = b.index(b"PK\x01\x02")
    while b[i + 46:i + 46 + int.from_bytes(b[i + 28:i + 30], "little")] != name.encode():
        i = b.index(b"PK\x01\x02", i + 4)
    return i


# ---------------------------------------------------------------------------- use

LIB = "def act(z) = tanh(z)\n"
MAIN = """\
use "lib.net"
input  x : [4]
target t : [4]
y = act(dense(x, 4))
loss = mean((y - t) * (y - t))
"""


def test_checkpoint_embeds_used_files(tmp_path, monkeypatch):
    (tmp_path / "lib.net").write_text(LIB)
    (tmp_path / "main.net").write_text(MAIN)
    m = netc.compile(tmp_path / "main.net", seed=1)
    m.save(tmp_path / "run")
    expected = m.predict_raw(X)
    (tmp_path / "lib.net").write_text("def act(z) = z\n")  # a changed library does not change the model
    np.testing.assert_array_equal(netc.load(tmp_path / "run").predict_raw(X), expected)
    (tmp_path / "lib.net").unlink()
    monkeypatch.chdir("/")
    np.testing.assert_array_equal(netc.load(tmp_path / "run").predict_raw(X), expected)
    # saved again from the loaded model: still self-contained
    netc.load(tmp_path / "run").save(tmp_path / "run2")
    np.testing.assert_array_equal(netc.load(tmp_path / "run2").predict_raw(X), expected)


def test_checkpoint_embeds_nested_uses(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "spec").mkdir()
    (tmp_path / "lib" / "a.net").write_text('use "b.net"\nuse "../c.net"\ndef act(z) = inner(outer(z))\n')
    (tmp_path / "lib" / "b.net").write_text("def inner(z) = tanh(z)\n")
    (tmp_path / "c.net").write_text("def outer(z) = 2 * z\n")
    (tmp_path / "spec" / "main.net").write_text(MAIN.replace('"lib.net"', '"../lib/a.net"'))
    monkeypatch.chdir(tmp_path / "lib")
    m = netc.compile("../spec/main.net", seed=2)  # a relative spec path
    assert len(m.program.spec.used) == 3
    m.save(tmp_path / "run")
    expected = m.predict_raw(X)
    for f in ("lib/a.net", "lib/b.net", "c.net"):
        (tmp_path / f).unlink()
    for where in (tmp_path / "spec", "/", "/usr/bin"):  # "../spec/main.net" now resolves elsewhere, or nowhere
        monkeypatch.chdir(where)
        np.testing.assert_array_equal(netc.load(tmp_path / "run").predict_raw(X), expected)


FORBIDDEN = ("/etc/passwd", "/dev/zero", "/etc/hostname")


@pytest.fixture
def no_reads(monkeypatch):
    """Fail (instead of hanging or echoing) if anything opens a forbidden path."""
    def guard_str(fn):
        def wrapped(path, *a, **k):
            if isinstance(path, (str, os.PathLike)) and str(os.fspath(path)) in FORBIDDEN:
                raise AssertionError(f"read {path}")
            return fn(path, *a, **k)
        return wrapped
    monkeypatch.setattr(builtins, "open", guard_str(builtins.open))
    monkeypatch.setattr(io, "open", guard_str(io.open))
    monkeypatch.setattr(os, "open", guard_str(os.open))
    monkeypatch.setattr(pathlib.Path, "read_text", guard_str(pathlib.Path.read_text))
    monkeypatch.setattr(pathlib.Path, "read_bytes", guard_str(pathlib.Path.read_bytes))
    monkeypatch.setattr(pathlib.Path, "open", guard_str(pathlib.Path.open))


@pytest.mark.parametrize("target", ["/etc/passwd", "/dev/zero", "../../../../../../../../etc/passwd",
                                    "/etc/hostname", "lib.net"])
def test_checkpoint_spec_reads_no_other_file(good, tmp_path, target, no_reads):
    ms, _ = good
    meta = meta_of(ms)
    (tmp_path / "lib.net").write_text(LIB)  # present on disk, but not saved in the checkpoint
    meta.update(spec=f'use "{target}"\n' + meta["spec"], spec_file=str(tmp_path / "main.net"))
    p = write_zip(tmp_path / "p.npz", with_meta(ms, meta))
    e = refused(p, "spec")
    assert "root:" not in str(e) and target in str(e)
    assert "saved in it" in str(e)


def test_use_refuses_special_and_big_files(tmp_path, no_reads):
    (tmp_path / "big.net").write_text("# " + "x" * (2 << 20) + "\n")
    (tmp_path / "latin.net").write_bytes(b"def f(z) = z\n# caf\xe9\n")
    (tmp_path / "folder.net").mkdir()
    os.mkfifo(tmp_path / "fifo.net")
    _unblock(tmp_path / "fifo.net", LIB)
    for target, why in [("/dev/zero", "not a regular file"), ("fifo.net", "not a regular file"),
                        ("folder.net", "folder"), ("big.net", "MiB"), ("latin.net", "not UTF-8")]:
        spec = f'use "{target}"\n' + MAIN.split("\n", 1)[1]
        (tmp_path / "main.net").write_text(spec)
        with pytest.raises(SpecError) as e:
            netc.compile(tmp_path / "main.net")
        assert why in str(e.value), (target, str(e.value))
        assert e.value.loc is not None and e.value.loc.line == 1
    # what is allowed still reads as before: CRLF line ends, in the spec and in a used file
    (tmp_path / "lib.net").write_bytes(LIB.replace("\n", "\r\n").encode())
    (tmp_path / "main.net").write_bytes(MAIN.replace("\n", "\r\n").encode())
    assert netc.compile(tmp_path / "main.net").program.spec.used[str(tmp_path / "lib.net")] == LIB


def test_random_corruption_loads_or_is_refused(good, tmp_path):
    """Random byte changes and cuts: a DataError, or (a change in bytes nothing
    reads, such as a timestamp) a checkpoint that loads; never another exception."""
    ms, _ = good
    data = write_zip(tmp_path / "ok.npz", ms).read_bytes()
    rng = np.random.default_rng(0)
    outcome = {"refused": 0, "loaded": 0}
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
        if rng.random() < 0.2:
            b = b[:rng.integers(0, len(b))]
        (tmp_path / "f.npz").write_bytes(bytes(b))
        try:
            netc.load(tmp_path / "f.npz")
            outcome["loaded"] += 1
        except DataError:
            outcome["refused"] += 1
    assert outcome["refused"] > 250
    print(f"random corruptions: 300 tried, {outcome}")
