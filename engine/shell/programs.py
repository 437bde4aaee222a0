"""Which programs a ``--cmd`` template runs, as far as a parse can be certain (the preflight's).

The preflight checks that the program of each simple command exists, and it must never refuse a
command the shell would run. So the template is read as ``sh`` reads it, conservatively: words
(with their quotes, ``$(...)``, backticks, ``${...}``, ``$((...))``), operators (``;`` ``&``
``&&`` ``||`` ``|`` newlines, subshells), redirections (their target is no command), here-docs
(their body is skipped), assignments before a command, reserved words (``if ... then``,
``for NAME in ...; do``, ``case WORD in PATTERN) ...;; esac``, ``{ ...; }``, ``[[ ]]``,
``(( ))``) and function definitions (their names are commands the template defines). The first
word of each simple command is a *program* when it is plain text; a first word that is made at
run time (``$CMD``, a placeholder, a glob) is *uncertain*, as is anything this reader does not
follow: those are reported, never refused. Commands inside ``$(...)``, backticks and process
substitutions are read the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, NamedTuple

__all__ = ["ShellScan", "scan_programs"]

#: Reserved words after which a command starts again.
_OPENERS: Final = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"})
#: Reserved words that end a compound command (what follows is no command).
_CLOSERS: Final = frozenset({"fi", "done", "esac", "}"})
_SEPARATORS: Final = frozenset({";", "&", "&&", "||", "|", "|&", "\n", "(", ";;", ";&", ";;&"})
_REDIRECTS: Final = ("<<<", "<<-", "&>>", "<<", ">>", "<&", ">&", "<>", ">|", "&>", "<", ">")
_OPERATORS: Final = ("&&", "||", ";;&", ";;", ";&", "|&", "((", "))", ";", "&", "|", "(", ")")
_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_BREAK: Final = frozenset(" \t\n;&|()<>")
#: What a placeholder becomes while the template is read: a value made at run time.
_VALUE: Final = "\x00"


@dataclass
class ShellScan:
    """The programs a template runs (plain first words, in order), the functions it defines, and
    what could not be told (each a short reason)."""

    programs: list[str] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    uncertain: list[str] = field(default_factory=list)


class _Token(NamedTuple):
    kind: str  # "word", "op", "redir"
    text: str
    literal: bool = True  # a word with no expansion, glob or placeholder in it
    value: str = ""  # a word's text with its quotes removed (when literal)


class _Unsure(Exception):
    """The reader met something it does not follow."""


def scan_programs(template: str) -> ShellScan:
    """The programs ``template`` (a ``--cmd`` template, placeholders and ``{{ }}`` included) runs,
    as far as they can be told; see the module docstring."""
    scan = ShellScan()
    try:
        _parse(_tokens(_without_placeholders(template), scan), scan)
    except _Unsure as exc:
        scan.uncertain.append(str(exc))
    return scan


def _without_placeholders(template: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(template):
        if template.startswith("{{", i) or template.startswith("}}", i):
            out.append(template[i])
            i += 2
        elif template[i] == "{" and (end := template.find("}", i + 1)) >= 0:
            out.append(_VALUE)
            i = end + 1
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def _tokens(text: str, scan: ShellScan) -> list[_Token]:
    """The tokens of ``text``; the commands of substitutions are scanned into ``scan`` on the way."""
    return _Lexer(text, scan).run()


class _Lexer:
    def __init__(self, text: str, scan: ShellScan) -> None:
        self.text = text
        self.scan = scan
        self.i = 0
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs)

    def run(self) -> list[_Token]:
        text, out = self.text, list[_Token]()
        while self.i < len(text):
            ch = text[self.i]
            if ch in " \t":
                self.i += 1
            elif ch == "\\" and text.startswith("\\\n", self.i):
                self.i += 2
            elif ch == "#" and (not out or self._blank_before()):
                nl = text.find("\n", self.i)
                self.i = len(text) if nl < 0 else nl
            elif ch == "\n":
                out.append(_Token("op", "\n"))
                self.i += 1
                self._skip_heredocs()
            elif ch in "<>" and text.startswith("(", self.i + 1):
                self.i += 2  # <(...) or >(...): a process substitution, a word
                self._substitution(")")
                out.append(_Token("word", "<(...)", literal=False))
            elif (redir := next((r for r in _REDIRECTS if text.startswith(r, self.i)), None)) is not None:
                self.i += len(redir)
                out.append(_Token("redir", redir))
                if redir in ("<<", "<<-"):
                    out.append(self._heredoc_word(redir == "<<-"))
            elif (op := next((o for o in _OPERATORS if text.startswith(o, self.i)), None)) is not None:
                self.i += len(op)
                out.append(_Token("op", op))
            else:
                out.append(self._word())
        if self.heredocs:
            raise _Unsure("a here-document with no end")
        return out

    def _blank_before(self) -> bool:
        return self.i == 0 or self.text[self.i - 1] in " \t\n;&|()"

    def _word(self) -> _Token:
        text, start = self.text, self.i
        literal, value = True, []
        while self.i < len(text) and text[self.i] not in _BREAK:
            ch = text[self.i]
            if ch == "\\":
                value.append(text[self.i + 1 : self.i + 2])
                self.i += 2
            elif ch == "'":
                end = text.find("'", self.i + 1)
                if end < 0:
                    raise _Unsure("an unclosed ' quote")
                value.append(text[self.i + 1 : end])
                self.i = end + 1
            elif ch == '"':
                literal = self._double(value) and literal
            elif ch == "$":
                literal = self._dollar() and literal
            elif ch == "`":
                self.i += 1
                self._backtick()
                literal = False
            else:
                if ch in "*?[" or ch == _VALUE:
                    literal = False
                value.append(ch)
                self.i += 1
        word = text[start : self.i]
        if word in ("[", "[["):  # test's names, not globs
            literal = True
        if word.isdigit() and self.i < len(text) and text[self.i] in "<>":
            return _Token("op", "")  # an fd number before a redirection: nothing
        return _Token("word", word, literal, "".join(value))

    def _double(self, value: list[str]) -> bool:
        """A "..." string; whether it is plain text."""
        text = self.text
        self.i += 1
        literal = True
        while self.i < len(text):
            ch = text[self.i]
            if ch == '"':
                self.i += 1
                return literal
            if ch == "\\":
                value.append(text[self.i + 1 : self.i + 2])
                self.i += 2
            elif ch == "$":
                literal = self._dollar() and literal
            elif ch == "`":
                self.i += 1
                self._backtick()
                literal = False
            else:
                literal = literal and ch != _VALUE
                value.append(ch)
                self.i += 1
        raise _Unsure('an unclosed " quote')

    def _dollar(self) -> bool:
        """An expansion at ``$``; whether it is only a literal ``$``."""
        text = self.text
        nxt = text[self.i + 1 : self.i + 2]
        if text.startswith("$((", self.i):
            self.i = self._closing(self.i + 3, "((", "))")
        elif nxt == "(":
            self.i += 2
            self._substitution(")")
        elif nxt == "{":
            self.i = self._closing(self.i + 2, "{", "}")
        elif nxt == "'":
            end = self.i + 2
            while end < len(text) and text[end] != "'":
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise _Unsure("an unclosed $' quote")
            self.i = end + 1
        elif nxt and (nxt.isalnum() or nxt in "_@*#?$!-"):
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|.").match(text, self.i + 1)
            self.i = m.end() if m else self.i + 2
        else:
            self.i += 1
            return True
        return False

    def _closing(self, i: int, opening: str, closing: str) -> int:
        """Past the ``closing`` that matches (nesting counted, quotes skipped), from ``i``."""
        text, depth = self.text, 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == "'" and closing == "}":
                i = text.find("'", i + 1) + 1
                if i == 0:
                    break
                continue
            if text.startswith(closing, i):
                depth -= 1
                i += len(closing)
                if depth == 0:
                    return i
                continue
            if text.startswith(opening, i):
                depth += 1
                i += len(opening)
                continue
            i += 1
        raise _Unsure(f"an unclosed {opening}")

    def _substitution(self, end: str) -> None:
        """The commands of a ``$(...)`` or ``<(...)`` read into the scan; past its ``)`` (a case
        pattern's bare ``)`` inside it closes nothing)."""
        sub = _Lexer(self.text, self.scan)
        sub.i = self.i
        tokens: list[_Token] = []
        depth = cases = 0
        while True:
            if sub.i >= len(self.text):
                raise _Unsure("an unclosed $(")
            token = sub._next()
            if token is None:
                continue
            if token.kind == "op" and token.text == "(":
                depth += 1
            elif token.kind == "op" and token.text == ")":
                if depth == 0 and cases == 0:
                    break
                depth = max(0, depth - 1)
            elif token.kind == "word" and token.text == "case":
                cases += 1
            elif token.kind == "word" and token.text == "esac":
                cases -= 1
            tokens.append(token)
        self.i = sub.i
        _parse(tokens, self.scan)

    def _next(self) -> _Token | None:
        """One token (None for blanks, comments and line continuations), for a substitution."""
        text = self.text
        ch = text[self.i]
        if ch in " \t":
            self.i += 1
            return None
        if ch == "\\" and text.startswith("\\\n", self.i):
            self.i += 2
            return None
        if ch == "#" and self._blank_before():
            nl = text.find("\n", self.i)
            self.i = len(text) if nl < 0 else nl
            return None
        if ch == "\n":
            self.i += 1
            if text.find("<<", 0, self.i) >= 0:
                raise _Unsure("a here-document inside $(...)")
            return _Token("op", "\n")
        if ch in "<>" and text.startswith("(", self.i + 1):
            self.i += 2
            self._substitution(")")
            return _Token("word", "<(...)", literal=False)
        if (redir := next((r for r in _REDIRECTS if text.startswith(r, self.i)), None)) is not None:
            self.i += len(redir)
            if redir in ("<<", "<<-"):
                raise _Unsure("a here-document inside $(...)")
            return _Token("redir", redir)
        if (op := next((o for o in _OPERATORS if text.startswith(o, self.i)), None)) is not None:
            self.i += len(op)
            return _Token("op", op)
        return self._word()

    def _backtick(self) -> None:
        """The commands of a `...` read into the scan; past its closing backtick."""
        text, out = self.text, list[str]()
        while self.i < len(text) and text[self.i] != "`":
            if text[self.i] == "\\" and self.i + 1 < len(text):
                out.append(text[self.i + 1])
                self.i += 2
            else:
                out.append(text[self.i])
                self.i += 1
        if self.i >= len(text):
            raise _Unsure("an unclosed backtick")
        self.i += 1
        _parse(_tokens("".join(out), self.scan), self.scan)

    def _heredoc_word(self, strip: bool) -> _Token:
        """The delimiter word after ``<<`` (the redirection's target)."""
        text = self.text
        while self.i < len(text) and text[self.i] in " \t":
            self.i += 1
        word = self._word()
        if not word.text:
            raise _Unsure("a here-document with no delimiter")
        self.heredocs.append((word.value, strip))
        return word

    def _skip_heredocs(self) -> None:
        """At the start of the line after here-document operators: past their bodies."""
        text = self.text
        for delimiter, strip in self.heredocs:
            while True:
                if self.i >= len(text):
                    raise _Unsure("a here-document with no end")
                nl = text.find("\n", self.i)
                end = len(text) if nl < 0 else nl
                line = text[self.i : end]
                self.i = end + 1 if nl >= 0 else end
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
        self.heredocs = []


def _parse(tokens: list[_Token], scan: ShellScan) -> None:
    """The first word of every simple command in ``tokens`` into ``scan``."""
    expect = True  # at a command's start
    patterns = False  # in a case statement, between ``in`` / ``;;`` and a pattern's ``)``
    cases = 0
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok.kind == "op" and not tok.text:
            i += 1
            continue
        if patterns:
            if tok.kind == "word" and tok.text == "esac":
                patterns, cases, expect = False, cases - 1, False
            elif tok.kind == "op" and tok.text == ")":
                patterns, expect = False, True
            i += 1
            continue
        if tok.kind == "redir":
            i += 2  # the redirection and its target
            continue
        if tok.kind == "op":
            if tok.text == "((" and expect:
                i = _past(tokens, i + 1, "))")
                expect = False
                continue
            if tok.text in (";;", ";&", ";;&") and cases:
                patterns = True
            expect = tok.text in _SEPARATORS
            i += 1
            continue
        word = tok.value if tok.literal else None
        if not expect:
            i += 1
            continue
        if word in _OPENERS:
            i += 1
        elif word in _CLOSERS:
            cases -= word == "esac"
            expect = False
            i += 1
        elif word in ("for", "select"):
            while i + 1 < n and tokens[i + 1].kind == "word":
                i += 1  # the name and the words after ``in``
            i += 1
            expect = False
        elif word == "case":
            if i + 2 >= n or tokens[i + 2].text != "in":
                raise _Unsure("a case statement it cannot follow")
            i += 3
            cases += 1
            patterns = True
        elif word == "[[":
            i = _past(tokens, i + 1, "]]")
            expect = False
        elif word == "function":
            if i + 1 >= n or tokens[i + 1].kind != "word":
                raise _Unsure("a function definition it cannot follow")
            scan.functions.add(tokens[i + 1].value)
            i += 2
            if i + 1 < n and tokens[i].text == "(" and tokens[i + 1].text == ")":
                i += 2
        elif _ASSIGNMENT.match(tok.text):
            i += 1
            if i < n and tokens[i].kind == "op" and tokens[i].text == "(" and tok.text.endswith("="):
                i = _past(tokens, i + 1, ")")  # an array: a=(1 2 3)
        elif i + 2 < n and tokens[i + 1].text == "(" and tokens[i + 2].text == ")":
            if word is None:
                raise _Unsure(f"a function named by {tok.text!r}")
            scan.functions.add(word)
            i += 3
        else:
            if word is not None and word:
                scan.programs.append(word)
            else:
                shown = tok.text.replace(_VALUE, "{...}")
                scan.uncertain.append(f"the command {shown!r} is made when it runs")
            expect = False
            i += 1
    if patterns or cases > 0:
        raise _Unsure("a case statement with no esac")


def _past(tokens: list[_Token], i: int, closing: str) -> int:
    """The index past the token ``closing`` from ``i`` on."""
    while i < len(tokens):
        if tokens[i].text == closing:
            return i + 1
        i += 1
    raise _Unsure(f"no {closing!r} where it was expected")
