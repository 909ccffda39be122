"""Checkpoints: one .npz of plain arrays (parameters, optimizer state,
normalization statistics) with the metadata inside it as JSON text.

No pickle: loading uses allow_pickle=False and JSON. A checkpoint is written
to a temporary file in the same folder, flushed to disk, then renamed over the
old one, so a crash or kill mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import DataError

FORMAT = "netc-checkpoint-1"
FILE = "params.npz"


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Atomically write `path/params.npz` (+ a readable `path/model.json`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **meta}
    payload = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    payload["meta.json"] = np.array(json.dumps(meta))
    atomic_write(path / FILE, lambda f: np.savez(f, **payload))
    atomic_write(path / "model.json", lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return path / FILE


def load(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    file = path / FILE if path.is_dir() else path
    try:
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta.json"]))
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a/")}
    except FileNotFoundError:
        raise DataError(f"{file}: no checkpoint here (expected {FILE} from `netc train`)") from None
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: not a netc checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{file}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    return arrays, meta
