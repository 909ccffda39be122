"""`netc predict RUN DATA [--out FILE.csv|.npy] [--proba]`: a trained model's
predictions for the records of a data file, written as CSV or .npy.

What comes out is what `Model.predict` gives (labels 0..n-1 for a class(n)
target, the output otherwise) or, with --proba, `Model.predict_proba`; the
input normalization the run fitted is applied, as the model does. DATA is
read by the loaders the data block uses (runtime/data.py), so a bad file is
refused the same way, naming the file and the record: a CSV (features only,
or, where the run's data block read a CSV, with its target column, which is
dropped), an .npz (array `x`, or
the one the run's npz sources name), an .npy array, or an IDX file (gzipped
or not; uint8 images scaled to [0, 1] as mnist() reads them)."""
from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path

import numpy as np

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import DataError, NetcError
from netc.compiler.sources import open_regular
from netc.runtime import checkpoint, data

OUT_FORMATS = (".csv", ".npy")
IDX_SUFFIXES = (".gz", ".idx", ".idx1-ubyte", ".idx3-ubyte")


def input_width(model) -> int | None:
    """The values per record the model reads (before its normalization changes them)."""
    xs = list(model.program.spec.inputs.values())[:1]
    if model.normalizer.in_width is not None:
        return model.normalizer.in_width
    if not xs or any(d is None for d in xs[0].shape[1:]):
        return None
    return math.prod(xs[0].shape[1:])


def _run_source(model, kind: str, key: str, default):
    """What the run's data block says for sources of `kind`: csv(..., target = ...) (the
    target column, default the last), npz(..., x = ...) (the features' array, default x)."""
    cfg = model.data_cfg
    for src in (cfg.train, cfg.valid, cfg.test):
        if src is not None and src.kind == kind:
            return src.kwargs.get(key, default)
    return default


def _reads(model, kind: str) -> bool:
    """Whether the run's data block has a source of `kind`."""
    cfg = model.data_cfg
    return any(src is not None and src.kind == kind for src in (cfg.train, cfg.valid, cfg.test))


def read_examples(path: Path, model) -> data.Dataset:
    """The records of `path` as features [n, width] (DataError naming the file otherwise)."""
    name = path.name.lower()
    width = input_width(model)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if name.endswith(".csv"):
        ds = data.csv(path, target=None)
        target = _run_source(model, "csv", "target", -1) if _reads(model, "csv") else None
        if width is not None and target is not None and ds.x.shape[1] == width + 1:
            # a file like the run's labelled CSV: its target column is dropped (a run that read
            # no CSV with a target has no such column: a wider file is the wrong file)
            ds = data.csv(path, target=target)
            ds = data.Dataset(ds.x, None, ds.name, ds.source, ds.lines)
    elif name.endswith(".npz"):
        ds = data.npz(path, x=str(_run_source(model, "npz", "x", "x")), t=None)
    elif name.endswith(".npy"):
        ds = data.arrays(read_npy(path), name=str(path))
    elif name.endswith(IDX_SUFFIXES) or "-ubyte" in name:
        a = data.read_idx(path)
        x = a.astype(np.float32) * np.float32(1 / 255) if a.dtype == np.uint8 else a
        ds = data.arrays(x, name=str(path))
    else:
        raise DataError(f"{path}: unknown data format; netc predict reads .csv, .npz (array x), .npy "
                        f"and IDX files (.gz, -ubyte)")
    if width is not None and ds.x.shape[1] != width:
        raise DataError(f"{path}: each record has {ds.x.shape[1]} values, the model reads {width} "
                        f"(input '{next(iter(model.program.spec.inputs))}')")
    return ds


def read_npy(path: Path) -> np.ndarray:
    """The array of an .npy file, its header checked against the file's size before
    anything of the size it claims is allocated (runtime/checkpoint.py's npy_header)."""
    with open_regular(path, lambda why: DataError(f"{path}: cannot read ({why})")) as f:
        if f.read(2) == b"PK":
            raise DataError(f"{path}: an .npz archive, not an .npy array; name it .npz")
        f.seek(0)
        checkpoint.npy_header(f, os.fstat(f.fileno()).st_size, f"{path}: not a usable .npy array of numbers")
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False, max_header_size=checkpoint.HEADER_LIMIT)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array of numbers (nothing is unpickled): {e}") from None


def predictions(model, ds: data.Dataset, proba: bool) -> tuple[np.ndarray, list[str]]:
    """The array to write and its column names."""
    if proba:
        y = model.predict_proba(ds.x)
        return y, [f"p_{j}" for j in range(y.shape[1])]
    y = model.predict(ds.x)
    if y.ndim == 1:
        return y, ["label" if model.head.labels else model.head.output]
    y = y.reshape(len(y), -1)
    return y, [f"{model.head.output}_{j}" for j in range(y.shape[1])]


def check_out(out: str | None) -> Path | None:
    """The --out file, checked before any work: a .csv or .npy path in an existing folder."""
    if out is None:
        return None
    p = Path(out)
    if p.suffix.lower() not in OUT_FORMATS:
        raise NetcError(f"--out {out}: write predictions to a .csv or .npy file")
    if not p.parent.is_dir():
        raise NetcError(f"--out {out}: no folder {p.parent}")
    if p.is_dir():
        raise NetcError(f"--out {out}: is a folder")
    return p


def csv_text(y: np.ndarray, columns: list[str]) -> str:
    """A header line, then one line per record (labels as integers, numbers as %.9g: float32 exact)."""
    buf = io.StringIO()
    fmt = "%d" if y.dtype.kind in "iub" else "%.9g"
    buf.write(",".join(columns) + "\n")
    if len(y):
        np.savetxt(buf, y.reshape(len(y), -1), fmt=fmt, delimiter=",")
    return buf.getvalue()


def write(y: np.ndarray, columns: list[str], out: Path | None) -> None:
    if out is None:
        sys.stdout.write(csv_text(y, columns))
    elif out.suffix.lower() == ".npy":
        atomic_write(out, lambda f: np.save(f, y, allow_pickle=False))
    else:
        atomic_write(out, lambda f: f.write(csv_text(y, columns).encode()))
    if out is not None:
        out.chmod(0o644)  # results to share, not a secret (the temporary file was made 0600)
