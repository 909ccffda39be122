"""The memory a model needs, counted from its compiled program before anything
of a parameter's size exists, and the budget it must fit.

Limits per tensor are not enough: eight 1 GiB layers each pass them, then
exhaust the machine while their parameters and optimizer state are allocated.
So `Model` asks `check(estimate(program, cfg))` before `init_state`, and
`netc check` prints `Estimate.line()` without allocating at all.

Counted (bytes, the steady state of a training run):
- parameters and optimizer state: every state leaf of the program (momentum
  velocities, AdaGrad/SDLM/vSGD accumulators are state nodes of the update graph);
- the copies training keeps: the divergence watch's last healthy state (all of
  it), the Polyak average and its scratch, the early-stopping best parameters,
  or a batch method's flat float64 vectors;
- the compiled functions' buffers (allocated when first bound): the train step
  at the batch size, evaluation and prediction at `eval_batch`.
Data are not counted: they are loaded later, by loaders that check their sizes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.pipeline import Program

from .config import BATCH_METHODS, TrainConfig

ENV = "NETC_MEMORY_LIMIT"  # bytes (suffix K, M, G, T: binary units), or "off"
MARGIN = 0.9  # of MemAvailable: the interpreter, the data and the OS need the rest
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Part:
    """One counted thing: a tensor (with its shape) or a group (buffers, copies)."""
    kind: str  # "parameters" | "optimizer state" | "training copies" | "buffers"
    name: str
    bytes: int
    shape: tuple | None = None
    dtype: str | None = None
    use: bool = True  # needed to use the model (predict, score), not only to train it

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name} {human(self.bytes)}"
        return f"{self.name} {list(self.shape)} {self.dtype} {human(self.bytes)}"


@dataclass
class Estimate:
    parts: list[Part]
    batch: int

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            out[p.kind] = out.get(p.kind, 0) + p.bytes
        return out

    def tensors(self) -> int:
        """Bytes that exist as soon as the model does: parameters and optimizer state."""
        return sum(b for k, b in self.by_kind().items() if k in ("parameters", "optimizer state"))

    def use(self) -> int:
        """Bytes to hold the model and predict or score with it (what netc.load needs)."""
        return sum(p.bytes for p in self.parts if p.use)

    def biggest(self, k: int = 3) -> list[Part]:
        """The k biggest tensors (parameters and optimizer state), biggest first."""
        return sorted((p for p in self.parts if p.shape is not None), key=lambda p: -p.bytes)[:k]

    def line(self) -> str:
        """One line, human units: the total and what it is made of."""
        kinds = ", ".join(f"{k} {human(b)}" for k, b in self.by_kind().items() if b)
        return f"about {human(self.total)} to train at batch {self.batch} ({kinds})"


def human(n: int) -> str:
    """Bytes in binary units, 3 significant digits: 1.5 KiB, 8 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _nbytes(shape, dtype: str, batch: int) -> int:
    return math.prod(batch if d is None else d for d in shape) * np.dtype(dtype).itemsize


def estimate(program: Program, cfg: TrainConfig) -> Estimate:
    """What training `program` with `cfg` holds at once, from shapes alone (see the module doc)."""
    params = program.spec.params
    parts = [Part("parameters" if n.name in params else "optimizer state", n.name,
                  _nbytes(n.shape, n.dtype, 1), tuple(n.shape), n.dtype)
             for n in program.state_leaves]
    p_bytes = sum(p.bytes for p in parts if p.kind == "parameters")
    n_values = sum(math.prod(n.shape) for n in params.values())
    kind = getattr(cfg.method, "kind", None)
    copies = []
    if kind in BATCH_METHODS:
        vectors = 8 + (2 * cfg.method.memory if kind == "lbfgs" else 0)  # w, g, trial points, history
        copies.append((f"{kind} float64 vectors", vectors * n_values * 8))
    elif program.updates:
        copies.append(("last healthy state (divergence watch)", sum(p.bytes for p in parts)))
        if cfg.average.kind == "polyak":
            copies.append(("Polyak average and its scratch", 2 * p_bytes))
        if cfg.stop.kind == "early":
            copies.append(("early-stopping best parameters", p_bytes))
    parts += [Part("training copies", name, b, use=False) for name, b in copies if b]
    fns = [("train step", program.step, cfg.batch, False)] if kind not in BATCH_METHODS else \
        [("value and gradient", program.named("value_and_grad", "numpy"), cfg.eval_batch, False)]
    fns += [("evaluation", program.evaluate, cfg.eval_batch, True), ("prediction", program.predict, cfg.eval_batch, True)]
    for name, fn, batch, use in fns:
        size = getattr(fn, "buffer_bytes", None)
        if size is not None:
            parts.append(Part("buffers", f"{name} buffers at batch {batch}", size(batch), use=use))
    return Estimate(parts, cfg.batch)


# ---------------------------------------------------------------------------- the budget

def parse_limit(value, what: str) -> int | None:
    """A memory limit: bytes as an int, or text like "512M", "8G", "1.5G"; "off": none."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NetcError(f"{what}: expected bytes (e.g. 8G, 512M) or 'off', got {type(value).__name__}")
    if isinstance(value, int):
        n = value
    else:
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        if text in ("OFF", "NONE"):
            return None
        unit = text[-1:] if text[-1:] in UNITS else ""
        try:
            n = float(text[:len(text) - len(unit)]) * UNITS[unit]
        except ValueError:
            raise NetcError(f"{what}: expected bytes (e.g. 8G, 512M) or 'off', got {value[:40]!r}") from None
        if not math.isfinite(n):
            raise NetcError(f"{what}: {value[:40]!r} is not a size")
        n = int(n)
    if n <= 0:
        raise NetcError(f"{what}: a memory limit must be positive, got {value!r}")
    return n


def available(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes (Linux), None where it cannot be read."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def budget(limit=None) -> tuple[int | None, str]:
    """(bytes allowed, where that number comes from): the `limit` argument, else
    $NETC_MEMORY_LIMIT, else MARGIN of MemAvailable; None: no limit."""
    if limit is not None:
        return parse_limit(limit, "memory_limit"), "memory_limit"
    env = os.environ.get(ENV)
    if env is not None:
        return parse_limit(env, ENV), ENV
    avail = available()
    if avail is None:
        return None, "no limit known"
    return int(avail * MARGIN), f"{MARGIN:.0%} of the {human(avail)} available"


PURPOSES = ("train", "use")


def check(est: Estimate, limit=None, device: str = "cpu", purpose: str = "train", where: str = "") -> None:
    """A NetcError naming the biggest tensors when `est` does not fit the budget
    (`where`: the spec file, which starts the message as a location does).
    purpose "use": only what holding the model and predicting need (netc.load; fit
    checks again). Device "gpu": what is made on the host, parameters and optimizer state."""
    allowed, source = budget(limit)
    need = est.total if purpose == "train" else est.use()
    need = need if device == "cpu" else est.tensors()
    if allowed is None or need <= allowed:
        return
    biggest = "; ".join(str(p) for p in est.biggest())
    what = est.line() if purpose == "train" else f"about {human(need)} to hold and use ({est.line()})"
    raise NetcError(f"{where + ': ' if where else ''}this spec needs {what}, more than the {human(allowed)} allowed ({source}); "
                    f"refused before allocating anything. The biggest tensors: {biggest}. Make the layers or the "
                    f"batch smaller, or set {ENV} (e.g. {ENV}=64G, or off) if you know there is room")
