"""Parse .net text into the typed syntax tree (compiler/syntax.py).

Lark does the LALR parsing; this module turns its tree into dataclasses and its
exceptions into SpecErrors that name file:line:col and what was expected.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import lark
from lark import Token, Tree

from . import syntax as S
from .errors import ErrorList, Loc, SpecError

_TERMINAL_WORDS = {
    "_NL": "end of line", "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "CIRCUMFLEX": "'^'",
    "QUOTE": "\"'\"", "DOT": "'.'", "SELECTOR": "a parameter selector", "$END": "end of file",
}


class NewlinesInBrackets:
    """Post-lexer: newlines inside ( ) and [ ] do not end a statement; runs of
    newlines collapse to one."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        last_nl = True
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            if tok.type == "_NL":
                if depth > 0 or last_nl:
                    continue
                last_nl = True
            else:
                last_nl = False
            yield tok


def grammar_text() -> str:
    return resources.files("netc.grammar").joinpath("net.lark").read_text()


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True,
                     postlex=NewlinesInBrackets(), maybe_placeholders=True)


MAX_SYNTAX_ERRORS = 10


def parse(source: str, file: str = "<spec>") -> S.Module:
    """Syntax tree of `source`; raises SpecError, or ErrorList for several syntax errors."""
    if not source.endswith("\n"):
        source += "\n"
    tree = _parse_reporting_many(source, file)
    build, stmts = _Build(file), []
    for c in tree.children:
        try:
            stmts.append(build.stmt(c))
        except RecursionError:
            raise SpecError("this statement is nested too deeply", build.loc(c), source) from None
        except SpecError as e:
            e.source = source
            raise
    return S.Module(file, source, tuple(stmts))


def _parse_reporting_many(source: str, file: str) -> Tree:
    """Parse; on a syntax error, blank the offending line and go on, so one run
    reports the independent mistakes of a file (up to MAX_SYNTAX_ERRORS). The
    line numbers stay those of the original text."""
    errors: list[SpecError] = []
    lines = source.split("\n")
    blanked: set[int] = set()
    while True:
        try:
            tree = _parser().parse("\n".join(lines))
            break
        except lark.exceptions.UnexpectedInput as e:
            err = _syntax_error(e, source, file)
            errors.append(err)
            line = err.loc.line
            at_end = isinstance(e, lark.exceptions.UnexpectedEOF) or getattr(getattr(e, "token", None), "type", "") == "$END"
            if at_end or line in blanked or len(errors) >= MAX_SYNTAX_ERRORS or not 1 <= line <= len(lines):
                break
            blanked.add(line)
            lines[line - 1] = ""
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    return tree


def _syntax_error(e: lark.exceptions.UnexpectedInput, source: str, file: str) -> SpecError:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if line < 1:  # unexpected end of input
        lines = source.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    expected = sorted(_TERMINAL_WORDS.get(t, repr(t.lower()) if t.isupper() else t)
                      for t in (getattr(e, "expected", None) or getattr(e, "allowed", None) or ()))
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        what = f"unexpected character {source.splitlines()[line - 1][col - 1:col]!r}"
    else:
        tok = getattr(e, "token", None)
        if tok is None or tok.type == "$END":
            what = "unexpected end of file"
        elif tok.type == "_NL":
            what = "unexpected end of line"
        else:
            what = f"unexpected {tok.value!r}"
    msg = what + (f"; expected {', '.join(dict.fromkeys(expected))}" if expected else "")
    return SpecError(msg, Loc(file, line, col), source)


