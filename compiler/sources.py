"""Reading spec files: the files a spec `use`s, and the spec file itself.

Why a module of its own: `use` takes a path from the spec, so a spec (or a
checkpoint holding one) chooses what gets opened. Only regular files under a
size cap are read (no /dev/zero, no FIFO that blocks, no directory), and a
checkpoint's spec reads only the files embedded in it (`embedded`), never the
disk. A reader is a function (path, shown, loc) -> text, where `path` is the
resolved path, `shown` the string written in the spec and `loc` its place.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from .errors import Loc, NetcError, SpecError
from .validate import PATH_LIMIT, shown as _q

USE_CAP = 1 << 20  # bytes in one spec or used file
EMBED_LIMIT = 256  # used files one checkpoint may embed

Reader = Callable[[Path, str, "Loc | None"], str]


def read_use(path: Path, shown: str, loc: Loc | None = None) -> str:
    """The text of a regular UTF-8 file of at most USE_CAP bytes, else a located SpecError."""
    data = _read_regular(Path(path), lambda why: SpecError(f"cannot read {_q(shown)}: {why}", loc))
    return decode(data, shown, loc)


def read_spec_file(path: Path) -> str:
    """The text of a spec file (same limits as a used file); a NetcError says
    "cannot read spec", a non-UTF-8 byte is a SpecError at its line and column."""
    data = _read_regular(Path(path), lambda why: NetcError(f"cannot read spec {path}: {why}"))
    return decode(data, str(path), None, file=str(path))


def is_file(text: str) -> bool:
    """Whether `text` names an existing file (False for what cannot be a path)."""
    if not text or "\x00" in text or len(text) > PATH_LIMIT:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def decode(data: bytes, shown: str, loc: Loc | None = None, file: str | None = None) -> str:
    """UTF-8 text with universal newlines; a bad byte is a SpecError at `loc`,
    or with `file` at the byte itself. A leading byte-order mark (what some
    Windows editors write) is dropped: it is not part of the text."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        where = f"line {line}, column {col}"
        if file is not None:
            loc, where = Loc(file, line, col), "here"
        raise SpecError(f"{_q(shown)} is not UTF-8 text (byte 0x{data[e.start]:02x} {where})", loc) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open() reads text


def open_regular(path: Path, fail: Callable[[str], Exception], cap: int | None = None) -> BinaryIO:
    """`path` opened for reading if it is a regular file (of at most `cap`
    bytes); `fail(reason)` is raised otherwise. Never blocks on a FIFO, never
    opens a device: checked before opening and again on the open file."""
    try:
        _check(os.stat(path), fail, cap)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as e:
        raise fail(getattr(e, "strerror", None) or str(e)) from None
    f = os.fdopen(fd, "rb")
    try:
        _check(os.fstat(fd), fail, cap)  # the same file that was checked: no swap in between
    except BaseException:
        f.close()
        raise
    return f


def _read_regular(path: Path, fail: Callable[[str], Exception]) -> bytes:
    """The bytes of a regular file of at most USE_CAP bytes; `fail(reason)` is raised otherwise."""
    with open_regular(path, fail, USE_CAP) as f:
        data = f.read(USE_CAP + 1)  # the file may have grown since
    if len(data) > USE_CAP:
        raise fail(_too_big(len(data)))
    return data


def _check(st: os.stat_result, fail: Callable[[str], Exception], cap: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise fail("it is a folder" if stat.S_ISDIR(st.st_mode)
                   else "it is not a regular file (a device, FIFO or socket)")
    if cap is not None and st.st_size > cap:
        raise fail(_too_big(st.st_size))


def _too_big(size: int) -> str:
    return f"{size} bytes or more, over the {USE_CAP >> 20} MiB limit for a spec file"


def base_of(file: str) -> Path:
    """The folder a spec's relative `use` paths start from (the elaborator's rule)."""
    return Path(file).parent if not file.startswith("<") else Path.cwd()


def embed(used: Mapping[str, str], file: str) -> dict[str, str]:
    """The used files of the spec `file`, keyed by their path relative to the
    spec's folder, for a checkpoint: loading it elsewhere finds them again."""
    base = base_of(file).resolve()
    return {os.path.relpath(p, base): t for p, t in used.items()}


def embedded(files: Mapping[str, str], file: str) -> Reader:
    """A reader that serves only `files` (from `embed`): a checkpoint's spec
    never reads the disk, whatever its `use` statements say.

    A file is found by its key: the `use` path joined to the key of the file
    that uses it (the spec's own is ""), so where the checkpoint is loaded from
    does not matter; failing that, by the resolved path relative to the spec's
    folder (what `embed` stored)."""
    keys = {file: ""}  # module file name (as the elaborator names it) -> its key

    def read(path: Path, shown: str, loc: Loc | None = None) -> str:
        candidates = []
        parent = keys.get(loc.file) if loc is not None else None
        if parent is not None and not os.path.isabs(shown):
            candidates.append(os.path.normpath(os.path.join(os.path.dirname(parent), shown)))
        try:
            candidates.append(os.path.relpath(Path(path), base_of(file).resolve()))
        except ValueError:  # another drive (Windows)
            pass
        for key in candidates:
            if key in files:
                keys[str(path)] = key
                return files[key]
        raise SpecError(f"cannot read {_q(shown)}: a checkpoint's spec can use only the files saved "
                        f"in it, and this one is not (loading a checkpoint reads no other file)", loc)
    return read
