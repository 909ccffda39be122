"""The rewrite rules: one table of named rules, indexed by the root op they match.

A rule has a name (what `rules_fired` and `netc compile --emit graph` report),
the ops it can fire on, and a stage:

- "build": a canonical form, applied by the graph factory before a node is
  interned, `(G, op, inputs, attrs, loc) -> Node | None`. Hash-consing needs
  it there: two spellings of one expression (`sum(x, axis = 1)` and
  `sum(x, axes = [1])`, `x''` and `x`) must be one node as soon as they are
  built, and the shape rules and emitters read only the canonical attributes.
- "simplify": a local rewrite `(G, node) -> Node | None`, applied by
  `simplify.simplify` bottom-up to a fixed point.

Rules are registered where they are defined (the op table registers its
canonical forms, `simplify.py` its rewrites), like ops in `OPS`; a node's
candidates are the rules listing its op, in registration order, and the first
that returns a new node wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

STAGES = ("build", "simplify")


@dataclass(frozen=True)
class Rule:
    name: str
    ops: tuple[str, ...]  # the root ops it can fire on
    fn: Callable
    stage: str = "simplify"

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip().split("\n")[0]


RULES: dict[str, Rule] = {}
_BY_OP: dict[str, dict[str, tuple[Rule, ...]]] = {stage: {} for stage in STAGES}


def rule(name: str, ops: Iterable[str], stage: str = "simplify") -> Callable:
    """Register the decorated function as the rule `name` for the root `ops`."""
    if stage not in STAGES:
        raise ValueError(f"unknown rewrite stage {stage!r}")

    def register(fn: Callable) -> Callable:
        if name in RULES:
            raise ValueError(f"rewrite rule {name!r} is defined twice")
        r = Rule(name, tuple(ops), fn, stage)
        RULES[name] = r
        for op in r.ops:
            _BY_OP[stage][op] = _BY_OP[stage].get(op, ()) + (r,)
        return fn
    return register


def rules_for(op: str, stage: str) -> tuple[Rule, ...]:
    """The registered rules of `stage` whose root is `op`, in registration order."""
    return _BY_OP[stage].get(op, ())


def index(rules: Iterable[Rule], stage: str = "simplify") -> dict[str, tuple[Rule, ...]]:
    """A root-op index over a chosen subset of rules (keeps their order)."""
    out: dict[str, tuple[Rule, ...]] = {}
    for r in rules:
        if r.stage == stage:
            for op in r.ops:
                out[op] = out.get(op, ()) + (r,)
    return out


def by_op(stage: str) -> dict[str, tuple[Rule, ...]]:
    """The index of all registered rules of `stage` (read-only use)."""
    return _BY_OP[stage]
