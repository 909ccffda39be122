"""Everything a training run changes as it goes, in one explicit structure:
parameters, buffers and optimizer state (the arrays the compiled step binds
and updates in place), the step and age counters, the random generator's
position, and each policy's memory (the rate, the divergence watch, the best
validation score, Polyak averages, the emphasized examples, the position
inside the current epoch).

A run is a function of its spec, its data and this state: saving it with
`to_arrays` and restoring it with `from_arrays` between two steps continues
the run as if it had never stopped (what resuming needs). The arrays are plain
numbers only (no pickle): counters as int64, the generator's 128-bit PCG64
words as uint64 pairs, absent values as absent keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .averaging import AverageState
from .divergence import WatchState
from .early_stopping import BestState
from .learning_rate import RateState


@dataclass
class EpochCursor:
    """Where the run is inside an epoch: its batches (drawn at the epoch's start)
    and how far it got through them."""
    order: list[np.ndarray]
    index: int = 0  # the next batch
    loss_sum: float = 0.0  # sum over the epoch's healthy steps of loss * batch size
    seen: int = 0  # examples in those steps
    drift: float | None = None  # transforms: the largest output change a refresh caused so far


@dataclass
class TrainState:
    arrays: dict[str, np.ndarray]  # parameters, buffers, optimizer state: changed in place, never rebound
    rng: np.random.Generator  # shuffling, emphasis draws, curvature and eigen samples
    step: int = 0  # updates applied; with the seed, it names the noise streams
    age: int = 0  # examples trained on
    epoch: int = 0  # epochs completed
    rate: RateState = field(default_factory=RateState)
    watch: WatchState = field(default_factory=WatchState)
    best: BestState = field(default_factory=BestState)
    average: AverageState | None = None
    missed: np.ndarray | None = None  # emphasis: examples misclassified when last seen
    next_check: int | None = None  # the age of the next extra validation (valid_every)
    cursor: EpochCursor | None = None  # inside an epoch; None between epochs

    @staticmethod
    def fresh(arrays: dict[str, np.ndarray], seed: int) -> "TrainState":
        """The state before the first update: the run's generator is seeded from the
        train block's seed (stream 1; initialization uses per-parameter streams)."""
        return TrainState(arrays, np.random.default_rng([seed, 1]))

    # -- as plain arrays ------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        _put_dict(out, "state/", self.arrays)
        out["train/counters"] = np.array([self.step, self.age, self.epoch], np.int64)
        out["train/rng"] = rng_words(self.rng)
        _put(out, "train/next_check", self.next_check)
        _put(out, "rate/base", self.rate.base)
        w = self.watch
        for k in ("initial", "ema", "n", "floor", "best_epoch_loss", "recoveries", "healthy_age"):
            _put(out, f"watch/{k}", getattr(w, k))
        if self.cursor is None and w.healthy_age == self.age and w.healthy.keys() == self.arrays.keys():
            out["watch/healthy_is_state"] = np.array(True)  # an epoch's end: the copy was just taken
        else:
            _put_dict(out, "watch/healthy/", w.healthy)
        b = self.best
        for k in ("score", "epoch", "patience"):
            _put(out, f"best/{k}", getattr(b, k))
        _put_dict(out, "best/arrays/", b.arrays)
        if self.average is not None:
            _put(out, "average/count", self.average.count)
            _put_dict(out, "average/arrays/", self.average.arrays)
        _put(out, "emphasis/missed", self.missed)
        c = self.cursor
        if c is not None:
            out["cursor/position"] = np.array([c.index, c.seen], np.int64)
            out["cursor/loss_sum"] = np.asarray(c.loss_sum, np.float64)
            _put(out, "cursor/drift", c.drift)
            out["cursor/sizes"] = np.array([len(b) for b in c.order], np.int64)
            out["cursor/order"] = (np.concatenate(c.order).astype(np.int64) if c.order
                                   else np.zeros(0, np.int64))
        return out

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> "TrainState":
        """The state `to_arrays` saved; its parameter values are copied into `arrays`
        (the live dict the compiled functions are bound to); the copies the policies keep
        are made where the live arrays are (host or device)."""
        for k, v in _get_dict(a, "state/").items():
            arrays[k][...] = v  # a NumPy or CuPy array: copied in place
        rng = np.random.default_rng()
        rng.bit_generator.state = _rng_state(a["train/rng"])
        step, age, epoch = (int(v) for v in a["train/counters"])
        ts = TrainState(arrays, rng, step, age, epoch, next_check=_get(a, "train/next_check"))
        ts.rate = RateState(_get(a, "rate/base"))
        w = ts.watch
        for k in ("initial", "ema", "n", "floor", "best_epoch_loss", "recoveries", "healthy_age"):
            setattr(w, k, _get(a, f"watch/{k}", getattr(w, k)))
        w.healthy = _like(_get_dict(a, "watch/healthy/"), arrays)
        if _get(a, "watch/healthy_is_state"):
            w.healthy = {k: v.copy() for k, v in arrays.items()}
        b = ts.best
        for k in ("score", "epoch", "patience"):
            setattr(b, k, _get(a, f"best/{k}", getattr(b, k)))
        b.arrays = _like(_get_dict(a, "best/arrays/"), arrays) or None
        if "average/count" in a:
            avg = _like(_get_dict(a, "average/arrays/"), arrays)
            ts.average = AverageState(avg, int(a["average/count"]), {k: v.copy() for k, v in avg.items()})
        ts.missed = None if "emphasis/missed" not in a else np.array(a["emphasis/missed"], bool)
        if "cursor/position" in a:
            sizes = a["cursor/sizes"]
            order = np.split(np.asarray(a["cursor/order"], np.int64), np.cumsum(sizes)[:-1]) if len(sizes) else []
            index, seen = (int(v) for v in a["cursor/position"])
            ts.cursor = EpochCursor(list(order), index, float(a["cursor/loss_sum"]), seen, _get(a, "cursor/drift"))
        return ts


def _like(values: dict[str, np.ndarray], live: dict) -> dict:
    """`values` as copies of the live arrays of the same names (on the device too)."""
    out = {}
    for k, v in values.items():
        out[k] = live[k].copy()
        out[k][...] = v
    return out


def _put(out: dict, key: str, value) -> None:
    if value is not None:
        out[key] = np.array(value)


def _get(a: dict, key: str, default=None):
    if key not in a:
        return default
    v = np.asarray(a[key])
    return v.item() if v.ndim == 0 else v


def _put_dict(out: dict, prefix: str, arrays: dict | None) -> None:
    for k, v in (arrays or {}).items():
        out[prefix + k] = np.asarray(v if isinstance(v, np.ndarray) else v.get())


def _get_dict(a: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: np.array(v) for k, v in a.items() if k.startswith(prefix) and "/" not in k[len(prefix):]}


_MASK = (1 << 64) - 1


def rng_words(rng: np.random.Generator) -> np.ndarray:
    """PCG64's position as six uint64 words: state (lo, hi), increment (lo, hi),
    has_uint32, uinteger."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise ValueError(f"cannot save a {s['bit_generator']} generator")
    st, inc = s["state"]["state"], s["state"]["inc"]
    return np.array([st & _MASK, st >> 64, inc & _MASK, inc >> 64, s["has_uint32"], s["uinteger"]], np.uint64)


def _rng_state(words: np.ndarray) -> dict:
    w = [int(x) for x in np.asarray(words, np.uint64)]
    return {"bit_generator": "PCG64", "state": {"state": w[0] | (w[1] << 64), "inc": w[2] | (w[3] << 64)},
            "has_uint32": w[4], "uinteger": w[5]}
