"""A run folder and what a run writes to it as it goes.

Files: run.json (how the run was started: the spec's file, its used files,
the data's base folder, the keywords) and spec.net (the spec text), both
written atomically before training, so a run killed before its first
checkpoint can be resumed even if the user's files changed; metrics.jsonl (one
JSON line per epoch and per extra validation, flushed as written);
params.npz + model.json (the checkpoint, runtime/checkpoint.py writes it
atomically; its metadata says how many metrics lines it covers, so a resumed
run truncates metrics.jsonl back to that and appends: no epoch twice);
summary.json at the end (or on Ctrl-C).

A folder never gets damaged: a folder holding another run is refused unless
`force`, and then the new run writes into a staging folder inside it
(.netc-staging) and moves its files over the old ones only once its first
checkpoint is written; before that, nothing of the old run has changed.
Leftover temporaries (a kill inside a write) and a staging folder are cleaned
at the next start or resume (a staging folder holding a checkpoint was killed
half-way through the switch: the switch is completed). While a run or a
resume writes a folder, it holds a lock on it: a second process is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import DataError, NetcError
from netc.compiler.pipeline import to_host

from . import checkpoint

RECORD, SPEC, METRICS, SUMMARY = "run.json", "spec.net", "metrics.jsonl", "summary.json"
MODEL_JSON = "model.json"
# what a run writes; the switch moves the checkpoint first (it alone says what the run is)
RUN_FILES = (checkpoint.FILE, MODEL_JSON, METRICS, RECORD, SPEC, SUMMARY)
STAGING = ".netc-staging"
SWITCHING = ".switching"  # in the staging folder: the switch has begun, complete it
_TEMPORARY = re.compile(r"^\.(%s)\..+\.tmp$" % "|".join(re.escape(f) for f in RUN_FILES))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: `message` says truthfully what the run folder
    holds; `summary` is what summary.json got (stopped: "interrupted")."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.message, self.summary = message, summary


class Lock:
    """This process's exclusive hold on a run folder (a flock on the folder itself,
    released by `release` or when the process dies): two runs never write one folder."""

    def __init__(self, folder: Path):
        self.fd = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise NetcError(f"{folder} is in use by another netc process (training or resuming it); "
                            f"wait for it to end, or stop it first") from None
        self.fd = fd

    def release(self) -> None:
        """Idempotent."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def holds_run(folder: Path) -> bool:
    """Something of a run worth keeping is there: a checkpoint, a summary, a metrics line.
    A run that saved none of these (it failed on its data, say) is replaced by a new one."""
    if not folder.is_dir():
        return False
    if any((folder / f).exists() for f in (checkpoint.FILE, MODEL_JSON, SUMMARY)):
        return True
    metrics = folder / METRICS
    return metrics.exists() and metrics.stat().st_size > 0


