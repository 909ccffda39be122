"""Data loaders: IDX parsing, the shipped MNIST, CSV, NPZ, slicing and batching."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from netc.compiler.errors import DataError
from netc.runtime import data
from netc.runtime.data import arrays, csv, minibatches, mnist, npz, read_idx


def idx_bytes(a: np.ndarray, code: int) -> bytes:
    be = a.astype(a.dtype.newbyteorder(">"))
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + be.tobytes()


# ---------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, code, gz):
    a = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    raw = idx_bytes(a, code)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match=r"bad\.idx: bad magic"):
        read_idx(p)


def test_idx_unknown_dtype(tmp_path):
    p = tmp_path / "code.idx"
    p.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match=r"code\.idx: unknown IDX type code 0x07"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_names_file_and_record(tmp_path, gz):
    raw = idx_bytes(np.zeros((10, 2, 2), np.uint8), 0x08)[:-6]  # 8 complete + 2 of 4 bytes
    p = tmp_path / ("imgs.gz" if gz else "imgs")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = e.value.message
    assert "imgs" in msg and "record 8" in msg and "8 of 10 records" in msg
    assert e.value.exit_code == 2


def test_idx_trailing_garbage(tmp_path):
    p = tmp_path / "t.idx"
    p.write_bytes(idx_bytes(np.zeros(3, np.uint8), 0x08) + b"xyz")
    with pytest.raises(DataError, match=r"t\.idx: 3 bytes of trailing garbage"):
        read_idx(p)


def test_idx_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(DataError, match="nope.gz: no such file"):
        read_idx(tmp_path / "nope.gz")
    p = tmp_path / "c.gz"
    p.write_bytes(gzip.compress(b"\x00" * 100)[:15])
    with pytest.raises(DataError, match=r"c\.gz: corrupt gzip"):
        read_idx(p)


def _write_mnist(root, n_img, n_lab, labels=None):
    imgs = np.zeros((n_img, 28, 28), np.uint8)
    labs = np.arange(n_lab, dtype=np.uint8) % 10 if labels is None else labels
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(imgs, 0x08)))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labs, 0x08)))


def test_mnist_count_mismatch(tmp_path):
    _write_mnist(tmp_path, 5, 4)
    with pytest.raises(DataError, match="5 images but train-labels-idx1-ubyte.gz has 4"):
        mnist("train", root=tmp_path)


def test_mnist_custom_root(tmp_path):
    _write_mnist(tmp_path, 5, 5)
    ds = mnist("train", root=tmp_path)
    assert ds.x.shape == (5, 784) and list(ds.t) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------- shipped MNIST

def test_mnist_shipped():
    tr, te = mnist("train"), mnist("t10k")
    assert tr.x.shape == (60000, 784) and te.x.shape == (10000, 784)
    assert len(tr) == 60000 and len(te) == 10000
    assert tr.x.dtype == np.float32 and tr.t.dtype == np.int64
    assert tr.x.min() == 0.0 and tr.x.max() == 1.0
    assert set(np.unique(tr.t)) == set(range(10)) == set(np.unique(te.t))
    assert tr.t[0] == 5
    assert tr.name == 'mnist("train")'


def test_mnist_cached_and_read_only():
    a, b = mnist("train"), mnist("train")
    assert a.x is b.x
    assert not a.x.flags.writeable and not a.t.flags.writeable
    with pytest.raises(ValueError):
        a.x[0, 0] = 1.0


def test_mnist_bad_split():
    with pytest.raises(DataError, match='"train", "t10k"') as e:
        mnist("test")
    assert e.value.exit_code == 2


# ---------------------------------------------------------------------------- slicing

def test_slice():
    ds = mnist("train").slice(0, 50000)
    assert len(ds) == 50000 and ds.name == 'mnist("train")[0:50000]'
    v = mnist("train").slice(50000, None)
    assert len(v) == 10000 and v.t[0] == mnist("train").t[50000]
    assert len(mnist("t10k").slice(-100, None)) == 100


@pytest.mark.parametrize("lo,hi,what", [(0, 70000, "out of bounds"), (-70000, None, "out of bounds"),
                                        (10, 10, "empty"), (20, 10, "empty")])
def test_slice_errors(lo, hi, what):
    with pytest.raises(DataError, match=what) as e:
        mnist("train").slice(lo, hi)
    assert 'mnist("train")' in e.value.message and "60000" in e.value.message


# ---------------------------------------------------------------------------- CSV

def test_csv_header_detected_target_by_name(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,label,b\n1,0,2\n3,1,4.5\n\n5,2,6\n")
    ds = csv(p, target="label")
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4.5], [5, 6]])
    assert ds.x.dtype == np.float32
    assert ds.t.dtype == np.int64 and list(ds.t) == [0, 1, 2]


def test_csv_no_header_target_by_index(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("1,2,3\n4,5,6\n")
    ds = csv(p)  # default target -1: last column
    np.testing.assert_array_equal(ds.x, [[1, 2], [4, 5]])
    assert list(ds.t) == [3, 6]
    ds0 = csv(p, target=0)
    np.testing.assert_array_equal(ds0.x, [[2, 3], [5, 6]])
    assert csv(p, target=None).t is None and csv(p, target=None).x.shape == (2, 3)


def test_csv_float_targets(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("x,y\n1,0.5\n2,1\n")
    ds = csv(p, target="y")
    assert ds.t.shape == (2, 1) and ds.t.dtype.kind == "f"
    np.testing.assert_allclose(ds.t[:, 0], [0.5, 1.0])


def test_csv_header_forced(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("1,2\n3,4\n")
    assert len(csv(p, header=True)) == 1
    with pytest.raises(DataError, match="no header"):
        csv(p, target="y", header=False)


def test_csv_bad_cell_names_file_line_column(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("a,b,c\n1,2,3\n4,5,abc\n")
    with pytest.raises(DataError) as e:
        csv(p)
    assert e.value.message == f"{p}: line 3: could not parse 'abc' as a number in column 3"


def test_csv_errors(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(DataError, match="e.csv: the file is empty"):
        csv(p)
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="e.csv: line 3: expected 2 columns, found 1"):
        csv(p)
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no column named 'lbl'"):
        csv(p, target="lbl")
    with pytest.raises(DataError, match="out of range"):
        csv(p, target=5)
    with pytest.raises(DataError, match="missing.csv: no such file"):
        csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------- NPZ / arrays

def test_npz(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.ones((4, 2, 3), np.uint8), y=np.arange(4, dtype=np.int32),
             r=np.zeros((4, 2)))
    ds = npz(p, x="images", t="y")
    assert ds.x.shape == (4, 6) and ds.x.dtype == np.float32
    assert ds.t.dtype == np.int64 and list(ds.t) == [0, 1, 2, 3]
    assert npz(p, x="images", t="r").t.shape == (4, 2)
    assert npz(p, x="images", t=None).t is None


def test_npz_missing_key_lists_keys(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.ones((4, 2)), labels=np.arange(4))
    with pytest.raises(DataError) as e:
        npz(p)
    assert "d.npz" in e.value.message and "'x'" in e.value.message
    assert "images" in e.value.message and "labels" in e.value.message


def test_npz_object_array_rejected_without_unpickling(tmp_path, monkeypatch):
    import pickle  # only to prove nothing is unpickled; the module under test never imports it

    p = tmp_path / "o.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), t=np.arange(2))

    def boom(*a, **k):
        raise AssertionError("unpickled!")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    with pytest.raises(DataError, match="o.npz"):
        npz(p)


def test_npz_missing_and_garbage(tmp_path):
    with pytest.raises(DataError, match="none.npz: no such file"):
        npz(tmp_path / "none.npz")
    p = tmp_path / "g.npz"
    p.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="g.npz"):
        npz(p)


def test_arrays():
    ds = arrays(np.zeros((3, 2, 2)), np.array([1, 2, 3]))
    assert ds.x.shape == (3, 4) and ds.x.dtype == np.float64 and ds.t.dtype == np.int64
    with pytest.raises(DataError, match="3 records but 't' has 2"):
        arrays(np.zeros((3, 2)), np.zeros(2, np.int64))


# ---------------------------------------------------------------------------- batching

@pytest.mark.parametrize("n,b", [(10, 3), (9, 3), (1, 5), (100, 100)])
def test_minibatches_cover_each_index_once(n, b):
    batches = list(minibatches(n, b, np.random.default_rng(0)))
    allidx = np.concatenate(batches)
    assert sorted(allidx) == list(range(n))
    assert all(len(x) == b for x in batches[:-1]) and 1 <= len(batches[-1]) <= b


def test_minibatches_reproducible_in_order_and_drop_last():
    a = list(minibatches(10, 3, np.random.default_rng(42)))
    b = list(minibatches(10, 3, np.random.default_rng(42)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 4
    c = list(minibatches(10, 3, np.random.default_rng(43)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert np.array_equal(np.concatenate(list(minibatches(7, 3, None))), np.arange(7))
    d = list(minibatches(10, 3, None, drop_last=True))
    assert [len(x) for x in d] == [3, 3, 3]


def test_no_pickle_in_module():
    import inspect

    src = inspect.getsource(data)
    assert "import pickle" not in src and "allow_pickle=True" not in src
