"""`netc fmt`: the canonical layout (compiler/format.py), comment keeping,
--check / --write, and properties: formatting is idempotent and never changes
the syntax tree, on generated specs and on every shipped spec."""
from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netc.cli import main
from netc.compiler import syntax as S
from netc.compiler.errors import Loc, SpecError
from netc.compiler.format import format_source, quote, same_tree, strip_locs, unparse
from netc.compiler.parse import parse
from test_fuzz import mutated  # the same mutations `netc check` is fuzzed with

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "specs").glob("*.net")) + [ROOT / "compiler" / "prelude.net"]

PROPS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fmt(text: str) -> str:
    return format_source(text, "t.net")


def comments(text: str) -> list[str]:
    """The comment tokens of `text`, as the lexer sees them, trailing blanks removed."""
    from netc.compiler.format import _parse_with_comments
    _, cs = _parse_with_comments(text if text.endswith("\n") else text + "\n")
    return [str(c).rstrip(" \t\f\r") for c in cs]


def check_formatted(src: str) -> str:
    """Format `src` and check every property the formatter promises."""
    out = fmt(src)
    assert same_tree(parse(src, "a.net"), parse(out, "b.net")), f"meaning changed:\n{src}\n---\n{out}"
    assert fmt(out) == out, f"not idempotent:\n{src}\n--- once:\n{out}\n--- twice:\n{fmt(out)}"
    assert comments(out) == comments(src), f"comments changed:\n{src}\n---\n{out}"
    lines = out.split("\n")
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n")), repr(out)
    assert not out.startswith("\n")
    for line in lines:
        assert line == line.rstrip(" \t"), f"trailing blank in {line!r}"
        assert not line.startswith("\t")
        indent = len(line) - len(line.lstrip(" "))
        assert indent in (0, 4), f"indentation {indent}: {line!r}"
    assert "\n\n\n" not in out
    return out


# ---------------------------------------------------------------------------
# the layout rules


@pytest.mark.parametrize("src, want", [
    # spaces around binary operators and =, none inside brackets, ", " after commas
    ("y=a+b*c-d/e@f^g\n", "y = a + b * c - d / e @ f ^ g\n"),
    ("y = f( a ,b,k=1 , j = [ 1,2 ] )\n", "y = f(a, b, k = 1, j = [1, 2])\n"),
    ("input  x:[784]\ntarget t :class( 10 )\n", "input x : [784]\ntarget t : class(10)\n"),
    ("y = - x ' + W .T + a [ 0 : 3 ] + b[ :] + c[1 :] + d[ 2 ]\n",
     "y = -x' + W.T + a[0:3] + b[:] + c[1:] + d[2]\n"),
    # trailing commas go, empty brackets stay empty
    ("y = f(a, b,)\nz = [1, 2,]\nw = g()\nv = []\n", "y = f(a, b)\nz = [1, 2]\nw = g()\nv = []\n"),
    # numbers and strings keep their text
    ('y = 1.50e+3 + .5 + 1. + 007\nuse "a\\"b.net"\nz = "\\t"\n',
     'y = 1.50e+3 + .5 + 1. + 007\nuse "a\\"b.net"\nz = "\\t"\n'),
    # named arguments keep their order among the positional ones
    ("y = f(k = 1, a)\n", "y = f(k = 1, a)\n"),
    # user parentheses kept, doubled ones collapsed
    ("y = (a * b) + ((c))\nz = (a + b) * c\nw = -(x ^ 2)\n",
     "y = (a * b) + (c)\nz = (a + b) * c\nw = -(x ^ 2)\n"),
    # unary plus kept as written
    ("y = + x\n", "y = +x\n"),
    # `1.T` would lex as `1.` T
    ("y = 1 .T + (2).T + 1. .T\n", "y = (1).T + (2).T + 1..T\n"),
    # def forms and parameter defaults
    ("def f(a,b=2,)=a*b\n", "def f(a, b = 2) = a * b\n"),
    ("def g(x) { W=param([dim(x),3])\nreturn x@W }\n",
     "def g(x) {\n    W = param([dim(x), 3])\n    return x @ W\n}\n"),
    ("def h() {\nreturn 1\n}\n", "def h() {\n    return 1\n}\n"),
    # blocks: entries indented 4, selectors kept, the } on its own line
    ("train { lr_scale  h1.* = 0.5\n  decay weights=1e-4 }\n",
     "train {\n    lr_scale h1.* = 0.5\n    decay weights = 1e-4\n}\n"),
    ("train {}\ndata {\n\n}\n", "train {}\ndata {}\n"),
    # one statement per line: statements over several lines are joined
    ("y = f(a,\n      b,\n      c)\nz = 1 + \\\n    2\n", "y = f(a, b, c)\nz = 1 + 2\n"),
    # blank lines: kept between groups, runs collapsed, none at the ends or next to braces
    ("\n\n\nx = 1\n\n\n\ny = 2\nz = 3\n\n\n", "x = 1\n\ny = 2\nz = 3\n"),
    ("train {\n\n    a = 1\n\n\n    b = 2\n\n}\n", "train {\n    a = 1\n\n    b = 2\n}\n"),
    ("x = 1\r\ny = 2\r\n", "x = 1\ny = 2\n"),
    ("", ""),
    ("\n\n", ""),
])
def test_layout(src, want):
    assert check_formatted(src) == want


