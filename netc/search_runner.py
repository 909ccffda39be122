"""Where a search's trials run: `run_trial(job) -> record`, a pure function of the
job (the spec's text, the trial's seed, the data it names), and the runners that
call it somewhere.

A runner takes the jobs and hands back one record per job, failures included;
the search (the client) makes the jobs and keeps the records (search_store.py).
`LocalPool` runs them on worker processes of this machine; `DaskRunner`
(search_dask.py) on a Dask cluster, with `run_trial` inside its task. The local
workers die with the search, even when it is killed with SIGKILL: no orphan
goes on training.

What a cluster runner adds, without changing the search or the store: the job
carries what a remote worker cannot read from this machine (`TrialJob.used`:
the `use`d files; the CSV/NPZ data go beside it, or are read at a shared
path), and the trial's run folder is written by the client from the returned
files rather than by the worker into `job.dir`. A task that is rescheduled
after its worker died simply runs `run_trial` again: the record is what
counts, and only the client appends it.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from netc.compiler.atomic import atomic_write
from netc.compiler.errors import NetcError
from netc.search_space import METRICS, plain

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class TrialJob:
    """Everything one trial needs, as plain values: a job crosses process (and, for a
    cluster, machine) boundaries."""
    trial: int
    seed: int  # the trial's seed: its point of the space and its training seed
    text: str  # the spec's text
    file: str  # the spec's path (its `use`d files and its data are found from it)
    dir: str  # the trial's run folder
    metric: str  # the search block's metric, e.g. "valid.error"
    epochs: int | None = None
    limit: int | None = None
    # the spec's `use`d files by path relative to its folder (sources.embed): when set, the
    # spec reads these and no file of the disk (a cluster worker has not the client's files)
    used: dict[str, str] | None = None


def run_trial(job: TrialJob) -> dict:
    """Train one trial in its own run folder. Never raises: a failure is part of
    the record (a JSON object: trial, seed, status, metric, sampled, error,
    summary, seconds, dir)."""
    from netc.model import Model  # a worker imports the trainer; the search's client need not

    t0 = time.perf_counter()
    rec = {"trial": job.trial, "seed": job.seed, "status": "failed", "metric": None,
           "sampled": None, "error": None, "summary": None, "seconds": None, "dir": job.dir}
    run_dir = Path(job.dir)
    try:
        if run_dir.exists():  # a trial cut off earlier (Ctrl-C, a crash) starts afresh
            shutil.rmtree(run_dir)
        m = Model(job.text, job.file, seed=job.seed, embedded=job.used)
        rec["sampled"] = plain(m.sampled)
        summary = m.fit(epochs=job.epochs, out=run_dir, limit=job.limit, progress=False).summary_
        summary = {**summary, "trial": job.trial, "seed": job.seed,
                   "wall_seconds": time.perf_counter() - t0}
        atomic_write(run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2, default=str).encode()))
        rec["summary"] = summary
        value = summary.get(METRICS[job.metric])
        if value is None or not math.isfinite(value):
            rec["error"] = f"the metric {job.metric} came out {value}"
        else:
            rec["metric"], rec["status"] = float(value), "ok"
    except NetcError as e:
        rec["error"] = f"{e.loc}: {e.message}" if e.loc else e.message
    except Exception as e:  # noqa: BLE001 - a trial's failure must not stop the search
        rec["error"] = f"internal error: {type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc()
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return json.loads(json.dumps(rec, default=str))


def failed_record(job: TrialJob, error: str) -> dict:
    """The record of a trial that produced none (its worker died)."""
    return {"trial": job.trial, "seed": job.seed, "status": "failed", "metric": None, "sampled": None,
            "error": error, "summary": None, "seconds": None, "dir": job.dir}


class Runner(Protocol):
    """Runs trial jobs somewhere. The client keeps the store: a runner only returns records."""

    def describe(self) -> str:
        """Where the trials run, for the log: "2 worker process(es)"."""

    def run(self, jobs: Sequence[TrialJob], finished: Callable[[dict], None]) -> bool:
        """Run every job; call `finished(record)` in the caller's thread as each ends,
        once per job (a record for a failure too). Returns True if interrupted
        (Ctrl-C): the trials in flight are lost, and rerunning them is the caller's
        resume."""


def cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


class LocalPool:
    """Trials on `workers` spawned processes of this machine, sharing its `cpus`."""

    def __init__(self, workers: int, cpus: int):
        self.workers = max(1, workers)
        self.cpus = max(1, cpus)

    def describe(self) -> str:
        return f"{self.workers} worker process(es)"

    def run(self, jobs: Sequence[TrialJob], finished: Callable[[dict], None]) -> bool:
        import concurrent.futures as cf
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        # one BLAS thread pool per worker, sized so the workers share the cores; spawned
        # workers start clean (no state inherited from this process) and read these
        threads = str(max(1, self.cpus // self.workers))
        saved = {}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            saved[var] = os.environ.get(var)
            if saved[var] is None:
                os.environ[var] = threads

        def pool():
            return cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                          initializer=_worker_init, initargs=(os.getpid(),))

        queue, retried = deque(jobs), set()
        ex = pool()
        inflight: dict = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < self.workers:
                    job = queue.popleft()
                    inflight[ex.submit(run_trial, job)] = job
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in done:
                    job = inflight.pop(fut)
                    try:
                        rec = fut.result()
                    except BrokenProcessPool:
                        # every trial in flight gets this, not only the one that killed its worker:
                        # each is tried once more, and recorded as failed if its worker dies again
                        broken = True
                        if job.trial not in retried:
                            retried.add(job.trial)
                            queue.append(job)
                            continue
                        rec = failed_record(job, "the worker process died while this trial ran, twice (killed, "
                                                 "or out of memory?)")
                    except Exception as e:  # noqa: BLE001
                        rec = failed_record(job, f"internal error: {type(e).__name__}: {e}")
                    finished(rec)
                if broken:
                    ex.shutdown(wait=False, cancel_futures=True)
                    ex = pool()
            return False
        except KeyboardInterrupt:
            for p in list((getattr(ex, "_processes", None) or {}).values()):
                p.terminate()  # the trials in flight are lost; their folders are redone on resume
            return True
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
            for var, v in saved.items():
                if v is None:
                    os.environ.pop(var, None)


# ---- the worker processes ------------------------------------------------------------------


def _worker_init(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, the workers ignore it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Make this process end when `parent` does, however it ends (kill -9 included).

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG);
    everywhere, a daemon thread watches for the process being re-parented. A
    parent that died before this ran is noticed at once."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watching thread still ends this process, within a second
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="netc-watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent:
            os._exit(1)
