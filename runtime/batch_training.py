"""Training with a batch method (L-BFGS, conjugate gradient) on the whole
training set [EB 6; PR 4.1]: an epoch is the method's `iterations`
iterations over the compiled objective, the loss plus the train block's weight
decay exactly as the step's graph has it (pipeline's `value_and_grad`)."""
from __future__ import annotations

import time
import numpy as np

from .data import Dataset
from .evaluation import epoch_line, evaluate, feeds_for
from .optimizers import Method
from .run_folder import RunFolder


def fit_batch_method(run, method: Method, train: Dataset, valid, test, epochs: int) -> dict:
    """`run`: the trainer's Run (program, cfg, state, out_dir, log, meta, extra_arrays)."""
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
                share = len(x) / len(train)
                total += float(outs[0]) * share
                for g, o in zip(grads, outs[1:]):
                    g += o * share
        return total, np.concatenate([g.reshape(-1) for g in grads])

    w = np.concatenate([state[k].astype(np.float64).reshape(-1) for k in names])
    history, t0 = [], time.perf_counter()
    folder = RunFolder(run.out_dir, run.meta, run.extra_arrays)
    try:
        for epoch in range(1, epochs + 1):
            e0 = time.perf_counter()
            w, f, _ = method.batch(fg, w, cfg.method)
            unflatten(w)
            row = {"epoch": epoch, "age": evals[0] * len(train), "train_loss": f, "evaluations": evals[0]}
            for name, ds in (("valid", valid), ("test", test)):
                if ds is not None:
                    row[f"{name}_loss"], row[f"{name}_error"] = evaluate(prog, state, ds, cfg.eval_batch)
            row["seconds"] = time.perf_counter() - e0
            history.append(row)
            folder.write(row)
            run.log(epoch_line(row, epochs))
            folder.checkpoint(state, epoch, row["age"])
    finally:
        folder.close()
    last = history[-1]
    seconds = time.perf_counter() - t0
    return {"epochs": len(history), "age": last["age"], "steps": evals[0], "stopped": "epochs",
            "train_loss": last["train_loss"], "valid_loss": last.get("valid_loss"),
            "valid_error": last.get("valid_error"), "test_loss": last.get("test_loss"),
            "test_error": last.get("test_error"), "best_epoch": None, "recoveries": 0, "lr": None,
            "seconds": seconds, "examples_per_second": last["age"] / max(seconds, 1e-9)}