# ---------------------------------------------------------------------------
# comments


@pytest.mark.parametrize("src, want", [
    # a trailing comment stays on its line, two spaces before #, trailing blanks removed
    ("x = 1      # one   \ny = 2# two\n", "x = 1  # one\ny = 2  # two\n"),
    # own-line comments stay before the statement that follows them
    ("# head\n\n# about x\nx = 1\n# about y\n\ny = 2\n# tail\n",
     "# head\n\n# about x\nx = 1\n# about y\n\ny = 2\n# tail\n"),
    # comments inside a block stay inside, at its indentation
    ("train {  # the block\n# first\n  a = 1 # one\n      # last\n}  # end\n",
     "train {  # the block\n    # first\n    a = 1  # one\n    # last\n}  # end\n"),
    # a block holding only comments keeps them inside
    ("train {\n  # nothing yet\n}\n", "train {\n    # nothing yet\n}\n"),
    ("train { # nothing yet\n}\n", "train {  # nothing yet\n}\n"),
    ("train {} # empty\n", "train {}  # empty\n"),
    # comments in a def block
    ("def f(x) { # f\n  W = 1 # w\n  # before return\n  return x } # end\n",
     "def f(x) {  # f\n    W = 1  # w\n    # before return\n    return x\n}  # end\n"),
    # comments inside a statement written over several lines move just above it
    ("y = f(a,  # first\n      # own\n      b)  # last\n", "# first\n# own\ny = f(a, b)  # last\n"),
    ("train {\n  a = f(1, # inner\n   2)\n}\n", "train {\n    # inner\n    a = f(1, 2)\n}\n"),
    ("def g(a, # first\n b) = a\n", "# first\ndef g(a, b) = a\n"),
    # a comment after a one-line block goes after its }
    ("data { a = 1 }  # c\n", "data {\n    a = 1\n}  # c\n"),
    # comment text is kept byte for byte (but for trailing blanks)
    ('x = "#no" # "yes" # ##  \\ é\n', 'x = "#no"  # "yes" # ##  \\ é\n'),
    ("# only a comment", "# only a comment\n"),
])
def test_comments(src, want):
    assert check_formatted(src) == want


# ---------------------------------------------------------------------------
# printing syntax trees: parentheses from precedence

L = Loc("t", 1, 1)


def N(name):
    return S.Name(L, name)


def B(op, a, b):
    return S.BinOp(L, op, a, b)


