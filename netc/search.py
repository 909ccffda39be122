"""Search spaces and random search (Bergstra & Bengio 2012; Bengio 2012, [PR 3.4]).

A spec whose data or train block holds a distribution in place of a value
defines a search space rather than one model:

    train {
        method = sgd(lr = loguniform(1e-4, 1e-1), momentum = choice(0, 0.5, 0.9))
        batch  = choice(16, 32, 64, 128)
    }
    search {
        trials  = 64
        metric  = valid.error      # or valid.loss, train.loss, test.error (minimized)
        workers = 2
        seed    = 0
    }

- `loguniform(a, b)`: exp(U(log a, log b)), 0 < a < b — rates, decays;
- `uniform(a, b)`: U(a, b), a < b;
- `intrange(a, b)`: a whole number in [a, b] (both ends included), uniform;
  `intrange(a, b, log = true)` spreads it evenly in log space (sizes, batch);
- `choice(v1, v2, ...)`: one of the values (numbers, names or strings), equally likely.

A point of the space is drawn from one RNG seeded by a seed: `Model(seed=S)`
(and `netc train --seed S`) trains the point drawn from S, with S also the
training seed. Trial k of a search uses the seed `trial_seed(search seed, k)`,
so its point is a pure function of (search seed, k), a resumed search draws the
same points, and `netc train SPEC --seed <the trial's seed>` reproduces a trial.

Every value a distribution can produce is validated when the spec is checked:
each option of a choice, both ends of a range and one inner draw (a real number,
which an integer key such as `batch` refuses: use intrange).

`netc search` (here `run_search`) runs the trials on local worker processes and
keeps every finished trial in `DIR/trials.jsonl`, appended and fsynced one line
per trial; running the same command again resumes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from netc.compiler.blocks import BlockCall, BlockEntry, Symbol
from netc.compiler.errors import ErrorList, Loc, NetcError, SpecError, did_you_mean
from netc.runtime.config import _Strict, from_block

DISTRIBUTIONS = ("loguniform", "uniform", "intrange", "choice")
METRICS = {"valid.error": "valid_error", "valid.loss": "valid_loss", "train.loss": "train_loss",
           "test.error": "test_error"}
SAMPLE_STREAM = 0x5EA2C4  # the sampling RNG is default_rng([seed, SAMPLE_STREAM]): apart from init and shuffling
BORDER = 0.1  # a best value within 10% of its range's width from an end is "on the border" [PR 3.4]
NOT_SEARCHABLE = {"seed": "the seed cannot be searched: netc search gives every trial its own seed "
                          "(the search block's seed = ... fixes them all)"}


class SearchConfig(_Strict):
    """The search block: random search over the spec's distributions [PR 3.4]."""
    trials: int = Field(32, ge=1, description="points drawn and trained (Bergstra & Bengio: 32-64 go far)")
    metric: Literal["valid.error", "valid.loss", "train.loss", "test.error"] = Field(
        "valid.error", description="what selects the best trial (minimized): valid.error, valid.loss, "
                                   "train.loss or test.error")
    workers: int | None = Field(None, ge=1, description="worker processes (default: one per CPU; capped by "
                                                        "the CPU count)")
    seed: int = Field(0, ge=0, description="the search's seed: trial k trains the point and uses the seed "
                                           "drawn from (seed, k)")


def search_block(entries: list[BlockEntry], source: str | None, loc: Loc | None) -> SearchConfig:
    """Validate a `search { ... }` block (it holds settings, not distributions)."""
    found = _scan(entries, source, strict=False)
    errors = [SpecError(f"{path} = {d}: distributions belong in the data and train blocks, not in search",
                        d.loc, source) for path, d in found.items()]
    try:
        cfg = from_block(SearchConfig, [e for e in entries if e.key not in found], source, loc)
    except ErrorList as e:
        errors += e.errors
    except SpecError as e:
        errors.append(e)
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    return cfg


