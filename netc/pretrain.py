"""Greedy layer-wise pretraining: `netc pretrain SPEC` and `netc.pretrain(spec)`
[PR 1.1, 3.3; Bengio et al. 2007, Vincent et al. 2008, Rifai et al. 2011].

The spec's `pretrain` block names the layers; compiler/pretrain_spec.py turns
the spec into one auto-encoder spec per layer and the fine-tuning spec. Each
is trained into its own run folder, in order:

    DIR/h1/        layer h1 as a (denoising / contractive) auto-encoder of the input
    DIR/h2/        layer h2 as one of h1's codes (h1 frozen, copied from DIR/h1)
    DIR/finetune/  the whole network on the labels, each layer copied from its stage

Every folder is an ordinary run (`netc report`, `netc.load`, `netc train
--resume`). The command again resumes: a finished stage is skipped, an
interrupted one continues from its checkpoint. A folder holding a run of a
different stage spec (the spec changed, another --seed or --limit) is refused
unless --force, which starts every stage again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from netc.compiler import validate
from netc.compiler.errors import DataError, NetcError, SpecError
from netc.compiler.pretrain_spec import plan as make_plan
from netc.runtime import checkpoint, run_folder

from .model import Model, read_spec
from .resume import resume

FINETUNE = "finetune"


def pretrain(spec: str | Path, *, out: str | Path | None = None, seed: int | None = None,
             limit: int | None = None, force: bool = False, progress: bool | None = False,
             log: Callable[[str], None] | None = None) -> Model:
    """Pretrain the layers of the spec's `pretrain` block one by one, then fine-tune
    the whole network; returns the fine-tuned model (`.stages`: one row per run)."""
    text, file = read_spec(spec)
    seed = None if seed is None else validate.seed(seed, "seed")
    limit = None if limit is None else validate.integer(limit, "pretrain(limit=...)", 1)
    force = validate.flag(force, "pretrain(force=...)")
    log = log or (lambda s: None)
    user = Model(text, file, seed=seed, allocate=False)  # every error of the spec and its blocks, located
    p = make_plan(text, file)
    _check_tied(user, p)
    folder = validate.path(out, "pretrain(out=...)") if out is not None else _default_folder(file)
    try:
        folder = folder.resolve()  # the stages' runs name each other by absolute paths
    except (OSError, RuntimeError) as e:  # a symlink loop, ...
        raise NetcError(f"{folder}: cannot be the folder of the stages' runs ({e})") from None
    folders = [folder / s.layer for s in p.stages]
    names = [str(f) for f in folders]
    runs = [(f"stage {k + 1}/{len(p.stages) + 1}: {s.layer} as an auto-encoder of {s.input}",
             p.stage_text(k, names), folders[k]) for k, s in enumerate(p.stages)]
    runs.append((f"stage {len(p.stages) + 1}/{len(p.stages) + 1}: fine-tuning every layer on the labels",
                 p.finetune_text(names), folder / FINETUNE))
    for k, (_, stage_text, _) in enumerate(runs):  # every stage compiles before the first one trains
        try:
            Model(stage_text, file, seed=seed, allocate=False)
        except SpecError as e:
            if e.loc is None or e.loc.line <= text.count("\n") + 1 or k == len(p.stages):
                raise
            raise SpecError(f"the auto-encoder of '{p.stages[k].layer}' (the lines netc pretrain adds) does "
                            f"not compile: {e.message}; its decoder multiplies by {p.stages[k].layer}.W "
                            f"transposed, so that weight must be [inputs, units]", p.stages[k].loc, text) from None
    rows, model = [], None
    for what, stage_text, where in runs:
        log(f"{what} -> {where}")
        model, how = _run(stage_text, file, where, seed, limit, force, progress, log)
        rows.append({"stage": where.name, "folder": str(where), "how": how, "summary": model.summary})
    model.stages = rows
    return model


def _run(text: str, file: str, folder: Path, seed, limit, force, progress, log) -> tuple[Model, str]:
    """Train `text` into `folder`; or continue the run there, or find it finished."""
    held = None if force else _held(folder)
    if held is not None:
        if held != (text, seed, limit):
            why = "spec" if held[0] != text else "--seed" if held[1] != seed else "--limit"
            raise NetcError(f"{folder} holds a run of this stage with another {why} (the spec or the "
                            f"command changed since): start every stage again with --force, or use "
                            f"another --out folder")
        m = resume(folder, progress=progress, log=log)
        return m, "skipped (finished)" if m.resumed == "finished" else "resumed"
    m = Model(text, file, seed=seed)
    m.fit(out=folder, limit=limit, progress=progress, log=log, force=force)
    return m, "trained"


def _held(folder: Path) -> tuple[str, int | None, int | None] | None:
    """(spec text, seed, limit) of the run in `folder`, None if it holds none."""
    if not run_folder.holds_run(folder) and not (folder / run_folder.RECORD).exists():
        return None
    run_folder.clean(folder)
    if (folder / checkpoint.FILE).exists():
        with checkpoint.open_checkpoint(folder) as ck:
            record, text = ck.meta.get("run"), ck.meta["spec"]
            if record is None:
                raise DataError(f"{ck.file}: a saved model, not a run of `netc pretrain`")
    else:
        record, text = run_folder.read_record(folder)
    return text, record["options"].get("seed"), record.get("limit")


def _check_tied(user: Model, p) -> None:
    """Each layer's decoder is its weight matrix transposed: `LAYER.W` [inputs, units]."""
    params = user.program.spec.params
    for s in p.stages:
        w = params.get(f"{s.layer}.W")
        if w is None or len(w.shape) != 2:
            raise SpecError(f"'{s.layer}' has no weight matrix '{s.layer}.W' to tie its decoder to (a layer "
                            f"made by dense(...) has one)", s.loc, p.text)


def _default_folder(file: str) -> Path:
    stem = "spec" if file.startswith("<") else Path(file).stem
    return Path("runs") / f"{stem}-pretrain"


def cli(args) -> int:
    """`netc pretrain SPEC [--out DIR] [--seed S] [--limit N] [--force] [--no-progress]`."""
    import sys
    import time
    t0 = time.perf_counter()
    m = pretrain(args.spec, out=args.out, seed=args.seed, limit=args.limit, force=args.force,
                 progress=None if not args.no_progress else False,
                 log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"{'stage':<12} {'':<19} {'epochs':>6} {'train_loss':>10} {'valid_error':>11} {'test_error':>10}  folder")
    for r in m.stages:
        s = r["summary"] or {}
        print(f"{r['stage']:<12} {r['how']:<19} {s.get('epochs', '-')!s:>6} {_f(s.get('train_loss')):>10} "
              f"{_f(s.get('valid_error')):>11} {_f(s.get('test_error')):>10}  {r['folder']}")
    print(f"{time.perf_counter() - t0:.1f} s; the fine-tuned network: {m.stages[-1]['folder']} "
          f"(netc report, netc predict, netc.load)")
    return 0


def _f(v) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.4f}"
