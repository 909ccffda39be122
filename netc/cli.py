"""The `netc` command: check | compile | train | search | gradcheck | lr-probe |
overfit | fmt | export | report | predict | doc.

Exit codes, so that a script can tell them apart:
0 success; 1 an internal error (a bug in netc: please report it); 2 a user
error (spec, data or command line); 3 a check that ran and failed (gradcheck
over its tolerance or unable to compare, overfit that cannot learn the subset,
lr-probe finding no rate that trains, fmt --check finding an unformatted
file); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import STAGES

EXIT_INTERNAL, EXIT_USER, EXIT_CHECK, EXIT_INTERRUPT = 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 too; keep the message short
        self.print_usage(sys.stderr)
        print(f"netc: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netc", description="Compile and train neural-network specs (.net files).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c = sub.add_parser("check", help="parse, elaborate and type-check a spec; print what it defines")
    c.add_argument("spec")

    c = sub.add_parser("compile", help="print the graph or the generated code")
    c.add_argument("spec")
    c.add_argument("--emit", choices=["graph", "dot", "numpy", "cuda", "c"], default=None,
                   help="graph (the default): the IR as text; dot: the IR for Graphviz; numpy: generated "
                        "source; cuda: the fused CUDA kernels, each with the .net lines it covers; c: the "
                        "native CPU step's C, the same way")
    c.add_argument("--stats", action="store_true",
                   help="fused kernels per step, bytes moved and GEMM FLOPs per step (at the spec's batch size)")
    c.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: also check that CuPy and a device are there and build the GPU functions")
    c.add_argument("--after", choices=list(STAGES),
                   default="simplify_grads", help="with --emit graph|dot: the stage to show")
    c.add_argument("--function", choices=["train_step", "evaluate", "predict"], default="train_step",
                   help="with --emit numpy|cuda|c or --stats: which compiled function")

    c = sub.add_parser("train", help="compile and train a spec, or continue a run (--resume DIR)")
    c.add_argument("spec", nargs="?", help="the spec (not with --resume: the run folder recorded it)")
    c.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint "
                   "(bit-identical to an uninterrupted run); with --epochs N, train up to N epochs in all")
    c.add_argument("--force", action="store_true", help="replace the run in --out (it is kept until the new "
                   "run's first checkpoint)")
    c.add_argument("--epochs", type=int, help="override the spec's epochs")
    c.add_argument("--seed", type=_seed, help="override the spec's seed (0 to 2^31 - 1)")
    c.add_argument("--out", help="run directory (default runs/<spec name>-N)")
    c.add_argument("--limit", type=int, help="use only the first N examples of each split (smoke runs)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    c.add_argument("--json", action="store_true", help="print the run's summary as JSON (what DIR/summary.json "
                   "holds) instead of the table, for scripts")
    c.add_argument("--debug", action="store_true", help="fill buffers with NaN before use")
    c.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: run the fused CUDA kernels through CuPy (pip install 'netc[gpu]')")
    c.add_argument("--backend", choices=["native", "numpy"], default=None,
                   help="on the CPU: native (the step compiled to C; the default where a C compiler is) "
                        "or numpy (generated NumPy); also $NETC_BACKEND")

    c = sub.add_parser("pretrain", help="greedy layer-wise pretraining (the spec's pretrain block: one "
                                        "auto-encoder per layer), then fine-tuning; resumes stage by stage")
    c.add_argument("spec")
    c.add_argument("--out", help="folder of the stages' runs (default runs/<spec name>-pretrain); the same "
                                 "folder resumes: finished stages are skipped")
    c.add_argument("--seed", type=_seed, help="override the spec's seed in every stage (0 to 2^31 - 1)")
    c.add_argument("--limit", type=_positive, help="use only the first N examples of each split (smoke runs)")
    c.add_argument("--force", action="store_true", help="train every stage again (replacing the runs in --out)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")

    c = sub.add_parser("search", help="random search over the spec's distributions; resumes where it stopped")
    c.add_argument("spec")
    c.add_argument("--trials", type=_positive, help="trials in all (default: the search block's trials)")
    c.add_argument("--workers", type=_positive,
                   help="worker processes (default: the search block's workers, else one per CPU; capped by the CPUs)")
    c.add_argument("--out", help="results folder (default runs/<spec name>-search); the same folder resumes")
    c.add_argument("--epochs", type=_positive, help="override the spec's epochs in every trial")
    c.add_argument("--limit", type=_positive, help="use only the first N examples of each split (smoke runs)")
    c.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the trials on a Dask cluster: tcp://HOST:PORT (a `dask scheduler`), or local:N "
                        "(a local cluster of N worker processes); needs pip install 'netc[dask]'")
    c.add_argument("--shared-data", action="store_true",
                   help="with --scheduler: every worker reads the data files at this machine's paths "
                        "(a shared file system) instead of receiving them from here")

    c = sub.add_parser("gradcheck", help="compare gradients with centered finite differences (float64)")
    c.add_argument("spec")
    c.add_argument("--examples", type=_positive, default=4)
    c.add_argument("--entries", type=_positive, default=20,
                   help="entries compared per parameter (nonzero analytic-gradient entries first)")
    c.add_argument("--tol", type=_positive_float, default=1e-5, help="largest acceptable relative error")
    c.add_argument("--seed", type=_seed, default=0, help="which examples and entries (0 to 2^31 - 1)")

    c = sub.add_parser("lr-probe", help="find the largest learning rate that does not diverge [PR 2.1]")
    c.add_argument("spec")
    c.add_argument("--start", type=_positive_float, default=10.0, help="the first (large) rate to try")
    c.add_argument("--examples", type=_positive, default=5000, help="training examples per trial")
    c.add_argument("--epochs", type=_positive, default=1, help="epochs per trial")

    c = sub.add_parser("overfit", help="check the network can learn a small subset by heart [PR 4.1]")
    c.add_argument("spec")
    c.add_argument("--examples", type=_positive, default=100)
    c.add_argument("--max-epochs", type=_positive, default=300)

    c = sub.add_parser("fmt", help="print a spec in the canonical layout (or --check, --write)")
    c.add_argument("spec")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true",
                   help="exit 0 if the file is already formatted, 3 (with a diff on stderr) if not")
    g.add_argument("--write", action="store_true", help="rewrite the file in place if formatting changes it")

    c = sub.add_parser("export", help="write a trained predictor (input normalization included) as ONNX")
    c.add_argument("run", help="a run folder or a params.npz (from netc train or Model.save)")
    c.add_argument("--format", choices=["onnx"], default="onnx")
    c.add_argument("--out", required=True, metavar="FILE", help="the file to write, e.g. model.onnx")

    c = sub.add_parser("predict", help="a trained model's predictions for a data file, as CSV (default: "
                                       "to stdout) or .npy; labels for class targets, outputs otherwise")
    c.add_argument("run", help="a run folder or a params.npz (from netc train or Model.save)")
    c.add_argument("data", help="the examples: a .csv (features, or with the run's target column), an .npz "
                                "(array x), an .npy, or an IDX file (.gz, -ubyte)")
    c.add_argument("--out", metavar="FILE", help="write FILE.csv or FILE.npy (default: CSV on stdout)")
    c.add_argument("--proba", action="store_true", help="class probabilities (predict_proba) instead of labels")

    c = sub.add_parser("report", help="one HTML page (figures embedded) of runs and searches: curves, "
                                      "per-layer statistics, weights; needs netc[report]")
    c.add_argument("runs", nargs="+", metavar="RUN", help="a run folder (netc train --out) or a search folder")
    c.add_argument("--out", help="the HTML file to write (default: RUN/report.html, the first RUN)")

    c = sub.add_parser("hessian", help="the loss's curvature: largest Hessian (or Gauss-Newton) eigenvalues by "
                                       "Lanczos, condition estimate, mean diagonal curvature per parameter [EB 8]")
    c.add_argument("spec")
    c.add_argument("--run", metavar="RUN", help="a run folder: its trained parameters (default: the initialization)")
    c.add_argument("--k", type=_positive, default=5, help="how many of the largest eigenvalues")
    c.add_argument("--matrix", choices=["hessian", "gauss-newton"], default="hessian")
    c.add_argument("--batches", type=_positive, default=10,
                   help="training minibatches (of the train block's batch size) the loss is averaged over")
    c.add_argument("--steps", type=_positive, default=40, help="Lanczos steps (matrix-vector products)")
    c.add_argument("--probes", type=_positive, default=10, help="random-sign probes of the diagonal (Hutchinson)")
    c.add_argument("--seed", type=_seed, default=0, help="which examples, the start vector and the probes")
    c.add_argument("--json", action="store_true", help="the report as JSON")

    c = sub.add_parser("doc", help="reference: the prelude, or the keys of the train/data blocks")
    c.add_argument("topic", nargs="?", choices=["prelude", "train", "data", "search", "pretrain", "ops", "methods"],
                   default="prelude")
    return p


def _whole(text: str, lo: int, hi: int | None = None) -> int:
    """A whole-number flag in [lo, hi] (hi included), or argparse's error."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if hi is None and n < lo:
        raise argparse.ArgumentTypeError(f"expected a number >= {lo}, got {n}")
    if hi is not None and not lo <= n <= hi:
        raise argparse.ArgumentTypeError(f"{n} is out of range; expected {lo} to {hi}")
    return n


