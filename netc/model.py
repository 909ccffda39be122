"""The Python API: compile a spec into a Model that can fit, predict, score,
save and load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netc.compiler.blocks import Formula, select_params
from netc.compiler.spec import Spec
from netc.compiler.errors import DataError, NetcError, SpecError
from netc.compiler import lower_cuda
from netc.compiler.lower_numpy import lower
from netc.compiler.ops import expected
from netc.compiler.pipeline import compile_program, parse_and_elaborate
from netc.compiler.update import Optimizer
from netc.runtime import checkpoint, data, normalize
from netc.runtime.config import DataConfig, TrainConfig, from_block
from netc.search_space import SearchConfig, Space, search_block
from netc.runtime.splits import load_splits
from netc.runtime.state import assign, init_state
from netc.runtime.trainer import Run, evaluate, predict

VERSION = "0.1.0"


def read_spec(path_or_text: str | Path) -> tuple[str, str]:
    """(text, file name) from a path to a .net file, or from spec text itself."""
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and "\n" not in path_or_text
                                          and (path_or_text.endswith(".net") or Path(path_or_text).is_file())):
        p = Path(path_or_text)
        try:
            return p.read_text(), str(p)
        except OSError as e:
            raise NetcError(f"cannot read spec {p}: {e.strerror or e}") from None
    return str(path_or_text), "<spec>"


def lr_scales(spec: Spec, cfg: TrainConfig) -> dict[str, float]:
    """Per-parameter learning-rate factors from `lr_scale` (a number, or a formula
    of fan_in, fan_out and size), then the `lr_scale SELECTOR = ...` groups in order."""
    params = spec.params
    out: dict[str, float] = {}
    for name, p in params.items():
        out[name] = _scale_value(cfg.lr_scale, _fan_names(params, name))
    for key, selector, value, loc in cfg.groups:
        if key == "lr_scale":
            for p in select_params(params, selector, loc):
                out[p.name] = _scale_value(value, _fan_names(params, p.name))
        elif key == "freeze":
            if not isinstance(value, bool):
                raise SpecError(f"freeze {selector} takes true or false, got {value!r}", loc)
            for p in select_params(params, selector, loc):
                if value:
                    out[p.name] = 0.0
    return out


def optimizer_for(spec: Spec, cfg: TrainConfig) -> Optimizer:
    """The update-graph description of the train block's method and decay keys."""
    m = cfg.method
    l2, l1 = _group_values(spec, cfg, "decay"), _group_values(spec, cfg, "l1")
    if m.kind in ("lbfgs", "cg"):  # batch methods drive the compiled loss-and-gradient themselves
        return Optimizer(kind="sgd", l2=l2, l1=l1)
    extra = {k: getattr(m, k) for k in ("eps", "mu", "tau0", "alpha", "beta", "delta") if hasattr(m, k)}
    return Optimizer(kind=m.kind, momentum=getattr(m, "momentum", 0) > 0, nesterov=getattr(m, "nesterov", False),
                     l2=l2, l1=l1, lr0=m.lr if isinstance(m.lr, (int, float)) else 0.01, **extra)


def _weight_decay(spec: Spec, cfg: TrainConfig):
    return _group_values(spec, cfg, "decay"), _group_values(spec, cfg, "l1")


def _group_values(spec: Spec, cfg: TrainConfig, key: str) -> dict[str, float]:
    """Per-parameter values of `key`: its plain value on the weights (biases excluded,
    [PR 3.2]), then `key SELECTOR = value` entries in order."""
    base = float(getattr(cfg, key))
    out = {name: base for name, p in spec.params.items() if p.ndim >= 2 and base}
    for k, selector, value, loc in cfg.groups:
        if k != key:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SpecError(f"{key} {selector} must be a number >= 0, got {value!r}", loc)
        for p in select_params(spec.params, selector, loc):
            out[p.name] = float(value)
    return {k: v for k, v in out.items() if v}


