"""`netc hessian`: the curvature of a spec's loss at its initialization or at a
trained run's parameters [EB 8, Figs 19-21].

- The largest eigenvalues of the Hessian (or the Gauss-Newton matrix) by Lanczos
  with full reorthogonalization on matrix-vector products (never forming the
  matrix), each with its residual ||M y - theta y|| (a bound on its error). When
  the Krylov space closes (a small net) the values are exact to round-off.
- The condition estimate is what can honestly be computed this way: the spread
  lambda_1 / lambda_k of the top k, and the most negative Ritz value (the lower
  end of the spectrum). The full lambda_max / lambda_min is not estimated: for a
  network lambda_min is about zero or negative.
- Per parameter, the mean diagonal curvature: bbprop's Gauss-Newton diagonal
  (what sdlm and vsgd use; cross terms between units dropped) beside the mean
  diagonal of the chosen matrix itself: exact for a block of at most `probes`
  entries, else Hutchinson's estimator (E[v * M v] for random signs v on that
  block alone) with its standard error: how far bbprop is from it shows.

Cost: `steps` + about `probes` per parameter matrix-vector products (each a
forward and two backward passes over the examples); memory: the Lanczos basis,
steps x parameters x 8 bytes.

Everything runs in float64 on the host.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from netc.compiler.errors import DataError, Loc, NetcError, SpecError
from netc.compiler.gauss_newton import curvature_diagonal_function, gauss_newton_vector_function
from netc.compiler.pipeline import hessian_vector_function
from netc.runtime import normalize
from netc.runtime.eigen import lanczos
from netc.runtime.optimizers import eigen_rate
from netc.runtime.splits import load_source

MATRICES = ("hessian", "gauss-newton")


@dataclass
class ParamRow:
    name: str
    shape: list[int]
    bbprop: float  # mean of bbprop's Gauss-Newton diagonal
    diagonal: float  # mean diagonal of the chosen matrix (Hutchinson)
    diagonal_se: float  # its standard error


@dataclass
class Report:
    matrix: str
    where: str  # "initialization (seed S)" or the run folder
    examples: int
    parameters: int
    steps: int  # Lanczos steps taken
    closed: bool  # the Krylov space closed: the eigenvalues are exact (up to round-off)
    eigenvalues: list[float]  # the k largest, descending
    residuals: list[float]
    smallest: float  # the most negative (smallest) Ritz value
    probes: int
    rows: list[ParamRow] = field(default_factory=list)
    method_limit: str | None = None  # the stability limit of the spec's own sgd with momentum, where it has one

    @property
    def spread(self) -> float | None:
        """lambda_1 / lambda_k of the computed ones (None unless lambda_k > 0)."""
        last = self.eigenvalues[-1]
        return self.eigenvalues[0] / last if last > 0 else None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "spread": self.spread}, indent=2)

    def table(self) -> str:
        what = "Hessian" if self.matrix == "hessian" else "Gauss-Newton matrix"
        k = len(self.eigenvalues)
        out = [f"{what} of the mean loss on {self.examples} training examples, parameters at {self.where} "
               f"({self.parameters} in all, float64)",
               f"largest {k} eigenvalues: Lanczos, {self.steps} steps with full reorthogonalization"
               + (" (the Krylov space closed: exact up to round-off)" if self.closed else ""),
               f"  {'#':>3}  {'eigenvalue':>12}  {'residual':>9}"]
        out += [f"  {i:>3}  {lam:>12.5g}  {r:>9.2g}" for i, (lam, r) in
                enumerate(zip(self.eigenvalues, self.residuals), 1)]
        lam = self.eigenvalues[0]
        out.append(f"smallest Ritz value: {self.smallest:.5g} (the lower end of the spectrum"
                   + (", negative curvature)" if self.smallest < 0 else ")"))
        if self.spread is not None:
            out.append(f"condition estimate lambda_1/lambda_{k} = {self.spread:.4g}: the spread of the top {k} only "
                       f"(the full lambda_max/lambda_min is not estimated; lambda_min is ~0 or negative here)")
        else:
            out.append(f"condition estimate: none (lambda_{k} <= 0)")
        if lam > 0:
            out.append(f"plain SGD on this matrix is stable for lr < 2/lambda_max = {2 / lam:.4g} "
                       f"(lr = auto(eigen) picks 1/lambda_max = {1 / lam:.4g})")
        if self.method_limit:
            out.append(self.method_limit)
        name = "Hessian" if self.matrix == "hessian" else "Gauss-Newton"
        out.append(f"mean diagonal curvature per parameter (bbprop: the Gauss-Newton diagonal sdlm/vsgd use, "
                   f"cross terms between units dropped; {name}: exact for blocks of <= {self.probes} entries, "
                   f"else Hutchinson with {self.probes} probes of the block, +- 1 s.e.):")
        width = max([9] + [len(r.name) for r in self.rows])
        out.append(f"  {'parameter':<{width}}  {'shape':<12}  {'bbprop':>10}  {name + ' diagonal':>22}")
        for r in self.rows:
            out.append(f"  {r.name:<{width}}  {str(r.shape):<12}  {r.bbprop:>10.4g}  "
                       f"{r.diagonal:>10.4g} +- {r.diagonal_se:<9.2g}")
        ws = [r.bbprop for r in self.rows if len(r.shape) >= 2 and r.bbprop > 0]
        if len(ws) >= 2:
            out.append(f"weight matrices' bbprop means differ by {max(ws) / min(ws):.3g}x: one rate for all is "
                       f"limited by the most curved (per-layer rates: lr_scale SELECTOR = ... [EB 4.7])")
        return "\n".join(out)


def analyze(model, x: np.ndarray, t, *, k: int = 5, matrix: str = "hessian", steps: int = 40,
            probes: int = 10, seed: int = 0, where: str = "initialization") -> Report:
    """The report for `model` (compiled in float64) on the examples (x, t)."""
    prog = model.program
    if matrix not in MATRICES:
        raise NetcError(f"unknown matrix {matrix!r}; choose one of {', '.join(MATRICES)}")
    fn = hessian_vector_function(prog) if matrix == "hessian" else gauss_newton_vector_function(prog)
    names = list(prog.spec.params)
    state = model.state
    shapes = [state[n].shape for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    n = sum(sizes)
    if not 1 <= k < n:
        raise NetcError(f"--k {k}: asks for {k} eigenvalues of a {n}x{n} matrix; give 1 <= k < {n}")
    spec = prog.spec
    fed = {**dict(zip(list(spec.inputs)[:1], [x])), **({} if t is None else dict(zip(list(spec.targets)[:1], [t])))}

    def feeds(f, count: int) -> list:
        """The data `f`'s first `count` feeds read, by name (a function reads only those its
        outputs depend on: a loss linear in x's weights gives a curvature reading none)."""
        missing = [name for name in f.feeds[:count] if name not in fed]
        if missing:
            raise NetcError(f"this spec reads '{missing[0]}' but the data has none")
        return [fed[name] for name in f.feeds[:count]]

    data = feeds(fn, len(fn.feeds) - len(names))
    cuts = np.cumsum(sizes)[:-1]

    def matvec(v: np.ndarray) -> np.ndarray:
        parts = [a.reshape(s) for a, s in zip(np.split(v, cuts), shapes)]
        with np.errstate(all="ignore"):
            out = fn(state, *data, *parts)
        return np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in out])

    rng = np.random.default_rng(seed)
    theta, res, m, closed = lanczos(matvec, n, max(steps, k), rng)
    order = np.argsort(theta)[::-1][:k]
    eig = [float(theta[i]) for i in order]
    if len(eig) < k:
        raise NetcError(f"--k {k}: the Krylov space closed after {m} steps, so only {m} distinct eigenvalues "
                        f"exist to report; ask for fewer")
    bb_fn = curvature_diagonal_function(prog)
    with np.errstate(all="ignore"):
        bb = [np.array(b, dtype=np.float64) for b in bb_fn(state, *feeds(bb_fn, len(bb_fn.feeds)))]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rows = []
    for i, (name, shape, b) in enumerate(zip(names, shapes, bb)):
        mean, se = _block_diagonal(matvec, n, starts[i], sizes[i], probes, rng)
        rows.append(ParamRow(name, list(shape), float(np.mean(b)), mean, se))
    return Report(matrix, where, len(x), n, m, closed, eig, [float(res[i]) for i in order],
                  float(theta.min()), probes, rows)