def _positive(text: str) -> int:
    return _whole(text, 1)


def _seed(text: str) -> int:
    """A seed flag: a whole number from 0 to 2^31 - 1, as in the train block."""
    from netc.compiler import validate
    return _whole(text, 0, validate.SEED_LIMIT - 1)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and (args.spec is None) == (args.resume is None):
        parser.error("netc train takes a spec, or --resume DIR (not both)")
    if args.version:
        from netc import __version__
        print(f"netc {__version__}")
        return 0
    if args.command is None:
        build_parser().print_help()
        return EXIT_USER
    try:
        return {"check": cmd_check, "compile": cmd_compile, "train": cmd_train,
                "gradcheck": cmd_gradcheck, "doc": cmd_doc, "lr-probe": cmd_lr_probe,
                "overfit": cmd_overfit, "fmt": cmd_fmt, "search": cmd_search, "pretrain": cmd_pretrain,
                "export": cmd_export, "report": cmd_report, "hessian": cmd_hessian, "predict": cmd_predict}[args.command](args) or 0
    except NetcError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:  # training has said what it saved (runtime/run_folder.Interrupted)
        print("netc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    except BrokenPipeError:  # `netc doc | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception:  # a bug in netc, not the user's fault
        traceback.print_exc()
        print("netc: internal error (a bug in netc; please report it with the spec)", file=sys.stderr)
        return EXIT_INTERNAL


def _model(path: str, **kw):
    from netc.model import compile as compile_model
    return compile_model(Path(path), **kw)


def cmd_check(args) -> int:
    m = _model(args.spec, allocate=False)  # compiled and estimated, nothing of a parameter's size allocated
    spec, prog = m.program.spec, m.program
    print(f"{args.spec}: ok")
    unknown = spec.unknown  # sizes the data gives (`_`), shown as ?
    for n in spec.inputs.values():
        print(f"  input  {n.name} {_shape(n, unknown.get(n.name))}")
    for n in spec.targets.values():
        cls = "?" if f"{n.name}.classes" in unknown else n.attr("classes")
        print(f"  target {n.name} " + (f"class({cls})" if cls else _shape(n, unknown.get(n.name))))
    total = 0
    for n in spec.params.values():
        size = 1
        for d in n.shape:
            size *= d
        total += size
        print(f"  param  {n.name:<16} {_shape(n, unknown.get(n.name)):<12} {dict(n.attr('init'))['dist']}")
    sized = [n for n in spec.params if n in unknown]
    print(f"  {len(spec.params)} parameters, " + (f"{len(sized)} of them sized by the data" if sized
                                                   else f"{total:,} values"))
    if prog.loss is not None:
        out = _shape(prog.output, unknown.get("<output>")) if prog.output is not None else '-'
        print(f"  loss   {_shape(prog.loss)}; output {out}")
    else:
        print(f"{args.spec}: warning: no loss, so nothing to train: netc train refuses this spec, and a model "
              f"compiled from it predicts with its initial parameters only; add e.g. loss = nll(softmax(y), t) "
              f"(netc doc prelude lists the losses)", file=sys.stderr)
    if m.memory is None:
        print("  memory: estimated once the data gives the sizes written `_` (netc train, fit)")
    else:
        print(f"  memory {m.memory.line()}")
    print(f"  compiled in {prog.seconds:.3f}s")
    if m.space:
        from netc.search import SearchConfig, describe_point
        print(f"  search space: {len(m.space)} hyper-parameter{'s' if len(m.space) != 1 else ''} "
              f"(netc search explores it; netc train trains the point drawn from the seed)")
        width = max(16, max(len(p) for p in m.space) + 1)
        for path, d in m.space.items():
            print(f"    {path:<{width}} {d}")
        s = m.search_cfg or SearchConfig()
        print(f"  search: {s.trials} trials, metric {s.metric} (minimized), "
              f"workers {s.workers or 'one per CPU'}, seed {s.seed}")
        print(f"  point for seed {m.train_cfg.seed}: {describe_point(m.sampled)}")
    return 0


def _sized(m, what: str):
    """The model with the sizes written `_` bound from its data block (netc/dims.py)."""
    from netc.dims import bound_by_data_block
    return bound_by_data_block(m, what)


def _shape(n, unknown: tuple | None = None) -> str:
    """`n`'s shape, B for the batch; `unknown`: the same with ? for sizes the data gives."""
    from netc.compiler.graph import shape_str
    return shape_str(n.shape) if unknown is None else shape_str(unknown)


def cmd_compile(args) -> int:
    from netc.compiler.pipeline import emit, fused_stats
    m = _sized(_model(args.spec, device=args.device), "netc compile")
    kind = args.emit or (None if args.stats else "graph")
    if kind == "cuda" or (kind is not None and not args.stats):  # --stats shows the fused plan only
        print(emit(m.program, kind, which=args.function, after=args.after), end="")
    if args.stats:
        print(fused_stats(m.program, args.function, m.train_cfg.batch,
                          f"{args.spec}: {args.function}, fused for the GPU"), end="")
    return 0


def cmd_train(args) -> int:
    from netc.compiler import validate
    for flag in ("epochs", "limit"):  # before compiling: a user error, exit 2
        if getattr(args, flag) is not None:
            validate.integer(getattr(args, flag), f"--{flag}", 1)
    if args.resume is not None:
        return _resume(args)
    m = _model(args.spec, seed=args.seed, debug=args.debug, device=args.device, backend=args.backend)
    out = Path(args.out) if args.out else _fresh_run_dir(Path(args.spec).stem)
    print(f"training {args.spec} -> {out}", file=sys.stderr)
    if "pretrain" in m.program.spec.blocks:
        print("note: netc train starts from the spec's initialization; `netc pretrain` reads the pretrain "
              "block (layer-wise pretraining, then fine-tuning)", file=sys.stderr)
    if m.space:  # a search space: one point, drawn from the seed (netc search explores the space)
        from netc.search import describe_point
        print(f"search space: training the point drawn from seed {m.train_cfg.seed}: "
              f"{describe_point(m.sampled)} (netc search explores the space)", file=sys.stderr)
    t0 = time.perf_counter()
    progress = None if not args.no_progress else False
    summary = m.fit(epochs=args.epochs, out=out, progress=progress, limit=args.limit, force=args.force,
                    log=lambda line: print(line, file=sys.stderr, flush=True)).summary_
    return _summary(m, out, str(args.spec), summary, t0, args)


def _resume(args) -> int:
    """netc train --resume DIR [--epochs N]: everything else comes from the run folder."""
    given = [f for f in ("out", "seed", "limit") if getattr(args, f) is not None]
    given += [f for f in ("force", "debug") if getattr(args, f)] + (["device"] if args.device != "cpu" else [])
    if given:
        raise NetcError(f"netc train --resume DIR takes the spec and its settings from the run folder; "
                        f"drop {', '.join('--' + f for f in given)} (only --epochs, "
                        f"--no-progress and --json go with --resume)")
    from netc.resume import resume
    if args.backend:  # an execution choice, not part of the run: the resumed model reads it here
        os.environ["NETC_BACKEND"] = args.backend
    out, t0 = Path(args.resume), time.perf_counter()
    m = resume(out, epochs=args.epochs, progress=None if not args.no_progress else False,
               log=lambda line: print(line, file=sys.stderr, flush=True))
    if m.resumed == "finished":
        _print_summary(args, m, out, _read_summary(out) or m.summary or {}, already=True)
        return 0
    return _summary(m, out, m.file, m.summary, t0, args)


def _summary(m, out: Path, spec: str, summary: dict, t0: float, args) -> int:
    summary = {"spec": spec, **summary, "compile_seconds": m.program.seconds,
               "wall_seconds": time.perf_counter() - t0, "seed": m.train_cfg.seed}
    _write_json(out / "summary.json", summary)
    _print_summary(args, m, out, summary)
    return 0


def cmd_pretrain(args) -> int:
    from netc.pretrain import cli
    return cli(args)


def cmd_search(args) -> int:
    from netc.search import cli
    return cli(args)


def _fresh_run_dir(stem: str) -> Path:
    base = Path("runs")
    k = 1
    while (base / f"{stem}-{k}").exists():
        k += 1
    return base / f"{stem}-{k}"


def _read_summary(out: Path) -> dict | None:
    """The run folder's summary.json (netc train's, with the spec and timings), or None."""
    try:
        s = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def _print_summary(args, m, out: Path, summary: dict, already: bool = False) -> None:
    """The end of a run: the table and the next commands (netc/summary.py), or with --json
    the summary object itself (summary.json's content) for scripts."""
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return
    from netc.summary import example_data, render
    print(render(summary, out, data=example_data(m), already=already))



def _write_json(path: Path, obj) -> None:
    from netc.compiler.atomic import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=str).encode()))


