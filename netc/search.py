"""`netc search`: random search over a spec's space (Bergstra & Bengio 2012 [PR 3.4]).

The search draws trial k's point from `trial_seed(search seed, k)`
(search_space.py), runs the trials on a runner (search_runner.py: local worker
processes by default; search_dask.py: a Dask cluster, --scheduler), keeps
every finished trial in the store (search_store.py: DIR/trials.jsonl, one
fsynced line per trial) and reports the best trial, the best-so-far curve and
the border warnings. Running the same
command again resumes: only the trials missing from the store run.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from netc.compiler.errors import NetcError, SpecError
from netc.model import Model, read_spec
from netc.search_runner import LocalPool, Runner, TrialJob, cpus
from netc.search_space import SearchConfig, describe_point, show_value, trial_seed
from netc.search_store import Store, best_so_far, border_warnings, write_curve

__all__ = ["Report", "SearchConfig", "cli", "describe_point", "format_report", "run_search"]


@dataclass
class Report:
    out: Path
    metric: str
    trials: int
    records: list[dict]
    ran: int
    resumed: int
    best: dict | None
    curve: list[dict]
    warnings: list[str]
    interrupted: bool = False


def run_search(path, *, trials: int | None = None, workers: int | None = None, out=None,
               epochs: int | None = None, limit: int | None = None, log=None, tty: bool = False,
               runner: Runner | None = None, scheduler: str | None = None, shared_data: bool = False) -> Report:
    """Random search over the spec's space: the trials run on `runner` (default: the
    Dask cluster at `scheduler` if given, else local worker processes, `workers` of
    them) and are kept in the store here. `shared_data`: the cluster's workers read the
    data files at this machine's paths (nothing shipped).
    Returns the report; raises NetcError for a spec that is not a search space."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    text, file = read_spec(path)
    m = Model(text, file)  # every spec error, before any trial
    if not m.space:
        raise NetcError(f"{file} has no distributions, so there is nothing to search; write one in place of a "
                        f"value, e.g. method = sgd(lr = loguniform(1e-4, 1e-1)), or train it with netc train")
    cfg = m.search_cfg or SearchConfig()
    _check_metric(m, cfg)
    n = trials or cfg.trials
    out = Path(out) if out else Path("runs") / f"{Path(file).stem}-search"
    identity = {"spec_sha256": hashlib.sha256(text.encode()).hexdigest(), "seed": cfg.seed,
                "metric": cfg.metric, "epochs": epochs, "limit": limit,
                "space": {p: str(d) for p, d in m.space.items()}, "spec": file}
    if runner is None and scheduler is not None:
        from netc.search_dask import DaskRunner, shipment  # Dask only when asked for
        # its progress line names the best trial so far, from the store (made below)
        runner = DaskRunner(scheduler, shipment(m, file, shared_data), log,
                            best=lambda: _best_line(store, n, cfg.metric))
    store = Store(out, identity)
    try:
        return _search(m, cfg, text, file, n, out, store, workers, epochs, limit, log, tty, runner)
    finally:
        store.close()


def _search(m, cfg, text, file, n, out, store, workers, epochs, limit, log, tty, runner) -> Report:
    if store.skipped:
        log(f"{store.path}: {store.skipped} unreadable line(s) skipped (a write cut short); those trials run again")
    done = {k for k in store.records if k <= n}
    todo = [k for k in range(1, n + 1) if k not in done]
    if runner is None:
        n_cpus = cpus()
        runner = LocalPool(min(workers or cfg.workers or n_cpus, n_cpus, len(todo) or 1), n_cpus)
    width = max(3, len(str(n)))
    abs_file = str(Path(file).resolve()) if not file.startswith("<") else file
    if done:
        log(f"resuming {out}: {len(done)} of {n} trials already done, {len(todo)} to run")
    if todo:
        log(f"searching {file}: {len(todo)} trial(s) on {runner.describe()}, metric {cfg.metric} -> {out}")
    ran, interrupted = 0, False

    def finished(rec):
        nonlocal ran
        ran += 1
        store.append(rec)
        recs = [r for k, r in store.records.items() if k <= n]
        best, curve = best_so_far(recs)
        write_curve(out, cfg.metric, best, curve)
        tag = f"trial {rec['trial']:>{len(str(n))}}/{n}"
        if rec["status"] == "ok":
            log(f"{tag}  {cfg.metric} {rec['metric']:.4g}  {describe_point(rec['sampled'] or {})}  "
                f"({rec['seconds']:.1f}s)")
        else:
            log(f"{tag}  FAILED: {rec['error']}")
        if tty and best is not None:
            log(f"  best so far: trial {best['trial']}, {cfg.metric} {best['metric']:.4g}  "
                f"{describe_point(best['sampled'])}")

    jobs = [TrialJob(trial=k, seed=trial_seed(cfg.seed, k), text=text, file=abs_file,
                     dir=str(out / f"trial-{k:0{width}d}"), metric=cfg.metric, epochs=epochs, limit=limit)
            for k in todo]
    if jobs:
        interrupted = runner.run(jobs, finished)
    recs = sorted((r for k, r in store.records.items() if k <= n), key=lambda r: r["trial"])
    best, curve = best_so_far(recs)
    write_curve(out, cfg.metric, best, curve)
    warnings = border_warnings(m.space, best["sampled"]) if best else []
    return Report(out, cfg.metric, n, recs, ran, len(done), best, curve, warnings, interrupted)


