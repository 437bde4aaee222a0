"""The quoting lexer: where in the template's own shell syntax each placeholder sits.

A value is quoted with :func:`shlex.quote`, but a quoted word inside the user's quotes would be
unquoted again (``"{}"`` with a value ``$(x)`` gives ``"'$(x)'"``, which runs ``x``). So the
template's literal text is followed as the shell reads it: inside ``'...'`` or ``"..."`` the
value is put between a closing and a reopening quote; where no quoting can be safe (backticks,
``${...}``, ``$((...))``, ``$'...'``, a here-document body, a comment, right after a ``\\`` or a
``$``) the template is refused with a :class:`UserError`.
"""

from __future__ import annotations

import enum
from typing import Final

from ..errors import UserError

__all__ = ["Frame", "FrameKind", "ShellContext"]


class FrameKind(enum.Enum):
    """What the shell is reading at some point of the template."""

    TOP = "top level"
    COMMAND_SUB = "$(...)"
    SUBSHELL = "(...)"
    SINGLE = "'...'"
    DOUBLE = '"..."'
    ANSI_C = "$'...'"
    BACKTICK = "`...`"
    PARAMETER = "${...}"
    ARITHMETIC = "$((...)) or ((...))"
    ARITH_PAREN = "a parenthesis inside $((...))"
    COMMENT = "# comment"
    HEREDOC = "here-document body"


K = FrameKind
#: Frames that read words and commands; only these, SINGLE and DOUBLE can take a value.
PLAIN: Final = frozenset({K.TOP, K.COMMAND_SUB, K.SUBSHELL})
#: Why a placeholder cannot sit in the other frames.
_WHY: Final = {
    K.BACKTICK: "inside backticks (`...`), where quotes do not protect a backtick: use $(...)",
    K.ANSI_C: "inside $'...'",
    K.PARAMETER: "inside ${...}",
    K.ARITHMETIC: "inside $((...)) or ((...))",
    K.ARITH_PAREN: "inside $((...)) or ((...))",
    K.COMMENT: "inside a # comment, where a newline in the value would end the comment",
    K.HEREDOC: "inside a here-document, where quotes are not special: pass the value as an argument "
    "or read it from $BATCHTUI_ITEM_JSON (from the file $BATCHTUI_ITEM_JSON_FILE names when the "
    "item is over 128 KiB)",
}
#: The opening of each quote that must be closed by the template's end.
_OPENING: Final = {K.SINGLE: "'", K.DOUBLE: '"', K.ANSI_C: "$'", K.BACKTICK: "`"}
_BREAK: Final = frozenset(" \t\n;&|()<>")
_STAY_CMD: Final = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"})


class Frame:
    """One level of the lexer's stack."""

    __slots__ = ("cases", "cmd", "kind", "word")

    def __init__(self, kind: FrameKind) -> None:
        self.kind = kind
        self.cases = 0  # plain frames: `case` statements open in it (their patterns end with a bare ")")
        self.word = ""  # plain frames: the word being read ("\x01" marks a quoted or expanded part)
        self.cmd = True  # plain frames: whether that word is at a command's start (where keywords count)