def trial_seed(search_seed: int, trial: int) -> int:
    """The seed of trial `trial` (1, 2, ...): its sampled point and its training seed."""
    return int(np.random.SeedSequence([int(search_seed), int(trial)]).generate_state(1)[0] >> 1)


# ---- distributions ------------------------------------------------------------------


def _num(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and not isinstance(v, Symbol):
        return json.dumps(v)
    return str(v)


@dataclass(frozen=True)
class Dist:
    """One distribution written in a block: kind, its arguments and where it was written."""
    kind: str
    args: tuple
    loc: Loc | None = None
    log: bool = False  # intrange(a, b, log = true)

    def __str__(self) -> str:
        inner = ", ".join(_num(a) for a in self.args)
        return f"{self.kind}({inner}{', log = true' if self.log else ''})"

    @property
    def numeric_range(self) -> bool:
        return self.kind != "choice"

    @property
    def in_log_space(self) -> bool:
        return self.kind == "loguniform" or self.log

    def sample(self, rng: np.random.Generator):
        match self.kind:
            case "loguniform":
                a, b = self.args
                return float(min(max(math.exp(rng.uniform(math.log(a), math.log(b))), a), b))
            case "uniform":
                a, b = self.args
                return float(rng.uniform(a, b))
            case "intrange":
                a, b = self.args
                if self.log:  # each k in [a, b] with probability log((k+1)/k) / log((b+1)/a)
                    return int(min(math.floor(math.exp(rng.uniform(math.log(a), math.log(b + 1)))), b))
                return int(rng.integers(a, b, endpoint=True))
            case "choice":
                return self.args[int(rng.integers(len(self.args)))]
        raise AssertionError(self.kind)

    def candidates(self) -> list[tuple[str, Any]]:
        """Every value validated at check time, with how to name it in an error."""
        if self.kind == "choice":
            return [(f"the option {_num(v)}", v) for v in self.args]
        a, b = self.args
        out = [(f"the lower end {_num(a)}", a), (f"the upper end {_num(b)}", b)]
        if self.kind != "intrange":  # an inner draw is a real number: integer keys refuse it
            mid = math.sqrt(a * b) if self.kind == "loguniform" else a + (b - a) * 0.4142
            if float(mid).is_integer():
                mid += (b - a) * 1e-3
            out.append((f"a draw such as {mid:.4g}", float(mid)))
        return out

    def position(self, v) -> float | None:
        """Where `v` lies in the range, 0 (lower end) .. 1 (upper end); in log space
        for loguniform and intrange(log = true). None for a choice."""
        if not self.numeric_range or isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        a, b = self.args
        if self.in_log_space:
            return (math.log(v) - math.log(a)) / (math.log(b) - math.log(a))
        return (v - a) / (b - a)


def parse_dist(call: BlockCall, source: str | None = None) -> Dist:
    """A distribution call from a block, its arguments checked (errors at the call)."""
    name, loc = call.name, call.loc

    def fail(msg, hint=None):
        raise SpecError(f"{name}(...): {msg}", loc, source, hint=hint)

    if call.slice is not None:
        fail("a distribution cannot be sliced")
    for v in list(call.args) + [v for _, v in call.kwargs]:
        if isinstance(v, BlockCall) and v.name in DISTRIBUTIONS:
            fail("distributions cannot be nested")
    kw = dict(call.kwargs)
    if name == "choice":
        if kw:
            fail(f"choice takes the options as positional values, not '{next(iter(kw))} = ...'")
        if not call.args:
            fail("at least one option is needed, as in choice(16, 32, 64)")
        for v in call.args:
            if isinstance(v, (BlockCall, list)) or not isinstance(v, (int, float, str, bool)):
                fail(f"the options must be numbers, names or strings, got {v!r}")
        return Dist("choice", tuple(call.args), loc)
    allowed = ["log"] if name == "intrange" else []
    for k in kw:
        if k not in allowed:
            fail(f"unknown argument '{k}'", hint=did_you_mean(k, allowed) or
                 ("intrange(a, b, log = false) takes the two ends of the range and log" if allowed else
                  f"{name}(a, b) takes the two ends of the range"))
    if len(call.args) != 2:
        example = {"loguniform": "1e-4, 1e-1", "intrange": "16, 128"}.get(name, "0, 1")
        fail(f"takes two numbers, the ends of the range, as in {name}({example}); "
             f"got {len(call.args)} argument{'s' if len(call.args) != 1 else ''}")
    a, b = call.args
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            fail(f"the ends must be finite numbers, got {v!r}")
    if name == "intrange":
        if not all(float(v).is_integer() for v in (a, b)):
            fail(f"the ends must be whole numbers, got {_num(a)} and {_num(b)}",
                 hint="uniform(a, b) draws real numbers")
        a, b = int(a), int(b)
    if not a < b:
        fail(f"the lower end must be below the upper end, got {_num(a)} >= {_num(b)}",
             hint="for a fixed value write the value itself" if a == b else f"write {name}({_num(b)}, {_num(a)})")
    log = kw.get("log", False)
    if not isinstance(log, bool):
        fail(f"log must be true or false, got {log!r}")
    if (name == "loguniform" or log) and a <= 0:
        fail(f"a log-uniform range needs positive ends, got {_num(a)}",
             hint="uniform(a, b) for a range that includes 0 or negative values")
    if name != "intrange":
        a, b = float(a), float(b)
    return Dist(name, (a, b), loc, log)


# ---- walking block values ----------------------------------------------------------------


def _entry_path(e: BlockEntry) -> str:
    return e.key if e.selector is None else f"{e.key} {e.selector}"


def _walk(v, path: str, fn):
    """`v` with every distribution call replaced by fn(path, call)."""
    if isinstance(v, BlockCall):
        if v.name in DISTRIBUTIONS:
            return fn(path, v)
        args = tuple(_walk(a, f"{path}[{i}]", fn) for i, a in enumerate(v.args))
        kwargs = tuple((k, _walk(x, f"{path}.{k}", fn)) for k, x in v.kwargs)
        return replace(v, args=args, kwargs=kwargs)
    if isinstance(v, list):
        return [_walk(x, f"{path}[{i}]", fn) for i, x in enumerate(v)]
    return v


def _scan(entries: list[BlockEntry], source, strict: bool = True) -> dict[str, Dist]:
    """The distributions of a block by path (`method.lr`, `batch`, `normalize[1].dims`).
    With `strict`, bad arguments and unsearchable keys are errors."""
    found: dict[str, Dist] = {}
    errors: list[SpecError] = []

    def visit(path, call):
        try:
            if path in found:
                raise SpecError(f"'{path}' is searched twice", call.loc, source)
            if strict and path in NOT_SEARCHABLE:
                raise SpecError(NOT_SEARCHABLE[path], call.loc, source)
            found[path] = parse_dist(call, source) if strict else Dist(call.name, call.args, call.loc)
        except SpecError as e:
            errors.append(e)
        return call

    for e in entries:
        _walk(e.value, _entry_path(e), visit)
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    return found


def substitute(entries: list[BlockEntry], values: dict[str, Any]) -> list[BlockEntry]:
    """The entries with each distribution replaced by its value in `values` (by path)."""
    return [replace(e, value=_walk(e.value, _entry_path(e), lambda path, call: values[path])) for e in entries]


def _validation_errors(model, entries, values, source, loc) -> dict[tuple[str, str], SpecError]:
    try:
        from_block(model, substitute(entries, values), source, loc)
    except ErrorList as e:
        errs = e.errors
    except SpecError as e:
        errs = [e]
    else:
        return {}
    return {(str(x.loc), x.message): x for x in errs}


def check_candidates(model, entries: list[BlockEntry], found: dict[str, Dist], source, loc) -> None:
    """Validate every value each distribution can produce through the block's model;
    an error a value causes is reported at its distribution, naming the value.

    Each candidate is validated with the other distributions at their first
    candidate; an error present whatever the distributions' values is not
    theirs and is reported as it is."""
    base = {p: d.candidates()[0][1] for p, d in found.items()}
    results = {(p, i): _validation_errors(model, entries, {**base, p: v}, source, loc)
               for p, d in found.items() for i, (_, v) in enumerate(d.candidates())}
    keys = [set(r) for r in results.values()]
    common = set.intersection(*keys) if keys else set()
    first_fault: dict[tuple[str, str], str] = {}  # an error that goes away when p leaves its first candidate
    for p, d in found.items():
        for i in range(1, len(d.candidates())):
            for key in set(results[(p, 0)]) - set(results[(p, i)]):
                first_fault.setdefault(key, p)
    out: list[SpecError] = []
    seen = set()
    for key in common:
        err = next(r[key] for r in results.values() if key in r)
        out.append(err)
    for (p, i), errs in results.items():
        d = found[p]
        what, value = d.candidates()[i]
        for key, err in errs.items():
            if key in common or first_fault.get(key, p) != p or _names_another(err.message, p, found):
                continue
            if i == 0 and key not in first_fault and len(d.candidates()) > 1:
                continue  # present for every value of p: another distribution's first candidate
            if (p, what, err.message) in seen:
                continue
            seen.add((p, what, err.message))
            hint = err.hint
            if "integer" in err.message and d.kind in ("uniform", "loguniform"):
                hint = f"{d.kind} draws real numbers; intrange(a, b) draws whole numbers"
            out.append(SpecError(f"{p} = {d}: {what} fails: {err.message}", d.loc, source, hint=hint))
    if not out:  # errors none of the rules could place: report them as they are
        out = list({k: e for r in results.values() for k, e in r.items()}.values())
    if out:
        out.sort(key=lambda e: (e.loc.line, e.loc.col) if e.loc else (0, 0))  # stable: a choice's options in order
        raise out[0] if len(out) == 1 else ErrorList(out)


def _field(path: str) -> str:
    """The key a path ends in: method.lr -> lr, normalize[1].dims -> dims, lr_scale h1.* -> lr_scale."""
    return re.sub(r"\[\d+\]", "", path.split(" ")[0]).split(".")[-1]


def _names_another(message: str, path: str, found: dict) -> bool:
    """The message names another distribution's key and not this one's (pydantic reports
    only the first error of a call, so another key's error can show up with this value)."""
    def names(p):
        return re.search(rf"\b{re.escape(_field(p))}\b", message) is not None
    return not names(path) and any(names(q) for q in found if q != path and _field(q) != _field(path))


class Space:
    """The distributions of a spec's data and train blocks, collected while the
    spec is elaborated (`add`, from Model's check_block), then sampled."""

    def __init__(self, source: str | None):
        self.source = source
        self.dists: dict[str, Dist] = {}
        self.blocks: dict[str, tuple[type, list[BlockEntry], Loc | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.dists)

    def add(self, name: str, entries: list[BlockEntry], model: type, loc: Loc | None) -> bool:
        """Collect and check the block's distributions; False if it has none
        (then the caller validates the block as usual)."""
        found = _scan(entries, self.source)
        if not found:
            return False
        check_candidates(model, entries, found, self.source, loc)
        self.dists.update(found)
        self.blocks[name] = (model, entries, loc)
        return True

    def default_seed(self, train_cfg) -> int:
        """The train block's seed (the train block may be one waiting for its sample)."""
        if "train" in self.blocks:
            model, entries, _ = self.blocks["train"]
            for e in entries:
                if e.key == "seed" and e.selector is None and isinstance(e.value, int):
                    return e.value
            return model.model_fields["seed"].default
        return train_cfg.seed

    def sample(self, seed: int) -> dict[str, Any]:
        """One point: every distribution drawn, in the spec's order, from one RNG seeded by `seed`."""
        rng = np.random.default_rng([int(seed) % 2 ** 63, SAMPLE_STREAM])
        return {p: d.sample(rng) for p, d in self.dists.items()}

    def configs(self, values: dict[str, Any]) -> dict[str, Any]:
        """The validated block models with the point `values` in place of the distributions."""
        return {name: from_block(model, substitute(entries, values), self.source, loc)
                for name, (model, entries, loc) in self.blocks.items()}


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """Sampled values as plain JSON values."""
    return {k: (str(v) if isinstance(v, str) else v) for k, v in values.items()}


def _show(v) -> str:
    """A drawn value as a user reads it: names and strings bare."""
    return str(v) if isinstance(v, str) else _num(v)


def describe_point(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_show(v)}" for k, v in values.items())


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
    out = []
    for path, d in space.items():
        hit = border(d, values.get(path))
        if hit is None:
            continue
        side, pos = hit
        end = d.args[0] if side == "lower" else d.args[1]
        out.append(f"WARNING: the best {path} = {_show(values[path])} lies near the {side} border of "
                   f"{d} (at {pos:.0%} of the range{' in log space' if d.in_log_space else ''}): "
                   f"the best value may lie outside it; extend the range "
                   f"{'below' if side == 'lower' else 'above'} {_num(end)} [PR 3.4]")
    return out


# ---- the search --------------------------------------------------------------------------


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _worker_init():
    # Ctrl-C reaches the whole process group: the parent decides, the workers ignore it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_trial(job: dict) -> dict:
    """Train one trial in its own run directory (in a worker process). Never raises:
    a failure is part of the record."""
    from netc.model import Model
    from netc.compiler.atomic import atomic_write

    t0 = time.perf_counter()
    rec = {"trial": job["trial"], "seed": job["seed"], "status": "failed", "metric": None,
           "sampled": None, "error": None, "summary": None, "seconds": None, "dir": job["dir"]}
    run_dir = Path(job["dir"])
    try:
        if run_dir.exists():  # a trial cut off earlier (Ctrl-C, a crash) starts afresh
            shutil.rmtree(run_dir)
        m = Model(job["text"], job["file"], seed=job["seed"])
        rec["sampled"] = plain(m.sampled)
        summary = m.fit(epochs=job["epochs"], out=run_dir, limit=job["limit"], progress=False)
        summary = {**summary, "trial": job["trial"], "seed": job["seed"],
                   "wall_seconds": time.perf_counter() - t0}
        atomic_write(run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2, default=str).encode()))
        rec["summary"] = summary
        value = summary.get(METRICS[job["metric"]])
        if value is None or not math.isfinite(value):
            rec["error"] = f"the metric {job['metric']} came out {value}"
        else:
            rec["metric"], rec["status"] = float(value), "ok"
    except NetcError as e:
        rec["error"] = f"{e.loc}: {e.message}" if e.loc else e.message
    except Exception as e:  # noqa: BLE001 - a trial's failure must not stop the search
        rec["error"] = f"internal error: {type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return json.loads(json.dumps(rec, default=str))


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
        from netc.compiler.atomic import atomic_write
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