def _best_line(store: Store, n: int, metric: str) -> str | None:
    best, _ = best_so_far([r for k, r in store.records.items() if k <= n])
    return None if best is None else f"{metric} {best['metric']:.4g} (trial {best['trial']})"


def _check_metric(m, cfg: SearchConfig) -> None:
    entries = m.program.spec.blocks.get("search") or []
    loc = next((e.loc for e in entries if e.key == "metric"), m.program.spec.block_locs.get("search"))
    need = None
    if m.data_cfg.train is None:
        raise SpecError("a search trains every trial on the data block: add data { train = ... }",
                        m.program.spec.block_locs.get("data"), m.text)
    if cfg.metric.startswith("valid.") and m.data_cfg.valid is None:
        need = "a validation set: add valid = ... to the data block"
    elif cfg.metric.endswith(".error") and m.program.errors is None:
        need = "an error rate, i.e. a class(n) target and an [B, n] output; use valid.loss"
    if need:
        raise SpecError(f"metric = {cfg.metric} needs {need}", loc, m.text)


# ---- the command ------------------------------------------------------------


def format_report(r: Report) -> str:
    ok = [x for x in r.records if x.get("status") == "ok"]
    failed = [x for x in r.records if x.get("status") != "ok"]
    lines = [f"search: {len(r.records)} of {r.trials} trials finished ({len(ok)} ok, {len(failed)} failed), "
             f"{r.ran} run now; metric {r.metric} (minimized); results in {r.out / 'trials.jsonl'}"]
    if r.best is None:
        lines.append("no trial succeeded")
    else:
        b = r.best
        lines.append(f"best: trial {b['trial']} (seed {b['seed']}), {r.metric} {b['metric']:.6g}, in {b['dir']}")
        for k, v in b["sampled"].items():
            lines.append(f"  {k} = {show_value(v)}")
        steps = []
        last = None
        for c in r.curve:
            if c["metric"] is not None and c["metric"] != last:
                steps.append(f"{c['k']}: {c['metric']:.4g}")
                last = c["metric"]
        lines.append(f"best so far after k trials (k: {r.metric}, where it improves; all k in "
                     f"{r.out / 'best_so_far.json'}):")
        lines.append("  " + ", ".join(steps))
    for x in failed[:10]:
        lines.append(f"trial {x['trial']} failed: {x['error']}")
    if len(failed) > 10:
        lines.append(f"... and {len(failed) - 10} more failed trials (see trials.jsonl)")
    lines.extend(r.warnings)
    return "\n".join(lines)


def cli(args) -> int:
    """`netc search SPEC [--trials N] [--workers W] [--out DIR] [--epochs N] [--limit N]
    [--scheduler ADDRESS [--shared-data]]`."""
    report = run_search(args.spec, trials=args.trials, workers=args.workers, out=args.out, epochs=args.epochs,
                        limit=args.limit, tty=sys.stderr.isatty(), scheduler=getattr(args, "scheduler", None),
                        shared_data=getattr(args, "shared_data", False))
    print(format_report(report), flush=True)
    if report.interrupted:
        print(f"interrupted: the {len(report.records)} finished trials are kept in {report.out / 'trials.jsonl'}; "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    if report.records and report.best is None:
        return 2  # every trial failed: the spec or its data, most likely
    return 0
