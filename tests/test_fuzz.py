"""Fuzzing `netc check` in-process: whatever text it is given, the only outcomes
are exit 0, or exit 2 with a message `path:line:col: ...` (or `path: ...` for a
file-level error) -- never a traceback, exit 1, an exception escaping `main`,
or a hang.

Inputs: (a) random mutations of the shipped specs (characters, lines and tokens
deleted, duplicated, swapped; tokens of the grammar's vocabulary, names and
numbers inserted or substituted) and (b) grammar-directed random specs (random
expressions over the prelude, the primitive ops and the declared inputs).

Crashes found so far are recorded below as strict xfail reproducers (the
compiler is fixed elsewhere); the properties skip exactly those crash classes
(`_known_crash`) so that they keep looking for new ones.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from netc.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {p.name: p.read_text() for p in sorted((ROOT / "specs").glob("*.net"))}

# a small spec that touches what the shipped ones do not: def blocks, use of
# selectors in the train block, attributes, slices, transposes, lists, strings
EXTRA = """\
# extra fuzz seed
input x : [6]
target t : class(3)

def layer(x, n, act = tanh) {
    W = param([dim(x), n], init = fan_in)
    b = param([n], init = zeros)
    return act(x @ W + b)
}
def sq(a) = a ^ 2

h = layer(x, 4)
y = dense(h, 3, act = identity)
z = h @ h.W' + x * mean(sq(y))
loss = nll(softmax(y), t) + 1e-4 * l2(weights) + 0 * mean(z)

data {
    train = npz("d.npz", x = "x", t = "t")[0:10]
}

train {
    method = sgd(lr = 0.1, momentum = 0.5)
    lr_scale h.* = 0.5
    decay weights = 1e-4
    batch = 2
    epochs = 1
}
"""
SEEDS = [*SHIPPED.values(), EXTRA]

FUZZ = settings(max_examples=150, deadline=10_000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])

_workdir = tempfile.mkdtemp(prefix="netc-fuzz-")
atexit.register(shutil.rmtree, _workdir, True)
_LOCATED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): \S")


@contextlib.contextmanager
def _memory_cap(extra_bytes: int = 1 << 30):
    """Cap this process's address space at its current size plus `extra_bytes`
    while the block runs, so that a spec asking for a huge parameter fails fast
    with MemoryError instead of swapping or being killed; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:  # not Linux: no cap
        yield
        return
    cap = size + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_check(text: str, name: str = "fuzz.net") -> tuple[int | str, str, str]:
    """`netc check` on `text` in-process: (exit code, stdout, stderr). An
    exception escaping main comes back as the code 'raised: ...'."""
    path = os.path.join(_workdir, name)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _memory_cap():
        try:
            rc = main(["check", path])
        except SystemExit as e:  # argparse; should not happen with a path argument
            rc = f"SystemExit({e.code})"
        except Exception as e:  # noqa: BLE001 - anything escaping main is a finding
            rc = f"raised: {type(e).__name__}: {e}"
    return rc, out.getvalue(), err.getvalue()


def well_behaved(text: str, name: str = "fuzz.net") -> tuple[bool, str]:
    """(ok, why): whether `netc check` answers `text` as the contract says."""
    path = os.path.join(_workdir, name)
    rc, out, err = run_check(text, name)
    if rc == 0:
        if "Traceback" in err:
            return False, "exit 0 with a traceback"
        return True, ""
    if rc == 2:
        first = err.splitlines()[0] if err else ""
        if "Traceback" in err:
            return False, "exit 2 with a traceback:\n" + err
        m = _LOCATED.match(first)
        if m and (m["file"] == path or os.path.isfile(m["file"])):  # the spec, or a file it uses
            return True, ""
        if m:
            return False, f"exit 2 located outside the spec: {first!r}"
        if first.startswith(path + ": "):
            return True, ""
        return False, f"exit 2 without a location: {first!r}"
    return False, f"exit {rc}:\n{err[-3000:]}"


