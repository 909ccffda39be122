"""Resuming a run: `netc.resume(DIR)` and `netc train --resume DIR`.

The run folder alone says what to do: its checkpoint holds the spec, its used
files, how the run was started (field 'run') and the whole training state
(runtime/train_state.py); a run killed before its first checkpoint has
run.json and spec.net instead. The spec is compiled from those records only
(the user's files may have changed since), the checkpoint is read as hostile
(runtime/checkpoint.py), and training continues where the checkpoint left
it, so the final parameters are bit-identical to an uninterrupted run's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from netc.compiler import validate
from netc.compiler.errors import DataError, NetcError
from netc.compiler.update import state_ranges
from netc.runtime import checkpoint, run_folder
from netc.runtime.state import assign
from netc.runtime.trainer import Saved

from .model import Model


def resume(path: str | Path, x=None, t=None, *, valid=None, test=None, epochs: int | None = None,
           progress: bool | None = None, log: Callable[[str], None] | None = None) -> Model:
    """Continue the run in folder `path` and return its model (`.summary` as fit's).
    `epochs`: train up to this many epochs in all (extends a finished run). A run
    that trained on arrays needs the same arrays again (x, t, valid, test).
    A finished run is left as it is (`model.resumed == "finished"`)."""
    folder = validate.path(path, "resume(path)")
    epochs = None if epochs is None else validate.integer(epochs, "resume(epochs=...)", 1)
    log = log or (lambda s: None)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run folder")
    held = run_folder.Lock(folder)  # this process's until the run ends
    try:
        return _resume(folder, held, x, t, valid, test, epochs, progress, log)
    finally:
        held.release()


def _resume(folder: Path, held, x, t, valid, test, epochs, progress, log) -> Model:
    run_folder.clean(folder)  # temporaries of a kill, a staging folder
    meta, saved_at = None, None
    if (folder / checkpoint.FILE).exists():
        with checkpoint.open_checkpoint(folder) as ck:
            meta = ck.meta
            record = meta.get("run")
            if record is None:
                raise DataError(f"{ck.file}: a saved model (Model.save), not a run folder written by "
                                f"`netc train` or fit(out=...): nothing to resume")
            text = meta["spec"]
            record = {**record, "sources": meta.get("sources", {})}
            m = _model(text, record, lambda e: checkpoint.spec_error(ck, e))
            checkpoint.check_params(ck, {k: v.shape for k, v in m.params.items()})
            target = epochs or record["epochs"] or m.train_cfg.epochs
            if meta.get("final") and (meta.get("stopped") == "early" or target <= meta.get("epoch", 0)):
                assign(m.state, checkpoint.read_state(ck, m.state, state_ranges(m.program.state_leaves)))
                xs = list(m.program.spec.inputs.values())[:1]
                norm = checkpoint.read_normalizer(ck, xs[0].shape[1] if xs and len(xs[0].shape) == 2 else None)
                if norm is not None:
                    m.normalizer = norm
                m.target_scaler = checkpoint.read_target_normalizer(ck, m._target, m.data_cfg.normalize_target)
                m.summary, m.resumed = meta.get("summary"), "finished"
                m._init_pending = False  # its parameters are the checkpoint's (not init ... = from(...))
                m.history_ = read_history(folder, meta.get("metrics_lines", 0))
                how = "stopped early" if meta.get("stopped") == "early" else f"{meta.get('epoch', 0)} epochs"
                log(f"{folder}: the run is finished ({how}); nothing to do"
                    + ("" if meta.get("stopped") == "early" else " (--epochs N, or resume(epochs=N), extends it)"))
                return m
            done, partial = meta.get("epoch", 0), bool(meta.get("batch"))
            if target < done or (target == done and partial):
                raise NetcError(f"{folder} has trained {done} epoch(s)" + (" and part of the next" if partial else "")
                                + f": --epochs must be at least {done + 1 if partial else done}")
            arrays = checkpoint.read_train_state(ck, m.state, state_ranges(m.program.state_leaves))
        saved_at = {k: meta.get(k) for k in ("epoch", "batch", "batches", "final")}
        saved = Saved(arrays, read_history(folder, meta.get("metrics_lines", 0)), meta.get("train_seconds", 0.0),
                      meta.get("stopped"), meta.get("examples"))
        lines = meta.get("metrics_lines", 0)
    else:  # killed before its first checkpoint: start again from the recorded spec
        record, text = run_folder.read_record(folder)
        m = _model(text, record, lambda e: e)
        target = epochs or record["epochs"] or m.train_cfg.epochs
        saved, lines = None, 0
    if record["data"] == "arrays" and x is None:
        raise NetcError(f"{folder}: this run trained on arrays given to fit: pass the same arrays again, "
                        f"netc.resume(DIR, x, t, valid=..., test=...)")
    record = {**record, "epochs": target}
    if meta is None:
        where = "from its start (no checkpoint yet)"
    else:
        where = f"after epoch {meta.get('epoch', 0)}"
        if meta.get("batch"):
            where += f", batch {meta['batch']} of {meta['batches']}"
    log(f"resuming {folder} {where}, to epoch {target}")
    rf = run_folder.RunFolder.reopen(folder, lines, record, text, held)
    rf.saved = saved_at
    m.resumed = "continued"
    m._fit(x, t, valid, test, target, record["limit"], progress, log, rf, record, saved)
    return m


def _model(text: str, record: dict, error: Callable[[NetcError], Exception]) -> Model:
    """The run's model, compiled from the recorded spec and used files only."""
    try:
        m = Model(text, record["spec_file"], embedded=record.get("sources", {}), **record["options"])
    except NetcError as e:
        raise error(e) from None
    m.base = Path(record["base"])
    return m


def read_history(folder: Path, lines: int) -> list[dict]:
    """The epochs' rows among the first `lines` lines of metrics.jsonl (what a
    checkpoint covers; the summary's epochs and last scores come from them)."""
    rows = []
    path = folder / run_folder.METRICS
    if not lines or not path.exists():
        return rows
    with open(path, "rb") as f:
        for k in range(lines):
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise DataError(f"{path}: line {k + 1} is not valid JSON") from None
            if isinstance(row, dict) and not row.get("partial"):
                rows.append(row)
    return rows
