"""The training loop: minibatches, schedules, validation, early stopping,
averaging, divergence recovery, metrics and checkpoints.

The compiled step does the arithmetic; this module decides what to feed it
and when, and keeps the run directory up to date so an interrupted run loses
at most the epoch in progress.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import Program

from . import checkpoint
from .config import BATCH_METHODS, TrainConfig
from .data import Dataset
from .presentation import epoch_order
from .progress import Progress
from .state import assign, copy_state
from .stats import first_nonfinite_layer, layer_stats

MAX_RECOVERIES = 8


class Diverged(NetcError):
    """Training diverged and the rate could not be cut enough to recover."""


@dataclass
class Batches:
    """Preallocated minibatch buffers, filled with np.take: no allocation per step."""
    x: np.ndarray
    t: np.ndarray | None
    bufs: dict = field(default_factory=dict)

    def get(self, idx: np.ndarray):
        n = len(idx)
        b = self.bufs.get(n)
        if b is None:
            b = self.bufs[n] = (np.empty((n,) + self.x.shape[1:], self.x.dtype),
                                None if self.t is None else np.empty((n,) + self.t.shape[1:], self.t.dtype))
        np.take(self.x, idx, axis=0, out=b[0])
        if self.t is not None:
            np.take(self.t, idx, axis=0, out=b[1])
        return b


def feeds_for(program: Program, x, t) -> list:
    spec = program.spec
    out = [x]
    if spec.targets:
        if t is None:
            raise NetcError("this spec has a target but the data has no targets")
        out.append(t)
    return out


def evaluate(program: Program, state: dict, ds: Dataset, batch: int) -> tuple[float, float | None]:
    """Mean loss and error rate (class targets) over a dataset."""
    fn = program.evaluate
    total, errors, n = 0.0, 0.0, len(ds)
    with np.errstate(all="ignore"):
        for lo in range(0, n, batch):
            x = ds.x[lo:lo + batch]
            t = None if ds.t is None else ds.t[lo:lo + batch]
            outs = fn(state, *feeds_for(program, x, t)[:len(fn.feeds)])
            total += float(outs[0]) * len(x)
            if len(outs) > 1:
                errors += float(outs[1])
    return total / n, (errors / n if program.errors is not None else None)


def predict(program: Program, state: dict, x: np.ndarray, batch: int) -> np.ndarray:
    fn = program.predict
    out = None
    for lo in range(0, len(x), batch):
        (y,) = fn(state, x[lo:lo + batch])
        if out is None:
            out = np.empty((len(x),) + y.shape[1:], y.dtype)
        out[lo:lo + len(y)] = _host(y)
    return out


def _host(a):
    """A NumPy array from a NumPy or CuPy (device="gpu") array."""
    return a if isinstance(a, np.ndarray) else a.get()


def _hosted(state: dict | None) -> dict | None:
    """Host copies of device state (for the NumPy-only per-layer statistics)."""
    if state is None or all(isinstance(v, np.ndarray) for v in state.values()):
        return state
    return {k: _host(v) for k, v in state.items()}


def learning_rate(cfg: TrainConfig, age: int, steps: int, base: float) -> float:
    """The scheduled rate after `steps` updates and `age` examples (plateau acts at
    epoch ends instead). inverse_time counts updates, as Bengio's eq. 2 does."""
    sch = cfg.schedule
    match sch.kind:
        case "inverse_time":
            return base * sch.tau / max(steps, sch.tau)
        case "step":
            return base * sch.factor ** (age // sch.every)
        case "exponential":
            return base * sch.decay ** (age / sch.every)
    return base


@dataclass
class Run:
    program: Program
    cfg: TrainConfig
    state: dict[str, np.ndarray]
    out_dir: Path | None = None
    progress: bool | None = None
    log: Callable[[str], None] = print
    meta: dict = field(default_factory=dict)  # saved into every checkpoint
    extra_arrays: Callable[[], dict] = dict  # e.g. normalization statistics
    decay: tuple = ({}, {})  # (L2, L1) lambda per parameter, for the batch methods

    def fit(self, train: Dataset, valid: Dataset | None = None, test: Dataset | None = None,
            epochs: int | None = None) -> dict:
        cfg, prog = self.cfg, self.program
        if prog.step is None:
            raise NetcError("this spec has no loss or no parameters, so there is nothing to train")
        epochs = epochs or cfg.epochs
        if cfg.method.kind in BATCH_METHODS:
            return self._fit_batch_method(train, valid, test, epochs)
        rng = np.random.default_rng([cfg.seed, 1])
        batches = Batches(train.x, train.t if prog.spec.targets else None)
        params = list(prog.spec.params)
        refresher, every_n = None, None
        if cfg.transforms.kind == "every":
            from .transforms import Refresher
            refresher, every_n = Refresher(prog, self.log), int(cfg.transforms.args[0])
            if not refresher.layers:
                raise NetcError("transforms = every(...) needs `transformed` layers in the spec")
        base_lr = cfg.lr if cfg.lr is not None else cfg.method.lr
        if not isinstance(base_lr, (int, float)):  # lr = auto(eigen)
            base_lr = self._eigen_rate(train, rng, base_lr.examples)
        mu = getattr(cfg.method, "momentum", 0.0)
        avg = copy_state(self.state, params) if cfg.average.kind == "polyak" else None
        avg_delta = copy_state(self.state, params) if avg is not None else None  # scratch
        eval_state = self.state if avg is None else {**self.state, **avg}
        best = {"error": math.inf, "epoch": 0, "state": None}
        patience = getattr(cfg.stop, "patience", None)
        metrics = _Metrics(self.out_dir)
        age, steps, recoveries, epoch, averaged = 0, 0, 0, 0, 0
        history: list[dict] = []
        t_start = time.perf_counter()
        train_seconds = 0.0
        stopped = "epochs"
        every = None
        if cfg.valid_every is not None and valid is not None:
            every = max(cfg.valid_every, len(valid))  # PR 3.1: at least the validation set's size
            if every != cfg.valid_every:
                self.log(f"valid_every raised to {every}, the validation set's size")
        next_check = every
        hyper = {"momentum": mu, "inv_examples": 1.0 / len(train)}  # the step's scalar inputs, by name
        # emphasizing: which examples were misclassified when last seen (all, at first)
        missed = np.ones(len(train), bool) if cfg.emphasize.kind == "errors" else None
        good, good_age, in_epoch = copy_state(self.state), 0, False
        watch = _Watch()
        best_epoch_loss = math.inf
        try:
            for epoch in range(1, epochs + 1):
                in_epoch = True
                if prog.curvature is not None:
                    self._estimate_curvature(train, rng)
                t0 = time.perf_counter()
                bar = Progress(len(train), f"epoch {epoch}/{epochs}", enabled=self.progress)
                loss_sum, seen = 0.0, 0
                order = list(epoch_order(len(train), cfg.batch, rng, shuffle=cfg.shuffle,
                                         labels=train.t if train.t is not None and train.t.ndim == 1 else None,
                                         interleave=cfg.interleave, missed=missed,
                                         ratio=getattr(cfg.emphasize, "ratio", 1.0)))
                before_last = None
                with np.errstate(all="ignore"):
                    for i, idx in enumerate(order):
                        if cfg.stats and i == len(order) - 1:
                            before_last = copy_state(self.state, params)
                        xb, tb = batches.get(idx)
                        data_feeds = feeds_for(prog, xb, tb)
                        hyper["lr"] = learning_rate(cfg, age, steps, base_lr)
                        hyper["step"] = (cfg.seed << 32) + steps  # noise streams: one per run seed and step
                        outs = prog.step(self.state, *data_feeds,
                                         *[hyper[k] for k in prog.step.feeds[len(data_feeds):]])
                        loss = outs[0]
                        if missed is not None:
                            missed[idx] = _host(outs[1]) > 0  # the errors last seen
                        loss = float(loss)
                        if watch.exploded(loss):
                            recoveries += 1
                            base_lr = self._recover(recoveries, loss, age, base_lr, good, xb)
                            watch.reset()
                            continue
                        n = len(idx)
                        age += n
                        steps += 1
                        if refresher is not None and steps % every_n == 0:
                            sample = train.x[:min(len(train), 1000)]
                            refresher.refresh(self.state, np.ascontiguousarray(sample))
                        loss_sum += loss * n
                        seen += n
                        if avg is not None and epoch > 1:  # the first epoch is burn-in
                            averaged += 1
                            for name in params:  # avg += (w - avg) / k, without temporaries
                                a, d = avg[name], avg_delta[name]
                                np.subtract(self.state[name], a, out=d)
                                d *= 1.0 / averaged
                                a += d
                        bar.update(n, loss=loss_sum / max(seen, 1))
                        if every is not None and age >= next_check:
                            next_check += every
                            l, e = evaluate(prog, eval_state, valid, cfg.eval_batch)
                            row = {"epoch": epoch, "age": age, "valid_loss": l, "valid_error": e, "partial": True}
                            metrics.write(row)
                            score = e if e is not None else l
                            if score < best["error"]:
                                best = {"error": score, "epoch": epoch, "state": copy_state(eval_state, params)}
                                if patience is not None:
                                    patience = max(patience, int(cfg.stop.grow * age))
                            if patience is not None and age >= patience:
                                stopped = "early"
                                break
                bar.close()
                in_epoch = False
                epoch_loss = loss_sum / max(seen, 1)
                if (cfg.schedule.kind == "plateau" and math.isfinite(best_epoch_loss)
                        and epoch_loss > (1 - cfg.schedule.threshold) * best_epoch_loss):
                    base_lr *= cfg.schedule.factor
                    self.log(f"epoch {epoch}: training loss {epoch_loss:.4g} did not improve on {best_epoch_loss:.4g} "
                             f"by {cfg.schedule.threshold:g}: learning rate now {base_lr:g}")
                if watch.healthy_epoch(epoch_loss, best_epoch_loss):
                    best_epoch_loss = min(best_epoch_loss, epoch_loss)
                    good, good_age = copy_state(self.state), age  # the last healthy state
                else:  # the epoch as a whole blew up: back to the last healthy state
                    recoveries += 1
                    base_lr = self._recover(recoveries, epoch_loss, age, base_lr, good)
                if avg is not None and epoch == 1:
                    assign(avg, {k: self.state[k] for k in params})
                train_seconds += time.perf_counter() - t0
                row = {"epoch": epoch, "age": age, "steps": steps, "train_loss": loss_sum / max(seen, 1),
                       "lr": learning_rate(cfg, age, steps, base_lr)}
                for name, ds in (("valid", valid), ("test", test)):
                    if ds is not None:
                        l, e = evaluate(prog, eval_state, ds, cfg.eval_batch)
                        row[f"{name}_loss"] = l
                        row[f"{name}_error"] = e
                if cfg.stats:
                    k = min(len(train), 500)
                    row.update(layer_stats(prog, _hosted(self.state), train.x[:k],
                                           None if train.t is None else train.t[:k], _hosted(before_last)))
                row["seconds"] = time.perf_counter() - t0
                history.append(row)
                metrics.write(row)
                self.log(_epoch_line(row, epochs))
                score = row.get("valid_error") if row.get("valid_error") is not None else row.get("valid_loss")
                if score is not None and score < best["error"]:
                    best = {"error": score, "epoch": epoch, "state": copy_state(eval_state, params)}
                    if patience is not None:
                        patience = max(patience, int(cfg.stop.grow * age))
                self._checkpoint(epoch, age)
                if stopped == "early" or (patience is not None and valid is not None and age >= patience):
                    stopped = "early"
                    self.log(f"early stop at age {age}: no new best validation score since epoch {best['epoch']}")
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            if in_epoch:  # keep the last completed epoch, not a half-trained state
                assign(self.state, good)
                age = good_age
            self.log("interrupted: the last completed epoch is saved")
        finally:
            metrics.close()
        if best["state"] is not None and (cfg.stop.kind == "early"):
            assign(self.state, best["state"])
        elif avg is not None:
            assign(self.state, avg)
        last = history[-1] if history else {}
        summary = {
            "epochs": len(history), "age": age, "steps": steps, "stopped": stopped,
            "train_loss": last.get("train_loss"),
            "valid_loss": last.get("valid_loss"), "valid_error": last.get("valid_error"),
            "test_loss": last.get("test_loss"), "test_error": last.get("test_error"),
            "best_epoch": best["epoch"] or None, "recoveries": recoveries, "lr": base_lr,
            "seconds": time.perf_counter() - t_start,
            "examples_per_second": age / train_seconds if train_seconds > 0 else None,
        }
        if best["state"] is not None and cfg.stop.kind == "early":
            # report the restored (best) parameters' scores
            for name, ds in (("valid", valid), ("test", test)):
                if ds is not None:
                    summary[f"{name}_loss"], summary[f"{name}_error"] = evaluate(prog, self.state, ds, cfg.eval_batch)
        if history:
            self._checkpoint(len(history), age, final=True)
        if stopped == "interrupted":
            raise KeyboardInterrupt
        return summary

    def _fit_batch_method(self, train: Dataset, valid, test, epochs: int) -> dict:
        """L-BFGS / CG on the full training set; an epoch is `iterations` iterations."""
        from .batch_methods import conjugate_gradient, lbfgs
        prog, cfg = self.program, self.cfg
        names = list(prog.spec.params)
        fn = _value_and_grad(prog)
        shapes = [self.state[k].shape for k in names]
        sizes = [int(np.prod(s)) for s in shapes]
        l2, l1 = self.decay
        inv_t = 1.0 / len(train)
        evals = [0]

        def unflatten(w):
            k = 0
            for name, shape, size in zip(names, shapes, sizes):
                np.copyto(self.state[name], w[k:k + size].reshape(shape))
                k += size

        def fg(w):
            unflatten(w)
            evals[0] += 1
            total, grads = 0.0, [np.zeros(s) for s in shapes]
            with np.errstate(all="ignore"):
                for lo in range(0, len(train), cfg.eval_batch):
                    x = train.x[lo:lo + cfg.eval_batch]
                    t = None if train.t is None else train.t[lo:lo + cfg.eval_batch]
                    outs = fn(self.state, *feeds_for(prog, x, t))
                    share = len(x) / len(train)
                    total += float(outs[0]) * share
                    for g, o in zip(grads, outs[1:]):
                        g += o * share
            for name, g in zip(names, grads):  # the train block's weight decay, on the whole criterion
                w_ = self.state[name].astype(np.float64)
                total += inv_t * (l2.get(name, 0.0) * float(np.sum(w_ ** 2)) + l1.get(name, 0.0) * float(np.sum(np.abs(w_))))
                g += inv_t * (2 * l2.get(name, 0.0) * w_ + l1.get(name, 0.0) * np.sign(w_))
            return total, np.concatenate([g.reshape(-1) for g in grads])

        w = np.concatenate([self.state[k].astype(np.float64).reshape(-1) for k in names])
        history, t0 = [], time.perf_counter()
        metrics = _Metrics(self.out_dir)
        try:
            for epoch in range(1, epochs + 1):
                e0 = time.perf_counter()
                run = lbfgs if cfg.method.kind == "lbfgs" else conjugate_gradient
                kw = {"memory": cfg.method.memory} if cfg.method.kind == "lbfgs" else {}
                w, f, _ = run(fg, w, cfg.method.iterations, **kw)
                unflatten(w)
                row = {"epoch": epoch, "age": evals[0] * len(train), "train_loss": f, "evaluations": evals[0]}
                for name, ds in (("valid", valid), ("test", test)):
                    if ds is not None:
                        row[f"{name}_loss"], row[f"{name}_error"] = evaluate(prog, self.state, ds, cfg.eval_batch)
                row["seconds"] = time.perf_counter() - e0
                history.append(row)
                metrics.write(row)
                self.log(_epoch_line(row, epochs))
                self._checkpoint(epoch, row["age"])
        finally:
            metrics.close()
        last = history[-1]
        seconds = time.perf_counter() - t0
        return {"epochs": len(history), "age": last["age"], "steps": evals[0], "stopped": "epochs",
                "train_loss": last["train_loss"], "valid_loss": last.get("valid_loss"),
                "valid_error": last.get("valid_error"), "test_loss": last.get("test_loss"),
                "test_error": last.get("test_error"), "best_epoch": None, "recoveries": 0, "lr": None,
                "seconds": seconds, "examples_per_second": last["age"] / max(seconds, 1e-9)}

    def _eigen_rate(self, train: Dataset, rng: np.random.Generator, examples: int) -> float:
        from .eigen import largest_eigenvalue
        idx = np.sort(rng.choice(len(train), size=min(examples, len(train)), replace=False))
        t = None if train.t is None else train.t[idx]
        lam = largest_eigenvalue(self.program, self.state, train.x[idx], t, seed=self.cfg.seed)
        if not np.isfinite(lam) or lam <= 0:
            raise NetcError(f"lr = auto(eigen): the Hessian's largest eigenvalue came out {lam}; set lr by hand")
        self.log(f"lr = auto(eigen): lambda_max {lam:.6g} on {len(idx)} examples -> lr {1 / lam:.6g}")
        return 1.0 / lam

    def _estimate_curvature(self, train: Dataset, rng: np.random.Generator) -> None:
        """SDLM [EB 9.1]: before each epoch, h <- (1 - gamma) h + gamma * bbprop(batch)
        over `samples` random training examples."""
        m = self.cfg.method
        idx = rng.choice(len(train), size=min(m.samples, len(train)), replace=False)
        fn = self.program.curvature
        names = list(self.program.spec.params)
        batch = max(1, min(self.cfg.batch, 100)) if self.cfg.batch > 1 else 25
        with np.errstate(all="ignore"):
            for lo in range(0, len(idx), batch):
                sel = idx[lo:lo + batch]
                t = None if train.t is None else train.t[sel]
                curv = fn(self.state, *feeds_for(self.program, train.x[sel], t)[:len(fn.feeds)])
                for name, c in zip(names, curv):
                    h = self.state[f"{name}.curvature"]
                    h *= 1 - m.gamma
                    h += m.gamma * c

    def _recover(self, count: int, loss: float, age: int, lr: float, good: dict, x=None) -> float:
        """Bengio 2012 §2.1: restore the last healthy state and divide the rate by 3."""
        where = first_nonfinite_layer(self.program, _hosted(self.state), x) if x is not None else None
        if where:
            self.log(f"loss {loss:g} at age {age}: the first non-finite values are in {where}")
        if not self.cfg.recover:
            raise Diverged(f"training diverged (loss {loss:g}) at age {age} with learning rate {lr:g}"
                           + (f"; the first non-finite values are in {where}" if where else ""))
        if count > MAX_RECOVERIES:
            raise Diverged(f"training diverged {count} times (loss {loss:g}); the rate is now {lr:g}: "
                           f"lower method.lr")
        assign(self.state, good)
        self.log(f"loss {loss:g} at age {age}: diverging; restored the last healthy state and divided "
                 f"the learning rate by 3 (now {lr / 3:g})")
        return lr / 3

    def _checkpoint(self, epoch: int, age: int, final: bool = False) -> None:
        if self.out_dir is None:
            return
        arrays = {f"state/{k}": _host(v) for k, v in self.state.items()}
        arrays.update(self.extra_arrays())
        checkpoint.save(self.out_dir, arrays, {**self.meta, "epoch": epoch, "age": age, "final": final})


class _Metrics:
    """metrics.jsonl: one JSON line per epoch (and per extra validation), flushed as
    written so a crash keeps every finished line."""

    def __init__(self, out_dir: Path | None):
        self.file = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(out_dir / "metrics.jsonl", "w")

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


class _Watch:
    """Divergence: a non-finite loss, a step loss 1000x the initial one, or a
    smoothed loss 100x above its lowest."""

    WARMUP = 50

    def __init__(self):
        self.floor = math.inf
        self.initial = None  # the first step's loss: computed before any update
        self.reset()

    def reset(self) -> None:
        self.ema, self.n = None, 0

    def healthy_epoch(self, epoch_loss: float, best: float) -> bool:
        ref = min(best, self.initial if self.initial is not None else math.inf)
        return math.isfinite(epoch_loss) and epoch_loss <= 10 * max(ref, 1e-12)

    def exploded(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if self.initial is None:
            self.initial = loss
        if loss > 1000 * max(self.initial, 1e-12):
            return True
        self.ema = loss if self.ema is None else 0.98 * self.ema + 0.02 * loss
        self.n += 1
        if self.n < self.WARMUP:
            return False
        self.floor = min(self.floor, self.ema)
        return self.ema > 100 * self.floor


def _value_and_grad(prog: Program):
    fn = getattr(prog, "_value_and_grad", None)
    if fn is None:
        from netc.compiler.lower_numpy import lower
        from netc.compiler.ops import expected
        names = list(prog.spec.params)
        fn = lower(expected(prog.spec.graph, [prog.loss] + [prog.grads[k] for k in names]), (), "value_and_grad", feeds=prog.spec.feeds)
        prog._value_and_grad = fn
    return fn


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"age {row['age']}", f"train_loss {row['train_loss']:.4f}"]
    for k in ("valid_error", "test_error"):
        if row.get(k) is not None:
            parts.append(f"{k} {row[k] * 100:.2f}%")
    for k in ("valid_loss",):
        if row.get(k) is not None and row.get("valid_error") is None:
            parts.append(f"{k} {row[k]:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