# Misbehaviours already found and reported: (pattern of the failure, minimal
# reproducer, what goes wrong). Each reproducer runs below as a strict xfail;
# the properties skip failures matching a pattern so that they keep looking for
# new ones. When the compiler is fixed, the xfail turns red: delete the entry.
_HEAD = "input x : [3]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(softmax(y), t)\n"
KNOWN: list = []  # (name, pattern, reproducer, reason) of crashes found and not fixed yet

# crashes the fuzzers found, now fixed: each reproducer must stay well behaved
FIXED = [
    ("output-reads-target", r"leaf '\w+' \(input\) is neither fed nor in state",
     "target t : [3]\ny = t\n",
     "the model's output depends on a target: lower(predict) gets only the inputs as feeds "
     "(compiler/pipeline.py compile_program) -> ValueError in lower_numpy.lower"),
    ("noise-step-not-fed", r"leaf 'step' \(hyper\) is neither fed nor in state",
     "input x : [3]\nW = param([3])\nloss = sum(uniform_noise(x * W))\n",
     "a random op whose noise drops out of the gradient: the loss reads the `step` hyper but "
     "pipeline._hypers only scans the updates, so train_step is not fed `step`"),
    ("huge-parameter", r"Unable to allocate|MemoryError|Maximum allowed dimension exceeded|array is too big",
     "input x : [3]\ny = dense(x, 99999999999999999999)\n",
     "netc check allocates and initializes every parameter (Model.__init__ -> runtime/state.init_state); "
     "a huge size is a numpy ValueError/MemoryError instead of a located SpecError"),
    ("negative-seed", r"expected non-negative integer",
     _HEAD + "train {\n    seed = -1\n}\n",
     "train { seed = -1 }: numpy.random.default_rng rejects it in init_state; TrainConfig does not check seed >= 0"),
    ("complex-lr-scale", r"not 'complex'",
     _HEAD + "train {\n    lr_scale = (0 - fan_in) ^ 0.5\n}\n",
     "an lr_scale formula with a negative base and a fractional power evaluates to a Python complex; "
     "model._scale_value calls float() on it -> TypeError"),
    ("infinite-init-scale", r"high - low range exceeds valid bounds",
     _HEAD + "train {\n    init_scale = 1e309\n}\n",
     "train { init_scale = 1e309 } (inf) reaches Generator.uniform in runtime/state.init_array -> OverflowError; "
     "TrainConfig does not require a finite init_scale"),
    ("bad-string-escape", r"'unicodeescape' codec can't decode",
     'use "\\x"\n',
     "a string with an invalid escape (\\x, \\u12, \\N{nope}): compiler/parse._unquote's "
     "decode('unicode_escape') raises UnicodeDecodeError, not a located SpecError"),
    ("deep-nesting", r"RecursionError",
     "x = " + "-" * 1200 + "1\n",
     "about 1000 nested unary minuses or terms of a sum (326 nested calls, 491 nested lists) exhaust "
     "Python's recursion limit in compiler/parse._Build.expr / elaborate -> RecursionError"),
    ("unlocated-lr-scale", r"without a location: .*lr_scale must be a number or a formula",
     _HEAD + "train {\n    lr_scale = true\n}\n",
     "a non-numeric lr_scale is reported without file:line:col (model._scale_value raises SpecError "
     "with no loc); a call such as `lr_scale y.* = f(1)` shows the internal BlockCall repr, and a bare "
     "`lr_scale = fan_in` or `lr_scale biases = size` is rejected as a string, not read as a formula"),
    ("huge-lr-scale", r"int too large to convert to float",
     _HEAD + "train {\n    lr_scale = 10 ^ 400\n}\n",
     "an lr_scale formula is evaluated on Python ints: 10 ^ 400 is an int that model._scale_value's "
     "float() cannot convert -> OverflowError"),
    ("negative-init-range", r"high - low < 0|scale < 0",
     "input x : [3]\nW = param([3], init = gaussian_init(std = -1))\n",
     "gaussian_init(std = -1) / uniform_init(limit = -1) reach numpy in runtime/state.init_array -> "
     "ValueError ('scale < 0', 'high - low < 0'); elaborate's _init does not check the sign"),
    ("located-in-prelude", r"located outside the spec: ['\"]<prelude>:",
     "input x : [4]\nh = dense(x, 1.5)\n",
     "an error raised while expanding a prelude function is located at `<prelude>:26:9` (the param "
     "call inside `dense`), with no source line and no mention of the user's call site "
     "(fuzz.net:2:5); the spec's location (or both, as a call chain) is what the user needs"),
    ("unlocated-output-shape", r"without a location: 'shapes .* do not broadcast'",
     _HEAD + "output = y.W\n",
     "an `output` that is not batch-shaped but [k, n] with n classes (here the parameter y.W): "
     "pipeline._error_count builds ne(argmax(output), t) without checking the batch axis, and the op's "
     "shape rule raises a SpecError with no location: 'shapes [3] and [B] do not broadcast'"),
]


