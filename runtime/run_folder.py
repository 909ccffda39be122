"""What a run writes to its folder as it goes: metrics.jsonl (one JSON line per
epoch and per extra validation, flushed as written, so a crash keeps every
finished line) and the checkpoint (runtime/checkpoint.py writes it atomically)
after every epoch, so an interrupted run loses at most the epoch in progress."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from netc.compiler.pipeline import to_host

from . import checkpoint


class RunFolder:
    def __init__(self, out_dir: Path | None, meta: dict, extra_arrays: Callable[[], dict] = dict):
        self.out_dir, self.meta, self.extra_arrays = out_dir, meta, extra_arrays
        self.file = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(out_dir / "metrics.jsonl", "w")

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def checkpoint(self, arrays: dict, epoch: int, age: int, final: bool = False) -> None:
        if self.out_dir is None:
            return
        out = {f"state/{k}": to_host(v) for k, v in arrays.items()}
        out.update(self.extra_arrays())
        checkpoint.save(self.out_dir, out, {**self.meta, "epoch": epoch, "age": age, "final": final})

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
