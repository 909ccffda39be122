"""Fusion (compiler/fuse.py) on the IR: which nodes share a kernel, what is
never materialized, the optimizer update as one kernel per parameter, the
kernel order, and the per-step statistics."""
from __future__ import annotations

from pathlib import Path

import pytest

import netc
from netc.compiler import fuse, fuse_stats, plan

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.net"))
MLP = next(p for p in SPECS if p.name == "mnist_mlp.net")


@pytest.fixture(scope="module")
def mlp():
    m = netc.compile(MLP)
    p = m.program
    return m, plan.fused([p.loss], p.updates).fused  # the fusion plan, in-place updates decided


def _layers(program) -> int:
    return sum(1 for p in program.spec.params.values() if p.ndim == 2)


def test_mnist_mlp_kernels_per_layer(mlp):
    m, P = mlp
    layers = _layers(m.program)
    assert layers == 3
    by = {}
    for k in P.kernels:
        by.setdefault((k.phase, k.kind), []).append(k)
    fwd_ew = len(by.get(("forward", "elementwise"), []))
    bwd_non_gemm = sum(len(v) for (ph, kind), v in by.items() if ph == "backward" and kind != "gemm")
    assert fwd_ew <= layers, [k.describe() for k in by[("forward", "elementwise")]]
    assert bwd_non_gemm <= layers
    # forward: the bias-add and activation of a layer are one kernel after its GEMM
    assert all(len(k.writes) == 1 for k in by[("forward", "elementwise")])
    # the 8 GEMMs: 3 forward, 3 weight gradients, 2 input gradients
    assert sum(1 for k in P.kernels if k.kind == "gemm") == 8
    assert len(P.kernels) <= 20


def test_optimizer_update_is_one_kernel_per_parameter(mlp):
    m, P = mlp
    params = m.program.spec.params
    writers: dict[str, list] = {}
    for k in P.kernels:
        for leaf in k.in_place.values():
            writers.setdefault(leaf.name, []).append(k.id)
    update = [k for k in P.kernels if k.phase == "update"]
    assert len(update) == len(params)
    for name in params:
        # the parameter and its velocity are written, in place, by the same single kernel
        assert len(writers[name]) == 1, writers
        assert writers[f"{name}.velocity"] == writers[name]
    for k in update:
        assert sum(1 for leaf in k.in_place.values() if leaf.op == "param") == 1
    # a bias update includes its gradient: the column sum over the batch, then the epilogue
    bias = [k for k in update if k.kind == "reduce"]
    assert len(bias) == 3 and all(k.axes == (0,) and k.layout == "thread" for k in bias)


def test_intermediates_stay_in_registers(mlp):
    m, P = mlp
    order = {n.id: n for n in P.order}
    mat = [order[i] for i in P.materialized]
    # nothing a GEMM does not need: pre-activations, log-probabilities, masks and the
    # lr-scaled GEMM operands are recomputed or folded, not stored
    assert not any(n.op in ("log_softmax", "ge", "add") and n.shape != () for n in mat
                   if not any(n.id == u.id for _, u in P.updates)), mat
    # the relu outputs (GEMM operands), the GEMM results, the softmax gradient, per-example losses
    kinds = sorted(n.op for n in mat if n.op not in ("matmul",) and n.id not in {u.id for _, u in P.updates})
    assert kinds.count("maximum") == 2 and kinds.count("mul") == 2
    # lr * x' and lr * h' are folded into the weight-gradient GEMMs' alpha
    assert len(P.absorbed) == 3
    assert all(len(P.alpha[k.members[0].id]) == 1 for k in P.kernels if k.kind == "gemm" and k.alpha)


def test_every_node_computed_once_and_in_order(mlp):
    _, P = mlp
    seen = {}
    for k in P.kernels:
        for n in k.members:
            assert n.id not in seen
            seen[n.id] = k.id
    host = {h.id for h in P.host}
    for n in P.order:
        if n.op in fuse.LEAVES or n.id in host or n.id in P.inline or n.id in P.absorbed \
                or fuse.through(n) is not None:
            assert n.id not in seen
        else:
            assert n.id in seen, n
    for k in P.kernels:  # a kernel reads only what earlier kernels stored, never its own values
        for r in k.reads:
            if r in seen:
                assert seen[r] < k.id, (k.describe(), r)