def _fan_names(params: dict, name: str) -> dict[str, float]:
    p = params[name]
    if p.ndim >= 2:
        return {"fan_in": float(p.shape[0]), "fan_out": float(p.shape[-1]), "size": float(np.prod(p.shape))}
    # a bias: the fan-in of the weight feeding the same units in the same layer
    prefix = name.rsplit(".", 1)[0] if "." in name else ""
    for other in params.values():
        if other.ndim == 2 and other.shape[-1] == p.shape[-1] and other.name.rsplit(".", 1)[0] == prefix:
            return {"fan_in": float(other.shape[0]), "fan_out": float(p.shape[-1]), "size": float(p.shape[0])}
    return {"fan_in": 1.0, "fan_out": float(p.shape[-1] if p.shape else 1), "size": float(np.prod(p.shape))}


def _scale_value(value, names) -> float:
    """The train block validated the value (runtime/config._scale); formulas are
    checked for a finite real result as they are evaluated."""
    v = float(value.evaluate(names)) if isinstance(value, Formula) else float(value)
    if v < 0:
        raise SpecError(f"lr_scale came out negative ({v:g})", value.expr.loc if isinstance(value, Formula) else None)
    return v


def _check_gpu_settings(cfg: TrainConfig) -> None:
    """Settings whose work runs on the host over NumPy state: not with device="gpu" yet."""
    from netc.runtime.config import BATCH_METHODS
    why = []
    if getattr(cfg.method, "kind", None) in BATCH_METHODS:
        why.append(f"method = {cfg.method.kind}(...) (batch methods run on the host)")
    if cfg.lr is not None and not isinstance(cfg.lr, (int, float)):
        why.append("lr = auto(eigen) (the power method runs on the host)")
    if cfg.transforms.kind == "every":
        why.append("transforms = every(...) (the refresh runs on the host)")
    if why:
        raise NetcError(f"device 'gpu' does not support {' or '.join(why)} yet; use device 'cpu'")


