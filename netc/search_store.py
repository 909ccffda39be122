"""The results of a search: DIR/trials.jsonl (one fsynced line per finished trial,
the store a resumed search reads), DIR/search.json (what the search is),
DIR/best_so_far.json, and the warning when the best value lies on the border of
its range [PR 3.4].

The store belongs to the process that runs the search (the client): trials run
anywhere (netc/search_runner.py) and come back as records, which only this
module writes down.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import NetcError
from netc.search_space import Dist, show_value

BORDER = 0.1  # a best value within 10% of its range's width from an end is "on the border" [PR 3.4]


class Store:
    """DIR/trials.jsonl: one line per finished trial, appended and fsynced; and
    DIR/search.json, what the search is (a resumed search must be the same one)."""

    def __init__(self, out: Path, identity: dict):
        self.out = out
        self.path = out / "trials.jsonl"
        self.records: dict[int, dict] = {}
        self.skipped = 0
        out.mkdir(parents=True, exist_ok=True)
        self._lock()
        ident = out / "search.json"
        if ident.exists():
            try:
                old = json.loads(ident.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            differ = [k for k in identity if k != "space" and old.get(k) != identity[k]]
            if differ and (self.path.exists() and self.path.stat().st_size):
                raise NetcError(f"{out} holds another search (its {', '.join(differ)} differ): its trials "
                                f"cannot be resumed by this one; pass another --out, or remove {out}")
        atomic_write(ident, lambda f: f.write(json.dumps(identity, indent=2).encode()))
        self._needs_newline = False
        if self.path.exists():
            data = self.path.read_bytes()
            self._needs_newline = bool(data) and not data.endswith(b"\n")
            for line in data.decode(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    k = int(rec["trial"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.skipped += 1  # a line cut short by a crash: that trial runs again
                    continue
                self.records.setdefault(k, rec)

    def close(self) -> None:
        lock = getattr(self, "_lockfile", None)
        if lock is not None:
            lock.close()  # releases the lock
            self._lockfile = None

    def _lock(self):
        try:
            import fcntl
        except ImportError:  # no advisory locks here: nothing stops two searches sharing DIR
            return
        self._lockfile = open(self.out / ".lock", "w")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise NetcError(f"another netc search is running in {self.out}") from None

    def append(self, rec: dict) -> None:
        line = (b"\n" if self._needs_newline else b"") + json.dumps(rec, default=str).encode() + b"\n"
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the new file's name is durable too
            try:
                dfd = os.open(self.out, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        self._needs_newline = False
        self.records.setdefault(int(rec["trial"]), rec)


def best_so_far(records: list[dict]) -> tuple[dict | None, list[dict]]:
    """(the best trial, the curve): records in trial order; after the k-th finished
    trial, the metric of the best trial among the first k (None before any succeeded)."""
    best, curve = None, []
    for r in sorted(records, key=lambda r: r["trial"]):
        if r.get("status") == "ok" and (best is None or r["metric"] < best["metric"]):
            best = r
        curve.append({"k": len(curve) + 1, "trial": r["trial"], "metric": None if best is None else best["metric"],
                      "best_trial": None if best is None else best["trial"]})
    return best, curve


def write_curve(out: Path, metric: str, best: dict | None, curve: list[dict]) -> None:
    """DIR/best_so_far.json: the curve of best_so_far and the best trial, written atomically."""
    obj = {"metric": metric, "minimized": True, "curve": curve,
           "best": None if best is None else {k: best[k] for k in ("trial", "seed", "metric", "sampled", "dir")}}
    atomic_write(out / "best_so_far.json", lambda f: f.write(json.dumps(obj, indent=2).encode()))


def border(d: Dist, v) -> tuple[str, float] | None:
    """('lower' | 'upper', position) when `v` lies within BORDER of an end of d's range."""
    pos = d.position(v)
    if pos is None:
        return None
    if pos <= BORDER:
        return "lower", pos
    if pos >= 1 - BORDER:
        return "upper", pos
    return None


def border_warnings(space: dict[str, Dist], values: dict[str, Any]) -> list[str]:
    """A warning for each value of the best point that lies near an end of its range:
    the best may lie beyond it [PR 3.4]."""
    out = []
    for path, d in space.items():
        hit = border(d, values.get(path))
        if hit is None:
            continue
        side, pos = hit
        end = d.args[0] if side == "lower" else d.args[1]
        out.append(f"WARNING: the best {path} = {show_value(values[path])} lies near the {side} border of "
                   f"{d} (at {pos:.0%} of the range{' in log space' if d.in_log_space else ''}): "
                   f"the best value may lie outside it; extend the range "
                   f"{'below' if side == 'lower' else 'above'} {show_value(end)} [PR 3.4]")
    return out
