"""The canonical layout of .net text (`netc fmt`).

    format_source(text, file) -> text in the canonical layout

The layout:

- one statement per line; a statement written over several lines (inside
  brackets, or with a backslash continuation) is joined onto one line, and
  long lines are not rewrapped;
- blank lines between statements are kept where the user had them, a run of
  them collapsed to one; none at the start or end of the file, right after a
  `{` or right before a `}`;
- the entries of a `data`/`train` block, and the body and `return` of a block
  `def`, are indented 4 spaces, the closing `}` has a line of its own; a block
  with nothing inside (not even a comment) is written `name {}`;
- one space around binary operators, `=` (also in named arguments and
  parameter defaults, `act = relu`) and the `:` of `input`/`target`; none
  inside brackets, around the `:` of a slice, after a unary minus or before
  a transpose `'`; `, ` after commas, and no trailing comma;
- numbers and strings keep the text they were written with;
- parentheses the user wrote are kept (a doubled pair `((e))` becomes one);
  printing a syntax tree adds exactly those precedence requires;
- every comment is kept, its trailing whitespace removed: a comment after code
  stays at the end of that statement's line, two spaces before the `#`; a
  comment on a line of its own stays before the statement that follows it, at
  that statement's indentation (inside a block, it stays inside). A comment
  inside a statement written over several lines moves to its own line just
  above that statement (the last line's comment stays at the end of the line).

The result always parses to the same syntax tree as the input (checked on
every call: `same_tree`), and formatting it again changes nothing.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from functools import lru_cache

import lark
from lark import Token, Tree

from . import syntax as S
from .errors import Loc, NetcError
from .parse import NewlinesInBrackets, grammar_text, parse

INDENT = "    "

# ---------------------------------------------------------------------------
# comparing syntax trees without source locations


def strip_locs(node):
    """A syntax tree as nested tuples, without `loc` (and without a Module's
    file name and source text): two trees mean the same iff these are equal."""
    if isinstance(node, S.Module):
        return ("Module", strip_locs(node.stmts))
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,) + tuple(
            (f.name, strip_locs(getattr(node, f.name))) for f in dataclasses.fields(node) if f.name != "loc")
    if isinstance(node, (tuple, list)):
        return tuple(strip_locs(x) for x in node)
    return node


def same_tree(a, b) -> bool:
    """Whether two syntax trees (Modules, statements or expressions) are equal
    once source locations are ignored. Iterative: any depth the parser accepts."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if isinstance(x, S.Module) or isinstance(y, S.Module):
            if not (isinstance(x, S.Module) and isinstance(y, S.Module)):
                return False
            todo.append((x.stmts, y.stmts))
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            if type(x) is not type(y):
                return False
            todo.extend((getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x) if f.name != "loc")
        elif isinstance(x, (tuple, list)):
            if not isinstance(y, (tuple, list)) or len(x) != len(y):
                return False
            todo.extend(zip(x, y))
        elif type(x) is not type(y) or x != y:
            return False
    return True


# ---------------------------------------------------------------------------
# expression nodes that exist only in the formatter: what the user wrote that
# the syntax tree forgets (parentheses, a unary plus, the text of a string,
# the order of positional and named arguments)

_NOLOC = Loc("<fmt>", 0, 0)


@dataclass(frozen=True)
class Paren(S.Expr):
    inner: S.Expr


@dataclass(frozen=True)
class Plus(S.Expr):
    operand: S.Expr


@dataclass(frozen=True)
class RawStr(S.Str):
    raw: str = '""'


@dataclass(frozen=True)
class RawUse(S.Use):
    raw: str = '""'


@dataclass(frozen=True)
class OrderedCall(S.Call):
    order: tuple = ()  # each an Expr (positional) or a (name, Expr) pair, as written


# precedence levels, loosest first (grammar/net.lark: sum, product, unary, power, postfix, atom)
SUM, PRODUCT, UNARY, POWER, POSTFIX, ATOM = range(1, 7)
_BINOPS = {"add": ("+", SUM, SUM, PRODUCT), "sub": ("-", SUM, SUM, PRODUCT),
           "mul": ("*", PRODUCT, PRODUCT, UNARY), "div": ("/", PRODUCT, PRODUCT, UNARY),
           "matmul": ("@", PRODUCT, PRODUCT, UNARY), "pow": ("^", POWER, POSTFIX, UNARY)}
#            op: (symbol, level of the result, least level of the left operand, of the right one)


def quote(value: str) -> str:
    """A string literal that the parser reads back as `value` (escapes: \\ \" \n \t)."""
    table = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}
    return '"' + "".join(table.get(c, c) for c in value) + '"'


