"""Hostile and careless data (issue 10, item 4): every bad record is a DataError
that names the file and the record (the line for CSV, the index for NPZ/IDX and
arrays), the column for a bad feature; whole-number float labels are classes.

Each test here failed before the checks existed (a crash, a silent NaN run, a
lost row, or no such check); tests through the public API are at the end.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from netc.compiler.errors import DataError
from netc.runtime import data
from netc.runtime.config import Source
from netc.runtime.data import Target, check_arrays, conform, csv, npz, read_idx
from netc.runtime.splits import load_source

CLASS3 = Target("t", classes=3)
REAL1 = Target("y", width=1)


def refused(fn, *args, **kw) -> str:
    """The message of the DataError fn raises (it must raise one)."""
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    assert e.value.exit_code == 2
    return e.value.message


def write_csv(tmp_path, text: str, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------- labels

def test_savetxt_float_labels_are_classes(tmp_path):
    """np.savetxt writes labels as 1.000000000000000000e+00: they are classes."""
    p = tmp_path / "s.csv"
    np.savetxt(p, np.array([[0.5, 0.25, 2], [1.5, 0.75, 0], [2.5, 1.0, 1]]), delimiter=",")
    ds = conform(csv(p), CLASS3)
    assert ds.t.dtype == np.int64 and ds.t.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(ds.x, [[0.5, 0.25], [1.5, 0.75], [2.5, 1.0]])


def test_float_labels_in_npz_and_arrays_are_classes(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, x=np.ones((3, 2)), t=np.array([2.0, 0.0, 1.0], np.float32))
    assert conform(npz(p), CLASS3).t.tolist() == [2, 0, 1]
    ds = check_arrays(np.ones((2, 2)), np.array([[1.0], [2.0]]), CLASS3, what="fit(x, t)")
    assert ds.t.dtype == np.int64 and ds.t.shape == (2,) and list(ds.t) == [1, 2]


@pytest.mark.parametrize("label,why", [
    ("1.5", "label 1.5 is not a whole number"),
    ("nan", "nan in column 3 (the target)"),
    ("inf", "inf"),
    ("-1", "label -1 is outside class(3) (0..2)"),
    ("3", "label 3 is outside class(3) (0..2)"),
    ("3.0", "label 3 is outside class(3) (0..2)"),
    ("12345678901234567890", "is outside class(3)"),  # overflows int64
])
def test_csv_bad_label_names_file_and_line(tmp_path, label, why):
    p = write_csv(tmp_path, f"a,b,label\n1,2,0\n\n3,4,{label}\n5,6,1\n")
    msg = refused(lambda: conform(csv(p), CLASS3))
    assert msg.startswith(f"{p}: line 4: ") and why in msg


def test_twenty_digit_label_is_a_number_for_a_real_target(tmp_path):
    p = write_csv(tmp_path, "1,12345678901234567890\n2,1\n")
    ds = conform(csv(p), REAL1)
    assert ds.t.shape == (2, 1) and ds.t[0, 0] == pytest.approx(1.2345678901234567e19)


def test_npz_bad_label_names_file_and_record(tmp_path):
    p = tmp_path / "l.npz"
    np.savez(p, x=np.ones((4, 2)), t=np.array([0, 1, 0.5, 2]))
    msg = refused(lambda: conform(npz(p), CLASS3))
    assert msg.startswith(f"{p}: record 2: label 0.5 is not a whole number")


def test_uint64_label_does_not_wrap_negative(tmp_path):
    p = tmp_path / "u.npz"
    np.savez(p, x=np.ones((2, 2)), t=np.array([0, 2 ** 64 - 1], np.uint64))
    msg = refused(lambda: conform(npz(p), CLASS3))
    assert msg.startswith(f"{p}: record 1: label ") and "label -" not in msg and "outside" in msg


def test_arrays_bad_label_names_the_call_and_record():
    msg = refused(check_arrays, np.ones((3, 2)), np.array([0, 1, 7]), CLASS3, what="fit(x, t)")
    assert msg == "fit(x, t): record 2: label 7 is outside class(3) (0..2)"
    msg = refused(check_arrays, np.ones((3, 2)), np.array([0, 1, 7.0]), CLASS3, what="fit(x, t)")
    assert msg == "fit(x, t): record 2: label 7 is outside class(3) (0..2)"


def test_conform_refuses_nonfinite_labels_of_any_dataset():
    ds = data.Dataset(np.ones((3, 1), np.float32), np.array([0.0, 1.0, np.nan]), "built")
    assert refused(conform, ds, CLASS3) == "built: record 2: label nan is not a number; class(3) labels are 0..2"
    ds = data.Dataset(np.ones((2, 1), np.float32), np.array([[0.5], [np.inf]]), "built")
    assert refused(conform, ds, REAL1) == "built: record 1: target value inf is not finite"
    ds = data.Dataset(np.ones((2, 1), np.float32), np.array([-np.inf, 0]), "built")
    assert refused(conform, ds, CLASS3) == "built: record 0: label -inf is infinite; class(3) labels are 0..2"
    ds = data.Dataset(np.ones((2, 1), np.float32), np.array(["0", "1"]), "built")
    assert "non-numeric dtype" in refused(conform, ds, CLASS3)


def test_labels_must_be_one_per_record_for_a_class_target():
    msg = refused(check_arrays, np.ones((3, 2)), np.zeros((3, 2)), CLASS3, what="fit(x, t)")
    assert "2 target values per record" in msg and "class(3)" in msg


def test_real_target_width_and_missing_targets():
    msg = refused(check_arrays, np.ones((3, 2)), np.zeros((3, 2)), REAL1, what="score(x, t)")
    assert msg.startswith("score(x, t): 2 target values per record") and "'y' has 1" in msg
    msg = refused(check_arrays, np.ones((3, 2)), None, CLASS3, what="fit(x)")
    assert "no targets" in msg and "'t'" in msg


def test_target_from_a_graph_node():
    import netc

    spec = "input x : [2]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(softmax(y), t)\n"
    node = next(iter(netc.compile(spec).program.spec.targets.values()))
    assert Target.of(node) == Target("t", classes=3, width=1)
    assert check_arrays(np.ones((2, 2)), np.array([1.0, 2.0]), node).t.tolist() == [1, 2]
    with pytest.raises(DataError, match="record 1: label 3 is outside class"):
        check_arrays(np.ones((2, 2)), np.array([1, 3]), node)


# ---------------------------------------------------------------------------- features

@pytest.mark.parametrize("cell,shown", [("nan", "nan"), ("NaN", "nan"), ("inf", "inf"),
                                        ("-inf", "-inf"), ("1e400", "inf")])
def test_csv_nonfinite_feature_names_file_line_column(tmp_path, cell, shown):
    p = write_csv(tmp_path, f"a,b,c,label\n1,2,3,0\n4,{cell},6,1\n")
    assert refused(csv, p) == f"{p}: line 3: {shown} in column 2"


def test_csv_nonfinite_target_is_named_as_the_target(tmp_path):
    p = write_csv(tmp_path, "a,y\n1,0.5\n2,nan\n")
    assert refused(csv, p) == f"{p}: line 3: nan in column 2 (the target)"


def test_csv_feature_too_large_for_float32(tmp_path):
    p = write_csv(tmp_path, "1,2,0\n3,1e39,1\n")
    assert refused(csv, p) == f"{p}: line 2: 1e39 in column 2 is too large for float32"
    p = write_csv(tmp_path, "0,1,2\n1,3,1e39\n", "t.csv")  # target first: column numbers hold
    assert "line 2: 1e39 in column 3" in refused(csv, p, target=0)


def test_npz_nonfinite_feature_names_record_and_column(tmp_path):
    x = np.zeros((5, 2, 3), np.float32)
    x[3, 1, 2] = np.inf
    p = tmp_path / "i.npz"
    np.savez(p, x=x, t=np.arange(5))
    msg = refused(npz, p)
    assert msg.startswith(f"{p}: record 3: inf in column 5 of 'x'")


def test_arrays_nonfinite_feature_and_target():
    x = np.ones((4, 3))
    x[2, 0] = np.nan
    msg = refused(check_arrays, x, np.zeros(4, np.int64), what="fit(x, t)")
    assert msg.startswith("fit(x, t): record 2: nan in column 0 of 'x'")
    assert check_arrays(np.ones((2, 3)), what="predict(x)").x.shape == (2, 3)
    msg = refused(check_arrays, np.ones((2, 3)), np.array([0.5, np.nan]), REAL1, what="fit(x, t)")
    assert msg.startswith("fit(x, t): record 1: nan of 't'")
    msg = refused(check_arrays, np.ones((2, 3)), np.array([[0.5, 1], [2, -np.inf]]), what="fit")
    assert msg.startswith("fit: record 1: -inf in column 1 of 't'")


def test_huge_finite_values_are_not_mistaken_for_inf():
    """The fast path sums the array; a sum that overflows must not refuse finite data."""
    x = np.full((4, 3), 3e38, np.float32)
    assert check_arrays(x, np.full(4, 1e308), REAL1).x is not None


# ---------------------------------------------------------------------------- files

def test_csv_utf8_bom_loses_nothing(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeff1,2,0\n3,4,1\n".encode("utf-8"))  # Excel's "CSV UTF-8"
    ds = csv(p)
    assert len(ds) == 2 and list(ds.t) == [0, 1]
    p.write_bytes("\ufefflabel,a\n1,2\n0,4\n".encode("utf-8"))
    ds = csv(p, target="label")
    assert list(ds.t) == [1, 0] and ds.x[:, 0].tolist() == [2, 4]


@pytest.mark.parametrize("shape", [(0, 3), (0,), (0, 28, 28)])
def test_zero_records(tmp_path, shape):
    p = tmp_path / "z.npz"
    np.savez(p, x=np.zeros(shape), t=np.zeros(0, np.int64))
    assert refused(npz, p).startswith(f"{p}: 'x' has no records")
    assert refused(check_arrays, np.zeros(shape), what="predict(x)").startswith(
        "predict(x): 'x' has no records")


def test_zero_image_mnist(tmp_path):
    def idx(a, code=0x08):
        return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(np.zeros((0, 28, 28), np.uint8))))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(np.zeros(0, np.uint8))))
    assert "no images" in refused(data.mnist, "train", root=tmp_path)


def test_idx_dims_whose_product_overflows_int64(tmp_path):
    p = tmp_path / "huge.idx"
    p.write_bytes(bytes([0, 0, 0x08, 5]) + struct.pack(">5I", 1, 65536, 65536, 65536, 65536))
    msg = refused(read_idx, p)  # 2**64 bytes a record: int64 arithmetic wrapped it to 0
    assert msg.startswith(f"{p}: record 0: truncated") and str(2 ** 64) in msg


def test_npy_file_named_npz(tmp_path):
    p = tmp_path / "x.npz"
    with open(p, "wb") as f:
        np.save(f, np.ones((3, 2)))
    msg = refused(npz, p)
    assert msg.startswith(f"{p}: a single .npy array, not an .npz archive") and "np.savez" in msg


def test_text_file_named_npz(tmp_path):
    p = tmp_path / "t.npz"
    p.write_text("1,2,3\n")
    assert refused(npz, p).startswith(f"{p}: not an .npz file")


# ---------------------------------------------------------------------------- slices and splits

def test_slices_name_records_of_the_file(tmp_path):
    p = write_csv(tmp_path, "1,0\n2,1\n3,1.5\n4,2\n")
    msg = refused(lambda: conform(csv(p).slice(1, None), CLASS3))
    assert msg.startswith(f"{p}: line 3: label 1.5")
    q = tmp_path / "s.npz"
    np.savez(q, x=np.ones((6, 1)), t=np.array([0, 1, 2, 0, 9, 1]))
    msg = refused(lambda: conform(npz(q).slice(2, 5).slice(1, None), CLASS3))
    assert msg.startswith(f"{q}: record 4: label 9 is outside")
    msg = refused(lambda: conform(data.mnist("t10k").slice(100, 200), Target("t", classes=2)))
    first = 100 + int(np.argmax(data.mnist("t10k").t[100:] >= 2))
    assert msg.startswith(f'mnist("t10k"): record {first}: label')


def test_spec_data_source_checked_against_the_target(tmp_path):
    from netc.compiler.errors import Loc

    p = tmp_path / "d.csv"
    np.savetxt(p, np.array([[0.5, 2], [1.5, 0]]), delimiter=",")
    src = Source(kind="csv", args=(str(p),), loc=Loc("spec.net", 3, 13))
    assert load_source(src, tmp_path, CLASS3).t.tolist() == [2, 0]
    np.savetxt(p, np.array([[0.5, 2], [1.5, 0.5]]), delimiter=",")
    with pytest.raises(DataError) as e:
        load_source(src, tmp_path, CLASS3)
    assert e.value.message.startswith(f"{p}: line 2: label 0.5") and e.value.loc.line == 3


# ---------------------------------------------------------------------------- through the API

SPEC = """\
input  x : [2]
target t : class(3)
y = dense(x, 3)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.1)
    batch  = 4
    epochs = 1
}
"""
def blobs(n=12):
    t = np.arange(n) % 3
    return (np.eye(3)[t][:, :2] * 2 + 0.1).astype(np.float32), t


def test_fit_refuses_nan_features_before_training():
    import netc

    x, t = blobs()
    x[5, 1] = np.nan
    with pytest.raises(DataError, match=r"^fit\(x, t\): record 5: nan in column 1 of 'x'"):
        netc.compile(SPEC).fit(x, t)


def test_fit_and_score_take_float_labels(tmp_path):
    import netc

    x, t = blobs()
    m = netc.compile(SPEC)
    m.fit(x, t.astype(np.float64))
    assert 0 <= m.score(x, t.astype(np.float32)) <= 1
    p = tmp_path / "d.csv"
    np.savetxt(p, np.column_stack([x, t]), delimiter=",")
    spec = SPEC.replace("train {", f'data {{\n    train = csv("{p}")\n}}\ntrain {{')
    assert netc.compile(spec).fit().summary_["epochs"] == 1


def test_fit_names_the_line_of_a_bad_label(tmp_path):
    import netc

    x, t = blobs()
    p = tmp_path / "d.csv"
    np.savetxt(p, np.column_stack([x, t + (np.arange(12) == 7) * 0.5]), delimiter=",")
    spec = SPEC.replace("train {", f'data {{\n    train = csv("{p}")\n}}\ntrain {{')
    msg = refused(netc.compile(spec).fit)
    assert msg.startswith(f"{p}: line 8: label 1.5 is not a whole number")
    with pytest.raises(DataError, match=r"^fit\(x, t\): record 2: nan of 't'"):
        netc.compile(SPEC).fit(x, np.where(np.arange(12) == 2, np.nan, t))


def test_predict_refuses_nan_features():
    import netc

    x, _ = blobs()
    x[3, 0] = np.inf
    with pytest.raises(DataError, match=r"^predict\(x\): record 3: inf in column 0 of 'x'"):
        netc.compile(SPEC).predict(x)