def _block_diagonal(matvec, n: int, start: int, size: int, probes: int, rng) -> tuple[float, float]:
    """(mean, standard error) of the diagonal of one parameter's block: exact from unit
    vectors where the block has at most `probes` entries, else Hutchinson's estimator
    with random signs on the block only (zero elsewhere, so the other blocks add no noise)."""
    if size <= probes:
        total = 0.0
        for j in range(start, start + size):
            e = np.zeros(n)
            e[j] = 1.0
            total += matvec(e)[j]
        return float(total / size), 0.0
    means = np.zeros(probes)
    for s in range(probes):
        v = np.zeros(n)
        v[start:start + size] = rng.choice([-1.0, 1.0], size=size)
        means[s] = np.mean(v[start:start + size] * matvec(v)[start:start + size])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan")


# ---------------------------------------------------------------------------- the command


def command(spec: str, run: str | None = None, k: int = 5, matrix: str = "hessian", batches: int = 10,
            steps: int = 40, probes: int = 10, seed: int = 0, as_json: bool = False) -> str:
    """What `netc hessian` prints: the spec's training data (a random `batches`
    minibatches' worth, normalized as training does) at its initialization, or at the
    parameters of the run folder `run` (its stored normalization)."""
    from netc.dims import bound_by_data_block
    from netc.model import compile as compile_model
    from netc.model import load
    m = bound_by_data_block(compile_model(Path(spec), dtype="float64"), "netc hessian")  # `_` sizes
    where = f"initialization, seed {m.train_cfg.seed}"
    norm = None
    if run is not None:
        trained = load(run)
        _copy_state(trained, m, run)
        norm, where = trained.normalizer, f"run {run}"
    x, t = _examples(m, batches * m.train_cfg.batch, seed, norm)
    report = analyze(m, x, t, k=k, matrix=matrix, steps=steps, probes=probes, seed=seed, where=where)
    report.method_limit = _method_limit(m.train_cfg, report.eigenvalues[0])
    return report.to_json() if as_json else report.table()