def clean(folder: Path) -> None:
    """Remove the temporaries a kill left (a write cut short) and finish or
    drop an interrupted staging folder."""
    if not folder.is_dir():
        return
    staging = folder / STAGING
    if staging.is_dir():
        if (staging / checkpoint.FILE).exists() or (staging / SWITCHING).exists():  # a checkpoint: switch
            _switch(staging, folder)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    for p in folder.iterdir():
        if _TEMPORARY.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def _uninterrupted():
    """Ctrl-C (SIGINT) waits until the block ends, then acts as it would have: the block
    is done whole or not at all. Only the main thread can; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught = []
    old = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _switch(staging: Path, folder: Path) -> None:
    """Move the new run's files over the old run's (the checkpoint first), drop
    what is left of the old run, remove the staging folder."""
    (staging / SWITCHING).touch()
    for name in RUN_FILES:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
        elif name == SUMMARY:
            (folder / name).unlink(missing_ok=True)  # the old run's summary says nothing of the new one
    shutil.rmtree(staging, ignore_errors=True)


def refuse(folder: Path) -> NetcError:
    return NetcError(f"{folder} already holds a run: continue it with `netc train --resume {folder}` "
                     f"(netc.resume), train into a new --out folder, or replace it with --force "
                     f"(fit(force=True)); the old run is kept until the new one's first checkpoint")


class RunFolder:
    """Where a run writes; a RunFolder(None) writes nothing."""

    def __init__(self, folder: Path | None, meta: dict | None = None, extra_arrays: Callable[[], dict] = dict):
        self.folder, self.meta, self.extra_arrays = folder, dict(meta or {}), extra_arrays
        self.work = folder  # where files go now: the staging folder until the first checkpoint
        self.file = None
        self.lines = 0  # metrics lines written (and kept)
        self.saved: dict | None = None  # what the last checkpoint holds (epoch, batch, batches)
        self.held: Lock | None = None  # the folder is this process's until close()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def start(cls, folder: Path, record: dict | None, spec_text: str, force: bool = False) -> "RunFolder":
        """A new run in `folder`: refused if it holds another run, unless `force`."""
        if folder.exists() and not folder.is_dir():
            raise NetcError(f"{folder} is a file, not a run folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file or device on the way, a symlink loop, no permission
            raise NetcError(f"{folder}: cannot be a run folder ({e.strerror or e})") from None
        rf = cls(folder)
        rf.held = Lock(folder)
        try:
            clean(folder)
            if holds_run(folder):
                if not force:
                    raise refuse(folder)
                rf.work = folder / STAGING
            rf.work.mkdir(parents=True, exist_ok=True)
            rf._record(record, spec_text)
            rf.file = open(rf.work / METRICS, "w")
        except BaseException:
            rf.close()
            raise
        return rf

    @classmethod
    def reopen(cls, folder: Path, metrics_lines: int, record: dict | None, spec_text: str,
               held: Lock) -> "RunFolder":
        """A resumed run (`held`: its Lock): metrics.jsonl cut back to the lines the
        checkpoint covers, then appended."""
        rf = cls(folder)
        rf.held = held
        rf._record(record, spec_text)
        kept = b""
        if metrics_lines and (folder / METRICS).exists():
            with open(folder / METRICS, "rb") as f:
                for _ in range(metrics_lines):
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        break
                    kept += line
        atomic_write(folder / METRICS, lambda f: f.write(kept))
        rf.lines = kept.count(b"\n")
        rf.file = open(folder / METRICS, "a")
        return rf

    def _record(self, record: dict | None, spec_text: str) -> None:
        """run.json, then spec.net (its presence says the record is complete)."""
        if record is None:  # a bare Run(out_dir=...): not resumable from before its first checkpoint
            return
        atomic_write(self.work / RECORD, lambda f: f.write(json.dumps(record, indent=2).encode()))
        atomic_write(self.work / SPEC, lambda f: f.write(spec_text.encode()))

    # -- writing ---------------------------------------------------------------------------
    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
            self.lines += 1

    def checkpoint(self, arrays: dict, meta: dict) -> None:
        """Save `arrays` (plain arrays by name, e.g. TrainState.to_arrays()) with the
        run's metadata, `meta` and the metrics lines it covers; the first one
        replaces an old run (--force)."""
        if self.folder is None:
            return
        out = {k: to_host(v) for k, v in arrays.items()}
        out.update(self.extra_arrays())
        meta = {**self.meta, **meta, "metrics_lines": self.lines}
        with _uninterrupted():  # params.npz, model.json and what Ctrl-C says was saved agree
            checkpoint.save(self.work, out, json.loads(json.dumps(meta, default=str)))
            if self.work != self.folder:
                _switch(self.work, self.folder)
                self.work = self.folder
            self.saved = {k: meta.get(k) for k in ("epoch", "batch", "batches", "final")}

    def summary(self, summary: dict) -> None:
        """summary.json, unless the run is still staged (the old run's stays)."""
        if self.folder is not None and self.work == self.folder:
            atomic_write(self.folder / SUMMARY,
                         lambda f: f.write(json.dumps(summary, indent=2, default=str).encode()))

    def saved_text(self) -> str:
        """What the folder holds now, in words (Ctrl-C tells the truth)."""
        if self.folder is None:
            return "nothing was saved (no run folder)"
        s = self.saved
        if s is None:
            if self.work != self.folder:
                return f"nothing was saved; {self.folder} still holds the previous run, unchanged"
            return (f"nothing was saved (no checkpoint yet); `netc train --resume {self.folder}` "
                    f"starts the run again from its recorded spec")
        if s.get("batch"):
            where = f"after epoch {s['epoch']} and {s['batch']} of {s['batches']} batches of epoch {s['epoch'] + 1}"
        else:
            where = f"at the end of epoch {s['epoch']}"
        return (f"the checkpoint in {self.folder} holds the run {where}; "
                f"`netc train --resume {self.folder}` continues it")

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
        if self.folder is not None and self.work != self.folder:
            clean(self.folder)  # no checkpoint yet: the old run stays (a switch under way is completed)
            self.work = self.folder
        if self.held is not None:
            self.held.release()


def read_record(folder: Path) -> tuple[dict, str]:
    """run.json and spec.net of a run killed before its first checkpoint, read
    as hostile (regular files, size caps, checked fields)."""
    from netc.compiler import sources
    if not (folder / SPEC).exists() or not (folder / RECORD).exists():
        raise DataError(f"{folder}: not a run folder (no {checkpoint.FILE}, no {SPEC} and {RECORD}); "
                        f"nothing to resume")
    spec_text = sources.read_spec_file(folder / SPEC)
    f = sources.open_regular(folder / RECORD, lambda why: DataError(f"{folder / RECORD}: unreadable ({why})"),
                             cap=checkpoint.META_CHARS)
    with f:
        try:
            record = json.loads(f.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise DataError(f"{folder / RECORD}: not valid JSON ({e})") from None
    return checkpoint.check_record(record, f"{folder / RECORD}"), spec_text