def level(e: S.Expr) -> int:
    """How tightly `e` binds as written (ATOM for literals, names, brackets)."""
    match e:
        case Plus() | S.Neg():
            return UNARY
        case S.BinOp(op=op):
            return _BINOPS[op][1]
        case S.Transpose() | S.Attr() | S.Index() | S.Call():
            return POSTFIX
    return ATOM


def expr_text(e: S.Expr, least: int = SUM) -> str:
    """`e` as text, in parentheses if it binds less tightly than `least`.
    (One Python frame per level of the tree: as deep as the parser goes.)"""
    match e:
        case Paren(inner=inner):
            while isinstance(inner, Paren):  # ((e)) -> (e)
                inner = inner.inner
            text = f"({expr_text(inner)})"
        case Plus(operand=x):
            text = "+" + expr_text(x, UNARY)
        case S.Neg(operand=x):
            text = "-" + expr_text(x, UNARY)
        case S.Num(text=t):
            text = t
        case RawStr(raw=raw):
            text = raw
        case S.Str(value=value):
            text = quote(value)
        case S.Name(name=name):
            text = name
        case S.ListLit(items=items):
            text = "[" + ", ".join([expr_text(x) for x in items]) + "]"
        case S.BinOp(op=op, left=a, right=b):
            sym, _, la, lb = _BINOPS[op]
            text = f"{expr_text(a, la)} {sym} {expr_text(b, lb)}"
        case S.Transpose(operand=x):
            text = expr_text(x, POSTFIX) + "'"
        case S.Attr(obj=obj, name=name):
            o = expr_text(obj, POSTFIX)
            if o.isdigit():  # `1.T` would read as the number `1.` and a name
                o = f"({o})"
            text = f"{o}.{name}"
        case S.Index(obj=obj, lo=lo, hi=hi, is_slice=is_slice):
            inside = expr_text(lo) if not is_slice else (
                ("" if lo is None else expr_text(lo)) + ":" + ("" if hi is None else expr_text(hi)))
            text = f"{expr_text(obj, POSTFIX)}[{inside}]"
        case S.Call(func=func, args=args, kwargs=kwargs):
            order = e.order if isinstance(e, OrderedCall) else tuple(args) + tuple(kwargs)
            parts = [f"{a[0]} = {expr_text(a[1])}" if isinstance(a, tuple) else expr_text(a) for a in order]
            text = f"{expr_text(func, POSTFIX)}({', '.join(parts)})"
        case _:
            raise TypeError(f"not an expression: {e!r}")
    return text if level(e) >= least else f"({text})"


def _params_text(params) -> str:
    return ", ".join(p.name if p.default is None else f"{p.name} = {expr_text(p.default)}" for p in params)


def _entry_text(en: S.Entry) -> str:
    key = en.key if en.selector is None else f"{en.key} {en.selector}"
    return f"{key} = {expr_text(en.value)}"


# ---------------------------------------------------------------------------
# layout: statements -> lines ("items"), then comments and blank lines


@dataclass
class _Item:
    text: str
    indent: int  # in levels
    start: int = 0  # the source lines it covers (0: unknown, printing a bare tree)
    end: int = 0
    kind: str = "stmt"  # stmt | open | close
    inner: int = 0  # indentation of comments placed just before it
    before: list = dataclasses.field(default_factory=list)  # [(line, text, hoisted)]
    trailing: str | None = None


def _items(stmts, spans: dict) -> list[_Item]:
    """The output lines of `stmts`; `spans` maps id(node) to its source lines."""
    out: list[_Item] = []

    def add(text, indent, node=None, kind="stmt", inner=None, key=None):
        start, end = spans.get((id(node), key) if key else id(node), (0, 0))
        out.append(_Item(text, indent, start, end, kind, indent if inner is None else inner))

    for st in stmts:
        match st:
            case S.InputDecl(name=name, type=t):
                add(f"input {name} : {expr_text(t)}", 0, st)
            case S.TargetDecl(name=name, type=t):
                add(f"target {name} : {expr_text(t)}", 0, st)
            case S.Assign(name=name, value=v):
                add(f"{name} = {expr_text(v)}", 0, st)
            case RawUse(raw=raw):
                add(f"use {raw}", 0, st)
            case S.Use(path=path):
                add(f"use {quote(path)}", 0, st)
            case S.Def(name=name, params=params, body=(), result=r) if spans.get((id(st), "open")) is None:
                add(f"def {name}({_params_text(params)}) = {expr_text(r)}", 0, st)
            case S.Def(name=name, params=params, body=body, result=r):
                add(f"def {name}({_params_text(params)}) {{", 0, st, "open", key="open")
                for a in body:
                    add(f"{a.name} = {expr_text(a.value)}", 1, a)
                add(f"return {expr_text(r)}", 1, st, key="return")
                add("}", 0, st, "close", inner=1, key="close")
            case S.Block(name=name, entries=entries):
                if not entries and not spans.get((id(st), "comments")):
                    add(f"{name} {{}}", 0, st)
                    continue
                add(f"{name} {{", 0, st, "open", key="open")
                for en in entries:
                    add(_entry_text(en), 1, en)
                add("}", 0, st, "close", inner=1, key="close")
            case _:
                raise TypeError(f"not a statement: {st!r}")
    return out


