"""The divergence watch [Bengio 2012 §2.1]: a step whose loss is not finite,
1000x the initial one, or a smoothed loss 100x above its lowest, or an epoch
whose mean loss is 10x the best (the last two only once above the first
step's loss: swings near a minimum are not a blow-up), sends the parameters back to the last healthy
state (kept at each healthy epoch's end) and divides the rate by 3, at most
MAX_RECOVERIES times. The watch's memory is `WatchState`, part of the
training state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import Program

from .learning_rate import LearningRate, RateState
from .nonfinite import LossNotFinite, check_start  # noqa: F401 - LossNotFinite is part of this module's API
from .state import assign, copy_state, hosted
from .stats import first_nonfinite_layer

MAX_RECOVERIES = 8
WARMUP = 50  # steps of the smoothed loss before its floor counts


class Diverged(NetcError):
    """Training diverged and the rate could not be cut enough to recover."""




@dataclass
class WatchState:
    initial: float | None = None  # the first step's loss: computed before any update
    ema: float | None = None
    n: int = 0  # steps in the smoothed loss since the last reset
    floor: float = math.inf  # the smoothed loss's lowest value
    best_epoch_loss: float = math.inf  # the best healthy epoch's mean training loss
    recoveries: int = 0
    healthy: dict[str, np.ndarray] = field(default_factory=dict)  # the last healthy state
    healthy_age: int = 0


class DivergenceWatch:
    def __init__(self, program: Program, recover: bool, log: Callable[[str], None]):
        self.program, self.recover_on, self.log = program, recover, log

    @staticmethod
    def start(arrays: dict) -> WatchState:
        return WatchState(healthy=copy_state(arrays))

    def check_first_step(self, ws: WatchState, loss: float, feeds: list) -> None:
        """LossNotFinite when the first step's loss, computed before its update (at
        the parameters `ws.healthy` holds), or its gradient is not finite."""
        if ws.initial is None:
            check_start(self.program, ws.healthy, feeds, loss)

    @staticmethod
    def exploded(ws: WatchState, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if ws.initial is None:
            ws.initial = loss
        if loss > 1000 * max(ws.initial, 1e-12):
            return True
        ws.ema = loss if ws.ema is None else 0.98 * ws.ema + 0.02 * loss
        ws.n += 1
        if ws.n < WARMUP:
            return False
        ws.floor = min(ws.floor, ws.ema)
        return ws.ema > 100 * ws.floor and ws.ema > ws.initial

    @staticmethod
    def reset(ws: WatchState) -> None:
        """After a recovery the smoothed loss starts again."""
        ws.ema, ws.n = None, 0

    @staticmethod
    def healthy_epoch(ws: WatchState, epoch_loss: float) -> bool:
        """Finite, and not 10x the best epoch, unless still below the first
        step's loss: near a minimum a stable method's loss may swing by more
        than 10x (heavy-ball momentum at its largest stable rate does), which
        is not a blow-up while the loss stays below where training began."""
        if not math.isfinite(epoch_loss):
            return False
        ref = min(ws.best_epoch_loss, ws.initial if ws.initial is not None else math.inf)
        return epoch_loss <= 10 * max(ref, 1e-12) or (ws.initial is not None and epoch_loss <= ws.initial)

    @staticmethod
    def keep_healthy(ws: WatchState, arrays: dict, age: int, epoch_loss: float) -> None:
        ws.best_epoch_loss = min(ws.best_epoch_loss, epoch_loss)
        ws.healthy, ws.healthy_age = copy_state(arrays), age

    def recover(self, ws: WatchState, rate: RateState, arrays: dict, loss: float, age: int, x=None) -> None:
        """Restore the last healthy state and divide the rate by 3; Diverged when
        recovery is off or has been tried too often. A step's batch `x` lets the
        message name the first layer with non-finite values."""
        ws.recoveries += 1
        lr = rate.base
        where = first_nonfinite_layer(self.program, hosted(arrays), x) if x is not None else None
        if where:
            self.log(f"loss {loss:g} at age {age}: the first non-finite values are in {where}")
        if not self.recover_on:
            raise Diverged(f"training diverged (loss {loss:g}) at age {age} with learning rate {lr:g}"
                           + (f"; the first non-finite values are in {where}" if where else ""))
        if ws.recoveries > MAX_RECOVERIES:
            opt = getattr(self.program, "optimizer", None)
            advice = ("vsgd sets its own rates: check the inputs' scale and the initialization"
                      if opt is not None and opt.kind == "vsgd" else "lower method.lr")
            raise Diverged(f"training diverged {ws.recoveries} times (loss {loss:g}); the rate is now {lr:g}: "
                           + advice)
        assign(arrays, ws.healthy)
        self.log(f"loss {loss:g} at age {age}: diverging; restored the last healthy state and divided "
                 f"the learning rate by 3 (now {lr / 3:g})")
        LearningRate.divide(rate, 3)

