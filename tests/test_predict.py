"""`netc predict RUN DATA`: the saved model's predictions for a data file (labels for
class targets, outputs otherwise, probabilities with --proba), the run's input
normalization applied, written as CSV or .npy; bad files refused naming the file
and the record; `python -m netc`."""
from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

import netc
from netc.cli import main
from problems import make_problem

CLASSIFIER = ("input x : [20]\ntarget t : class(3)\nh = dense(x, 16, act = tanh)\ny = dense(h, 3)\n"
              "loss = nll(softmax(y), t)\n")
DATA = ('data {\n    train = csv("d.csv")[0:150]\n    valid = csv("d.csv")[150:200]\n'
        "    normalize = standardize\n}\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run whose data is a labelled CSV (the target is its last column), normalized
    inputs (so that predictions on raw data are wrong unless normalization is applied)."""
    d = tmp_path_factory.mktemp("predict")
    x, t = make_problem()
    x = x * 30 + 100  # far from standardized
    np.savetxt(d / "d.csv", np.column_stack([x, t]), delimiter=",", fmt="%.6g")
    (d / "c.net").write_text(CLASSIFIER + DATA + "train {\n    method = sgd(lr = 0.1)\n    batch = 10\n"
                                                 "    epochs = 3\n}\n")
    assert main(["train", str(d / "c.net"), "--out", str(d / "run"), "--no-progress", "--json"]) == 0
    x = np.loadtxt(d / "d.csv", delimiter=",")[:, :-1].astype(np.float32)
    return d, x, t


def _csv(path):
    header, *rows = path.read_text().splitlines()
    return header.split(","), np.array([[float(c) for c in r.split(",")] for r in rows])


def test_labels_from_a_labelled_csv_match_the_model(run, capsys):
    d, x, t = run
    model = netc.load(d / "run")
    assert main(["predict", str(d / "run"), str(d / "d.csv"), "--out", str(d / "p.csv")]) == 0
    columns, got = _csv(d / "p.csv")
    assert columns == ["label"]
    np.testing.assert_array_equal(got[:, 0], model.predict(x))
    assert (got[:, 0] == t).mean() > 0.9  # normalization applied: the model is right on its own data
    assert "wrote" in capsys.readouterr().err


def test_features_only_npy_and_proba(run, tmp_path):
    d, x, _ = run
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%.9g")
    assert main(["predict", str(d / "run"), str(tmp_path / "x.npy"), "--proba", "--out", str(tmp_path / "p.npy")]) == 0
    p = np.load(tmp_path / "p.npy", allow_pickle=False)
    np.testing.assert_allclose(p, netc.load(d / "run").predict_proba(x), rtol=1e-6)
    assert main(["predict", str(d / "run"), str(tmp_path / "x.csv"), "--proba", "--out", str(tmp_path / "p.csv")]) == 0
    columns, q = _csv(tmp_path / "p.csv")
    assert columns == ["p_0", "p_1", "p_2"]
    np.testing.assert_allclose(q, p, rtol=1e-6)


def test_npz_and_stdout(run, tmp_path, capsys):
    d, x, _ = run
    np.savez(tmp_path / "x.npz", x=x[:7])
    assert main(["predict", str(d / "run"), str(tmp_path / "x.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "label" and len(lines) == 8
    assert [int(v) for v in lines[1:]] == list(netc.load(d / "run").predict(x[:7]))


def test_real_outputs_and_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(30, 2, 3), dtype=np.uint8)
    raw = bytes([0, 0, 0x08, 3]) + b"".join(int(v).to_bytes(4, "big") for v in img.shape) + img.tobytes()
    (tmp_path / "imgs-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    m = netc.compile("input x : [6]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n")
    x = img.reshape(30, 6).astype(np.float32) / 255
    m.fit(x, rng.normal(size=(30, 2)).astype(np.float32), epochs=1)
    m.save(tmp_path / "m")
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "imgs-idx3-ubyte.gz"),
                 "--out", str(tmp_path / "y.csv")]) == 0
    columns, y = _csv(tmp_path / "y.csv")
    assert columns == ["y_0", "y_1"]
    np.testing.assert_allclose(y, m.predict(x), rtol=1e-6, atol=1e-7)  # pixels read as mnist() reads them


@pytest.mark.parametrize("content, expected", [
    ("1,2,3\n", "each record has 3 values, the model reads 20"),
    ("\n".join(",".join(["1"] * 20) for _ in range(3)) + "\n" + ",".join(["1"] * 19 + ["x"]) + "\n",
     "line 4: could not parse 'x' as a number in column 20"),
    ("\n".join(",".join(["1"] * 20) for _ in range(2)) + "\n" + ",".join(["1"] * 19 + ["nan"]) + "\n",
     "line 3"),
])
def test_bad_data_names_the_file_and_the_record(run, tmp_path, capsys, content, expected):
    d, _, _ = run
    (tmp_path / "bad.csv").write_text(content)
    assert main(["predict", str(d / "run"), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.csv'}" in err and expected in err and "Traceback" not in err


def test_user_errors_exit_2_before_any_work(run, tmp_path, capsys):
    d, _, _ = run
    for argv, expected in ([[str(d / "run"), str(d / "d.csv"), "--out", str(tmp_path / "p.txt")], ".csv or .npy"],
                           [[str(d / "run"), str(d / "c.net")], "unknown data format"],
                           [[str(d / "run"), str(tmp_path / "none.csv")], "no such file"],
                           [[str(tmp_path / "norun"), str(d / "d.csv")], "norun"],
                           [[str(d / "run"), str(d / "d.csv"), "--out", str(tmp_path / "no" / "p.csv")], "no folder"]):
        assert main(["predict", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_proba_is_refused_for_outputs_that_are_not_probabilities(tmp_path, capsys):
    m = netc.compile("input x : [3]\ntarget t : [1]\ny = dense(x, 1)\nloss = mse(y, t)\n")
    m.save(tmp_path / "m")
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "x.npy"), "--proba"]) == 2
    assert "predict_raw" in capsys.readouterr().err


def test_python_dash_m_netc(tmp_path):
    p = subprocess.run([sys.executable, "-m", "netc", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("netc ")
    (tmp_path / "bad.net").write_text("input x : [3]\ny = dense(x, 2\n")
    p = subprocess.run([sys.executable, "-m", "netc", "check", str(tmp_path / "bad.net")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "bad.net:" in p.stderr


def test_check_warns_when_there_is_no_loss(tmp_path, capsys):
    (tmp_path / "fwd.net").write_text("input x : [3]\ny = dense(x, 2)\n")
    assert main(["check", str(tmp_path / "fwd.net")]) == 0
    err = capsys.readouterr().err
    assert "warning: no loss" in err and "netc train refuses" in err
    (tmp_path / "ok.net").write_text("input x : [3]\ntarget t : [2]\ny = dense(x, 2)\nloss = mse(y, t)\n")
    assert main(["check", str(tmp_path / "ok.net")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_npz_is_read_with_the_runs_array_name(tmp_path):
    x, t = make_problem()
    np.savez(tmp_path / "d.npz", images=x, labels=t)
    (tmp_path / "s.net").write_text(CLASSIFIER + 'data {\n    train = npz("d.npz", x = "images", t = "labels")\n}\n'
                                    "train {\n    epochs = 1\n}\n")
    assert main(["train", str(tmp_path / "s.net"), "--out", str(tmp_path / "r"), "--no-progress", "--json"]) == 0
    assert main(["predict", str(tmp_path / "r"), str(tmp_path / "d.npz"), "--out", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), netc.load(tmp_path / "r").predict(x))


def _lying_npy(path, shape):
    """An .npy whose header declares `shape` of float32 over 64 bytes of data."""
    h = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    h += b" " * ((-(10 + len(h) + 1)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + b"\0" * 64)
    return path


@pytest.mark.parametrize("shape", ["(1000000000, 1000)", "(-2, -8)", "(4, 20)"])
def test_an_array_whose_header_lies_is_refused_before_allocating(run, tmp_path, capsys, shape):
    """The header's claim is checked against the bytes stored before anything of its size
    exists: a DataError naming the file (exit 2), never a MemoryError ('internal error');
    the same for an array inside an .npz (netc predict, and the data block's npz())."""
    import zipfile
    from netc.compiler.errors import DataError
    from netc.runtime import data
    d, x, _ = run
    npy = _lying_npy(tmp_path / "lie.npy", shape)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:
        z.write(npy, "x.npy")
    for f in (npy, tmp_path / "lie.npz"):
        assert main(["predict", str(d / "run"), str(f)]) == 2
        err = capsys.readouterr().err
        assert str(f) in err and ("bytes are stored" in err or "below zero" in err), err
        assert "internal error" not in err
    with pytest.raises(DataError, match="refused before reading|below zero"):
        data.npz(tmp_path / "lie.npz", t=None)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x[:5]))  # an honest array still reads
    assert main(["predict", str(d / "run"), str(tmp_path / "fortran.npy")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_a_wider_csv_loses_a_target_column_only_where_the_run_read_a_labelled_csv(run, tmp_path, capsys):
    """A run trained on arrays read no CSV: one column more than the model reads is the wrong
    file, refused naming it; the run of a labelled CSV drops that column (its target)."""
    d, x, t = run
    m = netc.compile(CLASSIFIER + "train {\n    epochs = 1\n}\n")
    m.fit(x, t, out=tmp_path / "arrays")
    np.savetxt(tmp_path / "w21.csv", np.column_stack([x[:5], t[:5]]), delimiter=",", fmt="%.9g")
    assert main(["predict", str(tmp_path / "arrays"), str(tmp_path / "w21.csv")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "w21.csv") in err and "each record has 21 values, the model reads 20" in err, err
    assert main(["predict", str(d / "run"), str(tmp_path / "w21.csv")]) == 0
    got = [int(v) for v in capsys.readouterr().out.splitlines()[1:]]
    assert got == list(netc.load(d / "run").predict(x[:5]))


def test_a_gzipped_idx_is_never_expanded_beyond_its_header(tmp_path):
    """A gzipped IDX file is read as far as its header declares: a claim beyond what the
    compressed bytes can expand to is refused before reading, and 50 MB of zeros after
    the declared records (a gzip bomb) are counted, not held in memory."""
    import tracemalloc
    import zlib
    from netc.compiler.errors import DataError
    from netc.runtime import data
    claim = bytes([0, 0, 0x08, 2]) + (10 ** 9).to_bytes(4, "big") + (1000).to_bytes(4, "big")
    (tmp_path / "claim.gz").write_bytes(gzip.compress(claim + bytes(100)))
    with pytest.raises(DataError, match=r"claim\.gz: the IDX header declares 1000000000000 bytes.*before reading"):
        data.read_idx(tmp_path / "claim.gz")
    head = bytes([0, 0, 0x08, 2]) + (10).to_bytes(4, "big") + (4).to_bytes(4, "big")
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = z.compress(head + bytes(40)) + b"".join(z.compress(bytes(1 << 20)) for _ in range(50)) + z.flush()
    (tmp_path / "bomb.gz").write_bytes(bomb)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"bomb\.gz: 52428800 bytes of trailing garbage after the last of 10"):
            data.read_idx(tmp_path / "bomb.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    (tmp_path / "ok.gz").write_bytes(gzip.compress(head + bytes(range(40))))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "ok.gz"), np.arange(40, dtype=np.uint8).reshape(10, 4))