@dataclass
class Report:
    out: Path
    metric: str
    trials: int
    records: list[dict]
    ran: int
    resumed: int
    best: dict | None
    curve: list[dict]
    warnings: list[str]
    interrupted: bool = False


def _write_curve(out: Path, metric: str, best: dict | None, curve: list[dict]) -> None:
    from netc.compiler.atomic import atomic_write
    obj = {"metric": metric, "minimized": True, "curve": curve,
           "best": None if best is None else {k: best[k] for k in ("trial", "seed", "metric", "sampled", "dir")}}
    atomic_write(out / "best_so_far.json", lambda f: f.write(json.dumps(obj, indent=2).encode()))


def run_search(path, *, trials: int | None = None, workers: int | None = None, out=None,
               epochs: int | None = None, limit: int | None = None, log=None, tty: bool = False) -> Report:
    """Random search over the spec's space on local worker processes. Returns the
    report; raises NetcError for a spec that is not a search space."""
    from netc.model import Model, read_spec

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    text, file = read_spec(path)
    m = Model(text, file)  # every spec error, before any trial
    if not m.space:
        raise NetcError(f"{file} has no distributions, so there is nothing to search; write one in place of a "
                        f"value, e.g. method = sgd(lr = loguniform(1e-4, 1e-1)), or train it with netc train")
    cfg = m.search_cfg or SearchConfig()
    _check_metric(m, cfg)
    n = trials or cfg.trials
    out = Path(out) if out else Path("runs") / f"{Path(file).stem}-search"
    identity = {"spec_sha256": hashlib.sha256(text.encode()).hexdigest(), "seed": cfg.seed,
                "metric": cfg.metric, "epochs": epochs, "limit": limit,
                "space": {p: str(d) for p, d in m.space.items()}, "spec": file}
    store = Store(out, identity)
    try:
        return _search(m, cfg, text, file, n, out, store, workers, epochs, limit, log, tty)
    finally:
        store.close()