class _Build:
    def __init__(self, file: str):
        self.file = file

    def loc(self, node) -> Loc:
        if isinstance(node, Token):
            return Loc(self.file, node.line, node.column, node.end_line, node.end_column)
        m = node.meta
        if getattr(m, "empty", True):
            return Loc(self.file, 1, 1)
        return Loc(self.file, m.line, m.column, m.end_line, m.end_column)

    def unquote(self, tok) -> str:
        """A string literal's text: escapes \\n \\t \\\\ \\" only (anything else is an error)."""
        body, out, i = str(tok)[1:-1], [], 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                nxt = body[i + 1] if i + 1 < len(body) else ""
                if nxt not in _ESCAPES:
                    raise SpecError(f"unknown escape '\\{nxt}' in a string; use \\n, \\t, \\\\ or \\\"",
                                    Loc(self.file, tok.line, tok.column + 1 + i))
                out.append(_ESCAPES[nxt])
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)

    # statements -------------------------------------------------------
    def stmt(self, t: Tree) -> S.Stmt:
        loc, k = self.loc(t), t.children
        match t.data:
            case "input_decl":
                return S.InputDecl(loc, str(k[0]), self.expr(k[1]))
            case "target_decl":
                return S.TargetDecl(loc, str(k[0]), self.expr(k[1]))
            case "assign":
                return S.Assign(loc, str(k[0]), self.expr(k[1]))
            case "use":
                return S.Use(loc, self.unquote(k[0]))
            case "def_expr":
                return S.Def(loc, str(k[0]), self.params(k[1]), (), self.expr(k[2]))
            case "def_block":
                body = tuple(self.stmt(c) for c in k[2:-1])
                return S.Def(loc, str(k[0]), self.params(k[1]), body, self.expr(k[-1]))
            case "block":
                return S.Block(loc, str(k[0]), tuple(self.entry(c) for c in k[1:]))
        raise AssertionError(t.data)

    def params(self, t) -> tuple[S.Param, ...]:
        if t is None:
            return ()
        out = []
        for p in t.children:
            name, default = p.children[0], (p.children[1] if len(p.children) > 1 else None)
            out.append(S.Param(str(name), None if default is None else self.expr(default),
                               self.loc(name)))
        return tuple(out)

    def entry(self, t: Tree) -> S.Entry:
        key, sel, value = t.children
        return S.Entry(str(key), None if sel is None else str(sel), self.expr(value),
                       self.loc(key))

    # expressions ------------------------------------------------------
    def expr(self, t) -> S.Expr:
        loc = self.loc(t)
        if isinstance(t, Token):  # a single-token rule inlined by '?'
            raise AssertionError(t)
        k = t.children
        match t.data:
            case "number":
                return S.Num(loc, float(k[0]), str(k[0]))
            case "string":
                return S.Str(loc, self.unquote(k[0]))
            case "name":
                return S.Name(loc, str(k[0]))
            case "add" | "sub" | "mul" | "div" | "matmul" | "pow":
                return S.BinOp(loc, t.data, self.expr(k[0]), self.expr(k[1]))
            case "neg":
                return S.Neg(loc, self.expr(k[0]))
            case "unary":  # unary plus
                return self.expr(k[0])
            case "transpose":
                return S.Transpose(loc, self.expr(k[0]))
            case "attr":
                return S.Attr(loc, self.expr(k[0]), str(k[1]))
            case "list":
                return S.ListLit(loc, tuple(self.expr(c) for c in k if c is not None))
            case "index":
                s = k[1]
                if s.data == "single":
                    return S.Index(loc, self.expr(k[0]), self.expr(s.children[0]), None, False)
                lo, hi = s.children
                return S.Index(loc, self.expr(k[0]), None if lo is None else self.expr(lo),
                               None if hi is None else self.expr(hi), True)
            case "call":
                args, kwargs = [], []
                if k[1] is not None:
                    for a in k[1].children:
                        if isinstance(a, Tree) and a.data == "kwarg":
                            kwargs.append((str(a.children[0]), self.expr(a.children[1])))
                        else:
                            args.append(self.expr(a))
                return S.Call(loc, self.expr(k[0]), tuple(args), tuple(kwargs))
        raise AssertionError(t.data)


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
