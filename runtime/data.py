"""Datasets: the shipped MNIST, CSV, NPZ and in-memory arrays, plus minibatching.

Every loader turns a bad file into a DataError (exit code 2) that names the file
and, where there is one, the record/line/column, so users can fix their data
without reading a traceback. Only numpy and the standard library are used, and
nothing is ever unpickled.

Checks happen once, where data enters, and are vectorized: the loaders refuse
what is bad whatever the spec (unparsable cells, NaN/inf, 0 records, damaged
files); `conform` then refuses what is bad for the spec's target (a label that
is not a whole number in 0..n-1 for class(n), a wrong width for a real target)
and turns whole-number float labels (what np.savetxt writes) into int64
classes. `check_arrays` does both for arrays handed to the API.
"""
from __future__ import annotations

import csv as _csv
import dataclasses
import functools
import gzip
import importlib.resources
import io
import math
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from netc.compiler.errors import DataError, did_you_mean

from . import checkpoint

__all__ = ["Dataset", "Target", "read_idx", "mnist", "csv", "npz", "arrays", "conform",
           "check_arrays", "minibatches", "MNIST_SPLITS"]

MNIST_SPLITS = ("train", "t10k")

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Features `x` [n, features] and targets `t` (int64 labels [n], floats [n, k], or None).

    `x` may be a read-only view shared with a cache (MNIST): never modify it in
    place; normalization and batching make their own arrays.
    """

    x: np.ndarray
    t: np.ndarray | None
    name: str
    source: str | None = None        # the file the records come from (None: `name`)
    lines: np.ndarray | None = None  # CSV: the file line of each record
    first: int = 0                   # the source's index of record 0 (slices start later)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def record(self, i: int) -> str:
        """Where record i is, as messages name it: `file: line 12` or `file: record 7`."""
        src = self.source or self.name
        if self.lines is not None:
            return f"{src}: line {int(self.lines[i])}"
        return f"{src}: record {self.first + int(i)}"

    def slice(self, lo: int | None, hi: int | None) -> "Dataset":
        """Rows lo:hi (Python semantics). Unlike Python, an empty or out-of-range
        slice is an error: it is almost always a typo in a split boundary."""
        n = len(self)
        for bound in (lo, hi):
            if bound is not None and not -n <= bound <= n:
                raise DataError(f"{self.name}: slice [{_s(lo)}:{_s(hi)}] is out of bounds "
                                f"for a dataset of {n} records")
        start, stop, _ = slice(lo, hi).indices(n)
        if stop <= start:
            raise DataError(f"{self.name}: slice [{_s(lo)}:{_s(hi)}] is empty "
                            f"(the dataset has {n} records)")
        t = None if self.t is None else self.t[start:stop]
        lines = None if self.lines is None else self.lines[start:stop]
        return Dataset(self.x[start:stop], t, f"{self.name}[{_s(lo)}:{_s(hi)}]",
                       self.source or self.name, lines, self.first + start)


def _s(v: int | None) -> str:
    return "" if v is None else str(v)


# ---------------------------------------------------------------------------- IDX

def _regular(path: Path) -> None:
    """Data files are regular files: a FIFO would block the read, a device (/dev/zero) never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a folder: the reader's own message
        raise DataError(f"{path}: not a regular file (a device, FIFO or socket)")


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped if the file starts with the gzip magic."""
    _regular(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return _gunzip_idx(path, raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data: {e}") from None
    return raw


def _gunzip_idx(path: Path, raw: bytes) -> bytes:
    """The gunzipped IDX bytes, never more than the header declares (and one byte to see
    trailing data): a claim beyond what the compressed bytes can expand to is refused
    before anything of its size exists (a gzip bomb, a lying header)."""
    f = gzip.GzipFile(fileobj=io.BytesIO(raw))
    head = f.read(4)
    if len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES:
        head += f.read(4 * head[3])
        if len(head) == 4 + 4 * head[3]:
            dims = [int(d) for d in np.frombuffer(head, ">u4", head[3], 4)]
            need = math.prod(dims) * np.dtype(_IDX_DTYPES[head[2]]).itemsize
            if need > checkpoint.DEFLATE_RATIO * len(raw):
                raise DataError(f"{path}: the IDX header declares {need} bytes of data, more than {len(raw)} "
                                f"gzipped bytes can hold (refused before reading)")
            body = f.read(need)  # read_idx reports what is missing
            extra = _drain(f)
            if extra:
                raise DataError(f"{path}: {extra} bytes of trailing garbage after the last of {dims[0]} records")
            return head + body
    _drain(f)  # a damaged stream is reported as such before the header's own faults
    return head


def _drain(f) -> int:
    """The bytes left in `f`, counted, not kept."""
    n = 0
    while chunk := f.read(1 << 20):
        n += len(chunk)
    return n


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (gzipped or plain) into a native-endian array.

    Layout: 0x00 0x00, a type code, ndim, ndim big-endian uint32 dims, then the
    data. The first dim counts records; damage is reported per record.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(buf)} bytes)")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{path}: bad magic number 0x{buf[:4].hex()} (expected 0x0000 followed "
                        "by a type code and ndim): not an IDX file")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header has 0 dimensions")
    head = 4 + 4 * ndim
    if len(buf) < head:
        raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {head} bytes, "
                        f"file has {len(buf)}")
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[code])
    n = dims[0]
    rec_bytes = dtype.itemsize * math.prod(dims[1:])  # Python ints: huge dims cannot wrap
    have = len(buf) - head
    need = n * rec_bytes
    if have < need:
        done = have // rec_bytes if rec_bytes else n
        raise DataError(f"{path}: record {done}: truncated: only {done} of {n} records are "
                        f"complete (records count from 0); record {done} has "
                        f"{have - done * rec_bytes} of {rec_bytes} bytes")
    if have > need:
        raise DataError(f"{path}: {have - need} bytes of trailing garbage after the last of "
                        f"{n} records")
    data = np.frombuffer(buf, dtype, n * rec_bytes // dtype.itemsize if rec_bytes else 0, head)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------- MNIST

def _mnist_root(root: Path | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(str(importlib.resources.files("netc.runtime") / "datasets" / "mnist"))


@functools.lru_cache(maxsize=4)
def _load_mnist(split: str, root: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Decoded, read-only (x, t) for a split; cached because decoding takes ~1 s."""
    d = _mnist_root(root)
    ipath, lpath = d / f"{split}-images-idx3-ubyte.gz", d / f"{split}-labels-idx1-ubyte.gz"
    images, labels = read_idx(ipath), read_idx(lpath)
    if len(images) == 0:
        raise DataError(f"{ipath}: no images (0 records)")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{ipath}: expected uint8 images [n, rows, cols], "
                        f"got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{lpath}: expected uint8 labels [n], "
                        f"got {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{ipath}: {len(images)} images but {lpath.name} has "
                        f"{len(labels)} labels")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{lpath}: record {bad[0]}: label {labels[bad[0]]} is not a digit 0..9")
    x = images.reshape(len(images), -1).astype(np.float32)
    x *= np.float32(1 / 255)
    t = labels.astype(np.int64)
    x.flags.writeable = False
    t.flags.writeable = False
    return x, t