def unparse(stmts) -> str:
    """Syntax-tree statements (a Module's `stmts`) as canonical text, no comments."""
    if isinstance(stmts, S.Module):
        stmts = stmts.stmts
    return _render(_items(stmts, {}), [], [])


def _render(items: list[_Item], tail: list, source_lines: list[str]) -> str:
    def blank_between(a: int, b: int) -> bool:  # a blank source line strictly between lines a and b
        return any(not source_lines[i - 1].strip(" \t\f\r") for i in range(max(a, 0) + 1, min(b, len(source_lines) + 1)))

    lines: list[str] = []
    prev_end, last_kind = None, None

    def put(text, indent, start, end, kind, blank_ok=True):
        nonlocal prev_end, last_kind
        if (blank_ok and prev_end is not None and last_kind != "open" and kind != "close"
                and blank_between(prev_end, start)):
            lines.append("")
        lines.append(INDENT * indent + text)
        prev_end, last_kind = end, kind

    for it in items:
        for line, text, hoisted in sorted(it.before, key=lambda b: b[0]):
            if hoisted:  # a comment from inside the item: it sits where the item starts
                put(text, it.inner, it.start, it.start - 1, "comment")
            else:
                put(text, it.inner, line, line, "comment")
        put(it.text + ("" if it.trailing is None else "  " + it.trailing), it.indent, it.start, it.end, it.kind)
    for line, text in tail:
        put(text, 0, line, line, "comment")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------
# the source side: our own Lark parser over the same grammar, keeping every
# token (so parentheses are seen) and collecting comments


_lock = threading.Lock()
_comments: list[Token] = []


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True, postlex=NewlinesInBrackets(),
                     maybe_placeholders=True, keep_all_tokens=True,
                     lexer_callbacks={"COMMENT": _comments.append})


def _parse_with_comments(source: str) -> tuple[Tree, list[Token]]:
    with _lock:
        _comments.clear()
        try:
            tree = _parser().parse(source)
            return tree, list(_comments)
        finally:
            _comments.clear()


def _subtrees(t: Tree) -> list:
    return [c for c in t.children if not isinstance(c, Token)]


def _tok(t: Tree, *types) -> list[Token]:
    return [c for c in t.children if isinstance(c, Token) and c.type in types]


