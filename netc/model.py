"""The Python API: compile a spec into a Model that can fit, predict, score,
save and load, with scikit-learn's conventions (fit returns the model; predict
gives labels for class targets; score is higher-is-better)."""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np

from netc.compiler.errors import DataError, NetcError, SpecError, did_you_mean
from netc.compiler import sources, validate
from netc.compiler.update import state_ranges
from netc.compiler.pipeline import (choose_backend, compile_program, parse_and_elaborate, require_backend,
                                    to_backend, to_host)
from netc.runtime import checkpoint, data, init_from, memory, normalize
from netc.runtime.config import BATCH_METHODS, DataConfig, TrainConfig, from_block
from netc.runtime.evaluation import Head, evaluate, head_of, labels, predict, probabilities, r2
from netc.runtime.optimizers import lr_scales, optimizer_for
from netc.runtime.splits import Splits, load_splits
from netc.runtime.state import assign, init_state
from netc.runtime.trainer import Run
from netc.search_space import SearchConfig, Space, search_block
from netc.pretrain_block import check as check_pretrain_block

VERSION = "0.1.0"


def read_spec(path_or_text: str | Path) -> tuple[str, str]:
    """(text, file name) from a path to a .net file, or from spec text itself.
    A file is read only if regular, at most 1 MiB and UTF-8 (compiler/sources.py)."""
    if not isinstance(path_or_text, (str, os.PathLike)):
        raise NetcError(f"netc.compile: expected a path or spec text, got {type(path_or_text).__name__} "
                        f"{validate.shown(path_or_text)}")
    if not isinstance(path_or_text, str) or ("\n" not in path_or_text and (
            path_or_text.endswith(".net") or sources.is_file(path_or_text))):
        p = validate.path(path_or_text, "netc.compile(path)")
        return sources.read_spec_file(p), str(p)
    return path_or_text, "<spec>"