def mnist(split: str, root: Path | None = None) -> Dataset:
    """MNIST "train" (60000) or "t10k" (10000): x float32 [n, 784] in [0, 1], t int64.

    The arrays are cached and read-only; slicing gives views, not copies.
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"mnist: unknown split {split!r}; valid splits: "
                        + ", ".join(f'"{s}"' for s in MNIST_SPLITS),
                        hint=did_you_mean(str(split), MNIST_SPLITS))
    x, t = _load_mnist(split, None if root is None else Path(root))
    return Dataset(x, t, f'mnist("{split}")')


# ---------------------------------------------------------------------------- CSV

def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _is_int(cell: str) -> bool:
    try:
        int(cell)
        return True
    except ValueError:
        return False


def csv(path: str | Path, target: str | int | None = -1, header: bool | None = None) -> Dataset:
    """A numeric CSV. `target` picks the target column (a header name, or an index,
    negative from the end; None: no target). A header is detected when the first
    row is not all numbers. A target column written as integers (that fit int64)
    becomes int64 labels [n]; anything else float64 targets [n, 1], which
    `conform` turns into classes where the spec declares class(n) and every
    value is a whole number. A UTF-8 byte-order mark is skipped."""
    path = Path(path)
    _regular(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = _csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, _csv.Error) as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: the file is empty (no rows)")
    if header is None:
        header = not all(_is_number(c) for c in rows[0][1])
    names = [c.strip() for c in rows[0][1]] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    ncol = len(names) if names is not None else len(body[0][1])

    col = _target_column(path, target, names, ncol)
    if col is not None and ncol < 2:
        raise DataError(f"{path}: only one column, so nothing is left for features "
                        "once the target is taken (use target=None for no target)")

    data = np.empty((len(body), ncol), np.float64)
    for i, (line, row) in enumerate(body):
        if len(row) != ncol:
            raise DataError(f"{path}: line {line}: expected {ncol} columns, found {len(row)}")
        try:
            data[i] = [float(c) for c in row]
        except ValueError:
            j = next(j for j, c in enumerate(row) if not _is_number(c))
            what = (f"could not parse {row[j].strip()!r} as a number" if row[j].strip()
                    else "empty cell")
            raise DataError(f"{path}: line {line}: {what} in column {j + 1}") from None

    bad = _first_nonfinite(data)
    if bad is not None:
        i, j = bad
        what = " (the target)" if j == col else ""
        raise DataError(f"{path}: line {body[i][0]}: {data[i, j]} in column {j + 1}{what}")
    name, lines = f'csv("{path}")', np.array([line for line, _ in body], np.int64)
    with np.errstate(over="ignore"):  # refused just below, with the line
        x = (data if col is None else np.delete(data, col, axis=1)).astype(np.float32)
    bad = _first_nonfinite(x)
    if bad is not None:  # finite in float64, too large for float32
        i, j = bad
        j += col is not None and j >= col
        raise DataError(f"{path}: line {body[i][0]}: {body[i][1][j].strip()} in column {j + 1} "
                        "is too large for float32")
    if col is None:
        return Dataset(x, None, name, str(path), lines)
    t = data[:, col:col + 1].copy()
    if all(_is_int(row[col]) for _, row in body):
        try:
            t = np.array([int(row[col]) for _, row in body], np.int64)
        except OverflowError:  # kept as numbers: a class(n) target refuses them in conform
            pass
    return Dataset(x, t, name, str(path), lines)


def _target_column(path: Path, target: str | int | None, names: list[str] | None,
                   ncol: int) -> int | None:
    if target is None:
        return None
    if isinstance(target, str):
        if names is None:
            raise DataError(f"{path}: target column {target!r} is given by name, "
                            "but the file has no header row")
        if target not in names:
            raise DataError(f"{path}: line 1: no column named {target!r}; columns: "
                            + ", ".join(names), hint=did_you_mean(target, names))
        return names.index(target)
    if not -ncol <= target < ncol:
        raise DataError(f"{path}: target column index {target} is out of range "
                        f"for {ncol} columns")
    return target % ncol


# ---------------------------------------------------------------------------- NPZ / arrays

def npz(path: str | Path, x: str = "x", t: str | None = "t") -> Dataset:
    """Arrays `x` (reshaped to [n, -1]) and `t` from an .npz, never unpickling."""
    path = Path(path)
    _regular(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if magic == b"\x93NUMPY":
        raise DataError(f"{path}: a single .npy array, not an .npz archive of named arrays "
                        "(np.save writes .npy; save x and t with np.savez(path, x=x, t=t))")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz file (a zip archive of .npy arrays, "
                        f"as np.savez writes); it starts with {magic!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            present = list(f.files)
            for key in (x, t):
                if key is not None and key not in present:
                    raise DataError(f"{path}: no array named {key!r}; arrays present: "
                                    + (", ".join(present) or "none"),
                                    hint=did_you_mean(key, present))
                if key is not None:  # its header against its stored size, before allocating its claim
                    member = f.zip.getinfo(key + ".npy" if key + ".npy" in f.zip.namelist() else key)
                    checkpoint.member_header(path, f.zip, member, key)
            xa = f[x]
            ta = None if t is None else f[t]
    except DataError:
        raise
    except ValueError as e:
        # allow_pickle=False refuses object arrays with a ValueError; so do bad headers.
        raise DataError(f"{path}: cannot load without unpickling (object arrays are not "
                        f"allowed) or malformed .npz: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file: {e}") from None
    except MemoryError as e:  # a few MB of deflated zeros may hold GBs: the claim is honest, the memory is not there
        raise DataError(f"{path}: its arrays do not fit in the memory this process can get ({e})") from None
    return _make(xa, ta, f'npz("{path}")', str(path), x, t)


def arrays(x: np.ndarray, t: np.ndarray | None = None, name: str = "arrays") -> Dataset:
    """A Dataset from in-memory arrays, with the same conversions and checks as npz()."""
    return _make(np.asarray(x), None if t is None else np.asarray(t), name, name, "x", "t")


def _make(x: np.ndarray, t: np.ndarray | None, name: str, where: str,
          xkey: str, tkey: str | None) -> Dataset:
    """Shared conversions: numeric x to [n, -1] (float64 kept, else float32);
    integer/bool t to int64 labels [n] (float64 [n, 1] where they overflow
    int64), float t to [n, k]. Refuses 0 records and NaN/inf, naming the first."""
    source = None if where == name else where
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: {xkey!r} has non-numeric dtype {x.dtype}")
    if x.ndim == 0:
        raise DataError(f"{where}: {xkey!r} is a scalar; expected one row per record")
    if len(x) == 0:
        raise DataError(f"{where}: {xkey!r} has no records (shape {list(x.shape)})")
    xd = np.float64 if x.dtype == np.float64 else np.float32
    xr = x.reshape(len(x), -1).astype(xd, copy=False)
    _refuse_nonfinite(xr, where, xkey)
    if t is None:
        return Dataset(xr, None, name, source)
    if t.dtype.kind not in "biuf":
        raise DataError(f"{where}: {tkey!r} has non-numeric dtype {t.dtype}")
    if t.ndim == 0:
        raise DataError(f"{where}: {tkey!r} is a scalar; expected one target per record")
    if len(t) != len(xr):
        raise DataError(f"{where}: {xkey!r} has {len(xr)} records but {tkey!r} has {len(t)}")
    if t.dtype.kind in "biu":
        if t.ndim > 1 and t[0].size != 1:
            raise DataError(f"{where}: integer targets {tkey!r} must be class labels [n], "
                            f"got shape {list(t.shape)}")
        if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
            tr = t.reshape(len(t), 1).astype(np.float64)  # a class(n) target refuses them
        else:
            tr = t.reshape(len(t)).astype(np.int64, copy=False)
    else:
        tr = t.reshape(len(t), -1).astype(
            np.float64 if t.dtype == np.float64 else np.float32, copy=False)
        _refuse_nonfinite(tr, where, tkey)
    return Dataset(xr, tr, name, source)


def _first_nonfinite(a: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or inf in a (row-major order), or None. The sum is
    the fast path: it is finite only if every element is (it may overflow to
    inf for finite data, so a non-finite sum is only a reason to look)."""
    if a.dtype.kind != "f" or a.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(a.sum()):
            return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(np.argmax(bad), a.shape))


