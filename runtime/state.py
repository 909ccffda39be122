"""Parameter and optimizer-state arrays: initialization from the spec's init
descriptors, one seed for everything, per-parameter streams so adding a layer
does not change the others' initial values."""
from __future__ import annotations

import zlib

import numpy as np

from netc.compiler.graph import Node


def init_state(leaves: list[Node], seed: int, init_scale: float = 1.0) -> dict[str, np.ndarray]:
    return {n.name: init_array(n, seed, init_scale) for n in leaves}


def init_array(n: Node, seed: int, init_scale: float = 1.0) -> np.ndarray:
    init = dict(n.attr("init") or (("dist", "constant"), ("value", 0.0)))
    rng = np.random.default_rng([seed, zlib.crc32(n.name.encode())])
    shape = tuple(n.shape)
    match init["dist"]:
        case "normal":
            a = rng.normal(0.0, init["std"] * init_scale, size=shape)
        case "uniform":
            lim = init["limit"] * init_scale
            a = rng.uniform(-lim, lim, size=shape)
        case "constant":
            a = np.full(shape, init["value"])
        case other:
            raise ValueError(f"unknown init {other!r}")
    return a.astype(n.dtype)


def copy_state(state: dict[str, np.ndarray], names=None) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in state.items() if names is None or k in names}


def assign(state: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> None:
    """Write values into the existing arrays: compiled steps hold references to them."""
    for k, v in values.items():
        np.copyto(state[k], v)


def hosted(state: dict | None) -> dict | None:
    """Host copies of device (CuPy) state, for the NumPy-only statistics; the dict
    itself when it is on the host already (compiled functions bind to it once)."""
    if state is None or all(isinstance(v, np.ndarray) for v in state.values()):
        return state
    return {k: v if isinstance(v, np.ndarray) else v.get() for k, v in state.items()}