def _search(m, cfg, text, file, n, out, store, workers, epochs, limit, log, tty) -> Report:
    if store.skipped:
        log(f"{store.path}: {store.skipped} unreadable line(s) skipped (a write cut short); those trials run again")
    done = {k for k in store.records if k <= n}
    todo = [k for k in range(1, n + 1) if k not in done]
    cpus = _cpus()
    w = max(1, min(workers or cfg.workers or cpus, cpus, len(todo) or 1))
    width = max(3, len(str(n)))
    abs_file = str(Path(file).resolve()) if not file.startswith("<") else file
    if done:
        log(f"resuming {out}: {len(done)} of {n} trials already done, {len(todo)} to run")
    if todo:
        log(f"searching {file}: {len(todo)} trial(s) on {w} worker process(es), metric {cfg.metric} -> {out}")
    ran, interrupted = 0, False

    def finished(rec):
        nonlocal ran
        ran += 1
        store.append(rec)
        recs = [r for k, r in store.records.items() if k <= n]
        best, curve = best_so_far(recs)
        _write_curve(out, cfg.metric, best, curve)
        tag = f"trial {rec['trial']:>{len(str(n))}}/{n}"
        if rec["status"] == "ok":
            log(f"{tag}  {cfg.metric} {rec['metric']:.4g}  {describe_point(rec['sampled'] or {})}  "
                f"({rec['seconds']:.1f}s)")
        else:
            log(f"{tag}  FAILED: {rec['error']}")
        if tty and best is not None:
            log(f"  best so far: trial {best['trial']}, {cfg.metric} {best['metric']:.4g}  "
                f"{describe_point(best['sampled'])}")

    jobs = deque({"trial": k, "seed": trial_seed(cfg.seed, k), "text": text, "file": abs_file,
                  "dir": str(out / f"trial-{k:0{width}d}"), "epochs": epochs, "limit": limit,
                  "metric": cfg.metric} for k in todo)
    if jobs:
        interrupted = _run_jobs(jobs, w, cpus, finished)
    recs = sorted((r for k, r in store.records.items() if k <= n), key=lambda r: r["trial"])
    best, curve = best_so_far(recs)
    _write_curve(out, cfg.metric, best, curve)
    warnings = border_warnings(m.space, best["sampled"]) if best else []
    return Report(out, cfg.metric, n, recs, ran, len(done), best, curve, warnings, interrupted)