@pytest.mark.parametrize("tree, text", [
    (B("mul", B("add", N("a"), N("b")), N("c")), "(a + b) * c"),
    (B("add", N("a"), B("mul", N("b"), N("c"))), "a + b * c"),
    (B("sub", N("a"), B("sub", N("b"), N("c"))), "a - (b - c)"),
    (B("sub", B("sub", N("a"), N("b")), N("c")), "a - b - c"),
    (B("pow", N("a"), B("pow", N("b"), N("c"))), "a ^ b ^ c"),
    (B("pow", B("pow", N("a"), N("b")), N("c")), "(a ^ b) ^ c"),
    (B("pow", S.Neg(L, N("a")), N("b")), "(-a) ^ b"),
    (S.Neg(L, B("pow", N("a"), N("b"))), "-a ^ b"),
    (B("pow", N("a"), S.Neg(L, N("b"))), "a ^ -b"),
    (B("mul", N("a"), S.Neg(L, N("b"))), "a * -b"),
    (S.Neg(L, B("add", N("a"), N("b"))), "-(a + b)"),
    (S.Transpose(L, B("matmul", N("a"), N("b"))), "(a @ b)'"),
    (S.Attr(L, S.Num(L, 1.0, "1"), "T"), "(1).T"),
    (S.Index(L, S.Neg(L, N("x")), S.Num(L, 0.0, "0"), None, False), "(-x)[0]"),
    (S.Call(L, B("add", N("f"), N("g")), (N("x"),), (("k", N("y")),)), "(f + g)(x, k = y)"),
    (S.Str(L, 'a"b\\c\n'), '"a\\"b\\\\c\\n"'),
])
def test_parentheses_from_the_tree(tree, text):
    from netc.compiler.format import expr_text
    assert expr_text(tree) == text
    assert same_tree(parse(f"y = {text}\n").stmts[0].value, tree)


def test_same_tree_ignores_locations_only():
    a, b = parse("y = a+b*c\n", "one.net"), parse("\n\ny  =  a + (b * c)  # c\n", "two.net")
    assert same_tree(a, b) and strip_locs(a) == strip_locs(b)
    assert not same_tree(a, parse("y = (a + b) * c\n"))
    assert not same_tree(parse("y = 1.0\n"), parse("y = 1.\n"))  # the number's text is part of the tree
    assert not same_tree(parse("y = f(a, k = 1)\n"), parse("y = f(a, j = 1)\n"))


def test_unparse_prints_a_module():
    m = parse("def f(a, b = 2) { W = 1\nreturn a }\ntrain { lr_scale h1.* = 1 }\nuse \"x.net\"\ny = -f(1)'\n")
    text = unparse(m)
    assert text == ('def f(a, b = 2) {\n    W = 1\n    return a\n}\ntrain {\n    lr_scale h1.* = 1\n}\n'
                    'use "x.net"\ny = -f(1)\'\n')
    assert same_tree(parse(text), m)


def test_quote_round_trips():
    for value in ["", "plain", 'q"uote', "back\\slash", "new\nline", "é", "é\\", "tab\t"]:
        assert parse(f"use {quote(value)}\n").stmts[0].path == value


def test_deep_expressions_format():
    src = "x = " + " + ".join(["1"] * 300) + "\ny = " + "-" * 300 + "1\nz = " + "(" * 200 + "1" + ")" * 200 + "\n"
    out = check_formatted(src)
    assert out.splitlines()[2] == "z = (1)"


def test_syntax_error_is_located():
    with pytest.raises(SpecError) as e:
        format_source("x = (1\ny = 2\n", "bad.net")
    assert str(e.value.loc) == "bad.net:2:1"


def test_verification_catches_a_broken_printer(monkeypatch):
    from netc.compiler import format as F
    monkeypatch.setitem(F._BINOPS, "sub", ("+", F.SUM, F.SUM, F.PRODUCT))
    with pytest.raises(AssertionError, match="meaning"):
        format_source("y = a - b\n")


