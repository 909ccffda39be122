"""A progress bar on a terminal, plain log lines elsewhere. No dependency:
one carriage-returned line, redrawn at most 10 times a second."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str = "", stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.done = max(1, total), label, 0
        self.start = self.last = time.perf_counter()
        self.postfix = ""

    def update(self, n: int, **postfix) -> None:
        self.done += n
        if postfix:
            self.postfix = "  ".join(f"{k} {_fmt(v)}" for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.1 or self.done >= self.total):
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done / self.total)
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0
        self.stream.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}%  {rate:,.0f} ex/s  "
                          f"eta {eta:4.0f}s  {self.postfix}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
