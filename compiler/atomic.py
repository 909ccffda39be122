"""Write a file so that a crash or kill never leaves it half-written: a
temporary file in the same folder, flushed to disk, then renamed over the
target (the old file stays whole until the rename)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(target: Path | str, write: Callable[[BinaryIO], object], keep_mode: bool = False) -> None:
    target = Path(target)
    mode = target.stat().st_mode & 0o7777 if keep_mode and target.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
