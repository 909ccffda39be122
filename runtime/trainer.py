"""The training loop: what to feed the compiled step, and when.

`Run.fit` composes small pieces, each in a module of its own: the learning
rate (learning_rate.py), the divergence watch (divergence.py), early stopping
(early_stopping.py), Polyak averaging (averaging.py), the emphasizing scheme
(emphasis.py), the run folder's metrics and checkpoints (run_folder.py), and
the batch methods (batch_training.py). Everything the run changes lives in one
`TrainState` (train_state.py), so that a run could be stopped between two
steps and continued.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import Program

from . import emphasis
from .averaging import PolyakAverage
from .batch_training import fit_batch_method
from .config import TrainConfig
from .data import Dataset
from .divergence import Diverged, DivergenceWatch  # noqa: F401 - Diverged is part of this module's API
from .early_stopping import EarlyStopping
from .evaluation import epoch_line, evaluate, feeds_for, predict  # noqa: F401 - evaluate, predict: API
from .learning_rate import LearningRate
from .optimizers import method_of
from .presentation import epoch_order
from .progress import Progress
from .run_folder import RunFolder
from .state import assign, copy_state, hosted
from .stats import layer_stats
from .train_state import EpochCursor, TrainState


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

    def fit(self, train: Dataset, valid: Dataset | None = None, test: Dataset | None = None,
            epochs: int | None = None) -> dict:
        if self.program.step is None:
            raise NetcError("this spec has no loss or no parameters, so there is nothing to train")
        epochs = epochs or self.cfg.epochs
        method = method_of(self.cfg)
        if method.is_batch:
            return fit_batch_method(self, method, train, valid, test, epochs)
        return _Minibatches(self, train, valid, test).run_epochs(epochs)


class _Minibatches:
    """One minibatch run: the training state, and the policies that act on it
    between steps and at epoch ends."""

    def __init__(self, run: Run, train: Dataset, valid: Dataset | None, test: Dataset | None):
        self.run, self.prog, self.cfg, self.log = run, run.program, run.cfg, run.log
        self.train, self.valid, self.test = train, valid, test
        cfg, prog = self.cfg, self.prog
        # the policies: configuration and logic, no memory of their own
        self.batches = Batches(train.x, train.t if prog.spec.targets else None)
        self.params = list(prog.spec.params)
        self.refresher, self.refresh_every = self._refresher()
        self.rate = LearningRate(cfg, self.log)
        self.average = PolyakAverage(self.params) if cfg.average.kind == "polyak" else None
        self.early = EarlyStopping(cfg, self.params)
        self.watch = DivergenceWatch(prog, cfg.recover, self.log)
        self.every = _valid_every(cfg, valid)
        self.hyper = {**method_of(cfg).hypers(cfg.method), "inv_examples": 1.0 / len(train)}  # step inputs by name
        # what they act on (a resumed run would restore it instead: TrainState.from_arrays)
        self.ts = self._fresh_state()
        self.evaluated = PolyakAverage.evaluated(self.ts.average, self.ts.arrays)  # what validation sees
        self.folder = RunFolder(run.out_dir, run.meta, run.extra_arrays)
        if self.every is not None and self.every != cfg.valid_every:
            self.log(f"valid_every raised to {self.every}, the validation set's size")
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.before_last = None  # the parameters before an epoch's last step (update ratios)

    def _fresh_state(self) -> TrainState:
        """The training state before the first step (auto(eigen) estimates the rate here)."""
        ts = TrainState.fresh(self.run.state, self.cfg.seed)
        self.rate.start(ts.rate, lambda examples: self._eigen_rate(ts, examples))
        ts.average = self.average.start(ts.arrays) if self.average else None
        ts.best = self.early.start()
        ts.next_check = self.every
        ts.missed = emphasis.start(self.cfg, len(self.train))
        ts.watch = self.watch.start(ts.arrays)
        return ts

    def _refresher(self):
        if self.cfg.transforms.kind != "every":
            return None, None
        from .transforms import Refresher
        refresher = Refresher(self.prog, self.log)
        if not refresher.layers:
            raise NetcError("transforms = every(...) needs `transformed` layers in the spec")
        return refresher, int(self.cfg.transforms.args[0])

    # -- the run ---------------------------------------------------------------------------
    def run_epochs(self, epochs: int) -> dict:
        ts, t_start, stopped = self.ts, time.perf_counter(), "epochs"
        try:
            for epoch in range(1, epochs + 1):
                if self._epoch(epoch, epochs):
                    stopped = "early"
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            if ts.cursor is not None:  # keep the last completed epoch, not a half-trained state
                assign(ts.arrays, ts.watch.healthy)
                ts.age = ts.watch.healthy_age
            self.log("interrupted: the last completed epoch is saved")
        finally:
            self.folder.close()
        return self._finish(stopped, t_start)

    def _epoch(self, epoch: int, epochs: int) -> bool:
        """One epoch and its end; True to stop early."""
        ts, cfg, train = self.ts, self.cfg, self.train
        ts.cursor = c = EpochCursor([])
        if self.prog.curvature is not None:
            self._estimate_curvature()
        t0 = time.perf_counter()
        bar = Progress(len(train), f"epoch {epoch}/{epochs}", enabled=self.run.progress)
        c.order = list(epoch_order(len(train), cfg.batch, ts.rng, shuffle=cfg.shuffle,
                                   labels=train.t if train.t is not None and train.t.ndim == 1 else None,
                                   interleave=cfg.interleave, missed=ts.missed, ratio=emphasis.ratio(cfg)))
        self.before_last = None
        stop = self._steps(epoch, bar)
        bar.close()
        ts.cursor = None
        epoch_loss = c.loss_sum / max(c.seen, 1)
        self.rate.end_epoch(ts.rate, epoch, epoch_loss, ts.watch.best_epoch_loss)
        if DivergenceWatch.healthy_epoch(ts.watch, epoch_loss):
            DivergenceWatch.keep_healthy(ts.watch, ts.arrays, ts.age, epoch_loss)
        else:  # the epoch as a whole blew up: back to the last healthy state
            self.watch.recover(ts.watch, ts.rate, ts.arrays, epoch_loss, ts.age)
        if self.average is not None:
            self.average.end_epoch(ts.average, ts.arrays, epoch)
        self.train_seconds += time.perf_counter() - t0
        row = self._epoch_row(epoch, epoch_loss, t0)
        self.history.append(row)
        self.folder.write(row)
        self.log(epoch_line(row, epochs))
        score = row.get("valid_error") if row.get("valid_error") is not None else row.get("valid_loss")
        self.early.observe(ts.best, score, epoch, ts.age, self.evaluated)
        ts.epoch = epoch
        self.folder.checkpoint(ts.arrays, epoch, ts.age)
        if stop or (self.valid is not None and EarlyStopping.out_of_patience(ts.best, ts.age)):
            self.log(f"early stop at age {ts.age}: no new best validation score since epoch {ts.best.epoch}")
            return True
        return False

    def _steps(self, epoch: int, bar: Progress) -> bool:
        """The epoch's remaining steps; True when validation ran out of patience."""
        ts, c = self.ts, self.ts.cursor
        last = len(c.order) - 1
        with np.errstate(all="ignore"):
            for i in range(c.index, len(c.order)):
                stop = self._step(epoch, i == last, c.order[i], bar)
                c.index = i + 1
                if stop:
                    return True
        return False

    def _step(self, epoch: int, last: bool, idx: np.ndarray, bar: Progress) -> bool:
        ts, prog, cfg, hyper, c = self.ts, self.prog, self.cfg, self.hyper, self.ts.cursor
        if cfg.stats and last:
            self.before_last = copy_state(ts.arrays, self.params)
        xb, tb = self.batches.get(idx)
        data_feeds = feeds_for(prog, xb, tb)
        step = prog.step
        hyper["lr"] = self.rate.at(ts.rate, ts.age, ts.step)
        hyper["step"] = (cfg.seed << 32) + ts.step  # noise streams: one per run seed and step
        outs = step(ts.arrays, *data_feeds, *[hyper[k] for k in step.feeds[len(data_feeds):]])
        if ts.missed is not None:
            emphasis.record(ts.missed, idx, outs[1])  # the errors last seen
        loss = float(outs[0])
        if DivergenceWatch.exploded(ts.watch, loss):
            self.watch.recover(ts.watch, ts.rate, ts.arrays, loss, ts.age, xb)
            DivergenceWatch.reset(ts.watch)
            return False
        n = len(idx)
        ts.age += n
        ts.step += 1
        if self.refresher is not None and ts.step % self.refresh_every == 0:
            sample = self.train.x[:min(len(self.train), 1000)]
            self.refresher.refresh(ts.arrays, np.ascontiguousarray(sample))
        c.loss_sum += loss * n
        c.seen += n
        if self.average is not None:
            self.average.after_step(ts.average, ts.arrays, epoch)
        bar.update(n, loss=c.loss_sum / max(c.seen, 1))
        if self.every is not None and ts.age >= ts.next_check:
            return self._validate_within(epoch)
        return False

    def _validate_within(self, epoch: int) -> bool:
        """valid_every: an extra validation inside the epoch; True when out of patience."""
        ts = self.ts
        ts.next_check += self.every
        l, e = evaluate(self.prog, self.evaluated, self.valid, self.cfg.eval_batch)
        self.folder.write({"epoch": epoch, "age": ts.age, "valid_loss": l, "valid_error": e, "partial": True})
        self.early.observe(ts.best, e if e is not None else l, epoch, ts.age, self.evaluated)
        return EarlyStopping.out_of_patience(ts.best, ts.age)

    def _epoch_row(self, epoch: int, epoch_loss: float, t0: float) -> dict:
        ts, cfg, train = self.ts, self.cfg, self.train
        row = {"epoch": epoch, "age": ts.age, "steps": ts.step, "train_loss": epoch_loss,
               "lr": self.rate.at(ts.rate, ts.age, ts.step)}
        for name, ds in (("valid", self.valid), ("test", self.test)):
            if ds is not None:
                l, e = evaluate(self.prog, self.evaluated, ds, cfg.eval_batch)
                row[f"{name}_loss"] = l
                row[f"{name}_error"] = e
        if cfg.stats:
            k = min(len(train), 500)
            row.update(layer_stats(self.prog, hosted(ts.arrays), train.x[:k],
                                   None if train.t is None else train.t[:k], hosted(self.before_last)))
        row["seconds"] = time.perf_counter() - t0
        return row

    def _finish(self, stopped: str, t_start: float) -> dict:
        ts, history = self.ts, self.history
        restored = self.early.restore(ts.best, ts.arrays)
        if not restored and ts.average is not None:
            assign(ts.arrays, ts.average.arrays)
        last = history[-1] if history else {}
        summary = {
            "epochs": len(history), "age": ts.age, "steps": ts.step, "stopped": stopped,
            "train_loss": last.get("train_loss"),
            "valid_loss": last.get("valid_loss"), "valid_error": last.get("valid_error"),
            "test_loss": last.get("test_loss"), "test_error": last.get("test_error"),
            "best_epoch": ts.best.epoch or None, "recoveries": ts.watch.recoveries, "lr": ts.rate.base,
            "seconds": time.perf_counter() - t_start,
            "examples_per_second": ts.age / self.train_seconds if self.train_seconds > 0 else None,
        }
        if restored:  # report the restored (best) parameters' scores
            for name, ds in (("valid", self.valid), ("test", self.test)):
                if ds is not None:
                    summary[f"{name}_loss"], summary[f"{name}_error"] = evaluate(self.prog, ts.arrays, ds,
                                                                                 self.cfg.eval_batch)
        if history:
            self.folder.checkpoint(ts.arrays, len(history), ts.age, final=True)
        if stopped == "interrupted":
            raise KeyboardInterrupt
        return summary

    # -- before and between epochs ----------------------------------------------------------
    def _eigen_rate(self, ts: TrainState, examples: int) -> float:
        from .eigen import largest_eigenvalue
        train = self.train
        idx = np.sort(ts.rng.choice(len(train), size=min(examples, len(train)), replace=False))
        t = None if train.t is None else train.t[idx]
        lam = largest_eigenvalue(self.prog, ts.arrays, train.x[idx], t, seed=self.cfg.seed)
        if not np.isfinite(lam) or lam <= 0:
            raise NetcError(f"lr = auto(eigen): the Hessian's largest eigenvalue came out {lam}; set lr by hand")
        self.log(f"lr = auto(eigen): lambda_max {lam:.6g} on {len(idx)} examples -> lr {1 / lam:.6g}")
        return 1.0 / lam

    def _estimate_curvature(self) -> None:
        """SDLM [EB 9.1]: before each epoch, h <- (1 - gamma) h + gamma * bbprop(batch)
        over `samples` random training examples."""
        m, train, ts, prog = self.cfg.method, self.train, self.ts, self.prog
        idx = ts.rng.choice(len(train), size=min(m.samples, len(train)), replace=False)
        fn = prog.curvature
        batch = max(1, min(self.cfg.batch, 100)) if self.cfg.batch > 1 else 25
        with np.errstate(all="ignore"):
            for lo in range(0, len(idx), batch):
                sel = idx[lo:lo + batch]
                t = None if train.t is None else train.t[sel]
                curv = fn(ts.arrays, *feeds_for(prog, train.x[sel], t)[:len(fn.feeds)])
                for name, c in zip(self.params, curv):
                    h = ts.arrays[f"{name}.curvature"]
                    h *= 1 - m.gamma
                    h += m.gamma * c


def _valid_every(cfg: TrainConfig, valid: Dataset | None) -> int | None:
    """Examples between extra validations: at least the validation set's size [PR 3.1]."""
    if cfg.valid_every is None or valid is None:
        return None
    return max(cfg.valid_every, len(valid))