def _check_gpu_settings(cfg: TrainConfig) -> None:
    """Settings whose work runs on the host over NumPy state: not with device="gpu" yet."""
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

    `fit` trains on the spec's data block or on arrays and returns the model,
    keeping `history_` (the per-epoch metrics rows) and `summary_`; `predict`
    applies the stored input normalization then the network and gives labels for
    a class target, the output otherwise; `predict_proba` gives probabilities,
    `predict_raw` the output itself; `score` is accuracy or R^2 (higher is
    better); `save`/`netc.load` round-trip everything through one .npz without pickle.
    """

    def __init__(self, text: str, file: str = "<spec>", *, seed: int | None = None,
                 dtype: str | None = None, debug: bool = False, device: str = "cpu",
                 train: dict | None = None, embedded: dict[str, str] | None = None,
                 allocate: bool = True, memory_limit: int | str | None = None, purpose: str = "train",
                 backend: str | None = None):
        """`train`: train-block keys set over the spec's before compiling (e.g. lr-probe's rate).
        `embedded`: the used files saved in a checkpoint; the spec reads those and never the disk.
        `memory_limit`: bytes (or "8G", "off") the model may need; default $NETC_MEMORY_LIMIT or
        most of MemAvailable (runtime/memory.py), for training or (`purpose="use"`, netc.load)
        for predicting only: fit checks again. `allocate=False`: compile and estimate only
        (`netc check`): no parameters exist, so the model cannot fit or predict.
        A spec with sizes from the data (`_`, netc/dims.py) is checked now and compiled
        again with the data's sizes when `fit` sees the data; until then it has no parameters."""
        self._args = {"seed": seed, "dtype": dtype, "debug": debug, "device": device, "train": train,
                      "embedded": embedded, "allocate": allocate, "memory_limit": memory_limit,
                      "purpose": purpose, "backend": backend}  # to compile again once the data gives the sizes
        self.text = validate.text(text, "spec text", sources.USE_CAP)  # every argument checked where it enters
        self.file = validate.text(file, "spec file name", validate.PATH_LIMIT, line=True)
        seed = None if seed is None else validate.seed(seed, "seed")
        dtype = None if dtype is None else validate.float_dtype(dtype, "dtype")
        debug = validate.flag(debug, "debug")
        allocate = validate.flag(allocate, "allocate")
        purpose = validate.choice(purpose, memory.PURPOSES, "purpose")
        self.device = device = validate.choice(device, validate.DEVICES, "device")
        read_use = sources.read_use if embedded is None else sources.embedded(embedded, file)
        backend = choose_backend(backend, device)  # native (C) where a compiler is, else numpy; cuda on a gpu
        if backend == "native" and not allocate:  # netc check: nothing runs, so no C is compiled
            backend = "numpy"
        require_backend(backend)  # fail before compiling
        self.options = {"seed": seed, "dtype": dtype, "debug": debug, "device": device, "train": train}  # run.json
        self.base: Path | None = None  # where the data block's files are (a resumed run's recorded folder)
        configs = {"train": TrainConfig(), "data": DataConfig()}
        space = Space(text)  # distributions in the data/train blocks (netc/search.py)
        self.search_cfg: SearchConfig | None = None

        def check_block(name, entries, loc):
            if name == "pretrain":  # read by `netc pretrain` (netc/pretrain.py); checked here
                check_pretrain_block(entries, text, loc)
            elif name == "search":
                self.search_cfg = search_block(entries, text, loc)
            elif name in configs and not space.add(name, entries, type(configs[name]), loc):
                configs[name] = from_block(type(configs[name]), entries, text, loc)

        spec = parse_and_elaborate(text, file, check_block=check_block, read_use=read_use)
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
        if train:
            self.train_cfg = _overridden(self.train_cfg, train)
        if backend == "cuda":
            _check_gpu_settings(self.train_cfg)
        if self.train_cfg.dtype != spec.graph.float_dtype:
            spec = parse_and_elaborate(text, file, self.train_cfg.dtype, read_use=read_use)
        self.free = spec.free  # sizes the data gives (`_`): stand-ins until fit binds them
        self.program = compile_program(spec, scales=lr_scales(spec, self.train_cfg),
                                       optimizer=optimizer_for(spec, self.train_cfg), debug=debug,
                                       step_misses=self.train_cfg.emphasize.kind == "errors", backend=backend,
                                       functions=not self.free, threads=self.train_cfg.threads)
        if self.train_cfg.emphasize.kind == "errors" and self.program.errors is None:
            raise SpecError("emphasize = errors(...) needs a class(n) target and an [B, n] output",
                            spec.block_locs.get("train"), text)
        if self.train_cfg.transforms.kind == "every":  # a refresh keeps the function, or the spec is refused
            from netc.runtime.transforms import check_topology
            check_topology(self.program, spec.block_locs.get("train"), text)
        self.memory = None if self.free else memory.estimate(self.program, self.train_cfg)  # nothing allocated yet
        self.memory_limit = memory_limit
        if self.memory is not None:
            memory.check(self.memory, memory_limit, device, purpose, self.file)
        self.state = None
        if allocate and not self.free:
            state = init_state(self.program.state_leaves, self.train_cfg.seed, self.train_cfg.init_scale)
            self.state = to_backend(state, backend)  # device="gpu": parameters and optimizer state on the device
        # `init SELECTOR = from("RUN")`: copied now from the user's spec; a model rebuilt from a
        # checkpoint (embedded sources: netc.load, resume) reads its own state instead, and copies
        # only if it trains from the start (a resumed run killed before its first checkpoint)
        self._init_pending = self.state is not None and bool(init_from.entries(self.train_cfg))
        if self._init_pending and embedded is None:
            self._initialize()
        self.normalizer = normalize.fit("none", np.zeros((1, 1)))
        self.target_scaler = normalize.fit_target("none", np.zeros((1, 1)))  # normalize_target, fitted by fit
        _check_target_normalization(self.data_cfg, spec, text)
        self.summary: dict | None = None  # the last fit's summary (also `summary_`)
        self.history_: list[dict] = []  # the last fit's per-epoch metrics rows
        self.head: Head = head_of(self.program.spec)

    def _initialize(self) -> None:
        """Copy the parameters the train block's `init` keys name from their runs."""
        values = init_from.initial_values(self.program.spec.params, self.train_cfg, self.base_dir, self.text)
        for k, v in to_backend(values, "cuda" if self.device == "gpu" else "numpy").items():
            self.state[k][...] = v
        self._init_pending = False

    @property
    def summary_(self) -> dict | None:
        """What the last fit reported: epochs, losses and errors, time (run.json's summary)."""
        return self.summary

    # -- inspection --------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return {k: self._state("params")[k] for k in self.program.spec.params}

    def _state(self, what: str) -> dict:
        if self.state is None and self.free:
            raise NetcError(f"{what}: this spec takes sizes from the data (`_`); fit it first, which binds them")
        if self.state is None:
            raise NetcError(f"{what}: this model was compiled with allocate=False and has no parameters; "
                            f"compile it again without allocate=False")
        return self.state

    @property
    def base_dir(self) -> Path:
        if self.base is not None:
            return self.base
        return Path(self.file).parent if not self.file.startswith("<") else Path.cwd()

    @property
    def _target(self):
        """The spec's target node (what data.conform checks labels against), or None."""
        return next(iter(self.program.spec.targets.values()), None)

    # -- training ------------------------------------------------------------------
    def fit(self, x=None, t=None, *, valid=None, test=None, epochs: int | None = None,
            out: str | Path | None = None, progress: bool | None = None, log=None,
            limit: int | None = None, force: bool = False) -> "Model":
        """Train, and return the model (its `summary_` and `history_` say how it went).
        With no arrays, uses the spec's data block; `valid`/`test` may be (x, t) pairs.
        `limit` keeps the first `limit` examples of each split (quick smoke runs).
        `progress`: None (default) draws a bar on a terminal or in a notebook, False never.
        `out`: the run folder (checkpoints, metrics; `netc.resume(out)` continues it); one
        holding another run is refused unless `force` (then replaced at the first checkpoint)."""
        from netc.runtime.run_folder import RunFolder
        if self.free:
            self._bind(x, t)
        self._state("fit")
        memory.check(self.memory, self.memory_limit, self.device, where=self.file)  # a model loaded for use only
        epochs = None if epochs is None else validate.integer(epochs, "fit(epochs=...)", 1)
        limit = None if limit is None else validate.integer(limit, "fit(limit=...)", 1)
        force = validate.flag(force, "fit(force=...)")
        record = self._record(epochs, limit, x is not None)
        folder = None
        if out is not None:
            folder = RunFolder.start(validate.path(out, "fit(out=...)"), record, self.text, force)
        self._fit(x, t, valid, test, epochs, limit, progress, log, folder, record)
        return self

    def _bind(self, x, t) -> None:
        """Compile again with the sizes the training data gives in place of each `_`
        (netc/dims.py): from now on the model and what it saves hold the bound text."""
        from netc.dims import bind
        text, splits = bind(self, x, t)
        base, free = self.base, self.free
        self.__init__(text, self.file, **self._args)
        self.base, self._loaded, self._bound = base, splits, free

    def _record(self, epochs: int | None, limit: int | None, arrays: bool) -> dict:
        """How this run starts (run.json; the checkpoints' field 'run'): enough to start it
        again from the run folder alone (netc.resume)."""
        file = self.file if self.file.startswith("<") else os.path.abspath(self.file)
        return {"format": checkpoint.RECORD_FORMAT, "spec_file": file, "base": str(self.base_dir.resolve()),
                "options": self.options, "epochs": epochs, "limit": limit, "data": "arrays" if arrays else "spec",
                "sources": sources.embed(self.program.spec.used, self.file)}

    def _fit(self, x, t, valid, test, epochs, limit, progress, log, folder, record, saved=None) -> dict:
        """fit's work, for a new run or a resumed one (`saved`, netc/resume.py)."""
        from netc.runtime.run_folder import RunFolder
        folder = RunFolder(None) if folder is None else folder
        self.history_ = list(saved.history) if saved is not None else []
        _record_rows(folder, self.history_)
        try:
            return self._train(x, t, valid, test, epochs, limit, progress, log, folder, record, saved)
        except KeyboardInterrupt as e:  # before training started (loading data): nothing new was saved
            from netc.runtime.run_folder import Interrupted
            if isinstance(e, Interrupted) or folder.folder is None:
                raise
            summary = {"epochs": 0, "stopped": "interrupted", "saved": folder.saved}
            folder.summary(summary)
            message = f"interrupted before training started: {folder.saved_text()}"
            (log or (lambda s: None))(message)
            raise Interrupted(message, summary) from None
        finally:
            folder.close()

    def _train(self, x, t, valid, test, epochs, limit, progress, log, folder, record, saved) -> dict:
        if x is None:
            if self.data_cfg.train is None:
                raise SpecError("the spec has no training data: add data { train = ... } or pass arrays to fit",
                                self.program.spec.block_locs.get("data"), self.text)
            loaded, self._loaded = getattr(self, "_loaded", None), None  # read once already by _bind
            splits = load_splits(self.data_cfg, self.base_dir, self._target) if loaded is None else \
                Splits(*(None if d is None else data.conform(d, self._target)
                         for d in (loaded.train, loaded.valid, loaded.test)))
            train, valid_ds, test_ds = splits.train, splits.valid, splits.test
        else:
            train = data.check_arrays(x, t, self._target, "fit(x, t)")
            valid_ds = None if valid is None else data.check_arrays(*valid, target=self._target, what="valid")
            test_ds = None if test is None else data.check_arrays(*test, target=self._target, what="test")
        if limit is not None:
            train, valid_ds, test_ds = (None if d is None else d.slice(0, min(limit, len(d)))
                                        for d in (train, valid_ds, test_ds))
        if saved is None and self._init_pending:
            self._initialize()
        norm = normalize.fit(self.data_cfg.normalize, train.x)  # may change the width (pca dims)
        self._check_data(train, norm)
        self.normalizer = norm
        train = self._labelled(train, limit)
        if self.data_cfg.normalize_target != "none":  # on the examples trained on, as the inputs' is
            self.target_scaler = normalize.fit_target(self.data_cfg.normalize_target, train.t)
        dtype = self.program.spec.graph.float_dtype
        prepared = [None if d is None else self._prepare(d, dtype) for d in (train, valid_ds, test_ds)]
        meta = {**self._meta(), "run": {k: v for k, v in record.items() if k != "sources"}}
        run = Run(self.program, self.train_cfg, self.state, None, progress, log or (lambda s: None), meta=meta,
                  extra_arrays=self._extra_arrays, folder=folder, saved=saved,
                  unscale=None if self.target_scaler.kind == "none" else self.target_scaler.inverse)
        self.summary = run.fit(*prepared, epochs=epochs)
        if self.sampled:
            self.summary["sampled"] = {k: (str(v) if isinstance(v, str) else v) for k, v in self.sampled.items()}
        return self.summary

    def _labelled(self, train: data.Dataset, limit: int | None) -> data.Dataset:
        """`labels = N` (data block): a spec with a target trains on the first N examples
        only (the rest is there for pretraining, netc/pretrain.py); one without, on all.
        Under `limit` (a smoke run) fewer than N examples are all kept."""
        n = self.data_cfg.labels
        if n is None or self._target is None or (limit is not None and n >= len(train)):
            return train
        if n > len(train):
            raise DataError(f"{train.name}: labels = {n}, but the training set has {len(train)} examples")
        return train.slice(0, n)

    def _prepare(self, ds: data.Dataset, dtype: str) -> data.Dataset:
        self._check_data(ds)
        # normalize = none: the caller's array itself where it is already of the step's type
        # and C-contiguous (the trainer only reads it), not a copy of the training set
        x = ds.x if self.normalizer.kind == "none" else self.normalizer.apply(ds.x)
        x = np.ascontiguousarray(x, dtype=dtype)
        t = ds.t
        spec = self.program.spec
        if t is not None and spec.targets:
            tnode = next(iter(spec.targets.values()))
            t = t.astype(tnode.dtype, copy=False)
            if tnode.dtype != "int64" and t.ndim == 1:
                t = t[:, None]
            if tnode.dtype != "int64" and self.target_scaler.kind != "none":
                t = self.target_scaler.apply(t).astype(tnode.dtype, copy=False)
        return data.Dataset(x, t, ds.name)

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
                            f"'{xnode.name}' {self._declared(xnode)}")
        # targets (present, whole-number labels in range, real widths): data.conform, where data enters

    def _declared(self, node) -> str:
        """How input `node` got its shape: as declared, or from the first fit's data (`_`)."""
        shape = list(node.shape[1:])
        if any(f.name == node.name for f in getattr(self, "_bound", ())):
            return f"was bound to {shape} by the first fit's data (declared with `_`; compile again for other sizes)"
        return f"is declared {shape}"

    def _features(self, x, what: str) -> np.ndarray:
        """`x` as an array of the shape predict/score take ([n] + the input's declared
        shape, or the width the normalization was fitted on), else a DataError naming
        that shape. 1-D input is refused as scikit-learn does: one example or one
        feature cannot be told apart."""
        (xnode,) = list(self.program.spec.inputs.values())[:1] or [None]
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged lists
            raise DataError(f"{what}: x is not an array of numbers ({e})") from None
        if xnode is None:
            return a
        width = self.normalizer.in_width
        dims = (width,) if width is not None else tuple(xnode.shape[1:])
        want = "[" + ", ".join(["n"] + [str(d) for d in dims]) + "]"
        declared = f"input '{xnode.name}' {self._declared(xnode)}"
        if width is not None:  # the raw width, before normalization changes it
            have = f", data has {a.shape[1]}" if a.ndim == 2 else ""
            declared = f"the input normalization {self.normalizer} was fitted on {width} features{have}"
        if a.dtype.kind not in "biuf":
            raise DataError(f"{what}: expected numbers of shape {want} ({declared}), got dtype {a.dtype}")
        if a.ndim == 1 and len(dims) == 1:
            fix = "x.reshape(-1, 1) if it holds one feature per example" if dims == (1,) else \
                "x.reshape(1, -1) if it is a single example"
            raise DataError(f"{what}: expected shape {want} ({declared}), got 1-D shape {list(a.shape)}: "
                            f"use {fix}")
        if a.shape[1:] != dims:
            raise DataError(f"{what}: expected shape {want} ({declared}), got {list(a.shape)}")
        return a

    # -- use -------------------------------------------------------------------------
    def predict_raw(self, x) -> np.ndarray:
        """The network's output for each row of `x` ([n, features]) as the spec computes it
        (scores where the loss applies the softmax; on the scale trained on where
        `normalize_target` scaled the targets: predict undoes it); 0 rows give an empty [0, k] array."""
        return self._output(x, "predict_raw(x)")

    def _output(self, x, what: str) -> np.ndarray:
        if self.program.predict is None:
            raise NetcError("this spec has no output to predict")
        self._state("predict")
        x = self._features(x, what)
        out = self.program.output
        if len(x) == 0:
            return np.empty((0,) + tuple(d or 0 for d in out.shape[1:]), out.dtype)
        x = self.normalizer.apply(data.check_arrays(x, what=what).x)
        x = x.astype(self.program.spec.graph.float_dtype, copy=False)
        return predict(self.program, self.state, np.ascontiguousarray(x), self.train_cfg.eval_batch)

    def predict(self, x) -> np.ndarray:
        """Class labels 0..n-1 [n] for a class(n) target (the argmax of the output; one
        output for class(2): its side of 0.5, or of 0 for a score); else the output [n, k],
        in the target's own units where `normalize_target` scaled the targets (predict_raw
        gives the output on the scale trained on)."""
        y = self._output(x, "predict(x)")
        return labels(self.head, y) if self.head.labels else self._natural(y)

    def _natural(self, y: np.ndarray) -> np.ndarray:
        """Outputs back in the target's units (normalize_target's inverse), in y's dtype."""
        if self.target_scaler.kind == "none":
            return y
        return self.target_scaler.inverse(y).astype(y.dtype, copy=False)

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities [n, k]: the output if it is a softmax or sigmoid, else the
        softmax/sigmoid the loss applies to it (`nll(softmax(y), t)`); refused for other
        outputs. One sigmoid output gives [1 - p, p]."""
        if self.program.predict is not None and self.head.link is None:
            probabilities(self.head, np.zeros((0, 1)))  # refuses, before the work
        return probabilities(self.head, self._output(x, "predict_proba(x)"))

    def score(self, x, t) -> float:
        """Higher is better, as scikit-learn's: accuracy (the fraction of labels right) for a
        class target, else R^2 of the output against `t` (1 is perfect, 0 is the mean's)."""
        self._state("score")
        x = self._features(x, "score(x, t)")
        raw = data.check_arrays(x, t, self._target, "score(x, t)")
        ds = self._prepare(raw, self.program.spec.graph.float_dtype)
        if self.program.errors is not None:
            _, err = evaluate(self.program, self.state, ds, self.train_cfg.eval_batch)
            n = len(ds)
            return (n - round(err * n)) / n if n else float("nan")  # exact: 2 of 3 right is 2 / 3
        if self.program.predict is None:
            raise NetcError("score: this spec has no output to score")
        y = predict(self.program, self.state, ds.x, self.train_cfg.eval_batch)
        if self.head.labels:
            return float(np.mean(labels(self.head, y) == ds.t.reshape(-1)))
        if ds.t is None or ds.t.shape != y.shape:
            raise DataError(f"score(x, t): the output is {list(y.shape[1:])} per example, the targets "
                            f"{list(np.shape(t)[1:])}: R^2 compares them column by column")
        if self.target_scaler.kind != "none":  # in the target's units
            return r2(self._natural(y), raw.t.reshape(ds.t.shape))
        return r2(y, ds.t)

    def refresh_transforms(self, x) -> float:
        """Re-estimate the transformed units' alpha and beta (and gamma, with `transforms =
        every(N, gamma = true)`) on the examples `x` now, re-expressing the network so its
        noise-free function stays the same [RV]; returns the largest change of the output on
        `x` it caused, relative to the output's largest magnitude (rounding only)."""
        from netc.runtime.transforms import Refresher
        state = self._state("refresh_transforms")
        x = self._features(x, "refresh_transforms(x)")
        x = self.normalizer.apply(data.check_arrays(x, what="refresh_transforms(x)").x)
        x = np.ascontiguousarray(x.astype(self.program.spec.graph.float_dtype, copy=False))
        gamma = getattr(self.train_cfg.transforms, "gamma", False)
        return Refresher(self.program, gamma=gamma, chunk=self.train_cfg.eval_batch).refresh(state, x)

    def function(self, name: str = "loss", wrt: list[str] | None = None):
        """A compiled function of the spec's inputs (on the model's CPU backend, native or
        NumPy): `loss` (with the gradients w.r.t. the parameters in `wrt` appended) or `output`."""
        prog = self.program
        if name == "loss":
            outs = [prog.loss] + [prog.grads[w] for w in (wrt or [])]
        elif name == "output":
            outs = [prog.output]
        else:
            raise NetcError(f"unknown function {name!r}; choose 'loss' or 'output'")
        fn = prog.function(outs, prog.spec.feeds if name == "loss" else list(prog.spec.inputs.values()), name=name,
                           backend="native" if prog.backend == "native" else "numpy")
        state = self._state("function")
        return lambda *feeds: tuple(o.copy() for o in fn(state, *feeds))

    # -- persistence -------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"netc": VERSION, "spec_file": self.file, "spec": self.text,
                "dtype": self.program.spec.graph.float_dtype, "seed": self.train_cfg.seed,
                "params": {k: list(v.shape) for k, v in self.params.items()},
                "sources": sources.embed(self.program.spec.used, self.file)}  # self-contained: loading reads no other file

    def _extra_arrays(self) -> dict:
        arrays = self.normalizer.to_arrays()
        if self.target_scaler.kind != "none":
            arrays.update(self.target_scaler.to_arrays(checkpoint.TARGET_PREFIX))
        return arrays

    def save(self, path: str | Path) -> Path:
        path = validate.path(path, "Model.save(path)")  # before copying anything
        self._state("save")
        arrays = {f"state/{k}": to_host(v) for k, v in self.state.items()}
        arrays.update(self._extra_arrays())
        meta = {**self._meta(), "summary": self.summary}
        return checkpoint.save(path, arrays, json.loads(json.dumps(meta, default=str)))


