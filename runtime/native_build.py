"""Compile generated C into a shared object, cached on disk, loaded with ctypes.

The native backend compiles its C once per (source, compiler, flags, CPU): the
cache key is the sha256 of all four, so a cache hit is a check of the object
(runtime/native_cache.py: ours, whole, built from this source) and a dlopen, and
a new compiler, new flags or a different CPU (-march=native) never reuse a
stale object. Writes are atomic (a private temporary file, then rename), so
processes compiling the same source at once, or one killed mid-compile, never
leave a truncated .so under the final name. A failed compile raises
NativeBuildError with the compiler's own message and keeps the source it
failed on. No -ffast-math: measured, it folds away compiler/c_math.py's
round-to-integer step (exp then errs by 3.5e13 ulp, tanh by 4.5e6) and drops NaNs;
-fno-math-errno only stops libm calls from setting errno (what lets gcc inline
sqrtf and vectorize it) and -fno-trapping-math only drops the promise that
floating-point exceptions trap (what lets gcc turn the selects of
compiler/c_math.py into vector blends: without it logf's loop stays scalar);
neither changes a value.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..compiler.errors import NetcError
from . import native_cache

BASE_FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared",
                               "-fno-math-errno", "-fno-trapping-math", "-fno-semantic-interposition",
                               "-std=gnu11")
SCHEME = "netc-native-1"  # bump when the way a source becomes a .so changes
PROBE = "int netc_probe(int x) { return x + 1; }\n"


class NativeBuildError(NetcError):
    """The C compiler is missing or failed on generated source (not the spec's fault)."""

    exit_code = 1


def cache_dir() -> Path:
    """NETC_CACHE_DIR, else ~/.cache/netc/native (XDG_CACHE_HOME honoured)."""
    env = os.environ.get("NETC_CACHE_DIR")
    try:
        if env:
            return Path(env).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError as e:  # ~user that does not exist, no home
        raise NativeBuildError(f"the native cache folder: {e} (NETC_CACHE_DIR={env!r})") from None
    return Path(base) / "netc" / "native"


def compiler_command() -> list[str] | None:
    """The C compiler as an argv prefix: $CC (may carry words, e.g. `ccache gcc`), else cc, else gcc."""
    env = os.environ.get("CC", "").strip()
    if env:
        try:
            words = shlex.split(env)
        except ValueError:  # an unclosed quote: no compiler (_no_compiler names CC)
            return None
        return words if words and shutil.which(words[0]) else None
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


@functools.lru_cache(maxsize=8)
def _identity(cmd: tuple[str, ...]) -> str:
    try:
        r = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeBuildError(f"the C compiler {' '.join(cmd)!r} does not run: {e}") from None
    first = (r.stdout or r.stderr).strip().splitlines()[:1]
    real = shutil.which(cmd[0]) or cmd[0]
    return f"{' '.join(cmd)} ({os.path.realpath(real)}): {first[0] if first else '?'}"


def compiler_identity() -> str:
    """Path and `--version` first line of the compiler (part of the cache key)."""
    cmd = compiler_command()
    if cmd is None:
        raise _no_compiler()
    return _identity(tuple(cmd))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> str:
    """The CPU's model and feature flags: -march=native objects are only valid on them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform
        return f"{platform.machine()} {platform.processor()}"
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return f"{model.group(1) if model else '?'} | {' '.join(sorted(flags.group(1).split())) if flags else '?'}"


def default_flags() -> tuple[str, ...]:
    """BASE_FLAGS, plus 512-bit vectors where the CPU has AVX-512 (gcc's default keeps
    256: the vector math runs 1.3-1.4x faster at 512 here, bench/c_math.py)."""
    extra = ("-mprefer-vector-width=512",) if " avx512f " in f" {cpu_flags()} " else ()
    return BASE_FLAGS + extra


FLAGS: tuple[str, ...] = default_flags()


def cache_key(source: str, flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in (SCHEME, compiler_identity(), "\x1f".join(flags), cpu_flags(), source):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _no_compiler() -> NativeBuildError:
    cc = os.environ.get("CC")
    what = f"CC={cc!r} is not a command that runs a compiler" if cc and cc.strip() else \
        "no C compiler (cc or gcc) on PATH"
    return NativeBuildError(f"the native backend needs a C compiler: {what}",
                            hint="install gcc (or set CC), or use --backend numpy")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40] or "netc"


MAX_BYTES = 256 << 20  # the cache keeps the most recently used objects up to this size
# (objects are 15-300 kB: thousands of them, so the test suite's hundreds of kernels stay cached)


def _sweep(d: Path, age_s: float = 3600.0, keep_bytes: int = MAX_BYTES) -> None:
    """Before a compile: remove temporaries a killed compile left behind (an hour old: no
    live compile takes that long) and the least recently used objects beyond
    `keep_bytes` (a hit touches its object). Removing an object another process has
    loaded is safe (its mapping stays); one about to load it compiles it again."""
    now = time.time()
    objects = []
    for f in d.iterdir():
        try:
            st = f.stat()
            if f.name.startswith("."):
                if now - st.st_mtime > age_s and native_cache.ours(f.name, temporary=True):
                    f.unlink()
            elif native_cache.ours(f.name, temporary=False):
                objects.append((st.st_mtime, st.st_size, f))
        except OSError:
            pass
    total = 0
    for _, size, f in sorted(objects, key=lambda o: o[0], reverse=True):
        total += size
        if total > keep_bytes:
            f.unlink(missing_ok=True)


def build(source: str, name: str = "netc", flags: tuple[str, ...] | None = None,
          folder: Path | None = None) -> Path:
    """The shared object compiled from `source`: from the cache, or compiled into it.
    `folder`: the cache folder, resolved by the caller (a background compile uses the
    folder of the moment it was asked for, not of when it runs); default cache_dir()."""
    cmd = compiler_command()
    if cmd is None:
        raise _no_compiler()
    flags = FLAGS if flags is None else tuple(flags)
    key = cache_key(source, flags)
    d = native_cache.private_folder(folder if folder is not None else cache_dir(), NativeBuildError)
    final = d / f"{_safe(name)}-{key[:32]}.so"
    if native_cache.usable(final, key, NativeBuildError):  # ours, whole, and built from this source
        try:
            os.utime(final)  # most recently used: the last the sweep removes
        except OSError:
            pass
        return final
    _sweep(d)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", dir=d)
    except OSError as e:
        raise NativeBuildError(f"the native cache folder {d} cannot be written ({e.strerror or e}); "
                               f"set NETC_CACHE_DIR to a folder of yours") from None
    os.close(fd)
    c_file, so_file = Path(tmp + ".c"), Path(tmp + ".so")
    try:
        c_file.write_text(native_cache.stamp(source, key))
        try:
            r = subprocess.run([*cmd, *flags, "-o", str(so_file), str(c_file)],
                               capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise NativeBuildError(f"the C compiler {' '.join(cmd)!r} did not run: {e}") from None
        if r.returncode != 0 or not so_file.is_file():
            kept = d / f"{_safe(name)}-{key[:32]}.failed.c"
            os.replace(c_file, kept)
            msg = (r.stderr or r.stdout).strip().replace(str(c_file), str(kept))
            if len(msg) > 4000:
                msg = "...\n" + msg[-4000:]
            raise NativeBuildError(
                f"the C compiler failed on generated code (exit {r.returncode}); source kept at "
                f"{kept}\n{' '.join(cmd + list(flags))}\n{msg}",
                hint="this is a netc bug (please report it with the kept source); "
                     "--backend numpy runs without the compiler")
        os.chmod(so_file, 0o755)  # never group/other-writable, whatever the umask (native_cache.usable)
        os.replace(so_file, final)  # atomic: readers see no file or a whole one
        return final
    finally:
        for p in (Path(tmp), c_file, so_file):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


SPINCOUNT = "1000"  # libgomp's spins before a thread sleeps (its default: 300,000)


def openmp_env_defaults(env=None) -> None:
    """Shorten libgomp's spin-wait unless the user chose a policy (OMP_WAIT_POLICY or
    GOMP_SPINCOUNT). libgomp reads it once, when first loaded, so `load` and
    runtime/blas.py (before MKL's GNU layer loads libgomp) call this first. Idle threads
    spinning ~10 ms after every parallel region starve the running ones wherever
    other processes share the cores: at load 9.6 on 2 cores, bench/c_math.py's fused
    tanh(x + b) loop (128 x 800) on 2 threads took 12.5 ms with the default spin,
    0.32 ms with 1000 spins, 0.22 ms passive, 0.14-0.18 ms on one thread."""
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = SPINCOUNT


def load(source: str, name: str = "netc", flags: tuple[str, ...] | None = None,
         folder: Path | None = None) -> ctypes.CDLL:
    """Build (or find) `source`'s shared object and dlopen it. An object that will
    not load (damaged on disk) is removed and compiled again, once."""
    path = build(source, name, flags, folder)
    openmp_env_defaults()  # before libgomp first loads with the object
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        path = build(source, name, flags, folder)
        try:
            return ctypes.CDLL(str(path))
        except OSError as e:
            raise NativeBuildError(f"the compiled object {path} does not load: {e}") from None


@functools.lru_cache(maxsize=1)
def _probe_error(cmd: tuple[str, ...]) -> str | None:
    """Why the probe object does not build, load or compute (None: it does)."""
    try:
        ok = load(PROBE, "probe").netc_probe(41) == 42
    except NativeBuildError as e:
        return e.message
    except AttributeError:
        return "the probe object has no netc_probe"
    return None if ok else "the probe object computes a wrong result"


def why_unavailable() -> str | None:
    """Why native code cannot be built and loaded here, in words (no compiler, $CC not a
    command, the cache folder refused, a compile failure), or None where it can (a cache
    hit after the first call on this machine)."""
    cmd = compiler_command()
    return _no_compiler().message if cmd is None else _probe_error(tuple(cmd))


def compiler_available() -> bool:
    """Whether a C compiler is there and builds a loadable OpenMP object with FLAGS."""
    return why_unavailable() is None
