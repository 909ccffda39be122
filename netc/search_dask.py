"""`netc search --scheduler ADDRESS`: the trials as tasks of a Dask cluster (issue 12).

Dask (`distributed`, the optional extra `netc[dask]`) schedules, reschedules a
task whose worker died and ships the data; netc keeps the rest. A task is
`run_remote_trial`, a pure top-level function of plain values: the job (spec
text, trial seed), the spec's `use`d files (`Spec.used`, embedded as a
checkpoint embeds them) and its CSV/NPZ files (bytes, scattered once to every
worker; with `shared_data` each worker reads them at the client's paths
instead; the shipped MNIST is on every worker that has netc installed). It
rebuilds the spec's folder in a temporary folder, trains there with
`search_runner.run_trial`, the very function the local pool runs, and returns
the record with the run folder's files. The client writes each run folder
(staged, then renamed: never half-written) and only then the record, into its
own store: a task run twice (its worker died) is still recorded once.

`ADDRESS` is a scheduler's (tcp://HOST:PORT, from `dask scheduler`) or
`local:N`: a LocalCluster of N worker processes of one thread each, which die
with the client (Dask's nanny ends them when their parent goes, kill -9 too).
This module imports Dask only when a runner is made: `netc search` without
--scheduler never needs it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

from netc.compiler import sources
from netc.compiler.errors import DataError, NetcError
from netc.search_runner import TrialJob, cpus, failed_record, run_trial

INSTALL = "pip install 'netc[dask]'"
PROGRESS_SECONDS = 10.0  # how often the client says how the search stands while it waits
CONNECT_TIMEOUT = "20s"
SPLITS = ("train", "valid", "test")


def require_distributed():
    """Dask's `distributed`, or the error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise NetcError(f"netc search --scheduler runs the trials on Dask, which is not installed here: "
                        f"{INSTALL} (on this machine and on every worker)") from None
    return distributed


# ---- what a trial needs, gathered by the client ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shipment:
    """What every trial of a search needs beyond its job, as plain values.

    used: the spec's `use`d files by path relative to the spec's folder (sources.embed);
    data: the CSV/NPZ files by their normalized relative path, None when the workers read
    them where the client does (`shared_data`); depth: how many `..` the data paths climb."""
    used: dict[str, str]
    data: dict[str, bytes] | None
    depth: int = 0

    @property
    def data_bytes(self) -> int:
        return sum(len(b) for b in (self.data or {}).values())


def shipment(model, file: str, shared_data: bool = False) -> Shipment:
    """The Shipment of a search over `model` (the spec at `file`). A data file at an
    absolute path can be shipped only if the workers share it: a NetcError says so."""
    used = sources.embed(model.program.spec.used, file)
    if shared_data:
        return Shipment(used, None)
    base = sources.base_of(file)
    data, depth = {}, 0
    for split in SPLITS:
        src = getattr(model.data_cfg, split, None)
        if src is None or src.kind not in ("csv", "npz") or not src.args:
            continue  # mnist(...) is on every worker with netc
        written = str(src.args[0])
        if os.path.isabs(written):
            raise NetcError(f"{src.kind}(\"{written}\") is an absolute path: the cluster's workers get the data "
                            f"shipped by its path relative to the spec; write it relative to "
                            f"{base if base != Path('.') else 'the spec'}, or pass --shared-data if every worker "
                            f"reads it at that path")
        rel = os.path.normpath(written)
        parts = Path(rel).parts
        depth = max(depth, next((i for i, p in enumerate(parts) if p != ".."), len(parts)))
        if rel not in data:
            with sources.open_regular(base / rel, lambda why, w=written: DataError(f"cannot read {w}: {why}")) as f:
                data[rel] = f.read()
    return Shipment(used, data, depth)


# ---- the task -----------------------------------------------------------------------------------


def run_remote_trial(job: dict, used: dict[str, str], data: dict[str, bytes] | None, depth: int,
                     host_threads: dict[str, int]) -> dict:
    """One trial on a Dask worker: {"record": the record run_trial makes, "files": the
    run folder's files by name}. Pure in (job, used, data): the same seed gives the
    same record, bit for bit, as the local pool's run_trial."""
    job = TrialJob(**job)
    with tempfile.TemporaryDirectory(prefix=f"netc-trial-{job.trial}-") as tmp:
        root = Path(tmp)
        if data is None:  # the workers share the client's files: read them where it does
            file = job.file
        else:  # the spec's folder, rebuilt: its relative data paths find the shipped bytes
            folder = root.joinpath("spec", *[f"up{i}" for i in range(depth)])
            name = Path(job.file).name if not job.file.startswith("<") else "spec.net"
            file = str(folder / name)
            for rel, blob in data.items():
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)
        run_dir = root / "run"
        with _blas_limit(_blas_threads(host_threads)):
            rec = run_trial(dataclasses.replace(job, file=file, dir=str(run_dir), used=used))
        files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()} \
            if run_dir.is_dir() else {}
    rec["dir"] = job.dir
    return {"record": rec, "files": files}


