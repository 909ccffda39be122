"""Per-step statistics of a fused plan (compiler/fuse.py): kernels by kind and
phase, bytes moved, GEMM FLOPs, and the same program unfused, for
`netc compile --stats` and the GPU benchmark."""
from __future__ import annotations

from .dtypes import itemsize
from .node import Node
from .ops import OPS


def _size(shape, batch: int) -> int:
    n = 1
    for d in shape:
        n *= batch if d is None else d
    return n


def _bytes(n: Node, batch: int) -> int:
    return _size(n.shape, batch) * itemsize(n.dtype)


def kernel_bytes(k, batch: int) -> tuple[int, int]:
    """(bytes read, bytes written) by one launch, each buffer counted once."""
    read = sum(_bytes(n, batch) for n in k.reads.values())
    written = sum(_bytes(m, batch) for m in k.writes) if k.kind not in ("gemm", "library") else \
        _bytes(k.members[0], batch)
    return read, written


def gemm_flops(k, batch: int) -> int:
    m = k.members[0]
    a = k.operands[0] if k.operands else m.inputs[0]
    rows, cols = (_size((d,), batch) for d in m.shape)
    inner = _size((a.shape[1],), batch)
    return 2 * rows * cols * inner


def plan_stats(P, batch: int = 128) -> dict:
    by_kind: dict[str, int] = {}
    by_phase: dict[str, dict[str, int]] = {}
    rows = []
    total_r = total_w = flops = 0
    for k in P.kernels:
        by_kind[k.kind] = by_kind.get(k.kind, 0) + 1
        ph = by_phase.setdefault(k.phase, {})
        ph[k.kind] = ph.get(k.kind, 0) + 1
        r, w = kernel_bytes(k, batch)
        f = gemm_flops(k, batch) if k.kind == "gemm" else 0
        total_r += r
        total_w += w
        flops += f
        rows.append({"kernel": f"k{k.id}", "kind": k.kind, "phase": k.phase, "read": r, "written": w,
                     "flops": f, "members": len(k.members), "lines": k.lines(),
                     "params": k.params()})
    # the same program without fusion: one kernel per op, every value through memory
    unfused_k = unfused_b = 0
    for n in P.order:
        if OPS[n.op].kind in ("leaf", "view") or not n.inputs:  # leaves, views, counts
            continue
        unfused_k += 1
        unfused_b += _bytes(n, batch) + sum(_bytes(i, batch) for i in dict.fromkeys(n.inputs)
                                             if i.op != "const")
    return {"batch": batch, "kernels": len(P.kernels), "by_kind": by_kind, "by_phase": by_phase,
            "bytes_read": total_r, "bytes_written": total_w, "bytes": total_r + total_w,
            "gemm_flops": flops, "unfused_kernels": unfused_k, "unfused_bytes": unfused_b,
            "rows": rows}


def format_stats(st: dict, title: str = "") -> str:
    mb = 1 / 1e6
    lines = []
    if title:
        lines.append(title)
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(st["by_kind"].items()))
    lines.append(f"kernels per step:      {st['kernels']} ({kinds})")
    for ph in ("forward", "backward", "update"):
        if ph in st["by_phase"]:
            d = st["by_phase"][ph]
            lines.append(f"  {ph:<9} {sum(d.values()):>3}: " + ", ".join(f"{v} {k}" for k, v in sorted(d.items())))
    lines.append(f"bytes moved per step:  {st['bytes'] * mb:.3f} MB (read {st['bytes_read'] * mb:.3f} MB, "
                 f"written {st['bytes_written'] * mb:.3f} MB) at batch {st['batch']}")
    lines.append(f"GEMM FLOPs per step:   {st['gemm_flops'] / 1e6:.1f} MFLOP")
    lines.append(f"unfused (one kernel per op): {st['unfused_kernels']} kernels, "
                 f"{st['unfused_bytes'] * mb:.3f} MB")
    lines.append("")
    lines.append(f"{'kernel':<7}{'kind':<12}{'phase':<9}{'read KB':>10}{'written KB':>11}{'MFLOP':>9}"
                 f"  .net lines; parameters")
    for r in st["rows"]:
        where = ", ".join(r["lines"]) or "-"
        if r["params"]:
            where += "; " + ", ".join(r["params"])
        lines.append(f"{r['kernel']:<7}{r['kind']:<12}{r['phase']:<9}{r['read'] / 1e3:>10.1f}"
                     f"{r['written'] / 1e3:>11.1f}{r['flops'] / 1e6:>9.1f}  {where}")
    return "\n".join(lines) + "\n"