def _check_target_normalization(cfg: DataConfig, spec, text: str) -> None:
    """normalize_target scales real targets: refused, where written, for a class(n) target or none."""
    if cfg.normalize_target == "none":
        return
    entry = next((e for e in spec.blocks.get("data", []) if e.key == "normalize_target"), None)
    loc = entry.loc if entry is not None else spec.block_locs.get("data")
    target = next(iter(spec.targets.values()), None)
    if target is None or target.attr("classes") is not None:
        what = "the spec has no target" if target is None else f"target '{target.name}' is a class(n) target"
        raise SpecError(f"normalize_target = {cfg.normalize_target} scales real targets, but {what}; "
                        f"remove it (class labels are not scaled)", loc, text)
    out = spec.output
    if out is None or out.shape[1:] != target.shape[1:]:  # predict maps the output back to t's units
        shape = "no output" if out is None else f"output {list(out.shape[1:])} per example"
        raise SpecError(f"normalize_target = {cfg.normalize_target} maps the output back to target "
                        f"'{target.name}' {list(target.shape[1:])}, but the spec has {shape}", loc, text)


def _record_rows(folder, rows: list[dict]) -> None:
    """Keep the per-epoch metrics rows the run writes (not the partial validations) in
    `rows` too: `Model.history_`, with or without a run folder."""
    write = folder.write

    def both(row: dict) -> None:
        if not row.get("partial"):
            rows.append(row)
        write(row)
    folder.write = both