def _known_crash(why: str) -> bool:
    return any(re.search(pattern, why) for _, pattern, _, _ in KNOWN)


def assert_well_behaved(text: str) -> None:
    ok, why = well_behaved(text)
    if not ok and _known_crash(why):
        reject()
    assert ok, f"netc check misbehaved ({why})\n--- spec ---\n{text}"


# ---------------------------------------------------------------------------
# (a) mutations of the shipped specs

VOCAB = ["(", ")", "[", "]", "{", "}", "=", ",", ":", "@", "^", "'", '"', ".", "+", "-", "*", "/",
         "#", "\\", "\n", "def", "input", "target", "use", "return", "param", "params", "weights",
         "biases", "dense", "x", "t", "y", "h1", "loss", "output", "data", "train", "search",
         "sum", "mean", "grad", "jacobian", "dim", "class", "mnist", "npz", "csv", "lr_scale",
         "decay", "freeze", "h1.*", "true", "false", "relu", "glorot", "sgd", "\"train\"", '""', "0", "1",
         "-1", "2.5", "1e-5", ".5", "1.", "1e309", "1e-400", "99999999999999999999", "784", "800"]
NUMBERS = ["0", "1", "2", "3", "-1", "0.5", "1e-5", ".5", "1.", "1e309", "1e-400", "10", "784",
           "99999999999999999999", "0.0", "2.5e3"]
_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|\"[^\"\n]*\"|#[^\n]*|.",
                    re.S)


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["char", "line", "token", "insert", "number", "name"]))
        if kind == "char" and text:
            i = draw(st.integers(0, len(text) - 1))
            op = draw(st.sampled_from(["del", "dup", "swap", "ins"]))
            if op == "del":
                text = text[:i] + text[i + 1:]
            elif op == "dup":
                text = text[:i] + text[i] + text[i:]
            elif op == "swap" and i + 1 < len(text):
                text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
            else:
                c = draw(st.one_of(st.sampled_from(list("()[]{}=,:@^'\".#\\\n\t +-*/_0e")),
                                   st.characters(codec="utf-8")))
                text = text[:i] + c + text[i:]
        elif kind == "line":
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["del", "dup", "swap"]))
            if op == "del":
                del lines[i]
            elif op == "dup":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        else:
            toks = _TOKEN.findall(text)
            if not toks:
                continue
            i = draw(st.integers(0, len(toks) - 1))
            if kind == "token":
                op = draw(st.sampled_from(["del", "dup", "swap"]))
                if op == "del":
                    del toks[i]
                elif op == "dup":
                    toks.insert(i, toks[i])
                elif i + 1 < len(toks):
                    toks[i], toks[i + 1] = toks[i + 1], toks[i]
            elif kind == "insert":
                toks.insert(i, " " + draw(st.sampled_from(VOCAB)) + " ")
            elif kind == "number":
                idx = [k for k, tok in enumerate(toks) if tok[:1].isdigit() or tok[:2].startswith(".")]
                if idx:
                    toks[draw(st.sampled_from(idx))] = draw(st.sampled_from(NUMBERS))
            else:
                idx = [k for k, tok in enumerate(toks) if tok[:1].isalpha() or tok[:1] == "_"]
                if idx:
                    toks[draw(st.sampled_from(idx))] = draw(st.sampled_from(VOCAB_NAMES))
            text = "".join(toks)
    return text


