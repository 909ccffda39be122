"""Checkpoints: one .npz of plain arrays (parameters, optimizer state,
normalization statistics) with the metadata inside it as JSON text.

Writing: to a temporary file in the same folder, flushed to disk, then renamed
over the old one, so a crash or kill mid-write leaves the previous checkpoint
intact.

Reading treats the file as hostile: it loads or it refuses with a DataError
naming the file and the field. No pickle (object arrays are refused from the
.npy header, before anything is unpickled or allocated); every array's
declared shape and type is read from its header and checked against the bytes
actually stored (and, by the caller, against the spec) before its data is read;
the metadata is checked field by field against closed sets (compiler/validate.py).
"""
from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from netc.compiler import validate as V
from netc.compiler.atomic import atomic_write
from netc.compiler.errors import DataError, NetcError
from netc.compiler.sources import EMBED_LIMIT, USE_CAP, open_regular
from netc.runtime.normalize import Normalizer

FORMAT = "netc-checkpoint-1"
FILE = "params.npz"
META = "meta.json"
META_CHARS = 8 << 20  # characters of metadata (the spec and its used files are the bulk)
HEADER_LIMIT = 10_000  # bytes of one .npy header (NumPy's own default cap)
DEFLATE_RATIO = 1100  # deflate expands at most ~1032x: more declared than that is a zip bomb
ARRAY_KINDS = "biuf"  # bool, integers, floats: what state and statistics hold
TEXT_KINDS = "U"  # short text entries (the normalizer's kind)
TEXT_CHARS = 256
MEMBER_LIMIT = 100_000  # arrays in one checkpoint (each header is read when it is opened)

