"""Initializing parameters from another run's checkpoint: the train-block key
`init SELECTOR = from("RUN")` [PR 1.1, 3.3].

It is how greedy layer-wise pretraining hands its layers on (netc/pretrain.py),
and how a run warm-starts from another. The other run's folder (or params.npz)
is opened with the hostile reader (runtime/checkpoint.py: no pickle, every
declared shape checked before data is read); each selected parameter is copied
from the parameter of the same name there. Every failure is a SpecError at the
`from(...)` that asked for it: a missing or unreadable run, a parameter that
run does not have, a shape that differs (both shapes named). Optimizer state
(velocities) is not copied: the new run starts its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.compiler.blocks import BlockCall, Symbol, select_params
from netc.compiler.errors import Loc, NetcError, SpecError, did_you_mean
from netc.runtime import checkpoint


@dataclass(frozen=True)
class InitFrom:
    """`from("RUN")`: a run folder (or its params.npz), relative to the spec's folder."""
    path: str
    loc: Loc

    def __str__(self) -> str:
        return f'from("{self.path}")'


def source_of(value, loc: Loc, source: str | None) -> InitFrom:
    """A train block's `init` value -> InitFrom, or a located SpecError."""
    if isinstance(value, BlockCall) and value.name == "from" and not value.kwargs and value.slice is None \
            and len(value.args) == 1 and isinstance(value.args[0], str) and not isinstance(value.args[0], Symbol) \
            and value.args[0].strip():
        return InitFrom(value.args[0], value.loc)
    where = value.loc if isinstance(value, BlockCall) else loc
    shown = f"{value.name}(...)" if isinstance(value, BlockCall) else repr(value)
    raise SpecError(f'init takes from("RUN FOLDER"), a run of `netc train` or `netc pretrain`, got {shown}',
                    where, source)


def entries(cfg) -> list[tuple[str | None, InitFrom, Loc]]:
    """(selector or None for every parameter, source, loc) in the order written."""
    out = []
    if getattr(cfg, "init", None) is not None:
        if not isinstance(cfg.init, InitFrom):  # set from Python (train=...), not from a spec
            raise NetcError(f'init: write it in the spec\'s train block, init SELECTOR = from("RUN"); '
                            f'got {type(cfg.init).__name__}')
        out.append((None, cfg.init, cfg.init.loc))
    out += [(sel, value, loc) for key, sel, value, loc in cfg.groups if key == "init"]
    return out


def initial_values(params: dict, cfg, base: Path, source: str | None) -> dict[str, np.ndarray]:
    """The arrays the `init` keys copy: {parameter name: value}, later entries
    winning. `params` are the spec's parameter nodes; `base` the spec's folder."""
    out: dict[str, np.ndarray] = {}
    for selector, src, loc in entries(cfg):
        try:
            chosen = list(params.values()) if selector is None else select_params(params, selector, loc)
        except SpecError as e:
            e.source = e.source or source
            raise
        path = Path(src.path)
        path = path if path.is_absolute() else base / path
        try:
            with checkpoint.open_checkpoint(path) as ck:
                saved = ck.meta["params"]
                for p in chosen:
                    if p.name not in saved:
                        raise SpecError(
                            f"parameter '{p.name}' is not in {src.path} (the run there has "
                            f"{_listed(saved)})", src.loc, source, hint=did_you_mean(p.name, saved))
                    have, want = tuple(saved[p.name]), tuple(p.shape)
                    if have != want:
                        raise SpecError(f"parameter '{p.name}' is {list(have)} in {src.path} but "
                                        f"{list(want)} in this spec", src.loc, source)
                    e = ck.entries.get(f"state/{p.name}")
                    if e is None or e.dtype.kind != "f":
                        raise SpecError(f"{ck.file}: field 'state/{p.name}' is missing or not floating point",
                                        src.loc, source)
                    value = ck.read(f"state/{p.name}", want)
                    if not np.isfinite(value).all():  # tampered, or saved as that run diverged
                        raise SpecError(f"{ck.file}: field 'state/{p.name}' holds values that are not finite "
                                        f"(NaN or inf): not initial values to train from", src.loc, source)
                    out[p.name] = value.astype(p.dtype)
        except SpecError:
            raise
        except NetcError as e:  # the hostile reader's DataError: where the run is asked for
            raise SpecError(f"init from {src.path}: {e.message}", src.loc, source) from None
    return out


def _listed(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return shown or "no parameters"
