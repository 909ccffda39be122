"""`netc gradcheck`: the compiled symbolic gradients against centered finite
differences (f(w+e) - f(w-e)) / 2e in float64, on a few examples [PR 4.1].

Honest about what it compared: a NaN or an infinity (in the loss, a gradient
or a difference) fails the check; an entry that is exactly zero on both sides
compares nothing and is counted apart, as is one too small for the
differences to resolve (below the round-off noise floor); the entries checked
are drawn among the nonzero analytic-gradient entries first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netc.compiler.errors import NetcError
from netc.runtime.splits import load_source

ZERO_SHARE = 4  # one pick in ZERO_SHARE goes to entries whose analytic gradient is 0 (a missed dependency)


@dataclass
class Row:
    """One parameter's comparison."""
    name: str
    shape: tuple
    checked: int = 0  # entries compared: nonzero on a side, above the noise floor
    zero: int = 0  # exactly zero on both sides: nothing compared
    noise: int = 0  # both sides below the noise floor: too small to compare
    nonfinite: int = 0  # non-finite analytic entries, or differences that were not finite
    nonzero: int = 0  # nonzero analytic entries in all
    error: float = 0.0  # the worst error: relative, its scale floored where round-off dominates
    index: tuple = ()  # where

    def failed(self, tol: float) -> bool:
        return self.nonfinite > 0 or self.error > tol

    def unchecked(self) -> bool:
        """Nothing was compared although some entry is not exactly zero."""
        return self.checked == 0 and (self.noise > 0 or self.nonzero > 0)


@dataclass
class Result:
    loss: float  # at the checked point
    rows: list[Row]
    tol: float  # the largest acceptable error
    cause: str | None = None  # why the loss is not finite, when it is not

    def ok(self) -> bool:
        tol = self.tol
        return bool(np.isfinite(self.loss)) and not any(r.failed(tol) or r.unchecked() for r in self.rows)

    def report(self) -> list[str]:
        """The table, one row a parameter, and the verdict (last line: ok or FAILED)."""
        tol = self.tol
        lines = [f"{'parameter':<20} {'shape':<12} {'checked':>7} {'zero':>5} {'noise':>5} "
                 f"{'worst rel. error':>17}  at"]
        for r in self.rows:
            flag = "  FAIL" if r.failed(tol) else "  UNCHECKED" if r.unchecked() else ""
            at = str(r.index) if r.index else "-"
            lines.append(f"{r.name:<20} {str(list(r.shape)):<12} {r.checked:>7} {r.zero:>5} {r.noise:>5} "
                         f"{r.error:>17.3e}  {at}{flag}")
        checked, zero = sum(r.checked for r in self.rows), sum(r.zero for r in self.rows)
        lines.append(f"  checked: entries compared; zero: exactly 0 on both sides; noise: both sides below the "
                     f"round-off floor of the differences (neither counts as checked)")
        lines.append(f"  error: |numeric - analytic| / max(|numeric|, |analytic|, floor / tolerance): relative, "
                     f"but an entry within the round-off floor passes; {zero} zero entries in all")
        worst = max((r.error for r in self.rows), default=0.0)
        if not np.isfinite(self.loss):
            lines.append(f"FAILED: the loss is not finite ({self.loss:g}) at the checked parameters, so no "
                         f"gradient can be compared. Likely cause: {self.cause}")
            return lines
        verdict = "ok" if self.ok() else "FAILED"
        lines.append(f"{verdict}: worst relative error {worst:.3e} (tolerance {tol:g}), {checked} entries checked")
        nonfinite = [f"{r.name} ({r.nonfinite})" for r in self.rows if r.nonfinite]
        if nonfinite:
            lines.append(f"FAILED: gradient entries that are not finite: {', '.join(nonfinite)}")
        unchecked = [r.name for r in self.rows if r.unchecked()]
        if unchecked:
            lines.append(f"FAILED: nothing compared for {', '.join(unchecked)}: every entry tried is below the "
                         f"noise floor of finite differences in float64 (round-off in a loss of {self.loss:.3g})")
        return lines


