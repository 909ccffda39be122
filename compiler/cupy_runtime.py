"""The CuPy runtime generated CUDA steps call (compiler/lower_cuda.py), and
moving state between host and device. Imported only where a GPU is asked for:
CuPy is an optional dependency (`netc[gpu]`)."""
from __future__ import annotations

import numpy as np

from .errors import NetcError

INSTALL_HINT = "install CuPy with `pip install 'netc[gpu]'` (the cupy-cuda12x wheel; it needs an NVIDIA driver)"


def require_gpu():
    """The cupy module, with a device; else a NetcError saying what is missing."""
    try:
        import cupy
    except ImportError as e:
        raise NetcError(f"device 'gpu' needs CuPy, which is not installed ({e}); {INSTALL_HINT}, "
                        "or use the default device 'cpu'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, no device
        raise NetcError(f"device 'gpu': CuPy is installed but no CUDA device is usable ({e}); run on a machine "
                        "with an NVIDIA GPU and driver, or use the default device 'cpu'") from None
    if count < 1:
        raise NetcError("device 'gpu': CuPy is installed but no CUDA device is visible "
                        "(check CUDA_VISIBLE_DEVICES and the driver), or use the default device 'cpu'")
    return cupy


_KERNEL_CACHE: dict = {}


class CupyRuntime:
    """What generated steps call, on CuPy. Compiled kernels are cached in-process
    by source and parameter types, so recompiling a spec costs no NVRTC time."""

    def __init__(self, cp):
        self.cp = self.xp = cp

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def kernel(self, source: str, name: str, dtypes: tuple = ()):
        key = (source, name, dtypes)
        k = _KERNEL_CACHE.get(key)
        if k is None:
            k = _KERNEL_CACHE[key] = self.cp.RawKernel(source, name)
        return k

    def launch(self, k, grid: int, block: int, args: tuple) -> None:
        k((grid,), (block,), args)

    def matmul(self, a, b, out) -> None:
        self.cp.matmul(a, b, out=out)

    def upload(self, x, buf):
        cp = self.cp
        if isinstance(x, cp.ndarray):
            if x.dtype == buf.dtype and x.flags.c_contiguous and x.shape == buf.shape:
                return x
            cp.copyto(buf, x)
            return buf
        buf.set(np.ascontiguousarray(x, dtype=buf.dtype))
        return buf

    def copyto(self, dst, src) -> None:
        self.cp.copyto(dst, src)

    def fill(self, buf, value) -> None:
        buf.fill(value)


def to_device(state: dict, cp) -> dict:
    return {k: cp.asarray(v) for k, v in state.items()}


def to_host(a):
    """A NumPy array from a NumPy or CuPy array (or scalar)."""
    get = getattr(a, "get", None)
    return get() if callable(get) and not isinstance(a, np.ndarray) else a