def _run_jobs(jobs: deque, w: int, cpus: int, finished) -> bool:
    """Run the jobs, at most `w` at a time; `finished(record)` as each ends.
    True if interrupted (Ctrl-C): the trials in flight are stopped and lost."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    # one BLAS thread pool per worker, sized so the workers share the cores; spawned
    # workers start clean (no state inherited from this process) and read these
    threads = str(max(1, cpus // w))
    saved = {}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        saved[var] = os.environ.get(var)
        if saved[var] is None:
            os.environ[var] = threads

    def pool():
        return cf.ProcessPoolExecutor(w, mp_context=mp.get_context("spawn"), initializer=_worker_init)

    ex = pool()
    inflight: dict = {}
    try:
        while jobs or inflight:
            while jobs and len(inflight) < w:
                job = jobs.popleft()
                inflight[ex.submit(_run_trial, job)] = job
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                job = inflight.pop(fut)
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    # every trial in flight gets this, not only the one that killed its worker:
                    # each is tried once more, and recorded as failed if its worker dies again
                    broken = True
                    if not job.get("retried"):
                        jobs.append({**job, "retried": True})
                        continue
                    rec = _failed(job, "the worker process died while this trial ran, twice (killed, or out "
                                       "of memory?)")
                except Exception as e:  # noqa: BLE001
                    rec = _failed(job, f"internal error: {type(e).__name__}: {e}")
                finished(rec)
            if broken:
                ex.shutdown(wait=False, cancel_futures=True)
                ex = pool()
        return False
    except KeyboardInterrupt:
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()  # the trials in flight are lost; their directories are redone on resume
        return True
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        for var, v in saved.items():
            if v is None:
                os.environ.pop(var, None)


def _failed(job: dict, error: str) -> dict:
    return {"trial": job["trial"], "seed": job["seed"], "status": "failed", "metric": None, "sampled": None,
            "error": error, "summary": None, "seconds": None, "dir": job["dir"]}


def _check_metric(m, cfg: SearchConfig) -> None:
    entries = m.program.spec.blocks.get("search") or []
    loc = next((e.loc for e in entries if e.key == "metric"), m.program.spec.block_locs.get("search"))
    need = None
    if m.data_cfg.train is None:
        raise SpecError("a search trains every trial on the data block: add data { train = ... }",
                        m.program.spec.block_locs.get("data"), m.text)
    if cfg.metric.startswith("valid.") and m.data_cfg.valid is None:
        need = "a validation set: add valid = ... to the data block"
    elif cfg.metric == "test.error" and m.data_cfg.test is None:
        need = "a test set: add test = ... to the data block"
    elif cfg.metric.endswith(".error") and m.program.errors is None:
        need = "an error rate, i.e. a class(n) target and an [B, n] output; use valid.loss"
    if need:
        raise SpecError(f"metric = {cfg.metric} needs {need}", loc, m.text)


# ---- the command ---------------------------------------------------------------------------


def format_report(r: Report) -> str:
    ok = [x for x in r.records if x.get("status") == "ok"]
    failed = [x for x in r.records if x.get("status") != "ok"]
    lines = [f"search: {len(r.records)} of {r.trials} trials finished ({len(ok)} ok, {len(failed)} failed), "
             f"{r.ran} run now; metric {r.metric} (minimized); results in {r.out / 'trials.jsonl'}"]
    if r.best is None:
        lines.append("no trial succeeded")
    else:
        b = r.best
        lines.append(f"best: trial {b['trial']} (seed {b['seed']}), {r.metric} {b['metric']:.6g}, in {b['dir']}")
        for k, v in b["sampled"].items():
            lines.append(f"  {k} = {_show(v)}")
        steps = []
        last = None
        for c in r.curve:
            if c["metric"] is not None and c["metric"] != last:
                steps.append(f"{c['k']}: {c['metric']:.4g}")
                last = c["metric"]
        lines.append(f"best so far after k trials (k: {r.metric}, where it improves; all k in "
                     f"{r.out / 'best_so_far.json'}):")
        lines.append("  " + ", ".join(steps))
    for x in failed[:10]:
        lines.append(f"trial {x['trial']} failed: {x['error']}")
    if len(failed) > 10:
        lines.append(f"... and {len(failed) - 10} more failed trials (see trials.jsonl)")
    lines.extend(r.warnings)
    return "\n".join(lines)


def cli(args) -> int:
    """`netc search SPEC [--trials N] [--workers W] [--out DIR] [--epochs N] [--limit N]`."""
    report = run_search(args.spec, trials=args.trials, workers=args.workers, out=args.out, epochs=args.epochs,
                        limit=args.limit, tty=sys.stderr.isatty())
    print(format_report(report), flush=True)
    if report.interrupted:
        print(f"interrupted: the {len(report.records)} finished trials are kept in {report.out / 'trials.jsonl'}; "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    if report.records and report.best is None:
        return 2  # every trial failed: the spec or its data, most likely
    return 0
