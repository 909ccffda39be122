"""netc against the frameworks its users would pick instead, side by side in one run.

The workload (issue 14): MNIST 784-800-800-10 tanh, softmax NLL, minibatch 128,
SGD with momentum 0.9 (v <- mu v - lr g, w <- w + v), float32, the same initial
weights and the same batch order for every system; seconds per epoch are the
median of epochs 2-4 over all repeats. Plus the small network's step: 64-100-10
relu, B = 32, one SGD+momentum step (minibatch gather included), microseconds.

    python bench/peers.py [--examples 50000] [--repeats 2] [--peers-python PY]
                          [--systems netc-native,netc-numpy,...]

Systems (each in a process of its own, so that its peak RSS is its own; the
repeats interleave the systems, so machine noise hits all alike; `cores_used`
is the process's CPU time over the timed epochs' wall time, how many cores it
kept busy):

  netc-native    the compiled step, native backend (skipped with the reason if unavailable)
  netc-numpy     the compiled step, generated NumPy
  netc-fit       netc's trainer itself (Model.fit, native backend where available, per-layer
                 statistics on; its own shuffling), seconds from its metrics rows
  numpy          hand-written NumPy (bench/mlp_epoch.py's HandNumpy)
  gemm-openblas  the step's eight matrix products alone, NumPy's OpenBLAS (a floor)
  gemm-mkl       the same products by ctypes through MKL's cblas_sgemm (runtime/blas.py),
                 when the `mkl` wheel is installed
  jax            JAX, the whole step (gather included) one jit-compiled function
  torch          PyTorch eager (autograd, foreach momentum update)

JAX and PyTorch run under `--peers-python PY` (default: this interpreter), so they
never need to be installed where netc is: the weights and the batch order go
over in a temporary folder as .npy files, the results come back as JSON. A peer
that cannot be imported there is listed as skipped. The last line printed is
`netc/best-peer: X`: netc's epoch (native, else NumPy) over the fastest of
JAX, PyTorch and hand-written NumPy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mlp_epoch  # noqa: E402 - the workload: data, weights
import peers_impl  # noqa: E402

NETC = ("netc-native", "netc-numpy", "netc-fit", "numpy", "gemm-openblas", "gemm-mkl")
PEERS = ("jax", "torch")
ORDER = ("netc-native", "netc-fit", "netc-numpy", "numpy", "jax", "torch", "gemm-openblas", "gemm-mkl")
LABELS = {"netc-native": "netc, native step", "netc-fit": "netc, Model.fit (trainer)",
          "netc-numpy": "netc, generated NumPy step", "numpy": "hand-written NumPy",
          "jax": "JAX jit (whole step)", "torch": "PyTorch eager", "gemm-openblas": "GEMMs alone, OpenBLAS",
          "gemm-mkl": "GEMMs alone, MKL (ctypes)"}
BEST_PEER_OF = ("numpy", "jax", "torch")
SMALL_N = 2048


def write_inputs(d: Path, examples: int, epochs: int, seed: int) -> None:
    """The data, weights and batch orders every system reads."""
    x, t = mlp_epoch.make_data(examples)
    np.save(d / "x.npy", x)
    np.save(d / "t.npy", t)
    rng = np.random.default_rng(seed)
    for k, v in mlp_epoch.init_params(rng).items():
        np.save(d / f"{k}.npy", v)
    np.save(d / "order.npy", np.stack([rng.permutation(len(x)) for _ in range(epochs)]))
    # the small network: 64 inputs, 100 relu, 10 classes, Glorot uniform
    sx = rng.normal(size=(SMALL_N, 64)).astype(np.float32)
    np.save(d / "small_x.npy", sx)
    np.save(d / "small_t.npy", rng.integers(0, 10, SMALL_N).astype(np.int64))
    for i, (a, b) in enumerate(((64, 100), (100, 10))):
        r = np.sqrt(6 / (a + b))
        np.save(d / f"small_W{i}.npy", rng.uniform(-r, r, (a, b)).astype(np.float32))
        np.save(d / f"small_b{i}.npy", np.zeros(b, np.float32))
    np.save(d / "small_order.npy", rng.permutation(SMALL_N))


def run_one(system: str, d: Path, python: str, args) -> dict:
    cmd = [python, str(HERE / "peers_impl.py"), system, str(d), "--epochs", str(args.epochs),
           "--small-steps", str(args.small_steps)]
    env = dict(os.environ)
    if args.threads:  # every system alike: netc, the BLASes, OpenMP, PyTorch, XLA
        n = str(args.threads)
        env.update(NETC_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
                   NETC_PEERS_CPUS=n)  # and the process pinned to n cores (XLA sizes its pool by them)
        if args.threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1").strip()
    if system in PEERS:  # the peers' interpreter must not see netc's environment
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"system": system, "skipped": f"timed out after {args.timeout} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"system": system, "skipped": f"failed (exit {p.returncode}): {tail[:200]}"}


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for system, rs in results.items():
        ok = [r for r in rs if "skipped" not in r]
        if not ok:
            out[system] = {"skipped": rs[0]["skipped"] if rs else "not run"}
            continue
        later = [s for r in ok for s in r["epochs"][1:4]]  # epochs 2-4 of every repeat
        row = {"epoch": statistics.median(later), "runs": [statistics.median(r["epochs"][1:4]) for r in ok],
               "rss": max(r["rss_mib"] for r in ok), "first_loss": ok[0].get("first_loss"),
               "epoch1_loss": ok[0].get("epoch1_loss"), "info": {k: v for k, v in ok[0].items() if k in (
                   "cores_used", "netc_backend", "blas", "jax", "torch", "torch_threads", "python")}}
        smalls = [r["small_us"] for r in ok if r.get("small_us") is not None]
        row["small"] = statistics.median(smalls) if smalls else None
        out[system] = row
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=50000, help="training examples per epoch (default 50000)")
    ap.add_argument("--repeats", type=int, default=2, help="processes per system, interleaved (default 2)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per process; epochs 2.. are timed (default 4)")
    ap.add_argument("--small-steps", type=int, default=300, help="steps per timed block of the small network")
    ap.add_argument("--peers-python", default=sys.executable, help="the interpreter for JAX and PyTorch")
    ap.add_argument("--systems", default=",".join(ORDER), help="comma-separated subset of: " + ", ".join(ORDER))
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every system (NETC_THREADS, OMP/OpenBLAS/MKL, PyTorch, XLA), each "
                         "process pinned to that many cores; "
                         "default: each its own choice. 1 gives steadier figures on a busy machine")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the summary rows and every process's result here")
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in ORDER]
    if unknown:
        ap.error(f"unknown system {unknown[0]!r}; choose from {', '.join(ORDER)}")
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first is not timed)")
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    results: dict[str, list[dict]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="netc-peers-") as tmp:
        d = Path(tmp)
        write_inputs(d, args.examples, args.epochs, args.seed)
        for r in range(args.repeats):
            for s in (systems if r % 2 == 0 else systems[::-1]):  # interleaved, alternating order
                python = args.peers_python if s in PEERS else sys.executable
                res = run_one(s, d, python, args)
                results[s].append(res)
                if "skipped" in res:  # no point repeating what cannot run
                    systems = [x for x in systems if x != s]
                print(f"  [{time.perf_counter() - t_start:6.0f} s] {s}: "
                      + (res["skipped"] if "skipped" in res else
                         "epochs " + ", ".join(f"{v:.3f}" for v in res["epochs"])), file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    rows = summarize(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "load": [load0, load1], "rows": rows,
                                               "results": results}, indent=1))
    print(f"MNIST 784-800-800-10 tanh, B {mlp_epoch.B}, sgd momentum {mlp_epoch.MU}, float32, "
          f"{args.examples} examples; median of epochs 2-{args.epochs}, {args.repeats} process(es) each; "
          f"threads {args.threads or 'default'}; "
          f"load {load0[0]:.2f} -> {load1[0]:.2f} ({os.cpu_count()} cores)")
    print(f"  {'system':<28} {'s/epoch':>8} {'peak RSS':>9} {'small us':>9} {'1st loss':>9} "
          f"{'ep1 loss':>9}   runs / notes")
    for s in ORDER:
        if s not in rows:
            continue
        row = rows[s]
        if "skipped" in row:
            print(f"  {LABELS[s]:<28} {'skipped':>8}   {row['skipped']}")
            continue
        info = ", ".join(f"{k} {v}" for k, v in row["info"].items() if k != "python")
        print(f"  {LABELS[s]:<28} {row['epoch']:8.3f} {row['rss']:6.0f} MiB {fmt(row['small'], '9.1f')} "
              f"{fmt(row['first_loss'], '9.5f')} {fmt(row['epoch1_loss'], '9.5f')}   "
              f"{', '.join(f'{v:.3f}' for v in row['runs'])}{'; ' + info if info else ''}")
    ours = next((s for s in ("netc-native", "netc-numpy") if "epoch" in rows.get(s, {})), None)
    peers = {s: rows[s] for s in BEST_PEER_OF if "epoch" in rows.get(s, {})}
    if ours is None or not peers:
        print("netc/best-peer: n/a (netc or every peer was skipped)")
        return 1
    best = min(peers, key=lambda s: peers[s]["epoch"])
    jax_small = rows.get("jax", {}).get("small")
    if rows[ours].get("small") and jax_small:
        print(f"small step: {LABELS[ours]} {rows[ours]['small']:.1f} us, JAX {jax_small:.1f} us: "
              f"{rows[ours]['small'] / jax_small:.2f}x JAX (target <= 0.5)")
    floors = {s: rows[s]["epoch"] for s in ("gemm-mkl", "gemm-openblas") if "epoch" in rows.get(s, {})}
    if floors:  # what limits netc's epoch: the GEMMs' share of it, and the rest (elementwise, gather, overhead)
        floor = min(floors, key=floors.get)
        share = floors[floor] / rows[ours]["epoch"]
        rest = (f"the rest {rows[ours]['epoch'] - floors[floor]:.3f} s (elementwise, gather, overhead)" if share <= 1
                else "the floor measured above the whole epoch: machine noise, rerun on a quieter machine")
        print(f"what limits {LABELS[ours]}: {LABELS[floor]} {floors[floor]:.3f} s = {share * 100:.0f}% of its epoch; "
              f"{rest}")
    lower = [s for s in peers if peers[s]["rss"] <= rows[ours]["rss"]]
    print(f"peak RSS: {LABELS[ours]} {rows[ours]['rss']:.0f} MiB; peers at or below it: "
          f"{', '.join(LABELS[s] for s in lower) or 'none'}")
    print(f"best peer: {LABELS[best]} {peers[best]['epoch']:.3f} s/epoch; {LABELS[ours]} {rows[ours]['epoch']:.3f}; "
          f"wall {time.perf_counter() - t_start:.0f} s")
    print(f"netc/best-peer: {rows[ours]['epoch'] / peers[best]['epoch']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