class _Convert:
    """Lark tree (all tokens kept) -> syntax statements with the formatter's
    extra nodes, and the source lines each output line comes from."""

    def __init__(self):
        self.spans: dict = {}

    def module(self, tree: Tree) -> list[S.Stmt]:
        return [self.stmt(c) for c in _subtrees(tree)]

    def stmt(self, t: Tree) -> S.Stmt:
        names = _tok(t, "NAME")
        trees = [c for c in _subtrees(t) if c is not None]
        match t.data:
            case "input_decl":
                st = S.InputDecl(_NOLOC, str(names[0]), self.expr(trees[0]))
            case "target_decl":
                st = S.TargetDecl(_NOLOC, str(names[0]), self.expr(trees[0]))
            case "assign":
                st = S.Assign(_NOLOC, str(names[0]), self.expr(trees[0]))
            case "use":
                raw = str(_tok(t, "STRING")[0])
                st = RawUse(_NOLOC, raw[1:-1], raw)
            case "def_expr":
                params = [c for c in trees if c.data == "params"]
                st = S.Def(_NOLOC, str(names[0]), self.params(params), (), self.expr(trees[-1]))
            case "def_block":
                params = [c for c in trees if c.data == "params"]
                body = tuple(self.stmt(c) for c in trees if c.data == "assign")
                st = S.Def(_NOLOC, str(names[0]), self.params(params), body, self.expr(trees[-1]))
                (lbrace,), (ret,), (rbrace,) = _tok(t, "LBRACE"), _tok(t, "RETURN"), _tok(t, "RBRACE")
                self.spans[(id(st), "open")] = (t.meta.line, lbrace.end_line)
                self.spans[(id(st), "return")] = (ret.line, trees[-1].meta.end_line)
                self.spans[(id(st), "close")] = (rbrace.line, rbrace.end_line)
            case "block":
                entries = tuple(self.entry(c) for c in trees)
                st = S.Block(_NOLOC, str(names[0]), entries)
                (lbrace,), (rbrace,) = _tok(t, "LBRACE"), _tok(t, "RBRACE")
                self.spans[(id(st), "open")] = (t.meta.line, lbrace.end_line)
                self.spans[(id(st), "close")] = (rbrace.line, rbrace.end_line)
                self.spans[(id(st), "braces")] = (lbrace, rbrace)
            case _:
                raise AssertionError(f"netc fmt does not know the statement {t.data!r}")
        self.spans[id(st)] = (t.meta.line, t.meta.end_line)
        return st

    def params(self, ts) -> tuple[S.Param, ...]:
        if not ts:
            return ()
        out = []
        for p in _subtrees(ts[0]):
            name, default = _tok(p, "NAME")[0], [c for c in _subtrees(p) if c is not None]
            out.append(S.Param(str(name), self.expr(default[0]) if default else None, _NOLOC))
        return tuple(out)

    def entry(self, t: Tree) -> S.Entry:
        key, sel = _tok(t, "NAME")[0], _tok(t, "SELECTOR")
        value = [c for c in _subtrees(t) if c is not None][0]
        en = S.Entry(str(key), str(sel[0]) if sel else None, self.expr(value), _NOLOC)
        self.spans[id(en)] = (t.meta.line, t.meta.end_line)
        return en

    def expr(self, t: Tree) -> S.Expr:
        k = [c for c in _subtrees(t) if c is not None]
        match t.data:
            case "number":
                tok = t.children[0]
                return S.Num(_NOLOC, float(tok), str(tok))
            case "string":
                raw = str(t.children[0])
                return RawStr(_NOLOC, raw[1:-1], raw)
            case "name":
                return S.Name(_NOLOC, str(t.children[0]))
            case "add" | "sub" | "mul" | "div" | "matmul" | "pow":
                return S.BinOp(_NOLOC, t.data, self.expr(k[0]), self.expr(k[1]))
            case "neg":
                return S.Neg(_NOLOC, self.expr(k[0]))
            case "unary":  # unary plus
                return Plus(_NOLOC, self.expr(k[0]))
            case "atom":  # ( expr )
                return Paren(_NOLOC, self.expr(k[0]))
            case "transpose":
                return S.Transpose(_NOLOC, self.expr(k[0]))
            case "attr":
                return S.Attr(_NOLOC, self.expr(k[0]), str(_tok(t, "NAME")[-1]))
            case "list":
                return S.ListLit(_NOLOC, tuple(self.expr(c) for c in k))
            case "index":
                s = k[1]
                if s.data == "single":
                    return S.Index(_NOLOC, self.expr(k[0]), self.expr(_subtrees(s)[0]), None, False)
                lo, hi = _subtrees(s)
                return S.Index(_NOLOC, self.expr(k[0]), None if lo is None else self.expr(lo),
                               None if hi is None else self.expr(hi), True)
            case "call":
                order = []
                if len(k) > 1:
                    for a in _subtrees(k[1]):
                        if a.data == "kwarg":
                            order.append((str(_tok(a, "NAME")[0]), self.expr(_subtrees(a)[0])))
                        else:
                            order.append(self.expr(a))
                args = tuple(a for a in order if not isinstance(a, tuple))
                kwargs = tuple(a for a in order if isinstance(a, tuple))
                return OrderedCall(_NOLOC, self.expr(k[0]), args, kwargs, tuple(order))
        raise AssertionError(f"netc fmt does not know the expression {t.data!r}")


def _place_comments(items: list[_Item], comments: list[Token], source_lines: list[str]) -> list:
    """Attach each comment to an item (before it, or trailing it); returns the
    comments that go after the last item."""
    tail = []
    for c in sorted(comments, key=lambda c: (c.line, c.column)):
        text = str(c).rstrip(" \t\f\r")
        code_before = bool(source_lines[c.line - 1][:c.column - 1].strip(" \t\f\r"))
        inside = [it for it in items if it.start <= c.line <= it.end]
        if inside:
            it = inside[-1]
            if code_before and c.line == it.end and it.trailing is None:
                it.trailing = text
            else:  # inside a statement written over several lines: just above it
                it.before.append((c.line, text, True))
            continue
        nxt = next((it for it in items if it.start > c.line), None)
        if nxt is None:
            tail.append((c.line, text))
        else:
            nxt.before.append((c.line, text, False))
    return tail