def _blas_threads(host_threads: dict[str, int]) -> int:
    """The BLAS threads of one trial on this worker: its host's CPUs shared by the
    trials that host runs at once (every worker thread on it), as the local pool does."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        worker = get_worker()
        n = host_threads.get(get_address_host(worker.address)) or worker.state.nthreads
    except (ImportError, ValueError, AttributeError):
        n = 1
    return max(1, cpus() // max(1, n))


def _blas_limit(threads: int):
    # the worker imported NumPy long ago: environment variables are too late, threadpoolctl is not
    # (without it, Dask's nanny has set OMP/OPENBLAS/MKL_NUM_THREADS=1 before the worker started)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


# ---- the client's side --------------------------------------------------------------------------


def write_run_folder(target: Path, files: dict[str, bytes]) -> None:
    """The trial's run folder from its returned files: written in a staging folder beside
    it, then renamed into place; an older folder (a trial cut off earlier) is replaced."""
    stage = target.with_name(f".{target.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name, blob in files.items():
        if not name or name != Path(name).name or name in (".", ".."):
            raise NetcError(f"a worker returned a run folder file named {name!r}")
        fd = os.open(stage / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
    if target.exists():
        shutil.rmtree(target)
    os.rename(stage, target)
    with contextlib.suppress(OSError):
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view):]


def parse_scheduler(address: str) -> tuple[str, int | None]:
    """("local", N) for local:N (local: one worker per CPU), else ("remote", None)."""
    if address == "local" or address.startswith("local:"):
        n = address.partition(":")[2]
        if not n:
            return "local", cpus()
        if not n.isdigit() or int(n) < 1:
            raise NetcError(f"--scheduler {address}: expected local:N with N >= 1 worker processes")
        return "local", int(n)
    if not address or any(c.isspace() for c in address):
        raise NetcError(f"--scheduler {address!r}: expected a scheduler address, e.g. tcp://10.0.0.5:8786, "
                        f"or local:N")
    return "remote", None


class DaskRunner:
    """Trials as tasks of the Dask cluster at `address` (search_runner.Runner)."""

    def __init__(self, address: str, ship: Shipment, log: Callable[[str], None],
                 best: Callable[[], str | None] | None = None):
        self.kind, self.n_local = parse_scheduler(address)
        self.address, self.ship, self.log = address, ship, log
        self.best = best or (lambda: None)
        require_distributed()

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local Dask cluster of {self.n_local} worker process(es)"
        return f"the Dask cluster at {self.address}"

    def _connect(self):
        import distributed
        if self.kind == "local":
            try:
                cluster = self._local_cluster(distributed)
            except (OSError, RuntimeError, TimeoutError) as e:
                raise NetcError(f"could not start a local Dask cluster of {self.n_local} worker process(es): "
                                f"{e}") from None
            return cluster, distributed.Client(cluster)
        try:
            return None, distributed.Client(self.address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise NetcError(f"cannot reach the Dask scheduler at {self.address}: {e}; start one there with "
                            f"`dask scheduler` and workers with `dask worker {self.address}`") from None

    def _local_cluster(self, distributed):
        # loopback only, no dashboard; its scheduler's HTTP endpoints on a free loopback port
        return distributed.LocalCluster(n_workers=self.n_local, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                                        silence_logs=logging.ERROR,  # not its warnings on Ctrl-C
                                        preload=[__name__])  # dask_setup below, in every worker

    def run(self, jobs: Sequence[TrialJob], finished: Callable[[dict], None]) -> bool:
        cluster, client = self._connect()
        try:
            return self._run(client, jobs, finished)
        except KeyboardInterrupt:
            return True  # the trials in flight are lost; closing the client cancels them
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=10)

    def _run(self, client, jobs, finished) -> bool:
        import distributed
        if not client.scheduler_info().get("workers"):
            self.log(f"waiting for a Dask worker to join {client.scheduler.address} "
                     f"(start one with `dask worker {client.scheduler.address}`)")
            client.wait_for_workers(1)
        check_workers(client)
        data = None
        if self.ship.data is not None:
            self.log(f"sending the data files ({len(self.ship.data)}, {self.ship.data_bytes / 1e6:.1f} MB) to the "
                     f"workers, once")
            data = client.scatter([self.ship.data], broadcast=True, hash=False)[0]  # once, shared by the trials
        host_threads: dict[str, int] = {}
        for w in client.scheduler_info()["workers"].values():
            host_threads[w["host"]] = host_threads.get(w["host"], 0) + int(w.get("nthreads") or 1)
        run_id = uuid.uuid4().hex[:8]
        futures = {client.submit(run_remote_trial, _plain(job), self.ship.used, data, self.ship.depth, host_threads,
                                 key=f"netc-trial-{job.trial}-{run_id}", pure=False): job for job in jobs}
        pending, counts, lost, last = set(futures), {"done": 0, "failed": 0}, [], time.monotonic()
        while pending:
            try:
                done, pending = distributed.wait(pending, timeout=PROGRESS_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                job = futures[fut]
                rec = self._record(fut, job, lost)
                if rec is None:
                    continue
                counts["done"] += 1
                counts["failed"] += rec["status"] != "ok"
                finished(rec)
            if time.monotonic() - last >= PROGRESS_SECONDS and pending:
                self._progress(client, futures, pending, counts, len(jobs))
                last = time.monotonic()
        if lost:
            raise NetcError(f"{len(lost)} trial(s) lost contact with the cluster ({lost[0]}); the finished trials "
                            f"are kept: run the same command again to run the others")
        return False

    def _record(self, fut, job: TrialJob, lost: list) -> dict | None:
        """The trial's record (its run folder written first), or None if it is lost."""
        if fut.status == "finished":
            try:
                out = fut.result()
                write_run_folder(Path(job.dir), out["files"])
                return out["record"]
            except (OSError, KeyError, TypeError) as e:
                lost.append(f"trial {job.trial}: {type(e).__name__}: {e}")
                return None
        if fut.status == "error":
            e = fut.exception()
            if isinstance(e, ImportError):  # the worker's Python, not the trial: nothing to record
                lost.append(f"trial {job.trial}: the worker could not import it: {e}; install netc there ({INSTALL})")
                return None
            if type(e).__name__ == "KilledWorker":
                return failed_record(job, "the Dask workers running this trial died, each time (killed, or out "
                                          "of memory?)")
            return failed_record(job, f"internal error on the cluster: {type(e).__name__}: {e}")
        lost.append(f"trial {job.trial}: {fut.status}")  # cancelled: the scheduler went away
        return None

    def _progress(self, client, futures, pending, counts, total) -> None:
        try:
            busy = {k for keys in client.processing().values() for k in keys}
        except Exception:  # noqa: BLE001 - a progress line must not stop the search
            busy = set()
        running = sum(1 for f in pending if f.key in busy)
        best = self.best()
        self.log(f"progress: {counts['done']} of {total} done, {running} running, {len(pending) - running} "
                 f"waiting, {counts['failed']} failed" + (f"; best so far {best}" if best else ""))


def dask_setup(worker) -> None:
    """Dask's preload hook, run in each worker process of a `local:N` cluster as it
    starts (restarted ones too): Ctrl-C reaches the whole process group, and the
    client decides (it cancels the trials and closes the cluster); a worker that
    also took it would end mid-trial with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def netc_version() -> str | None:
    """This machine's installed netc, as the workers' is read (package metadata)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("netc")
    except PackageNotFoundError:
        return None


def check_workers(client) -> None:
    """Every worker has this machine's netc: a trial is the same function everywhere.
    A worker without it would fail every trial, and those failures are no result to keep."""
    from importlib.metadata import version
    mine = netc_version()
    if mine is None:  # netc run from a source tree, not installed: nothing to compare with
        return
    theirs = client.run(version, "netc", on_error="return")
    bad = {w: v for w, v in theirs.items() if v != mine}
    if bad:
        shown = ", ".join(f"{w} ({f'netc {v}' if isinstance(v, str) else 'no netc'})" for w, v in sorted(bad.items()))
        raise NetcError(f"Dask worker(s) without this machine's netc {mine}: {shown}; install the same netc on every "
                        f"worker ({INSTALL}) and restart them")


def _plain(job: TrialJob) -> dict:
    return {f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name != "used"}