def cmd_gradcheck(args) -> int:
    from netc.gradcheck import gradcheck
    m = _sized(_model(args.spec, dtype="float64"), "netc gradcheck")
    result = gradcheck(m, examples=args.examples, entries=args.entries, seed=args.seed, tol=args.tol)
    print("\n".join(result.report()))
    return 0 if result.ok() else EXIT_CHECK


def cmd_lr_probe(args) -> int:
    from netc.diagnostics import _train_set, lr_probe
    if not hasattr(_model(args.spec).train_cfg.method, "lr"):
        raise NetcError("lr-probe needs a method with a learning rate")
    sized = _sized(_model(args.spec), "netc lr-probe")  # each trial compiles the text with the data's sizes
    ds = _train_set(sized, args.examples)
    print(f"probing {args.spec} on {len(ds)} examples, {args.epochs} epoch(s) a trial:")
    from netc.model import Model
    lr = lr_probe(lambda **kw: Model(sized.text, sized.file, **kw), ds.x, ds.t, start=args.start,
                  epochs=args.epochs)
    if lr is None:
        print("no rate tried trains without diverging: check the spec (netc gradcheck, netc overfit)")
        return EXIT_CHECK
    print(f"largest rate that trains: {lr:.4g} (a rate 2-3x below it is a safe start)")
    return 0