def _names() -> list[str]:
    from netc.compiler.elaborate import prelude_module
    from netc.compiler.ops import language_ops
    prelude = [s.name for s in prelude_module().stmts if hasattr(s, "name")]
    return sorted(set(language_ops()) | set(prelude))


FUNCS = _names()
VOCAB_NAMES = FUNCS + ["x", "t", "y", "h", "h1", "W", "b", "T", "param", "params", "weights", "biases",
                       "dim", "grad", "jacobian", "buffer", "class", "loss", "output", "undefined_name",
                       "gaussian_init", "uniform_init", "constant_init", "pi", "e", "data", "train"]


@FUZZ
@given(mutated())
def test_mutated_specs_check_cleanly(text):
    assert_well_behaved(text)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_specs_check(name):
    rc, out, err = run_check(SHIPPED[name], name)
    assert rc == 0, err


def test_extra_seed_checks():
    rc, out, err = run_check(EXTRA, "extra.net")
    assert rc == 0, err


# ---------------------------------------------------------------------------
# (b) grammar-directed random specs

SMALL = st.sampled_from(["0", "1", "2", "3", "4", "0.5", "1e-3", "2.0", ".25", "1.", "-1"])
ODD_NUMBERS = st.sampled_from(["1e309", "1e-400", "99999999999999999999", "0.0", "1e5", "2.5"])


def expressions(names: list[str]) -> st.SearchStrategy[str]:
    """Random expression text over `names` (the declared inputs, targets and
    earlier assignments), the prelude and the primitive ops."""
    leaves = st.one_of(
        st.sampled_from(names or ["x"]), SMALL, SMALL, ODD_NUMBERS,
        st.sampled_from(['"train"', '"t10k"', '"h*.W"', '"x"', '""']),
        st.sampled_from(["weights", "biases", "pi", "e", "relu", "glorot", "tanh", "identity"]),
        st.sampled_from(["[3]", "[2, 3]", "[]", "[0]"]),
    )

    def extend(inner):
        call_args = st.lists(st.one_of(inner, st.tuples(
            st.sampled_from(["act", "init", "axis", "n", "keep", "std", "scale", "limit", "value", "bias", "p"]),
            inner).map(lambda kv: f"{kv[0]} = {kv[1]}")), max_size=3)
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "@", "^"]), inner).map(" ".join),
            inner.map(lambda a: f"-{a}"),
            inner.map(lambda a: f"({a})"),
            inner.map(lambda a: f"({a})'"),
            st.tuples(inner, st.sampled_from(["T", "W", "b", "x"])).map(lambda p: f"({p[0]}).{p[1]}"),
            st.tuples(inner, SMALL).map(lambda p: f"({p[0]})[{p[1]}]"),
            st.tuples(inner, SMALL, SMALL).map(lambda p: f"({p[0]})[{p[1]}:{p[2]}]"),
            st.tuples(st.sampled_from(FUNCS + ["param", "params", "dim", "grad", "jacobian", "buffer"]),
                      call_args).map(lambda p: f"{p[0]}({', '.join(p[1])})"),
            st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        )

    return st.recursive(leaves, extend, max_leaves=8)


