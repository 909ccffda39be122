"""The heavy-ball update folded into its weight gradient's GEMM (native C).

Where a GEMM's product g is read by one elementwise kernel only, and there as
`v' = a*v + c*g` (a, c host scalars: momentum and -lr, times the scale the
planner hoisted out of the product), written over the velocity leaf v, the
GEMM can write v' itself: `C = v, beta = a, alpha = c` (BLAS reads C before
writing it). The update kernel then reads v' where it would have computed it
(`p' = p + v'`: one pass instead of the product's store and two passes).

Refused (the plain path is kept) unless nothing between the GEMM and the
update reads or writes v, the update's other outputs read neither g nor the
old v, and g is no output: then every value the step computes is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from .c_kernel import CTYPE, literal_c
from .kernel_ir import Ex, Kernel, ident


@dataclass
class Fused:
    gemm: Kernel
    update: Kernel
    leaf: object  # the velocity leaf the GEMM writes
    member: object  # v', computed by the GEMM now
    key: tuple  # v''s expression key in the update kernel
    alpha: str  # C expressions over host scalars h<id>
    beta: str


class Fusion(dict):
    """gemm kernel id -> Fused."""

    def presets(self, k: Kernel) -> dict:
        return {f.key: f.leaf for f in self.values() if f.update is k}

    def skips(self, k: Kernel) -> frozenset:
        return frozenset(f.member.id for f in self.values() if f.update is k)


def _key(ex: Ex) -> tuple:
    return (ex.kind, ex.node.id, ex.idx)


def linear(ex: Ex, v, g, t: str) -> dict | None:
    """ex as {"v": coef, "g": coef, "1": coef} (C scalar expressions), or None
    where it is not affine in the reads of v and g at their own index."""
    if ex.kind == "const":
        return {"1": literal_c(ex.value, ex.dtype)}
    if ex.kind == "scalar":
        return {"1": f"(({t})h{ex.node.id})"}
    if ex.kind == "read":
        if ex.idx != ident(ex.node.shape):
            return None
        if ex.node.id == v.id:
            return {"v": f"(({t})1)"}
        if ex.node.id == g.id:
            return {"g": f"(({t})1)"}
        return None
    if ex.kind == "scaled":
        parts = [linear(a, v, g, t) for a in ex.args]
        out = parts[-1]
        for p in parts[:-1]:
            out = _mul(p, out)
        return out
    if ex.kind != "op":
        return None
    op = ex.node.op
    args = [linear(a, v, g, t) for a in ex.args]
    if any(a is None for a in args):
        return None
    if op == "neg" and len(args) == 1:
        return {k: f"(-{c})" for k, c in args[0].items()}
    if op in ("add", "sub") and len(args) == 2:
        out = dict(args[0])
        for k, c in args[1].items():
            c = c if op == "add" else f"(-{c})"
            out[k] = f"({out[k]} + {c})" if k in out else c
        return out
    if op == "mul" and len(args) == 2:
        return _mul(args[0], args[1])
    if op == "div" and len(args) == 2 and set(args[1]) == {"1"}:
        return {k: f"({c} / {args[1]['1']})" for k, c in args[0].items()}
    return None


def _mul(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    if set(a) == {"1"}:
        return {k: f"({a['1']} * {c})" for k, c in b.items()}
    if set(b) == {"1"}:
        return {k: f"({c} * {b['1']})" for k, c in a.items()}
    return None


def _reads(ex: Ex, stop: tuple, ids: set) -> bool:
    """Whether ex reads a node in `ids` outside the subexpression keyed `stop`."""
    if ex.kind in ("op", "read", "scaled", "rowop") and ex.node is not None and _key(ex) == stop:
        return False
    if ex.kind == "read" and ex.node.id in ids:
        return True
    return any(_reads(a, stop, ids) for a in ex.args)


def velocity_gemms(P, L, gemm_ok=None) -> Fusion:
    """The GEMMs of plan P (lowered as L) that write their velocity directly."""
    out = Fusion()
    if not L.updates:
        return out
    kernels = P.kernels
    pos = {id(k): i for i, k in enumerate(kernels)}
    readers: dict[int, list[Kernel]] = {}
    for k in kernels:
        for r in k.reads:
            readers.setdefault(r, []).append(k)
    for G in kernels:
        if G.kind != "gemm" or (gemm_ok is not None and not gemm_ok(G)):
            continue
        g = G.members[0]
        if g.id in P._out_ids or g.ndim != 2 or g.dtype not in ("float32", "float64"):
            continue
        rs = readers.get(g.id, [])
        if len(rs) != 1 or rs[0].kind != "elementwise" or tuple(rs[0].space) != tuple(g.shape):
            continue
        E = rs[0]
        if any(f.update is E for f in out.values()):
            continue
        t = CTYPE[g.dtype]
        for m, ex in E.e_out:
            v = E.in_place.get(m.id)
            if v is None or tuple(v.shape) != tuple(g.shape) or v.dtype != g.dtype:
                continue
            lin = linear(ex, v, g, t)
            if lin is None or set(lin) - {"v", "g"} or "g" not in lin:
                continue
            key = _key(ex)
            others = [e for mm, e in E.e_out if mm.id != m.id and mm.id in {w.id for w in E.writes}]
            if any(_reads(e, key, {v.id, g.id}) for e in others):
                continue
            between = kernels[pos[id(G)] + 1:pos[id(E)]]
            if any(v.id in k.reads or v.id in {x.id for x in k.in_place.values()} for k in between):
                continue
            if v.id in G.reads:
                continue
            out[G.id] = Fused(G, E, v, m, key, lin["g"], lin.get("v", f"(({t})0)"))
            break
    return out
