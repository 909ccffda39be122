"""The best validation score so far and early stopping with patience counted in
examples [PR 3.1]: at each new best, patience = max(patience, grow * age); the
run stops once the age reaches the patience, and the best parameters come
back. Its memory is `BestState`, part of the training state. `params` names
the parameters and the buffers (the transformed units' alpha, beta, gamma):
the restored network is the one validated, not its weights in other units' terms."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .state import assign, copy_state


@dataclass
class BestState:
    score: float = math.inf  # validation error (class targets) or loss
    epoch: int = 0
    arrays: dict[str, np.ndarray] | None = None  # the best parameters and buffers (early stopping only)
    patience: int | None = None  # examples; None: no early stopping


class EarlyStopping:
    def __init__(self, cfg: TrainConfig, params: list[str]):
        self.enabled = cfg.stop.kind == "early"
        self.grow = getattr(cfg.stop, "grow", 1.0)
        self.initial_patience = getattr(cfg.stop, "patience", None)
        self.params = params

    def start(self) -> BestState:
        return BestState(patience=self.initial_patience)

    def observe(self, bs: BestState, score: float | None, epoch: int, age: int, evaluated: dict) -> None:
        """A validation score at `age`: a new best keeps its parameters and extends the patience."""
        if score is None or not score < bs.score:
            return
        bs.score, bs.epoch = score, epoch
        if self.enabled:
            bs.arrays = copy_state(evaluated, self.params)
        if bs.patience is not None:
            bs.patience = max(bs.patience, int(self.grow * age))

    @staticmethod
    def out_of_patience(bs: BestState, age: int) -> bool:
        return bs.patience is not None and age >= bs.patience

    def restore(self, bs: BestState, arrays: dict) -> bool:
        """Put the best parameters back (early stopping); False if there are none."""
        if not self.enabled or bs.arrays is None:
            return False
        assign(arrays, bs.arrays)
        return True