# ---------------------------------------------------------------------------
# the command line


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


MESSY = "input  x:[4]\ny=dense(x,3)   # out\n"
NEAT = "input x : [4]\ny = dense(x, 3)  # out\n"


def test_fmt_prints_the_canonical_layout(tmp_path):
    p = tmp_path / "m.net"
    p.write_text(MESSY)
    assert run("fmt", str(p)) == (0, NEAT, "")
    assert p.read_text() == MESSY  # printing does not touch the file


def test_fmt_check(tmp_path):
    p = tmp_path / "m.net"
    p.write_text(MESSY)
    rc, out, err = run("fmt", str(p), "--check")
    assert rc == 3 and out == ""  # a failed check (netc's exit codes: 3)
    assert f"--- {p}\n" in err and "-y=dense(x,3)   # out\n" in err and "+y = dense(x, 3)  # out\n" in err
    assert err.splitlines()[-1] == f"{p}: not formatted (netc fmt --write {p} formats it)"
    p.write_text(NEAT)
    assert run("fmt", str(p), "--check") == (0, "", "")


def test_fmt_check_diff_is_short(tmp_path):
    p = tmp_path / "long.net"
    p.write_text("".join(f"x{i}=1\n" for i in range(500)))
    rc, out, err = run("fmt", str(p), "--check")
    assert rc == 3 and len(err.splitlines()) < 70 and "more diff lines" in err


def test_fmt_check_sees_crlf(tmp_path):
    p = tmp_path / "crlf.net"
    p.write_bytes(NEAT.replace("\n", "\r\n").encode())
    assert run("fmt", str(p), "--check")[0] == 3
    assert run("fmt", str(p), "--write")[0] == 0
    assert p.read_bytes() == NEAT.encode()


