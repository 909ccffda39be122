"""A progress bar on a terminal and in a notebook, one line per epoch in a log.

No dependency: a line redrawn after a carriage return, at most a few times a
second. tqdm was considered and not added (it would be netc's fourth runtime
dependency): in a notebook its bar is a widget that needs ipywidgets as well,
and without them it falls back to this same carriage-returned text, which
Jupyter, JupyterLab, VS Code and Colab all redraw in place.

Where it draws (`enabled`): False, nowhere; None (auto), on a terminal (the
stream is a TTY) or in a notebook (a Jupyter kernel: the cell's stdout), and
nowhere else; True, there too, and in a log (any other stream) one finished
line per epoch instead of a redrawn one.
"""
from __future__ import annotations

import sys
import time

TERMINAL, NOTEBOOK, LINES = "terminal", "notebook", "lines"
REDRAW = {TERMINAL: 0.1, NOTEBOOK: 0.25}  # seconds between redraws (a notebook's are messages to the browser)


def in_notebook() -> bool:
    """Inside a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab): IPython's shell is a
    ZMQInteractiveShell or a subclass. IPython is never imported here."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # an IPython too old or half-imported: not a notebook we can draw in
        return False
    return shell is not None and any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def mode(stream, enabled: bool | None) -> tuple[str | None, object]:
    """(how to draw, the stream to draw on) for a stream (None: stderr) and `enabled`."""
    if enabled is False:
        return None, stream or sys.stderr
    if stream is None and in_notebook():
        return NOTEBOOK, sys.stdout
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    if tty:
        return TERMINAL, stream
    return (LINES if enabled else None), stream


class Progress:
    def __init__(self, total: int, label: str = "", stream=None, enabled: bool | None = None):
        self.mode, self.stream = mode(stream, enabled)
        self.enabled = self.mode is not None
        self.total, self.label, self.done = max(1, total), label, 0
        self.start = self.last = time.perf_counter()
        self.postfix = ""
        self.width = 0  # the longest line drawn (a notebook has no erase-to-end-of-line)
        self.finished: float | None = None  # when the last example was done (the rate stops there)

    def update(self, n: int, **postfix) -> None:
        self.done += n
        if postfix:
            self.postfix = "  ".join(f"{k} {_fmt(v)}" for k, v in postfix.items())
        if self.done >= self.total and self.finished is None:
            self.finished = time.perf_counter()
        if self.mode in REDRAW:
            now = time.perf_counter()
            if now - self.last > REDRAW[self.mode] or self.done >= self.total:
                self.last = now
                self._draw(now)

    def _text(self, now: float) -> str:
        frac = min(1.0, self.done / self.total)
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        rate = self.done / max((self.finished or now) - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0
        return (f"{self.label} [{bar}] {frac * 100:5.1f}%  {rate:,.0f} ex/s  "
                f"eta {eta:4.0f}s  {self.postfix}").rstrip()

    def _draw(self, now: float) -> None:
        text = self._text(now)
        if self.mode == TERMINAL:
            self.stream.write(f"\r{text}\x1b[K")
        else:  # spaces cover what a longer line drew before
            self.stream.write("\r" + text.ljust(self.width))
        self.width = max(self.width, len(text))
        self.stream.flush()

    def close(self, **scores) -> None:
        """The last state, with `scores` (the epoch's validation error, computed after its
        last step) after the running loss."""
        if scores:
            extra = [f"{k} {_fmt(v)}" for k, v in scores.items()]
            self.postfix = "  ".join([self.postfix] * bool(self.postfix) + extra)
        if self.mode in REDRAW:
            self._draw(time.perf_counter())
            self.stream.write("\n")
        elif self.mode == LINES:
            self.stream.write(self._text(time.perf_counter()) + "\n")
        else:
            return
        self.stream.flush()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