@st.composite
def random_spec(draw) -> str:
    lines, names = [], []
    for name in draw(st.sampled_from([["x"], ["x", "z"], []])):
        lines.append(f"input {name} : [{draw(st.sampled_from(['1', '3', '5', '2, 3', '0', '']))}]")
        names.append(name)
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["target t : class(3)", "target t : [3]", "target t : class(1)",
                                           "target t : [2, 2]", "target t : x", "target t : class(0)"])))
        names.append("t")
    if draw(st.booleans()):
        body = draw(expressions(["a", "b"] + names))
        if draw(st.booleans()):
            lines.append(f"def f(a, b = 1) = {body}")
        else:
            lines.append(f"def f(a, b = 1) {{\n    W = param([dim(a), 2])\n    return {body}\n}}")
        names.append("f")
    for k in range(draw(st.integers(0, 3))):
        width = draw(st.sampled_from(["1", "2", "3"]))
        act = draw(st.sampled_from(["relu", "tanh", "identity", "softmax", "lecun_tanh"]))
        value = draw(st.one_of(expressions(names), st.sampled_from(names or ["x"]).map(
            lambda n, width=width, act=act: f"dense({n}, {width}, act = {act})")))
        lines.append(f"h{k} = {value}")
        names.append(f"h{k}")
    if draw(st.booleans()):
        lines.append(f"loss = {draw(expressions(names))}")
    if draw(st.integers(0, 4)) == 0:
        lines.append(f"output = {draw(expressions(names))}")
    if draw(st.booleans()):
        entries = draw(st.lists(st.tuples(
            st.sampled_from(["method", "batch", "epochs", "shuffle", "seed", "lr_scale", "schedule", "stop",
                             "average", "decay", "l1", "dtype", "eval_batch", "emphasize", "lr", "bogus",
                             "lr_scale h0.*", "decay weights", "freeze params(h0)", "lr_scale biases"]),
            st.one_of(expressions(names), st.sampled_from(
                ["sgd(lr = 0.1)", "sgd(lr = 0.1, momentum = 0.9, nesterov = true)", "inverse_time(tau = 10)",
                 "early(patience = 10, grow = 2.0)", "polyak", "true", "off", "float64", "fan_in ^ -0.5"]))),
            max_size=4))
        lines.append("train {\n" + "".join(f"    {k} = {v}\n" for k, v in entries) + "}")
    if draw(st.booleans()):
        entries = draw(st.lists(st.tuples(
            st.sampled_from(["train", "valid", "test", "normalize", "bogus"]),
            st.sampled_from(['mnist("train")[0:10]', 'npz("d.npz")', 'csv("d.csv", target = -1)', "standardize",
                             "center", 'mnist("t10k")[10:0]', "1", 'mnist("nope")'])), max_size=3))
        lines.append("data {\n" + "".join(f"    {k} = {v}\n" for k, v in entries) + "}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(random_spec())
def test_random_specs_check_cleanly(text):
    assert_well_behaved(text)


# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [pytest.param(t, id=n) for n, _, t, _ in FIXED])
def test_fixed_reproducers_are_well_behaved(text):
    ok, why = well_behaved(text)
    assert ok, why


# the reproducers of KNOWN


@pytest.mark.skipif(not KNOWN, reason="no known misbehaviour left")
@pytest.mark.parametrize("text", [
    pytest.param(text, id=name, marks=pytest.mark.xfail(strict=True, reason=reason))
    for name, _, text, reason in KNOWN] or [None])
def test_known_misbehaviour(text):
    ok, why = well_behaved(text)
    assert ok, why


@pytest.mark.skipif(not KNOWN, reason="no known misbehaviour left")
@pytest.mark.parametrize("name, pattern, text", [(n, p, t) for n, p, t, _ in KNOWN] or [(None, None, None)])
def test_known_reproducers_still_match(name, pattern, text):
    """Each reproducer fails the way its pattern says (until it is fixed: then
    test_known_misbehaviour turns red and the entry goes)."""
    ok, why = well_behaved(text)
    if not ok:
        assert re.search(pattern, why), why
