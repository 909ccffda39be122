"""Search spaces: distributions written in place of values (Bergstra & Bengio 2012; Bengio 2012, [PR 3.4]).

A spec whose data or train block holds a distribution in place of a value
defines a search space rather than one model:

    train {
        method = sgd(lr = loguniform(1e-4, 1e-1), momentum = choice(0, 0.5, 0.9))
        batch  = choice(16, 32, 64, 128)
    }
    search {
        trials  = 64
        metric  = valid.error      # or valid.loss, train.loss (minimized; never the test set)
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

This module is the space language only (compile time: netc.model reads a
spec's space with it); the search itself is netc/search.py, which runs trials
through netc/search_runner.py and keeps them in netc/search_store.py.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from netc.compiler.blocks import BlockCall, BlockEntry, Symbol
from netc.compiler.errors import ErrorList, Loc, SpecError, did_you_mean
from netc.runtime.config import _Strict, from_block

DISTRIBUTIONS = ("loguniform", "uniform", "intrange", "choice")
METRICS = {"valid.error": "valid_error", "valid.loss": "valid_loss", "train.loss": "train_loss"}
TEST_METRIC = ("selects the best trial by the test set, which tunes the hyper-parameters on it: its error "
               "then no longer estimates the error on new data [PR 3.4]; select on valid.error or valid.loss, "
               "and read the best trial's test error in its summary (evaluated once, at the end)")
SAMPLE_STREAM = 0x5EA2C4  # the sampling RNG is default_rng([seed, SAMPLE_STREAM]): apart from init and shuffling
NOT_SEARCHABLE = {"seed": "the seed cannot be searched: netc search gives every trial its own seed "
                          "(the search block's seed = ... fixes them all)"}


class SearchConfig(_Strict):
    """The search block: random search over the spec's distributions [PR 3.4]."""
    trials: int = Field(32, ge=1, description="points drawn and trained (Bergstra & Bengio: 32-64 go far)")
    metric: Literal["valid.error", "valid.loss", "train.loss"] = Field(
        "valid.error", description="what selects the best trial (minimized): valid.error, valid.loss or "
                                   "train.loss (a test metric is refused: that would tune on the test set)")
    workers: int | None = Field(None, ge=1, description="worker processes (default: one per CPU; capped by "
                                                        "the CPU count)")
    seed: int = Field(0, ge=0, description="the search's seed: trial k trains the point and uses the seed "
                                           "drawn from (seed, k)")


def search_block(entries: list[BlockEntry], source: str | None, loc: Loc | None) -> SearchConfig:
    """Validate a `search { ... }` block (it holds settings, not distributions)."""
    found = _scan(entries, source, strict=False)
    errors = [SpecError(f"{path} = {d}: distributions belong in the data and train blocks, not in search",
                        d.loc, source) for path, d in found.items()]
    tests = [e for e in entries if e.key == "metric" and str(e.value).startswith("test.")]
    errors += [SpecError(f"metric = {e.value} {TEST_METRIC}", e.loc, source) for e in tests]
    try:
        cfg = from_block(SearchConfig, [e for e in entries if e.key not in found and e not in tests], source, loc)
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


def show_value(v) -> str:
    """A drawn value as a user reads it: names and strings bare."""
    return str(v) if isinstance(v, str) else _num(v)


def describe_point(values: dict[str, Any]) -> str:
    """A point as one line: `method.lr = 0.01, batch = 32`."""
    return ", ".join(f"{k} = {show_value(v)}" for k, v in values.items())
