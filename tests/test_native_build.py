"""The native backend's runtime: build + cache (runtime/native_build.py), the BLAS
found by ctypes (runtime/blas.py), the thread plan (runtime/threads.py) and the
C hooks that join them (compiler/c_runtime.py)."""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netc.compiler.c_runtime import C_RUNTIME
from netc.compiler.errors import NetcError
from netc.runtime import blas as blas_mod
from netc.runtime import native_build as nb
from netc.runtime import threads

needs_cc = pytest.mark.skipif(not nb.compiler_available(), reason="no C compiler")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("NETC_CACHE_DIR", str(d))
    return d


def _src(tag: str) -> str:
    return f"int netc_answer(int x) {{ return x + {tag}; }}\n"


@needs_cc
def test_build_caches_by_source_and_flags_and_loads(cache):
    p1 = nb.build(_src("1"))
    inode = p1.stat().st_ino
    assert nb.build(_src("1")) == p1 and p1.stat().st_ino == inode  # a hit compiles nothing
    assert nb.build(_src("2")) != p1
    assert nb.build(_src("1"), flags=nb.FLAGS + ("-DNETC_X=1",)) != p1
    assert nb.load(_src("2")).netc_answer(40) == 42
    assert sorted(f.suffix for f in cache.iterdir()) == [".so"] * 3  # no temporaries left


@needs_cc
def test_cache_keeps_the_most_recently_used_objects(cache, monkeypatch):
    first = nb.build(_src("10"))
    monkeypatch.setattr(nb, "_sweep", functools.partial(nb._sweep, keep_bytes=first.stat().st_size))
    second = nb.build(_src("11"))
    os.utime(first, (1, 1))  # used long ago ...
    nb.build(_src("10"))  # ... and now again: a hit refreshes it
    third = nb.build(_src("12"))  # a miss sweeps down to the most recent one, then adds its own
    assert {f.name for f in cache.iterdir()} == {first.name, third.name}
    assert not second.exists()



@needs_cc
def test_cache_key_covers_compiler_and_cpu(cache, monkeypatch):
    k = nb.cache_key("x", nb.FLAGS)
    monkeypatch.setattr(nb, "cpu_flags", lambda: "another cpu")
    assert nb.cache_key("x", nb.FLAGS) != k
    monkeypatch.setattr(nb, "compiler_identity", lambda: "another compiler")
    assert nb.cache_key("x", nb.FLAGS) != k


@needs_cc
def test_failed_compile_says_why_and_keeps_the_source(cache):
    with pytest.raises(nb.NativeBuildError) as e:
        nb.build("int broken(void) { return undefined_name_42; }\n", "bad")
    msg = str(e.value)
    assert "undefined_name_42" in msg and "failed.c" in msg
    kept = [f for f in cache.iterdir() if f.name.endswith(".failed.c")]
    assert len(kept) == 1 and "undefined_name_42" in kept[0].read_text()
    assert str(kept[0]) in msg  # the compiler's message names the kept file
    assert isinstance(e.value, NetcError) and e.value.hint
    assert not [f for f in cache.iterdir() if f.suffix == ".so"]


