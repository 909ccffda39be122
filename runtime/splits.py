"""Resolve a spec's data block into datasets, checked against the spec's target."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netc.compiler.errors import DataError, SpecError

from . import data
from .config import DataConfig, Source


@dataclass
class Splits:
    train: data.Dataset | None
    valid: data.Dataset | None = None
    test: data.Dataset | None = None


def load_source(src: Source, base: Path, target=None) -> data.Dataset:
    """One split; with `target` (a data.Target or the spec's target node) its
    targets are checked and converted by data.conform before training starts."""
    try:
        match src.kind:
            case "mnist":
                ds = data.mnist(*src.args, **src.kwargs)
            case "csv" | "npz":
                if not src.args:
                    raise SpecError(f"{src.kind}(...) needs a file path", src.loc)
                path = Path(src.args[0])
                path = path if path.is_absolute() else base / path
                fn = data.csv if src.kind == "csv" else data.npz
                ds = fn(path, *src.args[1:], **src.kwargs)
            case other:
                raise SpecError(f"unknown data source {other}", src.loc)
        if src.slice is not None:
            ds = ds.slice(*src.slice)
        ds = data.conform(ds, target)
    except TypeError as e:
        raise SpecError(f"{src.kind}(...): {e}", src.loc) from None
    except DataError as e:
        if e.loc is None:
            e.loc = src.loc
        raise
    return ds


def load_splits(cfg: DataConfig, base: Path, target=None) -> Splits:
    return Splits(*(None if s is None else load_source(s, base, target)
                    for s in (cfg.train, cfg.valid, cfg.test)))
