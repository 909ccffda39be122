"""The rewrite rules: one table of named rules, indexed by the root op they match.

A rule has a name (what `rules_fired` and `netc compile` report), a stage, and
one case per root op it fires on (a case may serve several ops):

- "build": a canonical form, applied by the graph factory before a node is
  interned, `(G, op, inputs, attrs, loc) -> Node | None`. Hash-consing needs
  it there: two spellings of one expression (`sum(x, axis = 1)` and
  `sum(x, axes = [1])`, `x''` and `x`) must be one node as soon as they are
  built, and the shape rules and emitters read only the canonical attributes.
- "simplify": a local rewrite `(G, node) -> Node | None`, applied by
  `simplify.simplify` bottom-up to a fixed point.

Rules are registered where they are defined (the op table's families register
their canonical forms, `simplify.py` its rewrites), like ops in `OPS`. A
node's candidates are the cases for its op in registration order; the first
that returns a new node wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

STAGES = ("build", "simplify")


class Case(NamedTuple):
    """One rule's rewrite for one root op."""
    name: str  # the rule's name
    fn: Callable


@dataclass(frozen=True)
class Rule:
    name: str
    stage: str
    cases: tuple[tuple[str, Callable], ...]  # (root op, rewrite), in registration order

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(op for op, _ in self.cases)

    @property
    def doc(self) -> str:
        firsts = ((fn.__doc__ or "").strip().split("\n")[0].rstrip(".") for _, fn in self.cases)
        return "; ".join(dict.fromkeys(firsts))


RULES: dict[str, Rule] = {}
_BY_OP: dict[str, dict[str, tuple[Case, ...]]] = {stage: {} for stage in STAGES}


def rule(name: str, ops: Iterable[str] | str, stage: str = "simplify") -> Callable:
    """Register the decorated function as rule `name`'s case for the root `ops`
    (a rule may be given several cases, one decorated function per op or per
    group of ops)."""
    if stage not in STAGES:
        raise ValueError(f"unknown rewrite stage {stage!r}")
    ops = (ops,) if isinstance(ops, str) else tuple(ops)

    def register(fn: Callable) -> Callable:
        old = RULES.get(name)
        if old is not None and old.stage != stage:
            raise ValueError(f"rewrite rule {name!r} is registered in two stages")
        if old is not None and set(ops) & set(old.ops):
            raise ValueError(f"rewrite rule {name!r} has two cases for one op")
        RULES[name] = Rule(name, stage, (old.cases if old else ()) + tuple((op, fn) for op in ops))
        for op in ops:
            _BY_OP[stage][op] = _BY_OP[stage].get(op, ()) + (Case(name, fn),)
        return fn
    return register


def by_op(stage: str) -> dict[str, tuple[Case, ...]]:
    """Root op -> the registered cases of `stage`, in registration order (read-only)."""
    return _BY_OP[stage]


def index(rules: Iterable[Rule], stage: str = "simplify") -> dict[str, tuple[Case, ...]]:
    """The root-op index restricted to some registered rules (same order)."""
    names = {r.name for r in rules if r.stage == stage}
    return {op: kept for op, cases in _BY_OP[stage].items()
            if (kept := tuple(c for c in cases if c.name in names))}
