"""The learning rate, owned by one object: the base rate (a number, or
1/lambda_max for `lr = auto(eigen)`, set once before training), the schedule
(a function of updates and examples), plateau cuts at epoch ends, and the
divisions that follow a divergence. Nothing else reads or changes the rate.

The policy is stateless; the base rate lives in `RateState`, part of the
training state (runtime/train_state.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .config import TrainConfig
from .optimizers import base_rate


@dataclass
class RateState:
    base: float | None = None  # the rate the schedule scales (after plateau and divergence cuts)


class LearningRate:
    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]):
        self.requested = base_rate(cfg)  # a number, or Auto (lr = auto(eigen))
        self.schedule = cfg.schedule
        self.log = log

    @property
    def automatic(self) -> bool:
        return not isinstance(self.requested, (int, float))

    def start(self, rs: RateState, largest_eigenvalue_rate: Callable[[int], float]) -> None:
        """Set the base rate; auto(eigen) asks for 1/lambda_max on `examples` examples."""
        rs.base = largest_eigenvalue_rate(self.requested.examples) if self.automatic else self.requested

    def at(self, rs: RateState, age: int, steps: int) -> float:
        """The scheduled rate after `steps` updates and `age` examples (plateau acts at
        epoch ends instead). inverse_time counts updates, as Bengio's eq. 2 does."""
        return scheduled(self.schedule, rs.base, age, steps)

    def end_epoch(self, rs: RateState, epoch: int, epoch_loss: float, best_loss: float) -> None:
        """plateau: cut the rate when the epoch's training loss did not improve on the
        best healthy epoch by a relative `threshold` [PR 3.1]."""
        sch = self.schedule
        if sch.kind == "plateau" and math.isfinite(best_loss) and epoch_loss > (1 - sch.threshold) * best_loss:
            rs.base *= sch.factor
            self.log(f"epoch {epoch}: training loss {epoch_loss:.4g} did not improve on {best_loss:.4g} "
                     f"by {sch.threshold:g}: learning rate now {rs.base:g}")

    @staticmethod
    def divide(rs: RateState, by: float = 3) -> None:
        """After a divergence [Bengio 2012 §2.1]."""
        rs.base = rs.base / by


def scheduled(sch, base: float, age: int, steps: int) -> float:
    match sch.kind:
        case "inverse_time":
            return base * sch.tau / max(steps, sch.tau)
        case "step":
            return base * sch.factor ** (age // sch.every)
        case "exponential":
            return base * sch.decay ** (age / sch.every)
    return base
