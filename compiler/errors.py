"""Source locations and the errors users see.

A user error always names a place (file:line:col for specs, file and record for
data) so the CLI can print it with the source line and a caret and exit 2.
Anything else that escapes is an internal error (exit 1).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class NetcError(Exception):
    """A mistake in the user's input (spec, data, command line): exit code 2."""

    exit_code = 2

    def __init__(self, message: str, loc: Loc | None = None, source: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source
        self.hint = hint

    def render(self) -> str:
        """`path:line:col: message`, the source line, a caret, and a hint; control
        characters from files (names, quoted text) shown escaped (`visible`)."""
        head = f"{self.loc}: {self.message}" if self.loc else self.message
        lines = [visible(head)]
        text = self.source_line()
        if text is not None:
            text = text.rstrip("\n")
            lines.append("    " + visible(text))
            col, width = self.loc.col - 1, 1
            if self.loc.end_line == self.loc.line and self.loc.end_col:
                width = max(1, self.loc.end_col - self.loc.col)
            under = text[col:col + width]  # the caret's offsets in the escaped line
            pad = len(visible(text[:col])) + max(0, col - len(text))
            lines.append("    " + " " * pad + "^" * (len(visible(under)) + width - len(under)))
        if self.hint:
            lines.append(visible(f"    hint: {self.hint}"))
        return "\n".join(lines)

    def source_line(self) -> str | None:
        if self.loc is None or self.source is None:
            return None
        all_lines = self.source.splitlines()
        if 1 <= self.loc.line <= len(all_lines):
            return all_lines[self.loc.line - 1]
        return None

    def __str__(self) -> str:
        return self.render()


class SpecError(NetcError):
    """An error in a .net file."""


class DataError(NetcError):
    """An error in a data file: names the file and the record."""


class ErrorList(SpecError):
    """Several independent errors found in one pass (netc check reports them all)."""

    def __init__(self, errors: list[NetcError]):
        super().__init__(f"{len(errors)} errors", errors[0].loc if errors else None)
        self.errors = errors

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


def escaped(c: str) -> str:
    """One character as a backslash escape (the form Python and bash's $'...' read)."""
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def visible(text: str) -> str:
    """`text` with its control characters (newlines and tabs kept) shown as escapes: a
    name or a line from someone else's file never drives the terminal it is printed on."""
    return "".join(c if c.isprintable() or c in "\n\t" else escaped(c) for c in text)


def did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