def cmd_overfit(args) -> int:
    from netc.diagnostics import overfit
    m = _model(args.spec)
    print(f"training {args.spec} on its first {args.examples} training examples:")
    ok, score = overfit(m, args.examples, args.max_epochs)
    if ok:
        print("ok: the network learns the subset by heart")
        return 0
    print("could not overfit the subset: suspect a bug in the loss or the data, too little capacity, "
          "or a learning rate that is too small or too large (netc lr-probe, netc gradcheck)")
    return EXIT_CHECK


def cmd_fmt(args) -> int:
    from netc.compiler.format import fmt_file
    return 0 if fmt_file(args.spec, check=args.check, write=args.write) else EXIT_CHECK


def cmd_export(args) -> int:
    from netc.export_onnx import export, require_onnx
    from netc.model import load
    require_onnx()  # before loading: say what to install first
    path, signature = export(load(args.run), args.out, format=args.format)
    print(f"wrote {path}: {signature}")
    return 0


def cmd_predict(args) -> int:
    from netc.model import load
    from netc.predict import check_out, predictions, read_examples, write
    out = check_out(args.out)  # before loading anything
    m = load(args.run)
    y, columns = predictions(m, read_examples(Path(args.data), m), args.proba)
    write(y, columns, out)
    if out is not None:
        shown = ", ".join(columns[:4]) + (", ..." if len(columns) > 4 else "")
        print(f"wrote {out}: {len(y)} records ({shown})", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from netc.report import write_report
    out = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None)
    print(f"report: {out}")
    return 0


