"""Training with a batch method (L-BFGS, conjugate gradient) on the whole
training set [EB 6; PR 4.1]: an epoch is the method's `iterations`
iterations over the compiled objective, the loss plus the train block's weight
decay exactly as the step's graph has it (pipeline's `value_and_grad`)."""
from __future__ import annotations

import time
import numpy as np

from .data import Dataset
from .nonfinite import check_start
from .evaluation import epoch_line, evaluate, feeds_for
from .final_scores import final_scores, per_epoch
from .optimizers import Method
from .run_folder import Interrupted
from .train_state import rng_words


def fit_batch_method(run, method: Method, train: Dataset, valid, test, epochs: int) -> dict:
    """`run`: the trainer's Run (program, cfg, state, folder, saved, log). Checkpoints at
    epoch ends only (an epoch is one call of the method); a resumed run restores
    the parameters, the float64 iterate and the counters from `run.saved`."""
    prog, cfg, state = run.program, run.cfg, run.state
    names = list(prog.spec.params)
    fn = prog.named("value_and_grad", "numpy")
    shapes = [state[k].shape for k in names]
    sizes = [int(np.prod(s)) for s in shapes]
    hyper = {"inv_examples": 1.0 / len(train)}  # the decay terms' 1/T
    evals = [0]

    def unflatten(w):
        k = 0
        for name, shape, size in zip(names, shapes, sizes):
            np.copyto(state[name], w[k:k + size].reshape(shape))
            k += size

    def fg(w):
        unflatten(w)
        evals[0] += 1
        total, grads = 0.0, [np.zeros(s) for s in shapes]
        with np.errstate(all="ignore"):
            for lo in range(0, len(train), cfg.eval_batch):
                x = train.x[lo:lo + cfg.eval_batch]
                t = None if train.t is None else train.t[lo:lo + cfg.eval_batch]
                data = feeds_for(prog, x, t)
                outs = fn(state, *data, *[hyper[k] for k in fn.feeds[len(data):]])
                if evals[0] == 1:  # the starting point: a loss not finite there is no divergence
                    check_start(prog, state, data, float(outs[0]), grads=outs[1:])
                share = len(x) / len(train)
                total += float(outs[0]) * share
                for g, o in zip(grads, outs[1:]):
                    g += o * share
        return total, np.concatenate([g.reshape(-1) for g in grads])

    w = np.concatenate([state[k].astype(np.float64).reshape(-1) for k in names])
    history, t0, done, age = [], time.perf_counter(), 0, 0
    folder, saved = run.folder, run.saved
    if saved is not None:
        for k in state:
            np.copyto(state[k], saved.arrays[f"state/{k}"])
        evals[0], age, done = (int(v) for v in saved.arrays["train/counters"])
        w = saved.arrays.get("batch/w", w)
        if w.shape != (sum(sizes),):
            raise ValueError(f"the saved iterate has {w.shape} values, the parameters {sum(sizes)}")
        history = list(saved.history)
    rng = rng_words(np.random.default_rng(0))  # unused: batch methods draw nothing

    def arrays(epoch, age):
        return {**{f"state/{k}": v for k, v in state.items()}, "batch/w": w,
                "train/counters": np.array([evals[0], age, epoch], np.int64), "train/rng": rng}

    try:
        for epoch in range(done + 1, epochs + 1):
            e0 = time.perf_counter()
            w, f, _ = method.batch(fg, w, cfg.method)
            unflatten(w)
            row = {"epoch": epoch, "age": evals[0] * len(train), "train_loss": f, "evaluations": evals[0]}
            for name, ds in (("valid", valid), ("test", test)):
                if ds is not None and per_epoch(cfg, name):  # the test set: at the end, unless test_every = epoch
                    row[f"{name}_loss"], row[f"{name}_error"] = evaluate(prog, state, ds, cfg.eval_batch)
            row["seconds"] = time.perf_counter() - e0
            history.append(row)
            folder.write(row)
            run.log(epoch_line(row, epochs))
            done, age = epoch, row["age"]
            folder.checkpoint(arrays(epoch, age), {"epoch": epoch, "age": age, "final": False})
        seconds = time.perf_counter() - t0
        summary = {**_summary(history, evals[0], seconds),
                   **final_scores(prog, state, {"valid": valid, "test": test}, cfg.eval_batch, run.unscale)}
        if history:
            folder.checkpoint(arrays(done, age), {"epoch": done, "age": age, "final": True, "summary": summary})
            folder.summary(summary)
        return summary
    except KeyboardInterrupt:
        summary = {**_summary(history, evals[0], time.perf_counter() - t0), "stopped": "interrupted",
                   "saved": folder.saved}
        folder.summary(summary)
        message = f"interrupted: {folder.saved_text()}"
        run.log(message)
        raise Interrupted(message, summary) from None
    finally:
        folder.close()


def _summary(history: list[dict], evals: int, seconds: float) -> dict:
    last = history[-1] if history else {"age": 0, "train_loss": None}
    return {"epochs": len(history), "age": last["age"], "steps": evals, "stopped": "epochs",
            "train_loss": last["train_loss"], "valid_loss": last.get("valid_loss"),
            "valid_error": last.get("valid_error"), "test_loss": last.get("test_loss"),
            "test_error": last.get("test_error"), "best_epoch": None, "recoveries": 0, "lr": None,
            "seconds": seconds, "examples_per_second": last["age"] / max(seconds, 1e-9)}
