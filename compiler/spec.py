"""The elaborated spec: what the elaborator hands to the pipeline and the runtime.

A plain record, apart from the elaborator so that its readers (the pipeline,
netc.model) do not import the elaborator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .blocks import BlockEntry
from .errors import Loc
from .graph import Graph, Node

@dataclass
class Spec:
    """The elaborated spec: the forward graph and everything the runtime needs."""
    graph: Graph
    file: str
    source: str
    inputs: dict[str, Node] = field(default_factory=dict)
    targets: dict[str, Node] = field(default_factory=dict)
    params: dict[str, Node] = field(default_factory=dict)
    buffers: dict[str, Node] = field(default_factory=dict)  # `buffer(...)`: kept, not trained
    named: dict[str, Node] = field(default_factory=dict)
    loss: Node | None = None
    output: Node | None = None
    blocks: dict[str, list[BlockEntry]] = field(default_factory=dict)
    block_locs: dict[str, Loc] = field(default_factory=dict)
    functions: dict[str, Any] = field(default_factory=dict)  # the spec's own `def`s (elaborate.UserFn)
    used: dict[str, str] = field(default_factory=dict)  # every `use`d file: resolved path -> text
    free: list = field(default_factory=list)  # free_dims.FreeDim: each `_` the data must bind
    unknown: dict[str, tuple] = field(default_factory=dict)  # name -> shape with "?" (free_dims.py)

    @property
    def feeds(self) -> list[Node]:
        return list(self.inputs.values()) + list(self.targets.values())
