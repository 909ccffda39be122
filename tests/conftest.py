"""The suite runs the NumPy backend unless NETC_BACKEND says otherwise: compiling C
for every model the tests build would cost minutes on a cold cache. The native
backend is proven against it in tests/test_native.py (every shipped spec, every
op recipe); `NETC_BACKEND=native pytest` runs the whole suite natively."""
import os

os.environ.setdefault("NETC_BACKEND", "numpy")