def test_gemm_flops_and_bytes(mlp):
    _, P = mlp
    st = P.stats(128)
    per = 784 * 800 + 800 * 800 + 800 * 10
    assert st["gemm_flops"] == 2 * 128 * (2 * per + 800 * 800 + 800 * 10)
    assert st["kernels"] == len(P.kernels) and st["by_kind"]["gemm"] == 8
    assert st["bytes"] < st["unfused_bytes"] and st["kernels"] < st["unfused_kernels"] / 2
    # at least the parameters (read by the forward GEMMs and the updates) and their
    # velocities cross memory once each
    params = 4 * (784 * 800 + 800 * 800 + 800 * 10 + 1610)
    assert st["bytes"] > 4 * params
    assert st["bytes_read"] + st["bytes_written"] == st["bytes"]
    text = fuse_stats.format_stats(st)
    assert "kernels per step" in text and "GEMM FLOPs per step" in text and "bytes moved per step" in text


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_shipped_function_fuses(path):
    m = netc.compile(path)
    for which in ("train_step", "evaluate", "predict"):
        fn = m.program.named(which, "cuda")
        if fn is None:
            continue
        P = fn.plan
        assert P.kernels
        # the kernels are a topological order of their data dependencies
        done = set()
        for k in P.kernels:
            for r in k.reads:
                owner = P.producer.get(r)
                assert owner is None or owner is k or owner.id in done
            done.add(k.id)
        # every value a function returns is stored
        for o in fn.outputs:
            assert o.id in P.materialized or o.op in fuse.LEAVES or o.id in {h.id for h in P.host}


def test_cheap_values_are_recomputed_expensive_ones_stored():
    m = netc.compile("input x : [5]\ntarget t : [5]\n"
                     "a = x * 2\n"  # cheap, two consumers: recomputed by both
                     "b = tanh(tanh(tanh(tanh(tanh(tanh(tanh(x)))))))\n"  # 7 ops, two consumers
                     "loss = mean(sum((a + b - t) ^ 2, axis = -1)) + mean(sum(a * b, axis = 0))\n")
    prog = m.program
    P = fuse.plan([prog.loss])
    order = {n.id: n for n in P.order}
    mat_ops = [order[i].op for i in P.materialized]
    assert "tanh" in mat_ops  # the deep chain is stored once
    assert all(order[i].op != "mul" or order[i].shape == () for i in P.materialized)


def test_row_reductions_share_a_kernel(mlp):
    # log_softmax, the per-example loss sums and the softmax backward: one kernel over [B, 10]
    _, P = mlp
    rows = [k for k in P.kernels if k.kind == "reduce" and k.layout == "block" and k.space[-1] == 10]
    assert len(rows) == 1
    ops = [m.op for m in rows[0].members]
    assert "log_softmax" in ops and ops.count("sum") == 2
    assert rows[0].phase == "forward"


def test_compile_time_is_small():
    import time
    m = netc.compile(MLP)
    t0 = time.perf_counter()
    for which in ("train_step", "evaluate", "predict"):
        m.program.named(which, "cuda")
    assert time.perf_counter() - t0 < 2.0


def test_fusion_facts_live_in_the_op_entries():
    """What fusion needs from an op is in its entry: a reduction's steps and C
    templates, an index map, an alias; the renderers name no op."""
    from netc.compiler.ops import OPS
    steps = {"sum", "max", "min", "argmax", "sumexp"}
    reducers = {name: op.reducer for name, op in OPS.items() if op.reducer is not None}
    assert {"sum", "mean", "max", "min", "argmax", "sum_to", "logsumexp", "softmax", "log_softmax"} <= set(reducers)
    for name, red in reducers.items():
        assert red.steps and set(red.steps) <= steps, name
        accs = [f"a{j}" for j in range(len(red.steps))]
        if red.row is not None:
            assert "xx" in red.row.format(*accs, x="xx"), name
        else:
            assert red.value.format(*accs, n="n", T="float"), name
    assert OPS["training_only"].alias == 0
    assert all(OPS[n].index_map is not None for n in ("transpose", "broadcast", "one_hot"))
    root = Path(__file__).resolve().parent.parent / "compiler"
    for module in ("fuse.py", "fuse_walk.py", "fuse_merge.py", "kernel_ir.py", "c_kernel.py", "cuda_c.py",
                   "lower_cuda.py", "plan.py"):
        text = (root / module).read_text()
        for op in ("softmax", "logsumexp", "one_hot", "broadcast", "transpose", "training_only"):
            assert f'"{op}"' not in text, (module, op)