# the errors a malformed zip or .npy raises inside zipfile / NumPy
_BROKEN = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, TypeError, KeyError,
           IndexError, struct.error, zlib.error, NotImplementedError, RuntimeError, RecursionError)


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Atomically write `path/params.npz` (+ a readable `path/model.json`)."""
    path = V.path(path, "checkpoint folder")
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **meta}
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload[META] = np.array(json.dumps(meta))
    atomic_write(path / FILE, lambda f: np.savez(f, **payload))
    atomic_write(path / "model.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return path / FILE


# ---------------------------------------------------------------------------- metadata

def _optional(check):
    return check, False


def _required(check):
    return check, True


def _params(v, what, error):
    if not isinstance(v, dict) or len(v) > MEMBER_LIMIT:
        raise error(f"{what}: expected a table of parameter shapes, got {V.shown(v)}")
    total = 0
    for name, shape in v.items():
        V.text(name, f"{what} (a name)", TEXT_CHARS, error, line=True)
        if not isinstance(shape, list) or len(shape) > 32:
            raise error(f"{what}: the shape of {V.shown(name)} is {V.shown(shape)}, not a list of sizes")
        size = 1
        for d in shape:
            size *= V.integer(d, f"{what}: a size of {V.shown(name)}", 0, 1 << 62, error)
        total += size
    memory = _physical_memory()
    if memory and total * 4 > memory:  # float32 at least
        raise error(f"{what}: {total} parameter values need {total * 4 / 2 ** 30:.3g} GiB, "
                    f"more than this machine's {memory / 2 ** 30:.3g} GiB (refused before allocating)")
    return v


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _sources(v, what, error):
    if not isinstance(v, dict) or len(v) > EMBED_LIMIT:
        raise error(f"{what}: expected a table of at most {EMBED_LIMIT} used files, got {V.shown(v)}")
    for name, text in v.items():
        V.text(name, f"{what} (a file name)", V.PATH_LIMIT, error, line=True)
        V.text(text, f"{what}: {V.shown(name)}", USE_CAP, error)
    return v


def _summary(v, what, error):
    if v is not None and not isinstance(v, dict):
        raise error(f"{what}: expected a table or null, got {V.shown(v)}")
    return v


def _format(v, what, error):
    V.text(v, what, 64, error, line=True)
    if v != FORMAT:
        raise error(f"{what}: unknown checkpoint format {V.shown(v)}, expected {FORMAT}")
    return v


def _name(limit: int):
    """A non-empty one-line text of at most `limit` characters (a file name, a version)."""
    def check(v, what, error):
        V.text(v, what, limit, error, line=True)
        if not v:
            raise error(f"{what}: empty")
        return v
    return check


# Every field a checkpoint's metadata may hold, with its check. Fields not
# listed are kept but never used (a newer writer's additions).
FIELDS: dict[str, tuple[Callable, bool]] = {
    "format": _required(_format),
    "netc": _optional(_name(64)),
    "spec": _required(lambda v, w, e: V.text(v, w, USE_CAP, e)),
    "spec_file": _optional(_name(V.PATH_LIMIT)),
    "dtype": _required(V.float_dtype),
    "seed": _required(V.seed),
    "params": _required(_params),
    "sources": _optional(_sources),
    "summary": _optional(_summary),
    "epoch": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
    "age": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
    "final": _optional(lambda v, w, e: V.flag(v, w, e)),
    # resuming (runtime/run_folder.py, runtime/trainer.py)
    "run": _optional(lambda v, w, e: check_record(v, w, e)),
    "metrics_lines": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
    "batch": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
    "batches": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
    "train_seconds": _optional(lambda v, w, e: _seconds(v, w, e)),
    "stopped": _optional(lambda v, w, e: V.choice(v, ("early",), w, e)),
    "examples": _optional(lambda v, w, e: V.integer(v, w, 0, 1 << 62, e)),
}

RECORD_FORMAT = "netc-run-1"


def _seconds(v, what, error):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e12:
        raise error(f"{what}: expected a number of seconds, got {V.shown(v)}")
    return float(v)


def _maybe(check):
    return lambda v, w, e: None if v is None else check(v, w, e)


_RECORD_OPTIONS = {
    "seed": _maybe(V.seed),
    "dtype": _maybe(V.float_dtype),
    "device": lambda v, w, e: V.choice(v, V.DEVICES, w, e),
    "debug": lambda v, w, e: V.flag(v, w, e),
    "train": _maybe(lambda v, w, e: _plain_table(v, w, e)),
}


def _plain_table(v, what, error):
    """Train-block overrides as JSON scalars (validated again by the train block's model)."""
    if not isinstance(v, dict) or len(v) > 100:
        raise error(f"{what}: expected a table of settings, got {V.shown(v)}")
    for k, x in v.items():
        V.text(k, f"{what} (a key)", 64, error, line=True)
        if not (x is None or isinstance(x, (bool, int, float)) or (isinstance(x, str) and len(x) <= 256)):
            raise error(f"{what}: {V.shown(k)} is {V.shown(x)}, not a number or a short text")
    return v


def check_record(v, what: str, error=DataError) -> dict:
    """How a run was started (run.json, and the checkpoint's field 'run'): the
    spec's file and base folder, its keywords, the epochs and limit asked for,
    and whether the data came from the spec's data block or from arrays."""
    if not isinstance(v, dict):
        raise error(f"{what}: expected a table describing the run, got {V.shown(v)}")
    fmt = v.get("format")
    if fmt != RECORD_FORMAT:
        raise error(f"{what}: unknown run record format {V.shown(fmt)}, expected {RECORD_FORMAT}")
    V.text(v.get("spec_file"), f"{what}: 'spec_file'", V.PATH_LIMIT, error, line=True)
    V.text(v.get("base"), f"{what}: 'base'", V.PATH_LIMIT, error, line=True)
    V.choice(v.get("data"), ("spec", "arrays"), f"{what}: 'data'", error)
    for k in ("epochs", "limit"):
        if v.get(k) is not None:
            V.integer(v[k], f"{what}: {k!r}", 1, 1 << 40, error)
    options = v.get("options")
    if not isinstance(options, dict) or set(options) - set(_RECORD_OPTIONS):
        raise error(f"{what}: 'options': expected a table of {', '.join(_RECORD_OPTIONS)}, got {V.shown(options)}")
    for k, x in options.items():
        _RECORD_OPTIONS[k](x, f"{what}: 'options.{k}'", error)
    if "sources" in v:
        _sources(v["sources"], f"{what}: 'sources'", error)
    return v


def check_meta(meta, file: Path) -> dict:
    """The metadata with every known field checked; a DataError names the field."""
    if not isinstance(meta, dict):
        raise DataError(f"{file}: field '{META}': expected a JSON object, got {type(meta).__name__}")
    if "format" in meta:  # the format first: a different format explains everything else
        _format(meta["format"], f"{file}: field 'format'", DataError)
    for name, (check, required) in FIELDS.items():
        what = f"{file}: field '{name}'"
        if name not in meta:
            if required:
                raise DataError(f"{what} is missing")
            continue
        check(meta[name], what, DataError)
    return meta


# ---------------------------------------------------------------------------- arrays

@dataclass(frozen=True)
class Entry:
    """One array as its .npy header declares it (nothing of its data read yet)."""
    member: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


class Checkpoint:
    """An opened checkpoint: checked metadata, and the declared shape and type
    of every array. Data is read on demand (`read`), after the caller compared
    the declared shape with what it expects."""

    def __init__(self, file: Path, zf: zipfile.ZipFile, meta: dict, entries: dict[str, Entry]):
        self.file, self._zf, self.meta, self.entries = file, zf, meta, entries
        self._raw = None  # the file object the archive reads, closed with it

    def error(self, field: str, message: str) -> DataError:
        return DataError(f"{self.file}: field {_field(field)}: {message}")

    def read(self, name: str, shape: tuple[int, ...] | None = None, dtype=None) -> np.ndarray:
        """The array `name`; with `shape`/`dtype`, refused unless it has exactly those."""
        e = self.entries.get(name)
        if e is None:
            raise DataError(f"{self.file}: field {_field(name)} is missing")
        if shape is not None and e.shape != tuple(shape):
            raise self.error(name, f"shape {_short(e.shape)} in the checkpoint, but {tuple(shape)} in the spec")
        if dtype is not None and e.dtype != np.dtype(dtype):
            raise self.error(name, f"type {_dtype_name(e.dtype)} in the checkpoint, but {np.dtype(dtype)} in the spec")
        return self._data(name, e)

    def _data(self, name: str, e: Entry) -> np.ndarray:
        try:
            with self._zf.open(e.member) as f:
                a = np.lib.format.read_array(f, allow_pickle=False, max_header_size=HEADER_LIMIT)
        except _BROKEN as x:
            raise self.error(name, f"unreadable ({_why(x)})") from None
        if a.shape != e.shape or a.dtype != e.dtype:  # cannot happen unless the file changed under us
            raise self.error(name, "changed while being read")
        return a

    def close(self) -> None:
        self._zf.close()  # a ZipFile does not close a file object it was given
        if self._raw is not None:
            self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_checkpoint(path: Path) -> Checkpoint:
    """Open `path` (a run folder or a params.npz) and check its structure and
    metadata; a DataError names the file and the field."""
    path = V.path(path, "checkpoint path", DataError)
    try:
        file = path / FILE if path.is_dir() else path
        os.stat(file)
    except FileNotFoundError:
        raise DataError(f"{path}: no checkpoint here (expected {FILE} from `netc train`)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    f = open_regular(file, lambda why: DataError(f"{file}: not a netc checkpoint ({why})"))
    try:
        try:
            zf = zipfile.ZipFile(f)
            members = zf.infolist()
        except _BROKEN as e:
            raise DataError(f"{file}: not a netc checkpoint (not a complete .npz archive: {_why(e)})") from None
        if len(members) > MEMBER_LIMIT:
            raise DataError(f"{file}: not a netc checkpoint ({len(members)} arrays, more than {MEMBER_LIMIT})")
        entries: dict[str, Entry] = {}
        for info in members:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name in entries:
                raise DataError(f"{file}: field {_field(name)} appears twice")
            entries[name] = member_header(file, zf, info, name)
        meta_entry = entries.pop(META, None)
        if meta_entry is None:
            raise DataError(f"{file}: not a netc checkpoint (field '{META}' is missing)")
        arrays = {k[2:]: e for k, e in entries.items() if k.startswith("a/")}
        ck = Checkpoint(file, zf, {}, arrays)
        ck._raw = f
        ck.meta = check_meta(_meta(ck, meta_entry), file)
        return ck
    except BaseException:
        f.close()
        raise


def _meta(ck: Checkpoint, e: Entry):
    if e.dtype.kind != "U" or e.shape != () or e.dtype.itemsize // 4 > META_CHARS:
        raise ck.error(META, f"expected one text of at most {META_CHARS} characters, "
                             f"found an array {e.dtype} {e.shape}")
    text = str(ck._data(META, e)[()])
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as x:
        raise ck.error(META, f"not valid JSON ({_why(x)})") from None


def member_header(file: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Entry:
    """Read and check one member's .npy header: a plain numeric (or short text)
    type, and a declared size that the stored bytes really hold (also what
    runtime/data.py's npz() checks before reading an array of a data file)."""
    where = f"{file}: field {_field(name)}"
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > DEFLATE_RATIO * max(info.compress_size, 1):
        raise DataError(f"{where}: declares {info.file_size} bytes from {info.compress_size} compressed "
                        f"(not a plausible array; refused before reading)")
    try:
        f = zf.open(info)
    except _BROKEN as e:
        raise DataError(f"{where}: not a readable array ({_why(e)})") from None
    with f:
        shape, dtype, fortran = npy_header(f, info.file_size, where, ARRAY_KINDS + TEXT_KINDS)
    if dtype.kind in TEXT_KINDS and name != META and (shape != () or dtype.itemsize // 4 > TEXT_CHARS):
        raise DataError(f"{where}: text of type {dtype} {shape} is not allowed (one short text only)")
    return Entry(info, shape, dtype, fortran)


def npy_header(f, size: int, where: str, kinds: str = ARRAY_KINDS) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran order) from the .npy header at `f`'s start, an .npy of
    `size` bytes in all: a plain type of `kinds` (never pickled objects) and a declared
    shape whose bytes are exactly the rest of the file. Nothing of the data is read,
    nothing allocated from the header's claim; a DataError begins with `where`."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=HEADER_LIMIT)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=HEADER_LIMIT)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        offset = f.tell()
    except _BROKEN as e:
        raise DataError(f"{where}: not a readable array ({_why(e)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{where}: type {_dtype_name(dtype)} is not allowed (plain numbers only; never pickled objects)")
    if dtype.kind not in kinds:
        raise DataError(f"{where}: type {_dtype_name(dtype)} is not allowed (bool, integer or float only)")
    if any(d < 0 for d in shape):
        raise DataError(f"{where}: the header declares shape {_short(shape)}, a size below zero")
    nbytes = math.prod(shape) * dtype.itemsize
    stored = size - offset
    if nbytes != stored:
        raise DataError(f"{where}: the header declares shape {_short(shape)} of {dtype} ({nbytes} bytes), "
                        f"but {stored} bytes are stored (refused before reading)")
    return tuple(shape), dtype, fortran


def _field(name: str) -> str:
    """A field name from the file, quoted and escaped for a message."""
    return V.shown(name, 100) if not name.isprintable() or "'" in name else f"'{name[:100]}'"


def _short(shape) -> str:
    s = str(tuple(shape))
    return s if len(s) <= 80 else s[:70] + f"... ({len(shape)} dims)"


def _dtype_name(dtype: np.dtype) -> str:
    return V.shown(dtype.str if dtype.fields is None else "structured", 40)


def _why(e: BaseException) -> str:
    return V.shown(f"{type(e).__name__}: {e}", 120).strip("'\"")


# ---------------------------------------------------------------------------- restoring a model

def spec_error(ck: Checkpoint, e: NetcError) -> DataError:
    """The checkpoint's spec does not compile: a DataError for field 'spec' (the
    spec's own message and place, cut short)."""
    msg = e.render()
    if len(msg) > 2000:
        msg = msg[:2000] + " ..."
    return ck.error("spec", f"the spec saved in the checkpoint does not compile: {msg}")


def check_params(ck: Checkpoint, shapes: dict[str, tuple]) -> None:
    """The metadata's parameter table must be the spec's (`shapes`): checked
    right after elaboration, before anything the size of a parameter exists."""
    saved = {k: tuple(v) for k, v in ck.meta["params"].items()}
    spec = {k: tuple(v) for k, v in shapes.items()}
    if saved != spec:
        diff = sorted(set(saved) ^ set(spec)) or sorted(k for k in spec if saved[k] != spec[k])
        raise ck.error("params", f"the parameters {[V.shown(d, 40) for d in diff[:3]]} differ from the spec's")


def read_state(ck: Checkpoint, state: dict[str, np.ndarray],
               ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """The saved value of every array in `state` (a freshly compiled model's),
    each checked for that array's shape and type before its data is read, and
    then for the range its declaration gives (`ranges`, compiler/update.py's
    state_ranges: Adam's moments, RMSprop's mean squares, ...)."""
    return {k: _in_range(ck, f"state/{k}", ck.read(f"state/{k}", v.shape, v.dtype), ranges.get(k))
            for k, v in state.items()}


def _in_range(ck: Checkpoint, field: str, a: np.ndarray, valid: tuple[float, float] | None) -> np.ndarray:
    """`a`, refused unless its values are finite and inside `valid` (None: not declared)."""
    if valid is None:
        return a
    lo, hi = valid
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(a) & (a >= lo) & (a <= hi))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        at = f" at {where}" if where else ""
        span = "" if (lo, hi) == (-np.inf, np.inf) else f" or outside [{lo:g}, {hi:g}]"
        raise ck.error(field, f"{int(bad.sum())} value(s) not finite{span} ({float(a[where]):g}{at}): "
                              f"not a state training continues from (changed by hand, or saved as the run "
                              f"diverged)")
    return a


# the training state (runtime/train_state.py TrainState.to_arrays): scalars and small vectors by name
_TRAIN_FIXED = {"train/counters": ((3,), "i"), "train/rng": ((6,), "u"), "cursor/position": ((2,), "i"),
                "cursor/loss_sum": ((), "f"), "train/next_check": ((), "i"), "rate/base": ((), "f"),
                "average/count": ((), "i"), "cursor/drift": ((), "f")}
_TRAIN_SCALARS = ("watch/", "best/")  # watch/initial, best/score, ...: one number each
_TRAIN_COPIES = ("watch/healthy/", "best/arrays/", "average/arrays/")  # copies of state arrays
_TRAIN_VECTORS = {"emphasis/missed": "b", "cursor/sizes": "i", "cursor/order": "i", "batch/w": "f"}


def read_train_state(ck: Checkpoint, state: dict[str, np.ndarray],
                     ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """The training state saved in a run's checkpoint, for TrainState.from_arrays:
    every array checked (name, shape, type) before its data is read, and state
    arrays and their copies then for their declared `ranges` (read_state). The live
    arrays are 'live/*' when the final parameters ('state/*') differ from them
    (early stopping's best, Polyak's average), else 'state/*'."""
    if "train/counters" not in ck.entries or "train/rng" not in ck.entries:
        raise DataError(f"{ck.file}: holds no training state (saved by Model.save, or by an older netc); "
                        f"nothing to resume")
    live = "live/" if any(k.startswith("live/") for k in ck.entries) else "state/"
    out = {f"state/{k}": _in_range(ck, live + k, ck.read(live + k, v.shape, v.dtype), ranges.get(k))
           for k, v in state.items()}
    for name, e in ck.entries.items():
        if name in _TRAIN_FIXED:
            shape, kind = _TRAIN_FIXED[name]
            if e.shape != shape or e.dtype.kind not in kind + ("i" if kind == "f" else ""):
                raise ck.error(name, f"expected {kind} {shape}, found {_dtype_name(e.dtype)} {_short(e.shape)}")
            out[name] = ck.read(name)
        elif name in _TRAIN_VECTORS:
            if len(e.shape) != 1 or e.dtype.kind != _TRAIN_VECTORS[name]:
                raise ck.error(name, f"expected a vector of kind {_TRAIN_VECTORS[name]}, "
                                     f"found {_dtype_name(e.dtype)} {_short(e.shape)}")
            out[name] = ck.read(name)
        elif name.startswith(_TRAIN_COPIES):
            key = name.split("/", 2)[2]
            if key not in state:
                raise ck.error(name, "a copy of an array the spec does not have")
            out[name] = _in_range(ck, name, ck.read(name, state[key].shape, state[key].dtype), ranges.get(key))
        elif name.startswith(_TRAIN_SCALARS) and name.count("/") == 1:
            if e.shape != () or e.dtype.kind not in "biuf":
                raise ck.error(name, f"expected one number, found {_dtype_name(e.dtype)} {_short(e.shape)}")
            out[name] = ck.read(name)
    sizes, order = out.get("cursor/sizes"), out.get("cursor/order")
    if (sizes is None) != (order is None) or (sizes is not None and (
            (sizes < 1).any() or int(sizes.sum()) != len(order) or (order < 0).any())):
        raise ck.error("cursor/order", "not a valid order of batches")
    if "cursor/position" in out and sizes is None:
        raise ck.error("cursor/sizes", "is missing")
    for name in ("train/counters", "cursor/position", "train/next_check", "average/count"):
        if name in out and (np.asarray(out[name]) < 0).any():
            raise ck.error(name, "a count below zero")
    if "cursor/position" in out and int(out["cursor/position"][0]) > len(sizes):
        raise ck.error("cursor/position", f"batch {int(out['cursor/position'][0])} of {len(sizes)}")
    return out


def read_normalizer(ck: Checkpoint, width: int | None) -> Normalizer | None:
    """The saved input normalization (None if there is none), checked to turn
    inputs into `width` features (the spec's input width, None: not checked)."""
    names = [k for k in ck.entries if k.startswith("norm.")]
    if not names:
        return None
    arrays = {k: ck.read(k) for k in names}
    try:
        norm = Normalizer.from_arrays(arrays)
        _fitted_statistics(norm)
        if width is not None:
            n_in = norm.in_width if norm.in_width is not None else width
            out = norm.apply(np.zeros((1, n_in)))
            if out.shape != (1, width):
                raise ValueError(f"it makes {out.shape[1:]} features of {n_in}, the spec's input takes {width}")
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as e:
        raise ck.error("norm.*", f"not a usable input normalization ({_why(e)})") from None
    return norm


def _fitted_statistics(norm: Normalizer) -> None:
    """ValueError unless every statistic is one a fit makes: finite numbers, positive
    scales (apply divides by them), for each step of a pipeline."""
    for step in norm.steps:
        _fitted_statistics(step)
    for k, v in norm.arrays.items():
        if v.dtype.kind in "biuf" and not np.isfinite(v).all():
            raise ValueError(f"'{k}' of {norm.kind} holds a value that is not finite")
        if k == "scale" and not (v > 0).all():
            raise ValueError(f"'scale' of {norm.kind} holds a value that is not positive")


TARGET_PREFIX = "tnorm."  # the target normalization's arrays (normalize_target), beside "norm.*"


def read_target_normalizer(ck: Checkpoint, target, kind: str) -> Normalizer:
    """The saved target normalization that the spec's `normalize_target = kind` asks for,
    checked to be `kind`, for target node `target`'s width, with finite statistics and
    positive scales (predict multiplies by them); the identity for kind "none"."""
    names = [k for k in ck.entries if k.startswith(TARGET_PREFIX)]
    if kind == "none":
        if names:
            raise ck.error(names[0], "a target normalization, but the spec has normalize_target = none")
        return Normalizer("none", {})
    if not names:
        raise DataError(f"{ck.file}: field '{TARGET_PREFIX}*' is missing (the spec has normalize_target = {kind})")
    width = None if target is None else int(np.prod(target.shape[1:], dtype=np.int64))
    try:
        norm = Normalizer.from_arrays({k: ck.read(k) for k in names}, TARGET_PREFIX)
        if norm.kind != kind:
            raise ValueError(f"it is {norm.kind}, the spec says {kind}")
        for k, v in norm.arrays.items():
            if v.shape != (width,) or v.dtype.kind != "f" or not np.isfinite(v).all():
                raise ValueError(f"'{k}' must hold {width} finite numbers, found {_dtype_name(v.dtype)} "
                                 f"{_short(v.shape)}")
        if "scale" in norm.arrays and not (norm.arrays["scale"] > 0).all():
            raise ValueError("a scale that is not positive")
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as e:
        raise ck.error(f"{TARGET_PREFIX}*", f"not a usable target normalization ({_why(e)})") from None
    return norm


def load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every array and the checked metadata (each array checked against its
    stored size; callers that know the expected shapes use open_checkpoint)."""
    with open_checkpoint(path) as ck:
        return {k: ck.read(k) for k in ck.entries}, ck.meta