def _method_limit(cfg, lam: float) -> str | None:
    """The spec's own sgd with momentum: its stability limit on this matrix (twice the rate
    auto(eigen) would pick, runtime/optimizers.eigen_rate). Not where lr_scale changes
    the matrix the step multiplies by."""
    m = cfg.method
    if m.kind != "sgd" or not m.momentum or lam <= 0 or cfg.lr_scale != 1 or \
            any(g[0] == "lr_scale" for g in cfg.groups):
        return None
    lr = cfg.lr if isinstance(cfg.lr, (int, float)) else m.lr
    limit = 2 * eigen_rate(cfg, lam)[0]
    shown = f"{lr:g}" if isinstance(lr, (int, float)) else "auto(eigen)"
    return (f"the spec's sgd with {'Nesterov ' if m.nesterov else ''}momentum {m.momentum:g} is stable on this "
            f"matrix for lr < {limit:.4g} (its lr: {shown})")


def _copy_state(trained, m, run) -> None:
    """The run's parameters (and buffers) into the spec's model; they must match."""
    for name, p in m.params.items():
        if name not in trained.state:
            raise DataError(f"{run}: the run has no parameter '{name}' of the spec (a different network?)")
        if trained.state[name].shape != p.shape:
            raise DataError(f"{run}: parameter '{name}' has shape {list(trained.state[name].shape)} in the run, "
                            f"{list(p.shape)} in the spec")
    extra = sorted(set(trained.params) - set(m.params))
    if extra:
        raise DataError(f"{run}: the run has parameters the spec lacks: {', '.join(extra[:5])}")
    for name, a in m.state.items():
        if name in trained.state and trained.state[name].shape == a.shape:
            a[...] = np.asarray(trained.state[name], dtype=a.dtype)


def _examples(m, n: int, seed: int, norm):
    """`n` random training examples of the spec's data block, normalized (by `norm`,
    else as training would: fitted on the whole training set)."""
    spec = m.program.spec
    if m.data_cfg.train is None:
        where = spec.block_locs.get("data") or spec.block_locs.get("train") or Loc(m.file, 1, 1)
        raise SpecError("netc hessian measures the loss on training data: add data { train = ... }",
                        where, m.text)
    ds = load_source(m.data_cfg.train, m.base_dir)
    if norm is None:
        norm = normalize.fit(m.data_cfg.normalize, ds.x)
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    x = np.ascontiguousarray(norm.apply(ds.x[idx]).astype(np.float64))
    t = None
    if spec.targets:
        if ds.t is None:
            raise DataError(f"{ds.name}: the spec has a target but the training data has none")
        tnode = next(iter(spec.targets.values()))
        t = ds.t[idx].astype(tnode.dtype)
        if tnode.dtype != "int64" and t.ndim == 1:
            t = t[:, None]
    return x, t
