"""One system of bench/peers.py, run in a process of its own (so that its peak
RSS is its own) on the data, weights and batch order bench/peers.py wrote:

    python bench/peers_impl.py SYSTEM DIR [--epochs 4] [--small-steps 300]

prints one line `RESULT {json}`: seconds per epoch, the mean batch loss of
epoch 1 and the first step's loss (the systems compute the same numbers), the
small network's step in microseconds, peak RSS, versions. The JAX and PyTorch
systems import nothing of netc, so that this file runs in another interpreter
(`--peers-python`) that has the frameworks and not netc; the netc, NumPy and
GEMM systems reuse bench/mlp_epoch.py's workload (imported, not copied).

Every system gathers its own minibatches by index from the whole training set
and runs SGD with momentum in one form: v <- mu v - lr g, w <- w + v.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

LR, MU, B, SMALL_B = 0.01, 0.9, 128, 32
MNIST_KEYS = ("W0", "b0", "W1", "b1", "W2", "b2")
SMALL_KEYS = ("W0", "b0", "W1", "b1")
SMALL_SPEC = """
input  x : [64]
target t : class(10)
h = dense(x, 100, act = relu, init = glorot)
y = dense(h, 10, act = identity)
loss = nll(softmax(y), t)
train {
    method = sgd(lr = 0.01, momentum = 0.9)
    batch  = 32
}
"""
SMALL_NAMES = {"h.W": "W0", "h.b": "b0", "y.W": "W1", "y.b": "b1"}
MNIST_NAMES = {"h1.W": "W0", "h1.b": "b0", "h2.W": "W1", "h2.b": "b1", "y.W": "W2", "y.b": "b2"}


class Skip(Exception):
    """The system cannot run here (not installed, no MKL, no native backend): why."""


# -- the data bench/peers.py wrote --------------------------------------------------------------

def load(d: Path, prefix: str, keys) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    x = np.load(d / f"{prefix}x.npy")
    t = np.load(d / f"{prefix}t.npy")
    return x, t, {k: np.load(d / f"{prefix}{k}.npy") for k in keys}


def batches(order: np.ndarray, b: int):
    return [order[lo:lo + b] for lo in range(0, len(order), b)]


# -- netc, hand-written NumPy, the GEMM floors (netc's interpreter) -----------------------------

def _bench_module():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mlp_epoch  # the workload: spec, hand-written step, GEMM-only step
    return mlp_epoch


class Gather:
    """Minibatches by np.take into buffers allocated once per batch size (as netc's trainer does)."""

    def __init__(self, x, t):
        self.x, self.t, self.bufs = x, t, {}

    def __call__(self, idx):
        n = len(idx)
        b = self.bufs.get(n)
        if b is None:
            b = self.bufs[n] = (np.empty((n,) + self.x.shape[1:], self.x.dtype), np.empty(n, self.t.dtype))
        self.x.take(idx, axis=0, out=b[0])
        self.t.take(idx, axis=0, out=b[1])
        return b


class NumpyLike:
    """A step function of (x, t) -> loss run on NumPy minibatches."""

    def __init__(self, x, t, step):
        self.gather, self.step = Gather(x, t), step

    def epoch(self, order, b):
        total, bs = 0.0, batches(order, b)
        t0 = time.perf_counter()
        for idx in bs:
            total += float(self.step(*self.gather(idx)))
        return time.perf_counter() - t0, total / len(bs)


def _netc_model(spec: str, backend: str, params: dict, names: dict):
    import netc
    try:
        model = netc.compile(spec, backend=backend)
    except TypeError:  # an older netc.compile without backend=
        model = netc.compile(spec)
        model.program.use_backend(backend)
    if model.program.backend != backend:
        raise Skip(f"netc compiled for {model.program.backend!r}, not {backend!r}")
    for ours, theirs in names.items():
        np.copyto(model.state[ours], params[theirs])
    return model


def _netc_step(model):
    """The compiled step bound to the model's state once per batch size (as the trainer does)."""
    fn, state, bound = model.program.step, model.state, {}
    hyper = {"lr": LR, "momentum": MU, "step": 0, "inv_examples": 0.0}
    tail = [hyper[k] for k in fn.feeds[2:]]

    def step(x, t):
        f = bound.get(len(x))
        if f is None:
            f = bound[len(x)] = fn.bind(state, len(x))
        return f(x, t, *tail)[0]
    return step


def netc_system(backend: str):
    def mnist(x, t, w):
        try:
            model = _netc_model(_bench_module().SPEC, backend, w, MNIST_NAMES)
        except Skip:
            raise
        except Exception as e:  # noqa: BLE001 - reported as the reason it was skipped
            raise Skip(f"backend {backend!r}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from e
        return NumpyLike(x, t, _netc_step(model)), {"netc_backend": model.program.backend}

    def small(x, t, w):
        return NumpyLike(x, t, _netc_step(_netc_model(SMALL_SPEC, backend, w, SMALL_NAMES)))
    return mnist, small


class Fit:
    """netc's trainer itself (Model.fit: its own shuffling, statistics on): seconds per epoch from its rows."""

    def __init__(self, x, t, w, backend):
        self.model = _netc_model(_bench_module().SPEC, backend, w, MNIST_NAMES)
        self.x, self.t = x, t

    def run(self, epochs):
        self.model.fit(self.x, self.t, epochs=epochs, progress=False, log=lambda line: None)
        rows = [r for r in self.model.history_ if not r.get("partial")]
        return [r["seconds"] for r in rows], rows[0]["train_loss"]


class SmallNumpy:
    """The small network's step by hand (relu), in the form of mlp_epoch.HandNumpy."""

    def __init__(self, w):
        self.p = {k: v.copy() for k, v in w.items()}
        self.v = {k: np.zeros_like(v) for k, v in w.items()}

    def step(self, x, t):
        p, v = self.p, self.v
        h = np.maximum(x @ p["W0"] + p["b0"], 0)
        y = h @ p["W1"] + p["b1"]
        y -= y.max(axis=1, keepdims=True)
        e = np.exp(y)
        s = e / e.sum(axis=1, keepdims=True)
        n = len(x)
        loss = -np.mean(np.log(s[np.arange(n), t] + 1e-30))
        d = s
        d[np.arange(n), t] -= 1
        d /= n
        g = {"W1": h.T @ d, "b1": d.sum(0)}
        dh = (d @ p["W1"].T) * (h > 0)
        g["W0"], g["b0"] = x.T @ dh, dh.sum(0)
        for k in p:
            v[k] *= MU
            v[k] -= LR * g[k]
            p[k] += v[k]
        return loss


def numpy_system():
    def mnist(x, t, w):
        return NumpyLike(x, t, _bench_module().HandNumpy(w).step), {}

    def small(x, t, w):
        return NumpyLike(x, t, SmallNumpy(w).step)
    return mnist, small


def gemm_openblas():
    def mnist(x, t, w):
        return NumpyLike(x, t, _bench_module().GemmOnly(w).step), {}
    return mnist, None


class CtypesGemm:
    """The eight products of mlp_epoch.GemmOnly, each one cblas_sgemm call by ctypes
    on NumPy buffers (the BLAS runtime/blas.py resolves: MKL here)."""

    def __init__(self, blas, w):
        import ctypes
        it = ctypes.c_int64 if blas.int_width == 64 else ctypes.c_int32
        fp = ctypes.c_void_p
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, it, it, it, ctypes.c_float,
                                 fp, it, fp, it, ctypes.c_float, fp, it)
        self.sgemm = proto(blas.sgemm)
        self.p, self.bufs = w, {}

    def mm(self, a, b, ta=False, tb=False, key=None):
        m, k = (a.shape[1], a.shape[0]) if ta else a.shape
        n = b.shape[0] if tb else b.shape[1]
        c = self.bufs.get(key)
        if c is None or c.shape != (m, n):
            c = self.bufs[key] = np.empty((m, n), np.float32)
        self.sgemm(101, 112 if ta else 111, 112 if tb else 111, m, n, k, 1.0, a.ctypes.data, a.shape[1],
                   b.ctypes.data, b.shape[1], 0.0, c.ctypes.data, n)
        return c

    def step(self, x, t):
        p, mm = self.p, self.mm
        h1 = mm(x, p["W0"], key=1)
        h2 = mm(h1, p["W1"], key=2)
        y = mm(h2, p["W2"], key=3)
        mm(h2, y, ta=True, key=4), mm(y, p["W2"], tb=True, key=5), mm(h1, h2, ta=True, key=6)
        mm(h2, p["W1"], tb=True, key=7), mm(x, h1, ta=True, key=8)
        return 0.0


def gemm_mkl():
    def mnist(x, t, w):
        os.environ["NETC_BLAS"] = "mkl"
        try:
            from netc.runtime import blas as blas_mod
            found = blas_mod.find_blas()
        except Exception as e:  # noqa: BLE001
            raise Skip(f"runtime/blas.py: {type(e).__name__}: {e}") from e
        if found is None or found.name != "mkl":
            raise Skip("MKL not found (pip install mkl, or netc[mkl])")
        return NumpyLike(x, t, CtypesGemm(found, w).step), {"blas": found.describe()}
    return mnist, None


# -- JAX and PyTorch (the peers' interpreter; no netc here) --------------------------------------

def jax_system():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        raise Skip(f"jax is not importable in {sys.executable} (see --peers-python)") from e

    def make(x, t, w, forward):
        X, T = jnp.asarray(x), jnp.asarray(t.astype(np.int32))

        def loss_fn(p, xb, tb):
            y = forward(p, xb)
            lp = jax.nn.log_softmax(y)
            return -jnp.mean(jnp.take_along_axis(lp, tb[:, None], axis=1))

        def step(p, v, acc, idx):  # the whole step, minibatch gather included, one compiled call
            xb, tb = X[idx], T[idx]
            loss, g = jax.value_and_grad(loss_fn)(p, xb, tb)
            v = jax.tree.map(lambda vi, gi: MU * vi - LR * gi, v, g)
            p = jax.tree.map(lambda pi, vi: pi + vi, p, v)
            return p, v, acc + loss

        return _JaxRunner(jax, jnp, jax.jit(step, donate_argnums=(0, 1, 2)),
                          {k: jnp.asarray(a) for k, a in w.items()})

    def mnist(x, t, w):
        def forward(p, xb):
            h1 = jnp.tanh(xb @ p["W0"] + p["b0"])
            h2 = jnp.tanh(h1 @ p["W1"] + p["b1"])
            return h2 @ p["W2"] + p["b2"]
        return make(x, t, w, forward), {"jax": jax.__version__}

    def small(x, t, w):
        def forward(p, xb):
            return jnp.maximum(xb @ p["W0"] + p["b0"], 0) @ p["W1"] + p["b1"]
        return make(x, t, w, forward)
    return mnist, small


class _JaxRunner:
    def __init__(self, jax, jnp, step, p):
        self.jax, self.jnp, self.step = jax, jnp, step
        self.p = p
        self.v = {k: jnp.zeros_like(a) for k, a in p.items()}

    def epoch(self, order, b):
        acc = self.jnp.zeros((), self.jnp.float32)
        bs = [i.astype(np.int32) for i in batches(order, b)]
        t0 = time.perf_counter()
        for idx in bs:
            self.p, self.v, acc = self.step(self.p, self.v, acc, idx)
        acc = float(acc)  # waits for the last step (asynchronous dispatch)
        self.jax.block_until_ready(self.p)
        return time.perf_counter() - t0, acc / len(bs)


def torch_system():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        raise Skip(f"torch is not importable in {sys.executable} (see --peers-python)") from e
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    class Runner:
        def __init__(self, x, t, w, forward):
            self.X, self.T = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
            self.p = [torch.tensor(w[k], requires_grad=True) for k in w]
            self.v = [torch.zeros_like(a) for a in self.p]
            self.forward = forward

        def step(self, idx):
            i = torch.from_numpy(idx)
            xb, tb = self.X.index_select(0, i), self.T.index_select(0, i)
            loss = F.cross_entropy(self.forward(self.p, xb), tb)
            g = torch.autograd.grad(loss, self.p)
            with torch.no_grad():
                torch._foreach_mul_(self.v, MU)
                torch._foreach_add_(self.v, g, alpha=-LR)
                torch._foreach_add_(self.p, self.v)
            return loss.detach()

        def epoch(self, order, b):
            total, bs = 0.0, batches(order, b)
            t0 = time.perf_counter()
            for idx in bs:
                total += float(self.step(idx))
            return time.perf_counter() - t0, total / len(bs)

    def mnist(x, t, w):
        def forward(p, xb):
            h1 = torch.tanh(torch.addmm(p[1], xb, p[0]))
            h2 = torch.tanh(torch.addmm(p[3], h1, p[2]))
            return torch.addmm(p[5], h2, p[4])
        return Runner(x, t, {k: w[k] for k in MNIST_KEYS}, forward), {
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    def small(x, t, w):
        def forward(p, xb):
            return torch.addmm(p[3], torch.relu(torch.addmm(p[1], xb, p[0])), p[2])
        return Runner(x, t, {k: w[k] for k in SMALL_KEYS}, forward)
    return mnist, small


SYSTEMS = {
    "netc-native": lambda: netc_system("native"),
    "netc-numpy": lambda: netc_system("numpy"),
    "netc-fit": None,  # the trainer: handled apart (run_fit)
    "numpy": numpy_system,
    "gemm-openblas": gemm_openblas,
    "gemm-mkl": gemm_mkl,
    "jax": jax_system,
    "torch": torch_system,
}


# -- measuring ----------------------------------------------------------------------------------

def first_loss(make, x, t, w, order, b):
    """The loss of the first step from the shared weights (a fresh instance: nothing else moves)."""
    runner = make(x, t, w)
    runner = runner[0] if isinstance(runner, tuple) else runner
    return runner.epoch(order[:b], b)[1]


def small_step_us(runner, order, steps: int, blocks: int = 7) -> float:
    """Median over `blocks` of the mean time of `steps` steps cycling over the batches of `order`."""
    runner.epoch(order[:SMALL_B * 4], SMALL_B)  # compile / warm up
    per = []
    need = steps * SMALL_B
    reps = np.concatenate([order] * (need // len(order) + 1))[:need]
    for _ in range(blocks):
        s, _ = runner.epoch(reps, SMALL_B)
        per.append(s / steps * 1e6)
    return statistics.median(per)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: getrusage's ru_maxrss would start from the
    parent's peak, which a forked child inherits across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(system: str, d: Path, epochs: int, small_steps: int, backend: str) -> dict:
    out: dict = {"system": system, "python": sys.version.split()[0], "numpy": np.__version__}
    x, t, w = load(d, "", MNIST_KEYS)
    order = np.load(d / "order.npy")
    if system == "netc-fit":
        try:
            fit = Fit(x, t, w, backend)
        except Skip:
            raise
        except Exception as e:  # noqa: BLE001 - reported as the reason it was skipped
            raise Skip(f"backend {backend!r}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from e
        cpu0 = os.times()
        secs, loss = fit.run(epochs)
        cpu1 = os.times()
        out.update(epochs=secs, epoch1_loss=loss, netc_backend=fit.model.program.backend,
                   cores_used=round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / sum(secs), 2),
                   rss_mib=peak_rss_mib())
        return out
    mnist, small = SYSTEMS[system]()
    made = mnist(x, t, w)
    runner, info = made
    out.update(info)
    if system.startswith("gemm"):
        out["first_loss"] = None
    else:
        out["first_loss"] = first_loss(mnist, x, t, w, order[0], B)
    secs, losses = [], []
    cpu0 = os.times()
    for e in range(epochs):
        s, loss = runner.epoch(order[e % len(order)], B)
        secs.append(s)
        losses.append(loss)
    cpu1 = os.times()
    out.update(epochs=secs, epoch1_loss=None if system.startswith("gemm") else losses[0],
               cores_used=round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / sum(secs), 2))
    out["rss_mib"] = peak_rss_mib()  # the MNIST workload's peak, before the small network's
    del runner, made, x, t
    if small is not None and small_steps > 0:
        sx, st, sw = load(d, "small_", SMALL_KEYS)
        sorder = np.load(d / "small_order.npy")
        out["small_us"] = small_step_us(small(sx, st, sw), sorder, small_steps)
    return out


def main(argv=None) -> int:
    import argparse
    if os.environ.get("NETC_PEERS_CPUS"):  # bench/peers.py --threads: every thread of this process on N cores
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(os.environ["NETC_PEERS_CPUS"])]))
    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=sorted(SYSTEMS))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--small-steps", type=int, default=300)
    ap.add_argument("--backend", default="native", help="netc-fit's backend")
    args = ap.parse_args(argv)
    try:
        result = run(args.system, args.dir, args.epochs, args.small_steps, args.backend)
    except Skip as e:
        result = {"system": args.system, "skipped": str(e)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