def _refuse_nonfinite(a: np.ndarray, where: str, key: str) -> None:
    bad = _first_nonfinite(a)
    if bad is not None:
        col = f" in column {bad[1]}" if a.ndim > 1 and a.shape[1] > 1 else ""
        raise DataError(f"{where}: record {bad[0]}: {a[bad]}{col} of {key!r} "
                        "(records and columns count from 0)")


# ---------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """What the spec declares a target to be: class(n) labels, or `width` reals per record."""

    name: str
    classes: int | None = None
    width: int | None = None

    @staticmethod
    def of(node) -> "Target":
        """From a target node of the graph (its name, shape and `classes` attribute)."""
        return Target(node.name, node.attr("classes"), math.prod(node.shape[1:]))


def conform(ds: Dataset, target) -> Dataset:
    """`ds` with its targets in the form `target` (a Target or a target node,
    None: no check) declares, or a DataError naming the first bad record.

    class(n): one number per record, each a whole number in 0..n-1 (1.0 is
    class 1; 1.5, nan, -1, n are refused); the result is int64 [n].
    Real: `width` finite numbers per record, as [n, width]."""
    if target is None:
        return ds
    tg = target if isinstance(target, Target) else Target.of(target)
    if ds.t is None:
        raise DataError(f"{ds.name}: no targets, but the spec declares target '{tg.name}'")
    if ds.t.dtype.kind not in "biuf":
        raise DataError(f"{ds.name}: targets have non-numeric dtype {ds.t.dtype}")
    t = ds.t.reshape(len(ds.t), -1)
    if tg.classes is None:
        if tg.width is not None and t.shape[1] != tg.width:
            raise DataError(f"{ds.name}: {t.shape[1]} target values per record, but target "
                            f"'{tg.name}' has {tg.width}")
        bad = _first_nonfinite(t)
        if bad is not None:
            raise DataError(f"{ds.record(bad[0])}: target value {t[bad]} is not finite")
        return dataclasses.replace(ds, t=t)
    n = tg.classes
    if t.shape[1] != 1:
        raise DataError(f"{ds.name}: {t.shape[1]} target values per record, but target "
                        f"'{tg.name}' is class({n}): one label per record")
    t = t[:, 0]
    with np.errstate(invalid="ignore"):
        ok = (t >= 0) & (t < n)
        if t.dtype.kind == "f":
            ok &= t == np.floor(t)
    if not ok.all():
        i = int(np.argmin(ok))
        v = t[i]
        if t.dtype.kind in "biu" or (np.isfinite(v) and v == np.floor(v)):
            why = f"is outside class({n}) (0..{n - 1})"
        else:
            why = ("is not a whole number" if np.isfinite(v) else
                   "is not a number" if np.isnan(v) else "is infinite") + \
                f"; class({n}) labels are 0..{n - 1}"
        raise DataError(f"{ds.record(i)}: label {_label(v)} {why}")
    return dataclasses.replace(ds, t=t.astype(np.int64, copy=False))


def _label(v) -> str:
    """A label as the user wrote it: 1 for 1.0, else numpy's shortest form."""
    if v.dtype.kind == "f" and np.isfinite(v) and v == np.floor(v) and abs(v) < 2 ** 53:
        return str(int(v))
    return str(v)


def check_arrays(x, t=None, target=None, what: str = "arrays") -> Dataset:
    """The loaders' checks for arrays handed to the API (`what` names them in
    messages, e.g. "fit(x, t)"): numeric, at least one record, no NaN/inf, and
    targets that suit `target` (see conform). Returns the converted Dataset."""
    return conform(arrays(x, t, what), target)


# ---------------------------------------------------------------------------- batching

def minibatches(n: int, batch: int, rng: np.random.Generator | None,
                drop_last: bool = False) -> Iterator[np.ndarray]:
    """Index arrays over a permutation of range(n) (in order when rng is None);
    the last batch is shorter unless drop_last."""
    if batch < 1:
        raise ValueError(f"batch size must be positive, got {batch}")
    order = np.arange(n) if rng is None else rng.permutation(n)
    stop = n - n % batch if drop_last else n
    for i in range(0, stop, batch):
        yield order[i:i + batch]