def test_no_compiler_is_reported_not_crashed(cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/netc-cc")
    assert not nb.compiler_available()
    with pytest.raises(nb.NativeBuildError, match="needs a C compiler"):
        nb.build(_src("1"))



@pytest.mark.parametrize("cc", ['"gcc', "gcc -DX='1", "''"])
def test_a_cc_that_is_not_a_command_line_is_no_compiler_named_as_cc(cache, monkeypatch, cc):
    """$CC with an unclosed quote (shlex cannot split it) or naming nothing: no compiler,
    and the error names CC, never a raw ValueError from shlex."""
    monkeypatch.setenv("CC", cc)
    assert nb.compiler_command() is None and not nb.compiler_available()
    with pytest.raises(nb.NativeBuildError, match=r"CC=.* is not a command that runs a compiler"):
        nb.build(_src("1"))


@needs_cc
def test_why_native_is_unavailable_is_said_not_guessed(tmp_path, monkeypatch):
    """A cache folder others can write to refuses native code: the reason given is that
    folder, not "no working C compiler"."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("NETC_CACHE_DIR", str(shared))
    nb._probe_error.cache_clear()
    try:
        why = nb.why_unavailable()
        assert why is not None and str(shared) in why and "writable by others" in why, why
        assert not nb.compiler_available()
        monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / "private"))
        nb._probe_error.cache_clear()
        assert nb.why_unavailable() is None and nb.compiler_available()
    finally:
        nb._probe_error.cache_clear()


@needs_cc
def test_damaged_object_in_cache_is_rebuilt(cache):
    p = nb.build(_src("3"))
    p.write_bytes(b"not an ELF file")
    assert nb.load(_src("3")).netc_answer(39) == 42


@needs_cc
def test_concurrent_builds_of_one_source_all_load(cache):
    code = ("import sys; from netc.runtime import native_build as nb; "
            f"sys.exit(0 if nb.load({_src('4')!r}).netc_answer(38) == 42 else 3)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ)) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len([f for f in cache.iterdir() if f.suffix == ".so"]) == 1
    assert not [f for f in cache.iterdir() if f.name.startswith(".")]


@needs_cc
def test_kill_mid_compile_leaves_no_object_under_the_final_name(cache, tmp_path):
    # a "compiler" that writes half an object where it was told to, then hangs
    fake = tmp_path / "slowcc"
    fake.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo slowcc 1; exit 0; fi\n'
                    'while [ "$1" != -o ]; do shift; done; printf "\\177ELF" > "$2"; sleep 60\n')
    fake.chmod(0o755)
    env = dict(os.environ, CC=str(fake))
    code = f"from netc.runtime import native_build as nb; nb.build({_src('5')!r})"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not any(f.name.endswith(".so") for f in cache.glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert not [f for f in cache.iterdir() if not f.name.startswith(".")]  # only temporaries
    # the real compiler then builds it (stale temporaries are ignored)
    assert nb.load(_src("5")).netc_answer(37) == 42


# -- BLAS -----------------------------------------------------------------------

def test_numpys_openblas_is_found_with_its_int_width(monkeypatch):
    monkeypatch.setenv("NETC_BLAS", "openblas")  # forced, even where MKL is installed
    b = blas_mod.find_blas()
    assert b is not None and b.name == "openblas" and os.path.exists(b.path)
    cfg = str(np.show_config(mode="dicts")["Build Dependencies"]["blas"].get("openblas configuration", ""))
    if cfg:  # NumPy says whether its OpenBLAS takes 64-bit ints
        assert b.int_width == (64 if "USE64BITINT" in cfg else 32)
    assert blas_mod.smoke_test(b) < 1e-6


def test_numpys_openblas_wins_over_scipys_copy():
    pytest.importorskip("scipy.linalg")  # maps SciPy's own OpenBLAS (32-bit ints) into the process
    site = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    assert os.path.realpath(blas_mod.numpy_blas_path()).startswith(os.path.join(site, "numpy"))


@pytest.mark.skipif(blas_mod.mkl_path() is None, reason="the optional mkl wheel is not installed")
def test_mkl_is_preferred_when_installed():
    b = blas_mod.find_blas("mkl")
    assert b is not None and b.name == "mkl"
    assert blas_mod.smoke_test(b) < 1e-6
    assert blas_mod.find_blas() is not None


@pytest.mark.parametrize("value", ["nonsense", "/dev/null", "/etc/passwd", "libc.so.6"])
def test_a_netc_blas_that_names_no_blas_is_an_error_naming_it(monkeypatch, value):
    """The user's NETC_BLAS resolving to nothing is said as such (not "no BLAS was found");
    a choice passed by a caller still gives None."""
    monkeypatch.setenv("NETC_BLAS", value)
    with pytest.raises(NetcError, match=f"NETC_BLAS={value!r}: not a BLAS library"):
        blas_mod.find_blas()
    assert blas_mod.find_blas(value) is None
    monkeypatch.delenv("NETC_BLAS")
    assert blas_mod.find_blas() is not None


@pytest.mark.skipif(blas_mod.mkl_path() is None, reason="the optional mkl wheel is not installed")
def test_mkl_sums_in_an_order_independent_of_its_thread_count():
    """MKL is put in conditional numerical reproducibility (AUTO, STRICT) unless the user set
    MKL_CBWR: its GEMMs then give the same bits whatever thread count auto picks."""
    code = ("import ctypes; from netc.runtime import blas; b = blas.find_blas('mkl'); "
            "f = ctypes.CDLL(b.path).MKL_CBWR_Get; f.argtypes = [ctypes.c_int]; print(f(-1))")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == blas_mod.MKL_CBWR_AUTO | blas_mod.MKL_CBWR_STRICT, out.stdout
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_CBWR": "COMPATIBLE"},
                         capture_output=True, text=True, check=True)
    assert int(out.stdout) != blas_mod.MKL_CBWR_AUTO | blas_mod.MKL_CBWR_STRICT  # the user's choice stands
    b = blas_mod.find_blas("mkl")
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((128, 784)).astype(np.float32), rng.standard_normal((784, 512)).astype(np.float32)
    got = []
    for n in (1, 2, 1):
        b.set_threads(n)
        got.append(blas_mod.gemm(b, a, w).tobytes())
    assert got[0] == got[1] == got[2]


def test_gemm_refuses_mismatched_shapes():
    b = blas_mod.find_blas()
    with pytest.raises(ValueError, match="inner"):
        blas_mod.gemm(b, np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


# -- threads ---------------------------------------------------------------------

def test_thread_plan_precedence_and_refusals():
    env = {"NETC_THREADS": "3"}
    assert threads.decide(2, env=env).threads == 2  # the train key wins
    assert threads.decide(None, env=env).threads == 3
    assert threads.decide("auto", env=env).threads == 3
    cores = threads.available_cores()
    auto = threads.decide(None, env={}, busy=0)
    assert auto.threads == cores == auto.blas_threads
    assert threads.decide(None, env={}, busy=cores).threads == 1  # every core taken: no pool
    assert threads.decide(None, env={}, busy=cores + 5).threads == 1
    assert threads.decide(3, env={}, busy=cores).threads == 3  # asked for is what it gets
    assert 0 <= threads.busy_cores() < 10_000
    assert threads.decide(None, step_flops=1e6, env={}).threads == 1  # a tiny step: one thread
    assert threads.decide(4, step_flops=1e6, env={}).threads == 4  # unless asked
    for bad in (-1, "two", 1.5):
        with pytest.raises(NetcError, match="threads"):
            threads.decide(bad, env={})
    with pytest.raises(NetcError, match="NETC_THREADS"):
        threads.decide(None, env={"NETC_THREADS": "many"})



def test_thread_counts_beyond_the_bound_are_refused_by_name():
    """A count no machine has (or the C int it is passed as cannot hold) is refused where it
    comes from; NETC_PAR_MIN is a loop length, said as such."""
    for bad in ("4097", "1000000000", str(2 ** 31), "99999999999999999999"):
        with pytest.raises(NetcError, match="NETC_THREADS must be a whole number of threads from 1 to 4096"):
            threads.decide(None, env={"NETC_THREADS": bad})
    for bad in (4097, 10 ** 12):
        with pytest.raises(NetcError, match="train key `threads`"):
            threads.decide(bad, env={})
    assert threads.decide(threads.MAX_THREADS, env={}).threads == 4096
    for bad in ("abc", "99999999999999999999"):
        with pytest.raises(NetcError, match="NETC_PAR_MIN must be a whole number of elements"):
            threads.decide(None, env={"NETC_PAR_MIN": bad})
    assert threads.decide(None, env={"NETC_PAR_MIN": "100"}, busy=0).par_min == 100


def test_openmp_spin_is_shortened_unless_the_user_chose():
    env = {}
    nb.openmp_env_defaults(env)
    assert env == {"GOMP_SPINCOUNT": nb.SPINCOUNT}
    for chosen in ({"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "infinite"}):
        env = dict(chosen)
        nb.openmp_env_defaults(env)
        assert env == chosen


GEMM_AND_THREADS = C_RUNTIME + r"""
void t_sgemm(long long m, long long n, long long k, const float* A, const float* B, float* C) {
    netc_sgemm(0, 1, m, n, k, 0.5f, A, k, B, k, 2.0f, C, n); /* C = 0.5 A B^T + 2 C */
}
void t_dgemm(long long m, long long n, long long k, const double* A, const double* B, double* C) {
    netc_dgemm(1, 0, m, n, k, 1.0, A, m, B, n, 0.0, C, n); /* C = A^T B */
}
int t_threads(void) {
    int t = 0;
#pragma omp parallel num_threads(netc_threads)
    {
#pragma omp single
        t = omp_get_num_threads();
    }
    return t;
}
long long t_par_min(void) { return netc_par_min; }
"""


@needs_cc
@pytest.mark.parametrize("choice", ["openblas", "mkl"])
def test_runtime_hooks_call_the_chosen_blas_with_the_planned_threads(cache, choice):
    b = blas_mod.find_blas(choice)
    if b is None:
        pytest.skip(f"{choice} not installed")
    lib = nb.load(GEMM_AND_THREADS, "hooks")
    plan = threads.setup(lib, threads.ThreadPlan(2, 2, 1000, "test"), b)
    assert lib.t_threads() == plan.threads == 2
    lib.t_par_min.restype = ctypes.c_longlong
    assert lib.t_par_min() == 1000
    rng = np.random.default_rng(0)
    P = ctypes.c_void_p
    a, bb = rng.standard_normal((33, 17)).astype(np.float32), rng.standard_normal((9, 17)).astype(np.float32)
    c = rng.standard_normal((33, 9)).astype(np.float32)
    want = 0.5 * a.astype(np.float64) @ bb.T + 2 * c
    lib.t_sgemm(ctypes.c_longlong(33), ctypes.c_longlong(9), ctypes.c_longlong(17),
                P(a.ctypes.data), P(bb.ctypes.data), P(c.ctypes.data))
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
    a2, b2 = rng.standard_normal((17, 33)), rng.standard_normal((17, 9))
    c2 = np.zeros((33, 9))
    lib.t_dgemm(ctypes.c_longlong(33), ctypes.c_longlong(9), ctypes.c_longlong(17),
                P(a2.ctypes.data), P(b2.ctypes.data), P(c2.ctypes.data))
    np.testing.assert_allclose(c2, a2.T @ b2, rtol=1e-12)