def format_source(source: str, file: str = "<spec>", verify: bool = True) -> str:
    """`source` in the canonical layout. Raises SpecError (with file:line:col)
    for a syntax error. With `verify`, checks that the result parses to the same
    syntax tree (AssertionError otherwise: a bug in the formatter)."""
    source = source.replace("\r\n", "\n")
    if not source.endswith("\n"):
        source += "\n"
    before = parse(source, file)  # the user-facing syntax error, exactly as `netc check` reports it
    try:
        return _format(source, file, before, verify)
    except RecursionError:  # deeper than the parser itself goes: not expected, but not a crash
        raise NetcError(f"{file}: an expression is nested too deeply to format") from None


def _format(source: str, file: str, before: S.Module, verify: bool) -> str:
    tree, comments = _parse_with_comments(source)
    conv = _Convert()
    stmts = conv.module(tree)
    for st in stmts:  # a block that holds comments keeps its braces on lines of their own
        braces = conv.spans.get((id(st), "braces"))
        if braces:
            lb, rb = braces
            conv.spans[(id(st), "comments")] = any(
                (lb.line, lb.column) < (c.line, c.column) < (rb.line, rb.column) for c in comments)
    items = _items(stmts, conv.spans)
    source_lines = source.split("\n")
    tail = _place_comments(items, comments, source_lines)
    out = _render(items, tail, source_lines)
    if verify:
        after = parse(out, file)
        if not same_tree(before, after):
            raise AssertionError("netc fmt would change the meaning of the spec (a bug in the formatter)")
        if _comment_texts(out) != [str(c).rstrip(" \t\f\r") for c in comments]:
            raise AssertionError("netc fmt would lose or reorder a comment (a bug in the formatter)")
    return out


def _comment_texts(text: str) -> list[str]:
    _, comments = _parse_with_comments(text if text.endswith("\n") else text + "\n")
    return [str(c) for c in comments]


# ---------------------------------------------------------------------------
# the command: netc fmt SPEC [--check | --write]

DIFF_LINES = 60  # --check prints at most this many lines of the diff


def fmt_file(path: str, check: bool = False, write: bool = False, out=None, err=None) -> bool:
    """`netc fmt`: print the formatted spec; with `check`, False if the file is
    not formatted yet (and a short unified diff on stderr); with `write`,
    replace the file atomically if formatting changes it. True otherwise.
    Raises NetcError for an unreadable file and SpecError for a syntax error or
    a byte that is not UTF-8 (exit 2). The file is read as `netc check` reads
    it (compiler/sources.py: a regular file under the size cap), but with its
    newlines kept, so that --check sees CRLF."""
    import difflib
    import sys

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    raw = _read_raw(path)
    text = raw.replace("\r\n", "\n").replace("\r", "\n")  # as `netc check` reads it
    formatted = format_source(text, path)
    if check:
        if formatted == raw:
            return True
        diff = list(difflib.unified_diff(raw.splitlines(keepends=True), formatted.splitlines(keepends=True),
                                         fromfile=path, tofile=f"{path} (formatted)", n=1))
        for line in diff[:DIFF_LINES]:
            err.write(line if line.endswith("\n") else line + "\n")
        if len(diff) > DIFF_LINES:
            err.write(f"... ({len(diff) - DIFF_LINES} more diff lines)\n")
        err.write(f"{path}: not formatted (netc fmt --write {path} formats it)\n")
        return False
    if write:
        if formatted != raw:
            _replace(path, formatted)
            err.write(f"{path}: reformatted\n")
        return True
    out.write(formatted)
    return True


def _read_raw(path: str) -> str:
    """The spec's text, newlines as in the file: only a regular file of at most
    sources.USE_CAP bytes is read (no device that never ends, no FIFO that blocks)."""
    from .sources import USE_CAP, decode, open_regular

    def fail(why: str) -> NetcError:
        return NetcError(f"{path}: cannot read spec: {why}")
    with open_regular(path, fail, USE_CAP) as f:
        data = f.read(USE_CAP + 1)  # the file may have grown since it was checked
    if len(data) > USE_CAP:
        raise fail(f"over the {USE_CAP >> 20} MiB limit for a spec file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        decode(data, path, file=path)  # the located SpecError: line and column of the bad byte
        raise


def _replace(path: str, text: str) -> None:
    """Rewrite the spec atomically, keeping its permissions: never a half-written spec."""
    from .atomic import atomic_write
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), keep_mode=True)
