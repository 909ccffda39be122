"""The divergence watch [Bengio 2012 §2.1]: a step whose loss is not finite,
1000x the initial one, or a smoothed loss 100x above its lowest, or an epoch
whose mean loss is 10x the best, sends the parameters back to the last healthy
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
from netc.compiler.node import toposort
from netc.compiler.pipeline import Program

from .learning_rate import LearningRate, RateState
from .state import assign, copy_state, hosted
from .stats import first_nonfinite_layer

MAX_RECOVERIES = 8
WARMUP = 50  # steps of the smoothed loss before its floor counts


class Diverged(NetcError):
    """Training diverged and the rate could not be cut enough to recover."""


class LossNotFinite(NetcError):
    """The loss is NaN or infinite at the initial parameters, before any update: a
    bug in the spec (or the data), which no learning rate can cure."""


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
        the parameters `ws.healthy` holds), is not finite."""
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
        return ws.ema > 100 * ws.floor

    @staticmethod
    def reset(ws: WatchState) -> None:
        """After a recovery the smoothed loss starts again."""
        ws.ema, ws.n = None, 0

    @staticmethod
    def healthy_epoch(ws: WatchState, epoch_loss: float) -> bool:
        ref = min(ws.best_epoch_loss, ws.initial if ws.initial is not None else math.inf)
        return math.isfinite(epoch_loss) and epoch_loss <= 10 * max(ref, 1e-12)

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
            raise Diverged(f"training diverged {ws.recoveries} times (loss {loss:g}); the rate is now {lr:g}: "
                           f"lower method.lr")
        assign(arrays, ws.healthy)
        self.log(f"loss {loss:g} at age {age}: diverging; restored the last healthy state and divided "
                 f"the learning rate by 3 (now {lr / 3:g})")
        LearningRate.divide(rate, 3)


def check_start(program: Program, state: dict, feeds: list, loss: float) -> None:
    """LossNotFinite when `loss`, computed on `feeds` at the starting parameters
    `state`, is not finite: not a divergence to recover from (no rate helps),
    so say so and name the likely cause."""
    if math.isfinite(loss):
        return
    cause = likely_cause(program, hosted(state), feeds)
    raise LossNotFinite(f"the loss is not finite at the initial parameters ({loss:g}, before any "
                        f"update): not a divergence, and no learning rate helps. Likely cause: {cause}")


# what makes a finite input non-finite, by op
_DOMAIN = {"log": "log of values <= 0", "log1p": "log1p of values <= -1", "sqrt": "sqrt of negative values",
           "div": "a division by zero", "reciprocal": "a division by zero", "pow": "a power of negative values",
           "exp": "exp overflows"}


def likely_cause(program: Program, state: dict, feeds: list) -> str:
    """Why the loss is not finite on this batch at these parameters: the first
    named layer with non-finite values, else the first operation of the loss
    that makes finite values non-finite, with its .net location; for a log of a
    class target's probabilities, the classic slip of unnormalized scores."""
    feeds = [np.asarray(f) for f in feeds]
    layer = first_nonfinite_layer(program, state, feeds[0])
    spec = program.spec
    roots = [program.loss] if program.loss is not None else []
    order = [n for n in toposort(roots) if n.inputs]
    values = None
    if order:
        try:
            with np.errstate(all="ignore"):
                values = program.function(order, spec.feeds, name="loss_terms")(state, *feeds[:len(spec.feeds)])
        except Exception:  # noqa: BLE001 - a diagnosis on the way to an error must not hide that error
            values = None
    if values is not None:
        finite = {n.id: bool(np.all(np.isfinite(v))) for n, v in zip(order, values)}
        value = {n.id: v for n, v in zip(order, values)}
        for n in order:
            if finite[n.id] or not all(finite.get(i.id, True) for i in n.inputs):
                continue
            what = _DOMAIN.get(n.op, f"{n.op} gives non-finite values")
            arg = value.get(n.inputs[0].id) if n.inputs else None
            if n.op == "log" and arg is not None:
                what += f" (smallest {float(np.min(arg)):.4g})"
            where = f"{what} at {n.loc}" if n.loc else what
            if layer:
                return f"the first non-finite values are in {layer}: {where}"
            if n.op == "log" and any(t.attr("classes") for t in spec.targets.values()):
                return (f"{where}: a log-likelihood of unnormalized scores? nll and cross_entropy take "
                        f"probabilities: apply softmax (or sigmoid) first, e.g. nll(softmax(y), t)")
            return where
    if layer:
        return f"the first non-finite values are in {layer}"
    return "check the loss expression and the data"