def _overridden(cfg: TrainConfig, keys: dict) -> TrainConfig:
    """`cfg` with `keys` set, validated like the train block's own values."""
    try:
        return TrainConfig.model_validate({**dict(cfg), **keys})
    except Exception as e:  # pydantic's ValidationError, named for the caller
        raise NetcError(f"train settings {sorted(keys)}: {e}") from None


def compile(path_or_text: str | Path, **kw) -> Model:  # noqa: A001 - the public name
    known = [k for k, p in inspect.signature(Model).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for k in kw:  # a NetcError like every other bad argument, not a TypeError
        if k not in known:
            raise NetcError(f"netc.compile: unknown keyword {validate.shown(k)}; choose from {', '.join(known)}",
                            hint=did_you_mean(k, known) if isinstance(k, str) else None)
    text, file = read_spec(path_or_text)
    return Model(text, file, **kw)


def load(path: str | Path) -> Model:
    """A saved model. The checkpoint is read as hostile (runtime/checkpoint.py):
    it loads, or is refused with a DataError naming the file and the field."""
    with checkpoint.open_checkpoint(path) as ck:
        meta = ck.meta
        file, embedded = meta.get("spec_file", "<spec>"), meta.get("sources", {})
        try:  # elaborate only, to compare the parameters before anything of their size exists
            spec = parse_and_elaborate(meta["spec"], file, meta["dtype"], read_use=sources.embedded(embedded, file))
        except NetcError as e:
            raise checkpoint.spec_error(ck, e) from None
        checkpoint.check_params(ck, {k: p.shape for k, p in spec.params.items()})
        try:
            m = Model(meta["spec"], file, seed=meta["seed"], dtype=meta["dtype"], embedded=embedded,
                      purpose="use")
        except NetcError as e:
            raise checkpoint.spec_error(ck, e) from None
        checkpoint.check_params(ck, {k: v.shape for k, v in m.params.items()})
        assign(m.state, checkpoint.read_state(ck, m.state, state_ranges(m.program.state_leaves)))
        m._init_pending = False  # the saved parameters are the model's
        xs = list(m.program.spec.inputs.values())[:1]
        norm = checkpoint.read_normalizer(ck, xs[0].shape[1] if xs and len(xs[0].shape) == 2 else None)
        if norm is not None:
            m.normalizer = norm
        m.target_scaler = checkpoint.read_target_normalizer(ck, m._target, m.data_cfg.normalize_target)
        m.summary = meta.get("summary")
    return m