def test_fmt_write(tmp_path):
    p = tmp_path / "m.net"
    p.write_text(MESSY)
    os.chmod(p, 0o640)
    rc, out, err = run("fmt", str(p), "--write")
    assert (rc, out) == (0, "") and err == f"{p}: reformatted\n"
    assert p.read_text() == NEAT
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.net"]  # no temporary file left behind
    # already formatted: the file is not rewritten at all
    before = os.stat(p)
    assert run("fmt", str(p), "--write") == (0, "", "")
    after = os.stat(p)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_fmt_write_replaces_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves the old file whole and no temporary behind."""
    p = tmp_path / "m.net"
    p.write_text(MESSY)

    def boom(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        from netc.compiler.format import fmt_file
        fmt_file(str(p), write=True)
    assert p.read_text() == MESSY and sorted(os.listdir(tmp_path)) == ["m.net"]


def test_fmt_syntax_error_exits_2(tmp_path):
    p = tmp_path / "bad.net"
    p.write_text("x = 1\ny = (2\nz = 3\n")
    rc, out, err = run("fmt", str(p))
    assert rc == 2 and out == ""
    assert err.startswith(f"{p}:3:1: unexpected 'z'")
    assert run("fmt", str(p), "--write")[0] == 2 and p.read_text() == "x = 1\ny = (2\nz = 3\n"
    assert run("fmt", str(p), "--check")[0] == 2


def test_fmt_file_errors_exit_2(tmp_path):
    rc, _, err = run("fmt", str(tmp_path / "missing.net"))
    assert rc == 2 and err.startswith(f"{tmp_path / 'missing.net'}: cannot read spec")
    p = tmp_path / "binary.net"
    p.write_bytes(b"x = 1\n\xff\xfe\n")
    rc, _, err = run("fmt", str(p))
    assert rc == 2 and err.startswith(f"{p}:2:1: ") and "is not UTF-8 text (byte 0xff" in err  # located


def _run_fmt_subprocess(path, *flags):
    """netc fmt in a child process with a deadline: a read that never ends fails the test, not the run."""
    import subprocess
    import sys
    try:
        p = subprocess.run([sys.executable, "-m", "netc.cli", "fmt", str(path), *flags],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"netc fmt {path} did not finish: it reads what is not a regular file")
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("flags", [(), ("--check",), ("--write",)])
def test_fmt_reads_only_regular_files(tmp_path, flags):
    """netc fmt reads as netc check does (compiler/sources.py): no device, no FIFO, no folder, size-capped."""
    fifo = tmp_path / "pipe.net"
    os.mkfifo(fifo)
    big = tmp_path / "big.net"
    big.write_bytes(b"x = 1\n" * 200_000)  # 1.2 MB
    for path, why in [("/dev/zero", "not a regular file"), (fifo, "not a regular file"),
                      (tmp_path, "folder"), (big, "limit")]:
        rc, out, err = _run_fmt_subprocess(path, *flags)
        assert rc == 2 and out == "" and f"{path}: cannot read spec" in err and why in err, (path, err)
        assert "Traceback" not in err


def test_fmt_check_and_write_are_exclusive(tmp_path):
    p = tmp_path / "m.net"
    p.write_text(NEAT)
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
        main(["fmt", str(p), "--check", "--write"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------
# every shipped spec (and the prelude)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_format(path):
    src = path.read_text()
    out = check_formatted(src)
    # only the layout changed: the same lines once blanks are squeezed out
    squeeze = lambda s: [re.sub(r"\s+", "", line) for line in s.splitlines() if line.strip()]  # noqa: E731
    assert squeeze(out) == squeeze(src)


RESPACE_SEEDS = [p.read_text() for p in SHIPPED]
_PIECES = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[ \t]+|\n[ \t\n]*|[^\s#"]+|.')


@st.composite
def respaced(draw) -> tuple[str, str]:
    """A shipped spec with its horizontal whitespace changed and blank lines
    repeated (not added or removed): the formatted text must not change."""
    src = draw(st.sampled_from(RESPACE_SEEDS))
    out = []
    for piece in _PIECES.findall(src):
        if piece[0] in " \t":
            out.append(draw(st.sampled_from([" ", "  ", "\t", " \t  "])))
        elif piece[0] == "\n":
            blank = piece.count("\n") > 1
            n = draw(st.integers(2, 4)) if blank else 1
            out.append("\n" * n + draw(st.sampled_from(["", " ", "    ", "\t"])))
        else:
            out.append(piece)
    return src, "".join(out)


_formatted: dict[str, str] = {}


@settings(PROPS, max_examples=40)
@given(respaced())
def test_layout_does_not_depend_on_spacing(pair):
    src, messy = pair
    if src not in _formatted:
        _formatted[src] = fmt(src)
    assert format_source(messy, "t.net", verify=False) == _formatted[src]


# ---------------------------------------------------------------------------
# generated syntax trees: unparse(tree) parses back to the same tree

NAMES = st.sampled_from(["a", "b", "x", "W", "h1", "relu", "T", "_z9"])
NUMS = st.sampled_from(["0", "1", "2.5", "1e-5", ".5", "1.", "007", "1E+3", "3.0e2"])
STRS = st.text(alphabet=st.sampled_from(list('ab "\\\n\té#{}')), max_size=5)


def _expr_trees():
    leaves = st.one_of(
        NAMES.map(lambda n: S.Name(L, n)),
        NUMS.map(lambda t: S.Num(L, float(t), t)),
        STRS.map(lambda v: S.Str(L, v)),
    )

    def extend(inner):
        return st.one_of(
            st.tuples(st.sampled_from(["add", "sub", "mul", "div", "matmul", "pow"]), inner, inner).map(
                lambda p: S.BinOp(L, *p)),
            inner.map(lambda x: S.Neg(L, x)),
            inner.map(lambda x: S.Transpose(L, x)),
            st.tuples(inner, NAMES).map(lambda p: S.Attr(L, *p)),
            st.tuples(inner, st.lists(inner, max_size=2), st.lists(st.tuples(NAMES, inner), max_size=2)).map(
                lambda p: S.Call(L, p[0], tuple(p[1]), tuple(p[2]))),
            st.tuples(inner, inner).map(lambda p: S.Index(L, p[0], p[1], None, False)),
            st.tuples(inner, st.none() | inner, st.none() | inner).map(lambda p: S.Index(L, *p, True)),
            st.lists(inner, max_size=3).map(lambda xs: S.ListLit(L, tuple(xs))),
        )

    return st.recursive(leaves, extend, max_leaves=12)


EXPRS = _expr_trees()


@st.composite
def stmt_trees(draw):
    kind = draw(st.sampled_from(["input", "target", "assign", "use", "def", "defblock", "block"]))
    name = draw(NAMES)
    if kind == "input":
        return S.InputDecl(L, name, draw(EXPRS))
    if kind == "target":
        return S.TargetDecl(L, name, draw(EXPRS))
    if kind == "assign":
        return S.Assign(L, name, draw(EXPRS))
    if kind == "use":
        return S.Use(L, draw(STRS))
    if kind == "block":
        entries = draw(st.lists(st.tuples(NAMES, st.none() | st.sampled_from(["h1.*", "biases", "params(h2)"]),
                                          EXPRS), max_size=3))
        return S.Block(L, name, tuple(S.Entry(k, s, v, L) for k, s, v in entries))
    params = tuple(S.Param(p, d, L) for p, d in draw(st.lists(st.tuples(NAMES, st.none() | EXPRS), max_size=3)))
    body = () if kind == "def" else tuple(
        S.Assign(L, n, v) for n, v in draw(st.lists(st.tuples(NAMES, EXPRS), max_size=2)))
    return S.Def(L, name, params, body, draw(EXPRS))


@PROPS
@given(st.lists(stmt_trees(), max_size=4))
def test_unparse_round_trips(stmts):
    text = unparse(stmts)
    assert same_tree(parse(text).stmts, tuple(stmts)), text
    assert fmt(text) == text  # a printed tree is already in the canonical layout


# ---------------------------------------------------------------------------
# generated messy text: random spacing, line breaks inside brackets, backslash
# continuations, redundant parentheses, trailing commas, comments everywhere

COMMENT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=8).map(
    lambda s: "#" + s)
_WORD = re.compile(r"[A-Za-z0-9_.]")


@st.composite
def messy_expr(draw, depth=0) -> list[str]:
    """An expression as a token list (brackets are tokens of their own)."""
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return [draw(st.one_of(NAMES, NUMS, STRS.map(quote)))]
    kind = draw(st.integers(0, 8))
    sub = lambda: draw(messy_expr(depth + 1))  # noqa: E731
    if kind == 0:
        return sub() + [draw(st.sampled_from(["+", "-", "*", "/", "@", "^"]))] + sub()
    if kind == 1:
        return [draw(st.sampled_from(["-", "+"]))] + sub()
    if kind == 2:  # redundant parentheses, sometimes doubled
        k = draw(st.integers(1, 2))
        return ["("] * k + sub() + [")"] * k
    if kind == 3:
        return ["("] + sub() + [")", "'"]
    if kind == 4:
        return ["("] + sub() + [")", ".", draw(NAMES)]
    if kind == 5:
        lo = sub() if draw(st.booleans()) else []
        hi = sub() if draw(st.booleans()) else []
        inside = lo + ([":"] + hi if draw(st.booleans()) or not lo else [])
        return [draw(NAMES), "["] + inside + ["]"]
    args = []
    for _ in range(draw(st.integers(0, 3))):
        args.append(([draw(NAMES), "="] if draw(st.booleans()) else []) + sub())
    if kind in (6, 7):
        toks = [draw(NAMES), "("]
    else:
        toks = ["["]
        args = [a if a[1:2] != ["="] else a[2:] for a in args]
    for i, a in enumerate(args):
        toks += ([","] if i else []) + a
    if args and draw(st.booleans()):
        toks.append(",")
    return toks + [")" if kind in (6, 7) else "]"]


@st.composite
def messy_spec(draw) -> str:
    def render(toks: list[str]) -> str:
        out, depth = [], 0
        for i, tok in enumerate(toks):
            if i:
                if depth > 0:
                    sep = draw(st.sampled_from(["", " ", "\n", "\n\t  ", " \\\n", "\n\n  "]))
                    if draw(st.integers(0, 5)) == 0:
                        sep = "  " + draw(COMMENT) + "\n" + draw(st.sampled_from(["", "  ", "\n"]))
                else:
                    sep = draw(st.sampled_from(["", " ", "  ", "\t", " \\\n  "]))
                if not sep and _WORD.match(out[-1][-1]) and _WORD.match(tok[0]):
                    sep = " "
                out.append(sep)
            out.append(tok)
            depth += tok in ("(", "[")
            depth -= tok in (")", "]")
        return "".join(out)

    def expr() -> list[str]:
        return draw(messy_expr())

    def eol() -> str:
        s = ("  " + draw(COMMENT)) if draw(st.integers(0, 3)) == 0 else draw(st.sampled_from(["", " ", "\t"]))
        s += "\n"
        for _ in range(draw(st.integers(0, 2))):
            s += draw(st.sampled_from(["\n", "  \n", draw(st.sampled_from(["", "    ", "\t"])) + draw(COMMENT) + "\n"]))
        return s

    text = draw(st.sampled_from(["", "\n", "# head\n", "\n\n# head\n\n"]))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            text += render([draw(st.sampled_from(["input", "target"])), draw(NAMES), ":"] + expr()) + eol()
        elif kind in (1, 2):
            text += render([draw(NAMES), "="] + expr()) + eol()
        elif kind == 3:
            text += render(["use", quote(draw(STRS))]) + eol()
        elif kind == 4:
            params = []
            for i in range(draw(st.integers(0, 3))):
                params += ([","] if i else []) + [draw(NAMES)] + (["="] + expr() if draw(st.booleans()) else [])
            head = ["def", draw(NAMES), "("] + params + ([","] if params and draw(st.booleans()) else []) + [")"]
            if draw(st.booleans()):
                text += render(head + ["="] + expr()) + eol()
            else:
                text += render(head + ["{"]) + draw(st.sampled_from([" ", "\n", eol()]))
                for _ in range(draw(st.integers(0, 2))):
                    text += "  " + render([draw(NAMES), "="] + expr()) + eol()
                text += "  " + render(["return"] + expr()) + draw(st.sampled_from([" ", "\n", eol()])) + "}" + eol()
        else:
            text += render([draw(NAMES), "{"]) + draw(st.sampled_from(["", " ", "\n", eol()]))
            entries = draw(st.integers(0, 3))
            for i in range(entries):
                key = [draw(NAMES)] + ([draw(st.sampled_from(["h1.*", "biases", "params(h2)"]))]
                                       if draw(st.booleans()) else [])
                text += ("  " + render(key + ["="] + expr())
                         + (eol() if i < entries - 1 else draw(st.sampled_from(["", " ", "\n", eol()]))))
            text += "}" + eol()
    return text


@PROPS
@given(messy_spec())
def test_messy_specs_format(text):
    try:
        parse(text, "gen.net")
    except SpecError as e:  # the generator's own mistake, not the formatter's
        pytest.fail(f"generated an invalid spec: {e}\n{text}")
    check_formatted(text)


# ---------------------------------------------------------------------------
# mutated shipped specs (the fuzzer's mutations): a located syntax error, or a
# formatting with every property


@settings(PROPS, max_examples=100)
@given(mutated())
def test_mutated_specs_format_or_fail_cleanly(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as netc fmt reads a file
    try:
        fmt(text)
    except SpecError as e:
        assert re.match(r"t\.net:\d+:\d+: ", e.render())
        return
    check_formatted(text)
