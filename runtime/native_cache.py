"""What the native object cache trusts: objects there are code this process runs.

A shared object is dlopened, and its constructors run, before any netc code can
look at it, so everything is checked before: the cache folder is the user's own
and nobody else can write it (else anyone who can predict a cache key, and the
source is deterministic, plants code under it); an object is a regular file (no
symlink) of ours that only we can write; it is a whole ELF file (one cut short
maps pages past its end, and the process dies of SIGBUS at dlopen); it carries
the key of the source it was built from (`stamp`: a file swapped or stale under
another key's name is not that source's object). An object that fails is
rebuilt; a folder that fails is refused, by name. The sweep removes only names
netc writes, so a cache folder set carelessly to ~ or a project loses nothing.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

# netc's own names in the folder: objects, kept failed sources, temporaries of a compile
OBJECT = re.compile(r"[A-Za-z0-9_-]{1,40}-[0-9a-f]{32}(\.failed)?\.(so|c)")
TEMPORARY = re.compile(r"\.[A-Za-z0-9_-]{1,40}-[0-9a-f]{32}\..+")
KEY_SYMBOL = "netc_object_key"


def stamp(source: str, key: str) -> str:
    """`source` plus a constant holding its key: the object then says which source it is."""
    return f"{source}\nconst char {KEY_SYMBOL}[] = \"{key}\";\n"


def private_folder(d: Path, error) -> Path:
    """`d`, created 0700 if missing; refused (error(message)) if it is not a folder, is
    another user's, or others can write it."""
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except (OSError, RuntimeError) as e:
        raise error(f"the native cache folder {d} cannot be used ({getattr(e, 'strerror', None) or e}); "
                    f"set NETC_CACHE_DIR to a folder of yours") from None
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"the native cache folder {d} is not a folder; set NETC_CACHE_DIR to a folder of yours")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        who = ("another user's" if st.st_uid != os.getuid()
               else f"writable by others (mode {stat.S_IMODE(st.st_mode):o})")
        raise error(f"the native cache folder {d} is {who}: anyone who can write there could plant code "
                    f"this process runs; set NETC_CACHE_DIR to a folder of yours that only you can write "
                    f"(or unset it: ~/.cache/netc/native)")
    return d


def usable(path: Path, key: str, error) -> bool:
    """Whether the object at `path` may be dlopened as the one built for `key`; an object
    that is there and fails is removed (a folder there is refused: error(message))."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is a folder where the native cache keeps an object: remove it")
    ok = (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022)
    if ok:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        ok = _whole_elf(data) and KEY_SYMBOL.encode() in data and key.encode() in data
    if not ok:
        try:
            path.unlink()
        except OSError:
            pass
    return ok


def _whole_elf(data: bytes) -> bool:
    """A 64- or 32-bit little-endian ELF whose program segments and section table lie
    inside the file (a truncated object fails); a Mach-O object passes unchecked."""
    if data[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe"):  # Mach-O (macOS): not checked here
        return True
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[5] != 1:
        return False
    n = len(data)
    u = lambda at, size: int.from_bytes(data[at:at + size], "little")  # noqa: E731
    if data[4] == 2:  # 64-bit
        if n < 64:
            return False
        phoff, shoff, phentsize, phnum, shentsize, shnum = u(32, 8), u(40, 8), u(54, 2), u(56, 2), u(58, 2), u(60, 2)
        segments = [(u(phoff + i * phentsize + 8, 8), u(phoff + i * phentsize + 32, 8)) for i in range(phnum)]
    elif data[4] == 1:
        phoff, shoff, phentsize, phnum, shentsize, shnum = u(28, 4), u(32, 4), u(42, 2), u(44, 2), u(46, 2), u(48, 2)
        segments = [(u(phoff + i * phentsize + 4, 4), u(phoff + i * phentsize + 16, 4)) for i in range(phnum)]
    else:
        return False
    if phoff + phnum * phentsize > n or shoff + shnum * shentsize > n:
        return False
    return all(off + size <= n for off, size in segments)


def ours(name: str, temporary: bool) -> bool:
    """Whether a file name in the cache folder is one netc writes (the sweep removes no other)."""
    return bool((TEMPORARY if temporary else OBJECT).fullmatch(name))