class ShellContext:
    """Follows the shell quoting of a template's literal text, to know where each placeholder sits.

    A stack of :class:`Frame`. It reads words as far as ``case ... esac`` needs (a pattern's bare
    ``)`` closes nothing), so a template the shell can parse is followed exactly where
    placeholders are allowed.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.stack: list[Frame] = [Frame(K.TOP)]
        self.escape = False  # a backslash ended the last literal
        self.dollar = False  # a bare "$" ended the last literal
        self.heredocs: list[tuple[str | None, bool]] = []  # pending (delimiter, strip tabs)
        self.line: list[str] = []  # the here-document line being read

    def _refuse(self, name: str, why: str) -> UserError:
        return UserError(
            f"placeholder {{{name}}} {why} in the command template {self.template!r}: "
            "its value could not be quoted safely there"
        )

    def placeholder(self, name: str) -> str:
        """Where the next placeholder sits: the quote to wrap its value in, or a UserError."""
        if self.escape:
            raise self._refuse(name, "right after a backslash (which would unquote the value)")
        if self.dollar:
            raise UserError(
                f"placeholder {{{name}}} right after a '$' in the command template {self.template!r}: "
                "for a shell variable write $NAME or ${{NAME}}; a '$' cannot start an item's value"
            )
        kind = self.stack[-1].kind
        if kind in PLAIN:
            self._taint()
            return ""
        if kind is K.SINGLE:
            return "'"
        if kind is K.DOUBLE:
            return '"'
        raise self._refuse(name, _WHY[kind])

    def finish(self) -> None:
        """The template's end: a quote still open is an error."""
        quote = _OPENING.get(self.stack[-1].kind)
        if quote is not None:
            raise UserError(f"unterminated {quote} quote in the command template {self.template!r}")

    def _taint(self) -> None:
        top = self.stack[-1]
        if top.kind in PLAIN:
            top.word += "\x01"

    def _push(self, kind: FrameKind) -> None:
        self._taint()  # a quoted or substituted part: the word is no keyword
        self.stack.append(Frame(kind))

    def feed(self, text: str) -> None:
        """Advance over a run of literal text (braces already unescaped)."""
        self.escape = self.dollar = False
        stack = self.stack
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            kind = stack[-1].kind
            if kind is K.HEREDOC:
                i = self._heredoc_char(text, i)
                continue
            if c == "\\" and kind is not K.SINGLE and kind is not K.COMMENT:
                if i + 1 >= n:
                    self.escape = True
                self._taint()
                i += 2
                continue
            if kind is K.SINGLE or kind is K.ANSI_C:
                if c == "'":
                    stack.pop()
            elif kind is K.COMMENT:
                if c == "\n":
                    stack.pop()
                    continue  # the newline also ends the command line (here-documents start)
            elif kind is K.BACKTICK:
                if c == "`":
                    stack.pop()
            elif c == "$":
                i = self._dollar(text, i)
                continue
            elif (kind is K.DOUBLE or kind is K.PARAMETER) and c == "`":
                self._push(K.BACKTICK)
            elif kind is K.DOUBLE:
                if c == '"':
                    stack.pop()
            elif kind is K.PARAMETER:
                if c in "'\"":
                    self._push(K.SINGLE if c == "'" else K.DOUBLE)
                elif c == "}":
                    stack.pop()
            elif kind is K.ARITHMETIC or kind is K.ARITH_PAREN:
                if c == "(":
                    self._push(K.ARITH_PAREN)
                elif c == ")":
                    stack.pop()
                    if kind is K.ARITHMETIC and text.startswith(")", i + 1):
                        i += 1
            else:
                i = self._plain(text, i, stack[-1])
                continue
            i += 1

    def _dollar(self, text: str, i: int) -> int:
        self._taint()
        nxt = text[i + 1 : i + 2]
        if not nxt:
            self.dollar = True
            return i + 1
        if nxt == "(":
            if text.startswith("((", i + 1):
                self._push(K.ARITHMETIC)
                return i + 3
            self._push(K.COMMAND_SUB)
            return i + 2
        if nxt == "{":
            self._push(K.PARAMETER)
            return i + 2
        if nxt == "'" and self.stack[-1].kind is not K.DOUBLE:
            self._push(K.ANSI_C)
            return i + 2
        return i + 1

    def _plain(self, text: str, i: int, frame: Frame) -> int:
        """One character in a plain frame (TOP, COMMAND_SUB, SUBSHELL)."""
        c = text[i]
        if c in "'\"`":
            self._push({"'": K.SINGLE, '"': K.DOUBLE, "`": K.BACKTICK}[c])
            return i + 1
        if c == "#" and not frame.word:
            self.stack.append(Frame(K.COMMENT))
            return i + 1
        if c not in _BREAK:
            frame.word += c
            return i + 1
        self._end_word(frame)
        if c == "(":
            if frame.cmd and text.startswith("((", i):
                self.stack.append(Frame(K.ARITHMETIC))  # bash's (( arithmetic )), which evaluates its text
                return i + 2
            self.stack.append(Frame(K.SUBSHELL))
        elif c == ")":
            if frame.cases:
                frame.cmd = True  # the end of a case pattern: its commands follow
                return i + 1
            if frame.kind is not K.TOP:
                self.stack.pop()
                return i + 1
        elif c == "<" and text.startswith("<<", i) and not text.startswith("<<<", i):
            return self._heredoc_start(text, i)
        elif c == "\n" and self.heredocs:
            self.stack.append(Frame(K.HEREDOC))
            self.line = []
        if c in ";&|\n":
            frame.cmd = True
        return i + 1

    def _end_word(self, frame: Frame) -> None:
        word, frame.word = frame.word, ""
        if not word or not frame.cmd:
            return
        if word == "case":
            frame.cases += 1
        elif word == "esac" and frame.cases:
            frame.cases -= 1
        frame.cmd = word in _STAY_CMD

    def _heredoc_start(self, text: str, i: int) -> int:
        i += 2
        strip = text.startswith("-", i)
        if strip:
            i += 1
        while i < len(text) and text[i] in " \t":
            i += 1
        word: list[str] = []
        quote = ""
        n = len(text)
        while i < n and (quote or text[i] not in _BREAK):
            c = text[i]
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
            elif c in "'\"":
                quote = c
            elif c == "\\":
                i += 1
                word.append(text[i : i + 1])
            else:
                word.append(c)
            i += 1
        # A delimiter cut short by a placeholder (or a quote left open) has no known end: every
        # later placeholder is then refused as inside the body.
        delimiter = "".join(word) if i < n and not quote else None
        self.heredocs.append((delimiter or None, strip))
        self.stack[-1].cmd = False
        return min(i, n)

    def _heredoc_char(self, text: str, i: int) -> int:
        c = text[i]
        if c != "\n":
            self.line.append(c)
            return i + 1
        delimiter, strip = self.heredocs[0]
        line = "".join(self.line)
        self.line = []
        if delimiter is not None and (line.lstrip("\t") if strip else line) == delimiter:
            self.heredocs.pop(0)
            if not self.heredocs:
                self.stack.pop()
        return i + 1