def sample_batch(model, examples: int, rng: np.random.Generator):
    """A few training examples (normalized) if the spec has data, else random ones."""
    spec = model.program.spec
    dtype = spec.graph.float_dtype
    x = t = None
    if model.data_cfg.train is not None:
        ds = load_source(model.data_cfg.train, model.base_dir)
        idx = rng.choice(len(ds), size=min(examples, len(ds)), replace=False)
        from netc.runtime import normalize
        norm = normalize.fit(model.data_cfg.normalize, ds.x[: min(len(ds), 5000)])
        x = norm.apply(ds.x[idx]).astype(dtype)
        t = None if ds.t is None else ds.t[idx]
    else:
        (xn,) = list(spec.inputs.values())[:1]
        x = rng.normal(size=(examples,) + tuple(xn.shape[1:])).astype(dtype)
    feeds = [x]
    for tn in spec.targets.values():
        if t is None or (tn.dtype != "int64" and t.ndim == 1):
            n = tn.attr("classes")
            t = rng.integers(0, n, size=len(x)) if n else rng.uniform(size=(len(x),) + tuple(tn.shape[1:]))
        feeds.append(t.astype(tn.dtype))
    return feeds


def pick_entries(g: np.ndarray, entries: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `entries` flat indices: nonzero analytic-gradient entries first (they
    show a wrong derivative), a share kept for zero ones (they show a missed one)."""
    flat = g.reshape(-1)
    nonzero, zero = np.flatnonzero(flat != 0), np.flatnonzero(flat == 0)
    n_zero = min(len(zero), entries // ZERO_SHARE)
    n_nonzero = min(len(nonzero), entries - n_zero)
    n_zero = min(len(zero), entries - n_nonzero)  # fewer nonzero entries: fill with zero ones
    return np.concatenate([rng.choice(nonzero, n_nonzero, replace=False),
                           rng.choice(zero, n_zero, replace=False)]).astype(np.int64)


def gradcheck(model, examples: int = 4, entries: int = 20, seed: int = 0, eps: float = 1e-6,
              tol: float = 1e-5) -> Result:
    prog = model.program
    spec = prog.spec
    if prog.loss is None or not spec.params:
        raise NetcError(f"netc gradcheck: this spec has no {'loss' if prog.loss is None else 'parameters'}, "
                        f"so there is no gradient to check")
    rng = np.random.default_rng(seed)
    feeds = sample_batch(model, examples, rng)
    names = list(spec.params)
    fn = prog.function([prog.loss] + [prog.grads[n] for n in names], spec.feeds, name="loss_and_grads")
    state = {k: v.copy() for k, v in model.state.items()}
    with np.errstate(all="ignore"):
        outs = fn(state, *feeds)
    f0, analytic = float(outs[0]), [np.array(g, np.float64) for g in outs[1:]]
    if not np.isfinite(f0):
        from netc.runtime.nonfinite import likely_cause
        return Result(f0, [Row(n, state[n].shape, nonfinite=int(np.sum(~np.isfinite(g))))
                           for n, g in zip(names, analytic)], tol, likely_cause(prog, state, feeds))
    loss = prog.function([prog.loss], spec.feeds, name="loss")

    def f() -> float:
        with np.errstate(all="ignore"):
            return float(loss(state, *feeds)[0])

    rows = []
    for name, g in zip(names, analytic):
        w = state[name]
        flat, gflat = w.reshape(-1), g.reshape(-1)
        row = Row(name, w.shape, nonfinite=int(np.sum(~np.isfinite(gflat))), nonzero=int(np.count_nonzero(gflat)))
        for i in pick_entries(g, entries, rng):
            old = flat[i]
            flat[i] = old + eps
            fp = f()
            flat[i] = old - eps
            fm = f()
            flat[i] = old
            num, ana = (fp - fm) / (2 * eps), float(gflat[i])
            if not (np.isfinite(num) and np.isfinite(ana)):
                row.nonfinite += int(np.isfinite(ana))  # a non-finite analytic entry is counted already
                row.index = row.index or _at(i, w.shape)
                continue
            if num == 0 and ana == 0:
                row.zero += 1
                continue
            # round-off in f(w +- eps) sets a floor below which differences mean nothing
            noise = 10 * np.finfo(np.float64).eps * max(1.0, abs(fp), abs(fm)) / eps
            if max(abs(num), abs(ana)) <= noise:
                row.noise += 1
                continue
            row.checked += 1
            # relative, except that no scale is below noise / tol: a difference within round-off passes
            err = abs(num - ana) / max(abs(num), abs(ana), noise / tol)
            if err >= row.error:
                row.error, row.index = err, _at(i, w.shape)
        rows.append(row)
    return Result(f0, rows, tol)


def _at(i, shape) -> tuple:
    return tuple(int(k) for k in np.unravel_index(int(i), shape))
