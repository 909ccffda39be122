"""The training loop: what to feed the compiled step, and when.

`Run.fit` composes small pieces, each in a module of its own: the learning
rate (learning_rate.py), the divergence watch (divergence.py), early stopping
(early_stopping.py), Polyak averaging (averaging.py), the emphasizing scheme
(emphasis.py), the run folder's metrics and checkpoints (run_folder.py), and
the batch methods (batch_training.py). Everything the run changes lives in one
`TrainState` (train_state.py): checkpoints save it between two steps (at an
epoch's end unless the last checkpoint is too recent for its cost, and every
`checkpoint_every` inside an epoch) and a resumed run
restores it (`Saved`), so that it continues bit-identically.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from netc.compiler.errors import DataError, NetcError, SpecError
from netc.compiler.pipeline import Program

from . import emphasis
from .averaging import PolyakAverage
from .batch_training import fit_batch_method
from .config import TrainConfig
from .data import Dataset
from .divergence import Diverged, DivergenceWatch  # noqa: F401 - Diverged is part of this module's API
from .early_stopping import EarlyStopping
from .evaluation import call, epoch_line, evaluate, feeds_for, predict  # noqa: F401 - evaluate, predict: API
from .final_scores import final_scores, per_epoch
from .learning_rate import LearningRate
from .optimizers import Sampler, eigen_rate, lr_scales, method_of, preconditioner
from .presentation import epoch_order
from .progress import Progress
from .run_folder import Interrupted, RunFolder  # noqa: F401 - Interrupted is part of this module's API
from .state import assign, copy_state, hosted
from . import stats
from .train_state import EpochCursor, TrainState

CHECKPOINT_SHARE = 0.05  # at most this share of the run's time on epoch-end checkpoints


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
        self.x.take(idx, axis=0, out=b[0])  # the method: half of np.take's cost on a small batch
        if self.t is not None:
            self.t.take(idx, axis=0, out=b[1])
        return b


@dataclass
class Saved:
    """What a resumed run starts from: the training state's arrays (a checkpoint's,
    checked by checkpoint.read_train_state), the metrics rows it covers, and
    the run's bookkeeping."""
    arrays: dict[str, np.ndarray]
    history: list[dict]  # the epochs' metrics rows so far (not the partial ones)
    train_seconds: float = 0.0
    stopped: str | None = None  # "early": the run had decided to stop
    examples: int | None = None  # the training set's size then (the data must be the same)


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
    folder: RunFolder | None = None  # the run folder, opened (run_folder.py); else one for out_dir
    saved: Saved | None = None  # resume from this
    unscale: Callable | None = None  # normalize_target's inverse: the final R^2 and MSE in the target's units

    def fit(self, train: Dataset, valid: Dataset | None = None, test: Dataset | None = None,
            epochs: int | None = None) -> dict:
        if self.program.step is None:
            raise NetcError("this spec has no loss or no parameters, so there is nothing to train")
        _one_input_one_target(self.program)
        epochs = epochs or self.cfg.epochs
        if self.folder is None:
            self.folder = RunFolder.start(self.out_dir, None, "") if self.out_dir is not None else RunFolder(None)
        self.folder.meta, self.folder.extra_arrays = {**self.meta, "examples": len(train)}, self.extra_arrays
        if self.saved is not None and self.saved.examples not in (None, len(train)):
            raise DataError(f"the checkpoint's run trained on {self.saved.examples} examples, this data has "
                            f"{len(train)}: it does not fit (did the data files change?)")
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
        buffers = list(prog.spec.buffers)  # stored with the parameters: the restored network is the validated one
        self.average = PolyakAverage(self.params, buffers) if cfg.average.kind == "polyak" else None
        self.early = EarlyStopping(cfg, self.params + buffers)
        self.watch = DivergenceWatch(prog, cfg.recover, self.log)
        self.every = _valid_every(cfg, valid)
        self.hyper = {**method_of(cfg).hypers(cfg.method), "inv_examples": 1.0 / len(train)}  # step inputs by name
        # what they act on: fresh, or restored from a checkpoint
        saved = run.saved
        self.ts = self._fresh_state() if saved is None else self._restored(saved)
        self.evaluated = PolyakAverage.evaluated(self.ts.average, self.ts.arrays)  # what validation sees
        self.folder = run.folder
        if self.every is not None and self.every != cfg.valid_every:
            self.log(f"valid_every raised to {self.every}, the validation set's size")
        self.history: list[dict] = [] if saved is None else list(saved.history)
        self.train_seconds = 0.0 if saved is None else saved.train_seconds
        self.stopped = None if saved is None else saved.stopped
        self.before_last = None  # the parameters before an epoch's last step (update ratios)
        self.probe = stats.Probe.of(prog, "native" if prog.backend == "native" else "numpy") \
            if cfg.stats else None  # the statistics' function (native: compiling in the background now)
        self.stats_every = stats.every(len(train), min(len(train), stats.SAMPLE))
        self.stats_now = False  # this epoch ends with statistics
        self.bound: dict = {}  # batch size -> the step bound to ts.arrays (_bound)
        self.hyper_names = tuple(prog.step.feeds[1 + bool(prog.spec.targets):])  # the step's feeds after the data
        every = cfg.checkpoint_every
        self.ck_examples = every if isinstance(every, int) else None
        self.ck_seconds = None if isinstance(every, int) else every.args[0]
        self.ck_age, self.ck_time = self.ts.age, time.monotonic()  # the last checkpoint's
        self.ck_cost: float | None = None  # seconds the last checkpoint took to write (none yet)

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

    def _restored(self, saved: Saved) -> TrainState:
        """The training state a checkpoint saved, checked against this run's data and policies."""
        ts = TrainState.from_arrays(saved.arrays, self.run.state)
        n, c = len(self.train), ts.cursor
        misfits = {
            "the emphasized examples": (ts.missed is None) != (self.cfg.emphasize.kind != "errors")
            or (ts.missed is not None and len(ts.missed) != n),
            "the epoch's batches": c is not None and any(len(b) and int(b.max()) >= n for b in c.order),
            "the Polyak average": (ts.average is None) != (self.average is None),
        }
        bad = [what for what, wrong in misfits.items() if wrong]
        if bad:
            raise DataError(f"the checkpoint's training state does not fit this run ({', '.join(bad)}; "
                            f"{n} training examples now: did the data change?)")
        return ts

    def _refresher(self):
        if self.cfg.transforms.kind != "every":
            return None, None
        from .transforms import Refresher
        refresher = Refresher(self.prog, gamma=self.cfg.transforms.gamma, chunk=self.cfg.eval_batch)
        if not refresher.layers:
            raise NetcError("transforms = every(...) needs `transformed` layers in the spec")
        return refresher, int(self.cfg.transforms.args[0])

    def _refresh(self) -> None:
        """Before the first update and every N after [RV]: re-estimate the transformed units
        on a fresh sample (a function of seed and step: resumes draw the same), re-expressing
        the live state and the Polyak average alike; the epoch keeps the largest drift."""
        from .transforms import sample_indices
        ts, c = self.ts, self.ts.cursor
        idx = sample_indices(len(self.train), self.cfg.transforms.sample, self.cfg.seed, ts.step)
        others = (ts.average.arrays,) if ts.average is not None else ()
        d = self.refresher.refresh(ts.arrays, np.ascontiguousarray(self.train.x[idx]), others)
        c.drift = d if c.drift is None else max(c.drift, d)

    # -- the run ---------------------------------------------------------------------------
    def run_epochs(self, epochs: int) -> dict:
        ts, t_start, stopped = self.ts, time.perf_counter(), "epochs"
        try:
            if self.stopped == "early":  # a resumed run that had decided to stop
                stopped = "early"
            else:
                for epoch in range(ts.epoch + 1, epochs + 1):
                    if self._epoch(epoch, epochs):
                        stopped = "early"
                        break
            return self._finish(stopped, t_start)
        except KeyboardInterrupt:
            if ts.cursor is not None:  # in memory, the last completed epoch, not a half-trained state
                assign(ts.arrays, ts.watch.healthy)
                ts.age = ts.watch.healthy_age
            summary = {**self._summary("interrupted", t_start), "saved": self.folder.saved}
            self.folder.summary(summary)
            message = f"interrupted: {self.folder.saved_text()}"
            self.log(message)
            raise Interrupted(message, summary) from None
        finally:
            self.folder.close()

    def _epoch(self, epoch: int, epochs: int) -> bool:
        """One epoch (or the rest of one, resumed) and its end; True to stop early."""
        ts, cfg, train = self.ts, self.cfg, self.train
        t0 = time.perf_counter()
        bar = Progress(len(train), f"epoch {epoch}/{epochs}", enabled=self.run.progress)
        if ts.cursor is None:  # a new epoch: the curvature, then the order of the batches
            ts.cursor = EpochCursor([])
            self._prepare_method(ts)
            ts.cursor.order = list(epoch_order(
                len(train), cfg.batch, ts.rng, shuffle=cfg.shuffle,
                labels=train.t if train.t is not None and train.t.ndim == 1 else None,
                interleave=cfg.interleave, missed=ts.missed, ratio=emphasis.ratio(cfg)))
        else:
            bar.update(sum(len(b) for b in ts.cursor.order[:ts.cursor.index]))
        c = ts.cursor
        self.before_last = None
        self.stats_now = cfg.stats and stats.due(epoch, epochs, self.stats_every)
        stop = self._steps(epoch, bar, t0)
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
        e = row.get("valid_error")
        bar.close(**({"valid_error": f"{e * 100:.2f}%"} if e is not None else {}))  # the bar's last state
        if self.refresher is not None:
            row["transform_drift"] = c.drift  # the largest relative output change a refresh caused
        self.history.append(row)
        self.folder.write(row)
        score = row.get("valid_error") if row.get("valid_error") is not None else row.get("valid_loss")
        self.early.observe(ts.best, score, epoch, ts.age, self.evaluated)
        ts.epoch = epoch
        stop = stop or (self.valid is not None and EarlyStopping.out_of_patience(ts.best, ts.age))
        if stop or self._epoch_checkpoint_due():
            self._checkpoint(stopped="early" if stop else None)
        self.log(epoch_line(row, epochs))  # once the epoch is saved
        if stop:
            self.log(f"early stop at age {ts.age}: no new best validation score since epoch {ts.best.epoch}")
        return stop

    def _steps(self, epoch: int, bar: Progress, t0: float) -> bool:
        """The epoch's remaining steps; True when validation ran out of patience.
        Between two steps, a checkpoint when `checkpoint_every` says so."""
        ts, c = self.ts, self.ts.cursor
        last = len(c.order) - 1
        with np.errstate(all="ignore"):
            for i in range(c.index, len(c.order)):
                stop = self._step(epoch, i == last, c.order[i], bar)
                c.index = i + 1
                if stop:
                    return True
                if i < last and self._checkpoint_due():
                    self._checkpoint(partial=time.perf_counter() - t0)
        return False

    def _checkpoint_due(self) -> bool:
        if self.folder.folder is None:
            return False
        if self.ck_examples is not None:
            return self.ts.age - self.ck_age >= self.ck_examples
        return time.monotonic() - self.ck_time >= self.ck_seconds

    def _epoch_checkpoint_due(self) -> bool:
        """An epoch's end is saved unless the last checkpoint is younger than
        1/CHECKPOINT_SHARE times its own write time: on a small problem an
        epoch takes less time than a checkpoint (savez and two fsyncs, 20-40 ms
        here), so saving every epoch would cost more than training. The first
        checkpoint and the final one are always written."""
        if self.ck_cost is None:
            return True
        return time.monotonic() - self.ck_time >= self.ck_cost / CHECKPOINT_SHARE

    def _checkpoint(self, stopped: str | None = None, partial: float = 0.0) -> None:
        """The training state as it is between two steps (`partial`: seconds of
        the epoch in progress so far)."""
        ts, c = self.ts, self.ts.cursor
        meta = {"epoch": ts.epoch, "age": ts.age, "final": False, "train_seconds": self.train_seconds + partial,
                "batch": c.index if c is not None else 0, "batches": len(c.order) if c is not None else 0}
        if stopped:
            meta["stopped"] = stopped
        if self.folder.folder is None:  # no run folder: nothing to save
            return
        t0 = time.monotonic()
        self.folder.checkpoint(ts.to_arrays(), meta)
        self.ck_age, self.ck_time = ts.age, time.monotonic()
        self.ck_cost = self.ck_time - t0

    def _step(self, epoch: int, last: bool, idx: np.ndarray, bar: Progress) -> bool:
        ts, prog, cfg, hyper, c = self.ts, self.prog, self.cfg, self.hyper, self.ts.cursor
        if self.stats_now and last:
            self.before_last = copy_state(ts.arrays, self.params)
        if self.refresher is not None and ts.step % self.refresh_every == 0:
            self._refresh()
        xb, tb = self.batches.get(idx)
        data_feeds = feeds_for(prog, xb, tb)
        hyper["lr"] = self.rate.at(ts.rate, ts.age, ts.step)
        hyper["step"] = (cfg.seed << 32) + ts.step  # noise streams: one per run seed and step
        outs = self._bound(len(idx))(*data_feeds, *[hyper[k] for k in self.hyper_names])
        if ts.missed is not None:
            emphasis.record(ts.missed, idx, outs[1])  # the errors last seen
        loss = float(outs[0])
        self.watch.check_first_step(ts.watch, loss, data_feeds)  # not finite before any update: no divergence
        if DivergenceWatch.exploded(ts.watch, loss):
            self.watch.recover(ts.watch, ts.rate, ts.arrays, loss, ts.age, xb)
            DivergenceWatch.reset(ts.watch)
            return False
        n = len(idx)
        ts.age += n
        ts.step += 1
        c.loss_sum += loss * n
        c.seen += n
        if self.average is not None:
            self.average.after_step(ts.average, ts.arrays, epoch)
        if bar.enabled:  # the running loss's text only where it is drawn
            bar.update(n, loss=c.loss_sum / max(c.seen, 1))
        else:
            bar.update(n)
        if self.every is not None and ts.age >= ts.next_check:
            return self._validate_within(epoch)
        return False

    def _bound(self, n: int):
        """The train step bound to the training state for batches of n (Function.bind,
        kept here: one dictionary lookup per step instead of the call's own search)."""
        fn = self.bound.get(n)
        if fn is None:
            fn = self.bound[n] = self.prog.step.bind(self.ts.arrays, n)
        return fn

    def _validate_within(self, epoch: int) -> bool:
        """valid_every: an extra validation inside the epoch; True when out of patience."""
        ts = self.ts
        ts.next_check += self.every
        if self.average is not None:
            self.average.before_evaluation(ts.average, ts.arrays, epoch)
        l, e = evaluate(self.prog, self.evaluated, self.valid, self.cfg.eval_batch)
        self.folder.write({"epoch": epoch, "age": ts.age, "valid_loss": l, "valid_error": e, "partial": True})
        self.early.observe(ts.best, e if e is not None else l, epoch, ts.age, self.evaluated)
        return EarlyStopping.out_of_patience(ts.best, ts.age)

    def _epoch_row(self, epoch: int, epoch_loss: float, t0: float) -> dict:
        ts, cfg, train = self.ts, self.cfg, self.train
        row = {"epoch": epoch, "age": ts.age, "steps": ts.step, "train_loss": epoch_loss,
               "lr": self.rate.at(ts.rate, ts.age, ts.step)}
        for name, ds in (("valid", self.valid), ("test", self.test)):
            if ds is not None and per_epoch(cfg, name):  # the test set: at the end only, unless test_every = epoch
                l, e = evaluate(self.prog, self.evaluated, ds, cfg.eval_batch)
                row[f"{name}_loss"] = l
                row[f"{name}_error"] = e
        if self.stats_now:
            k = min(len(train), stats.SAMPLE)
            row.update(self.probe(hosted(ts.arrays), train.x[:k], None if train.t is None else train.t[:k],
                                  hosted(self.before_last)))
        row["seconds"] = time.perf_counter() - t0
        return row

    def _finish(self, stopped: str, t_start: float) -> dict:
        """The final parameters (the best, or the average) and the final checkpoint:
        'state/*' the final parameters, 'live/*' the state training would go on
        from (when they differ), so that `--resume --epochs N` can extend the run."""
        ts = self.ts
        saved = ts.to_arrays()
        live = {k[len("state/"):]: v.copy() for k, v in saved.items() if k.startswith("state/")}
        restored = self.early.restore(ts.best, ts.arrays)
        if not restored and ts.average is not None:
            assign(ts.arrays, ts.average.arrays)
        summary = self._summary(stopped, t_start, final=True)
        if self.history:
            if restored or ts.average is not None:
                saved.update({f"live/{k}": v for k, v in live.items()})
            saved.update({f"state/{k}": v for k, v in ts.arrays.items()})
            meta = {"epoch": ts.epoch, "age": ts.age, "final": True, "train_seconds": self.train_seconds,
                    "summary": summary, "batch": 0, "batches": 0}
            if stopped == "early":
                meta["stopped"] = "early"
            self.folder.checkpoint(saved, meta)
            self.folder.summary(summary)  # (netc train adds its own fields)
        return summary

    def _summary(self, stopped: str, t_start: float, final: bool = False) -> dict:
        ts, history = self.ts, self.history
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
        if final:  # the final (best, averaged) parameters' scores; the test set's only evaluation by default
            summary.update(final_scores(self.prog, ts.arrays, {"valid": self.valid, "test": self.test},
                                        self.cfg.eval_batch, self.run.unscale))
        return summary

    # -- before and between epochs ----------------------------------------------------------
    def _eigen_rate(self, ts: TrainState, examples: int) -> float:
        """1/lambda_max of P H, P the diagonal the update multiplies the gradient by
        (lr_scale; sdlm's 1/(h + mu), estimated first) [runtime/eigen.py]."""
        from .eigen import largest_eigenvalue
        train = self.train
        self._prepare_method(ts)
        precondition = preconditioner(self.cfg, lr_scales(self.prog.spec, self.cfg), ts.arrays, self.params)
        idx = np.sort(ts.rng.choice(len(train), size=min(examples, len(train)), replace=False))
        t = None if train.t is None else train.t[idx]
        lam = largest_eigenvalue(self.prog, ts.arrays, train.x[idx], t, seed=self.cfg.seed,
                                 precondition=precondition)
        if not np.isfinite(lam) or lam <= 0:
            raise NetcError(f"lr = auto(eigen): the Hessian's largest eigenvalue came out {lam}; set lr by hand")
        of = " of D^-1 H" if self.cfg.method.kind == "sdlm" else ""
        rate, how = eigen_rate(self.cfg, lam)
        self.log(f"lr = auto(eigen): lambda_max {lam:.6g}{of} on {len(idx)} examples -> lr {rate:.6g}{how}")
        return rate

    def _prepare_method(self, ts: TrainState) -> None:
        """Before an epoch: SDLM's curvature estimate, vSGD's starting averages."""
        prepare = method_of(self.cfg).prepare
        if prepare is not None and self.prog.curvature is not None:
            sampler = Sampler(self.prog, self.train.x, self.train.t, self.cfg.batch, ts.rng)
            prepare(sampler, ts.arrays, self.cfg.method)


def _valid_every(cfg: TrainConfig, valid: Dataset | None) -> int | None:
    """Examples between extra validations: at least the validation set's size [PR 3.1]."""
    if cfg.valid_every is None or valid is None:
        return None
    return max(cfg.valid_every, len(valid))


def _one_input_one_target(prog: Program) -> None:
    """Training feeds one input and one target (fit(x, t), the data block's sources): a
    step that reads a second declaration is refused at it, not fed the rate by mistake."""
    spec = prog.spec
    fed = list(spec.inputs)[:1] + list(spec.targets)[:1]
    for name in prog.step.feeds:
        if name not in fed and (name in spec.inputs or name in spec.targets):
            kind, node = ("input", spec.inputs[name]) if name in spec.inputs else ("target", spec.targets[name])
            raise SpecError(f"{kind} {name!r}: a second {kind}, which training cannot feed (it feeds one "
                            f"input and one target: {', '.join(map(repr, fed))}); remove it", node.loc)