class Model:
    """A compiled spec with its parameters.

    `fit` trains on the spec's data block or on arrays; `predict` applies the
    stored input normalization then the network; `save`/`netc.load` round-trip
    everything through one .npz without pickle.
    """

    def __init__(self, text: str, file: str = "<spec>", *, seed: int | None = None,
                 dtype: str | None = None, debug: bool = False, device: str = "cpu"):
        self.text, self.file = text, file
        if device not in ("cpu", "gpu"):
            raise NetcError(f"unknown device {device!r}; choose 'cpu' or 'gpu'")
        self.device = device
        cupy = lower_cuda.require_gpu() if device == "gpu" else None  # fail before compiling
        configs = {"train": TrainConfig(), "data": DataConfig()}
        space = Space(text)  # distributions in the data/train blocks (netc/search.py)
        self.search_cfg: SearchConfig | None = None

        def check_block(name, entries, loc):
            if name == "search":
                self.search_cfg = search_block(entries, text, loc)
            elif name in configs and not space.add(name, entries, type(configs[name]), loc):
                configs[name] = from_block(type(configs[name]), entries, text, loc)

        spec = parse_and_elaborate(text, file, check_block=check_block)
        # a search space: train the point drawn from the seed (the trial seed = the train seed)
        self.space, self.sampled = space.dists, {}
        if space:
            self.sampled = space.sample(seed if seed is not None else space.default_seed(configs["train"]))
            configs.update(space.configs(self.sampled))
        self.train_cfg, self.data_cfg = configs["train"], configs["data"]
        if seed is not None:
            self.train_cfg.seed = seed
        if dtype is not None:
            self.train_cfg.dtype = dtype
        if self.train_cfg.dtype != spec.graph.float_dtype:
            spec = parse_and_elaborate(text, file, self.train_cfg.dtype)
        self.program = compile_program(spec, scales=lr_scales(spec, self.train_cfg),
                                       optimizer=optimizer_for(spec, self.train_cfg), debug=debug,
                                       step_misses=self.train_cfg.emphasize.kind == "errors")
        if self.train_cfg.emphasize.kind == "errors" and self.program.errors is None:
            raise SpecError("emphasize = errors(...) needs a class(n) target and an [B, n] output",
                            spec.block_locs.get("train"), text)
        self.state = init_state(self.program.state_leaves, self.train_cfg.seed, self.train_cfg.init_scale)
        if cupy is not None:  # parameters and optimizer state live on the device
            _check_gpu_settings(self.train_cfg)
            lower_cuda.lower_program(self.program)
            self.state = lower_cuda.to_device(self.state, cupy)
        self.normalizer = normalize.fit("none", np.zeros((1, 1)))
        self.summary: dict | None = None

    # -- inspection --------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return {k: self.state[k] for k in self.program.spec.params}

    @property
    def base_dir(self) -> Path:
        return Path(self.file).parent if not self.file.startswith("<") else Path.cwd()

    # -- training ------------------------------------------------------------------
    def fit(self, x=None, t=None, *, valid=None, test=None, epochs: int | None = None,
            out: str | Path | None = None, progress: bool | None = False, log=None,
            limit: int | None = None) -> dict:
        """Train. With no arrays, uses the spec's data block; `valid`/`test` may be (x, t) pairs.
        `limit` keeps the first `limit` examples of each split (quick smoke runs)."""
        if x is None:
            if self.data_cfg.train is None:
                raise SpecError("the spec has no training data: add data { train = ... } or pass arrays to fit",
                                self.program.spec.block_locs.get("data"), self.text)
            splits = load_splits(self.data_cfg, self.base_dir)
            train, valid_ds, test_ds = splits.train, splits.valid, splits.test
        else:
            train = data.arrays(x, t, "fit(x, t)")
            valid_ds = None if valid is None else data.arrays(*valid, name="valid")
            test_ds = None if test is None else data.arrays(*test, name="test")
        if limit is not None:
            train, valid_ds, test_ds = (None if d is None else d.slice(0, min(limit, len(d)))
                                        for d in (train, valid_ds, test_ds))
        norm = normalize.fit(self.data_cfg.normalize, train.x)  # may change the width (pca dims)
        self._check_data(train, norm)
        self.normalizer = norm
        dtype = self.program.spec.graph.float_dtype
        prepared = [None if d is None else self._prepare(d, dtype) for d in (train, valid_ds, test_ds)]
        run = Run(self.program, self.train_cfg, self.state, Path(out) if out else None, progress,
                  log or (lambda s: None), meta=self._meta(), extra_arrays=self._extra_arrays,
                  decay=_weight_decay(self.program.spec, self.train_cfg))
        self.summary = run.fit(*prepared, epochs=epochs)
        if self.sampled:
            self.summary["sampled"] = {k: (str(v) if isinstance(v, str) else v) for k, v in self.sampled.items()}
        return self.summary

    def _prepare(self, ds: data.Dataset, dtype: str) -> data.Dataset:
        self._check_data(ds)
        x = self.normalizer.apply(ds.x).astype(dtype, copy=False)
        t = ds.t
        spec = self.program.spec
        if t is not None and spec.targets:
            tnode = next(iter(spec.targets.values()))
            t = t.astype(tnode.dtype, copy=False)
            if tnode.dtype != "int64" and t.ndim == 1:
                t = t[:, None]
        return data.Dataset(np.ascontiguousarray(x), t, ds.name)

    def _check_data(self, ds: data.Dataset, norm: normalize.Normalizer | None = None) -> None:
        spec = self.program.spec
        (xnode,) = list(spec.inputs.values())[:1] or [None]
        norm = self.normalizer if norm is None else norm
        width = None  # features after normalization, where it changes them (pca/whiten dims)
        if xnode is not None and ds.x.ndim == 2 and norm.kind != "none":
            try:
                width = norm.out_width(ds.x.shape[1])
            except ValueError as e:
                raise DataError(f"{ds.name}: {e}") from None
        if width is not None and width != ds.x.shape[1]:
            if (width,) != tuple(xnode.shape[1:]):
                raise DataError(f"{ds.name}: input normalization {norm} turns the {ds.x.shape[1]} features "
                                f"into {width}, but input '{xnode.name}' is declared "
                                f"{list(xnode.shape[1:])}; declare [{width}] or change the normalization")
        elif xnode is not None and ds.x.shape[1:] != tuple(xnode.shape[1:]):
            raise DataError(f"{ds.name}: examples have {ds.x.shape[1:]} features, but input "
                            f"'{xnode.name}' is declared {list(xnode.shape[1:])}")
        for tnode in spec.targets.values():
            if ds.t is None:
                raise DataError(f"{ds.name}: no targets, but the spec declares target '{tnode.name}'")
            n = tnode.attr("classes")
            if n is not None:
                bad = np.flatnonzero((ds.t < 0) | (ds.t >= n))
                if bad.size:
                    raise DataError(f"{ds.name}: record {bad[0]}: label {ds.t[bad[0]]} is outside "
                                    f"class({n}) (0..{n - 1})")

    # -- use -------------------------------------------------------------------------
    def predict(self, x) -> np.ndarray:
        if self.program.predict is None:
            raise NetcError("this spec has no output to predict")
        x = self.normalizer.apply(np.asarray(x)).astype(self.program.spec.graph.float_dtype, copy=False)
        return predict(self.program, self.state, np.ascontiguousarray(x), self.train_cfg.eval_batch)

    def score(self, x, t) -> float:
        """Error rate for class targets, else the mean loss."""
        ds = self._prepare(data.arrays(np.asarray(x), np.asarray(t), "score(x, t)"),
                           self.program.spec.graph.float_dtype)
        loss, err = evaluate(self.program, self.state, ds, self.train_cfg.eval_batch)
        return err if err is not None else loss

    def function(self, name: str = "loss", wrt: list[str] | None = None):
        """A compiled NumPy function of the spec's inputs: `loss` (with the
        gradients w.r.t. the parameters in `wrt` appended) or `output`."""
        prog = self.program
        if name == "loss":
            outs = [prog.loss] + [prog.grads[w] for w in (wrt or [])]
        elif name == "output":
            outs = [prog.output]
        else:
            raise NetcError(f"unknown function {name!r}; choose 'loss' or 'output'")
        fn = lower(expected(prog.spec.graph, outs), (), name, feeds=prog.spec.feeds if name == "loss" else list(prog.spec.inputs.values()))
        return lambda *feeds: tuple(o.copy() for o in fn(self.state, *feeds))

    # -- persistence -------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"netc": VERSION, "spec_file": self.file, "spec": self.text,
                "dtype": self.program.spec.graph.float_dtype, "seed": self.train_cfg.seed,
                "params": {k: list(v.shape) for k, v in self.params.items()}}

    def _extra_arrays(self) -> dict:
        return self.normalizer.to_arrays()

    def save(self, path: str | Path) -> Path:
        arrays = {f"state/{k}": lower_cuda.to_host(v) for k, v in self.state.items()}
        arrays.update(self._extra_arrays())
        meta = {**self._meta(), "summary": self.summary}
        return checkpoint.save(Path(path), arrays, json.loads(json.dumps(meta, default=str)))


def compile(path_or_text: str | Path, **kw) -> Model:  # noqa: A001 - the public name
    text, file = read_spec(path_or_text)
    return Model(text, file, **kw)


def load(path: str | Path) -> Model:
    arrays, meta = checkpoint.load(Path(path))
    m = Model(meta["spec"], meta.get("spec_file", "<spec>"), seed=meta.get("seed"), dtype=meta.get("dtype"))
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    missing = set(m.state) - set(state)
    if missing:
        raise DataError(f"{path}: checkpoint lacks {sorted(missing)[:3]}")
    for k, v in state.items():
        if k in m.state and m.state[k].shape != v.shape:
            raise DataError(f"{path}: '{k}' has shape {v.shape} in the checkpoint but {m.state[k].shape} in the spec")
    assign(m.state, {k: v for k, v in state.items() if k in m.state})
    norm = {k: v for k, v in arrays.items() if k.startswith("norm.")}
    if norm:
        m.normalizer = normalize.Normalizer.from_arrays(norm)
    m.summary = meta.get("summary")
    return m
