"""The suite runs the NumPy backend unless NETC_BACKEND says otherwise: compiling C
for every model the tests build would cost minutes on a cold cache. The native
backend is proven against it in tests/test_native.py (every shipped spec, every
op recipe); `NETC_BACKEND=native pytest` runs the whole suite natively."""
import os

os.environ.setdefault("NETC_BACKEND", "numpy")

# Ctrl-C tests send SIGINT to netc (in this process or a child). A shell that
# starts the suite in the background (`pytest &`, nohup) leaves SIGINT ignored,
# and an ignored disposition is inherited by every child: give the suite Python's
# own handler back, so the children start with the default one.
import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