def cmd_hessian(args) -> int:
    from netc.hessian import command
    print(command(args.spec, args.run, k=args.k, matrix=args.matrix, batches=args.batches, steps=args.steps,
                  probes=args.probes, seed=args.seed, as_json=args.json))
    return 0


def cmd_doc(args) -> int:
    from netc.runtime.config import DataConfig, TrainConfig, describe
    if args.topic == "train":
        print("train { ... } keys:\n" + describe(TrainConfig))
    elif args.topic == "data":
        print("data { ... } keys:\n" + describe(DataConfig))
    elif args.topic == "search":
        from netc.search import SearchConfig
        print("search { ... } keys (the space: loguniform(a, b), uniform(a, b), intrange(a, b), "
              "choice(v1, v2, ...) in place of a value in the data/train blocks):\n" + describe(SearchConfig))
    elif args.topic == "pretrain":
        from netc.pretrain_block import describe as describe_pretrain
        print("pretrain { ... } keys (netc pretrain SPEC):\n" + describe_pretrain())
    elif args.topic == "methods":
        from netc.docs import methods_reference
        print(methods_reference())
    elif args.topic == "ops":
        from netc.compiler.ops import language_ops
        for name, op in sorted(language_ops().items()):
            params, defaults = op.lang
            sig = ", ".join(p if p not in defaults else f"{p} = {defaults[p]}" for p in params)
            print(f"  {name}({sig})  {op.doc}")
    else:
        from netc.docs import prelude_reference
        print(prelude_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
