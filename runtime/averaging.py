"""Polyak averaging of the parameters [PR 3.1]: after a first epoch of burn-in,
avg <- avg + (w - avg) / k after every update, without temporaries; validation,
prediction and the final parameters use the average. During burn-in there is
no average yet: a validation inside epoch 1 sees the live parameters
(`before_evaluation` copies them in), not the initial ones. Its memory is
`AverageState`, part of the training state.

Buffers (the transformed units' alpha, beta, gamma) are not averaged: the
average holds the buffers its parameters are expressed in. A transformation
refresh re-expresses the average in the new coefficients (runtime/transforms.py),
so it stays an average of one parametrization and evaluates as one network."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .state import assign, copy_state


@dataclass
class AverageState:
    arrays: dict[str, np.ndarray]  # the averaged parameters
    count: int = 0  # updates averaged so far
    scratch: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # w - avg, preallocated


class PolyakAverage:
    def __init__(self, params: list[str], buffers: list[str] = ()):
        self.params, self.buffers = params, list(buffers)

    def start(self, arrays: dict) -> AverageState:
        return AverageState(copy_state(arrays, self.params + self.buffers), 0, copy_state(arrays, self.params))

    def after_step(self, av: AverageState, arrays: dict, epoch: int) -> None:
        if epoch <= 1:  # the first epoch is burn-in
            return
        av.count += 1
        for name in self.params:  # avg += (w - avg) / k, without temporaries
            a, d = av.arrays[name], av.scratch[name]
            np.subtract(arrays[name], a, out=d)
            d *= 1.0 / av.count
            a += d

    def before_evaluation(self, av: AverageState, arrays: dict, epoch: int) -> None:
        """An evaluation inside the burn-in epoch: the average is the live parameters so far."""
        if epoch <= 1:
            assign(av.arrays, {k: arrays[k] for k in self.params + self.buffers})

    def end_epoch(self, av: AverageState, arrays: dict, epoch: int) -> None:
        if epoch == 1:  # burn-in over: the average starts from here
            assign(av.arrays, {k: arrays[k] for k in self.params + self.buffers})

    @staticmethod
    def evaluated(av: AverageState | None, arrays: dict) -> dict:
        """The state validation and prediction use: the averaged parameters over the rest.
        Build it once per run: compiled functions bind to the dict."""
        return arrays if av is None else {**arrays, **av.arrays}
