"""The emphasizing scheme's memory [EB 4.2]: which training examples the
network misclassified when it last saw them (all of them, before the first
epoch). runtime/presentation.py draws the next epoch's order from it."""
from __future__ import annotations

import numpy as np

from .config import TrainConfig


def start(cfg: TrainConfig, examples: int) -> np.ndarray | None:
    return np.ones(examples, bool) if cfg.emphasize.kind == "errors" else None


def record(missed: np.ndarray, idx: np.ndarray, misses) -> None:
    """`misses`: the step's per-example error flags for the batch `idx` (host or device)."""
    missed[idx] = (misses if isinstance(misses, np.ndarray) else misses.get()) > 0


def ratio(cfg: TrainConfig) -> float:
    return getattr(cfg.emphasize, "ratio", 1.0)
