"""A compiled program applied to data: the feeds for a batch, the mean loss and
error rate over a dataset, predictions in batches, what the output is (labels,
probabilities: `Head`), the scores the API reports (accuracy, R^2), and the
one-line epoch report."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.node import toposort
from netc.compiler.pipeline import Program, to_host

from .data import Dataset


def feeds_for(program: Program, x, t) -> list:
    spec = program.spec
    out = [x]
    if spec.targets:
        if t is None:
            raise NetcError("this spec has a target but the data has no targets")
        out.append(t)
    return out


def call(fn, state: dict, program: Program, x, t=None):
    """`fn` on the feeds it reads, chosen by name (a function reads only the feeds its
    outputs depend on: an evaluation whose loss does not read x takes t alone); one
    that reads none (a constant output) is still sized for len(x) examples."""
    spec = program.spec
    fed = dict(zip(list(spec.inputs)[:1], [x]))
    if t is not None:
        fed.update(zip(list(spec.targets)[:1], [t]))
    missing = [name for name in fn.feeds if name not in fed]
    if missing:
        raise NetcError(f"this spec reads '{missing[0]}' but the data has none")
    args = [fed[name] for name in fn.feeds]
    return fn(state, *args) if args else fn.bind(state, len(x))()


def evaluate(program: Program, state: dict, ds: Dataset, batch: int) -> tuple[float, float | None]:
    """Mean loss and error rate (class targets) over a dataset."""
    fn = program.evaluate
    total, errors, n = 0.0, 0.0, len(ds)
    with np.errstate(all="ignore"):
        for lo in range(0, n, batch):
            x = ds.x[lo:lo + batch]
            t = None if ds.t is None else ds.t[lo:lo + batch]
            outs = call(fn, state, program, x, t)
            total += float(outs[0]) * len(x)
            if len(outs) > 1:
                errors += float(outs[1])
    return total / n, (errors / n if program.errors is not None else None)


def predict(program: Program, state: dict, x: np.ndarray, batch: int) -> np.ndarray:
    fn = program.predict
    out = None
    for lo in range(0, len(x), batch):
        (y,) = call(fn, state, program, x[lo:lo + batch])
        if out is None:
            out = np.empty((len(x),) + y.shape[1:], y.dtype)
        out[lo:lo + len(y)] = to_host(y)
    return out


LINKS = ("softmax", "sigmoid")  # the functions that turn an output into probabilities


@dataclass(frozen=True)
class Head:
    """What the spec's output is, read from the spec (not guessed from numbers):
    whether `predict` gives labels, and how `predict_proba` gets probabilities.
    `link` is the softmax/sigmoid the loss applies to the output (`nll(softmax(y), t)`:
    y is scores), else the one the output is (`applied`)."""
    classes: int | None  # the class(n) target's n; None: real targets, or no target
    width: int | None  # k for an [B, k] output
    link: str | None
    applied: bool
    output: str  # the output's name, for messages

    @property
    def labels(self) -> bool:
        """Labels come out: a class(n) target with n outputs (argmax), or class(2) with one (threshold)."""
        return self.classes is not None and (self.width == self.classes or (self.classes == 2 and self.width == 1))


def head_of(spec) -> Head:
    """The Head of an elaborated spec (its output and loss nodes, before simplification)."""
    out = spec.output
    t = next(iter(spec.targets.values()), None)
    classes = None if t is None else t.attr("classes")
    if out is None:
        return Head(classes, None, None, False, "output")
    width = out.shape[1] if out.ndim == 2 and out.shape[0] is None else None
    name = out.name or next((k for k, v in spec.named.items() if v is out), "output")
    for n in ([] if spec.loss is None else toposort([spec.loss])):  # the loss's probabilities first:
        if _is_link(n) and n.inputs[0].id == out.id:  # nll(softmax(y), t) with a sigmoid y is a softmax model
            return Head(classes, width, n.op, False, name)
    if _is_link(out):
        return Head(classes, width, out.op, True, name)
    return Head(classes, width, None, False, name)


def _is_link(n) -> bool:
    if n.op == "softmax":  # over the features, not the batch
        return n.ndim == 2 and tuple(n.attr("axes") or (-1,)) in ((1,), (-1,))
    return n.op == "sigmoid"


def labels(head: Head, y: np.ndarray) -> np.ndarray:
    """Class labels 0..n-1 from outputs `y` [n, k]: argmax, or for one output the side
    of 0.5 (a probability) or of 0 (a score), as scikit-learn's binary classifiers do."""
    if head.width == 1:
        return (y[:, 0] > (0.5 if head.applied and head.link == "sigmoid" else 0)).astype(np.int64)
    return np.argmax(y, axis=-1).astype(np.int64)


def probabilities(head: Head, y: np.ndarray) -> np.ndarray:
    """Class probabilities from outputs `y`; one sigmoid output gives the two columns
    [1 - p, p] (scikit-learn's predict_proba for a binary problem)."""
    if head.link is None or head.width is None:
        raise NetcError(f"predict_proba: the output '{head.output}' is not probabilities: it is not a softmax "
                        f"or sigmoid, and the loss applies neither to it; use predict_raw for the output itself")
    y = y.astype(np.float64)
    if not head.applied:
        if head.link == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        else:
            y = 0.5 * (1 + np.tanh(0.5 * y))  # the logistic function, without overflow
    if head.link == "sigmoid" and head.width == 1:
        y = np.concatenate([1 - y, y], axis=1)
    return y


def r2(y: np.ndarray, t: np.ndarray) -> float:
    """The coefficient of determination, averaged over the output columns (scikit-learn's
    r2_score: 1 is perfect, 0 is predicting the mean; a constant column counts 1 if fit exactly, else 0)."""
    y, t = np.asarray(y, np.float64).reshape(len(y), -1), np.asarray(t, np.float64).reshape(len(t), -1)
    res = ((t - y) ** 2).sum(axis=0)
    tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(tot > 0, 1 - res / np.where(tot > 0, tot, 1), np.where(res == 0, 1.0, 0.0))
    return float(per.mean())


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"age {row['age']}", f"train_loss {row['train_loss']:.4f}"]
    for k in ("valid_error", "test_error"):
        if row.get(k) is not None:
            parts.append(f"{k} {row[k] * 100:.2f}%")
    for k in ("valid_loss",):
        if row.get(k) is not None and row.get("valid_error") is None:
            parts.append(f"{k} {row[k]:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
