"""The shell-template processor (``--cmd``) and the item objects every processor receives.

Templates. ``{}`` is the item's main value (a file's path, a line, or a record as compact JSON),
``{path} {name} {stem} {suffix} {parent} {seq} {key} {out}`` are built-ins and any other
``{field}`` is a CSV/JSONL record field; ``{{`` and ``}}`` are literal braces. A template is parsed
once; every render only fills the slots.

Quoting. Every substituted value goes through :func:`shlex.quote`, so item content (file names,
lines, CSV fields: quotes, ``$(...)``, backticks, ``;``, newlines) can never inject shell code. The
parser also follows the template's own shell quoting, because a quoted word inside the user's
quotes would otherwise be unquoted again (``"{}"`` with a value ``$(x)`` gives ``"'$(x)'"``, which
runs ``x``): inside ``'...'`` or ``"..."`` the value is put between a closing and a reopening quote,
so ``convert "{}" "{out}/a.png"`` is as safe as ``convert {} {out}/a.png``. Where no quoting can
be safe (backticks, ``${...}``, ``$((...))``, ``$'...'``, a here-document body, a comment, right
after a ``\\`` or a ``$``) the template is refused with a :class:`UserError` at once.

A value that begins with ``-`` is only quoted, never altered: a command may read it as an option,
so templates should put ``--`` before it or use a ``./`` path. Data is never changed silently.
Quoting makes a value one literal word; a command that evaluates its arguments (``eval``,
``sh -c {}``, bash's ``[[ {} -eq 1 ]]``) still does what that command does with it.
A NUL byte cannot travel through ``exec``: the item fails with a clear message instead.

Processes. The command runs as ``/bin/sh -c <rendered template>`` in a new session (its own
process group): a timeout, a skip or a stop kills the whole tree, and when the shell exits the
rest of its group is killed too, so no background child outlives its item. The shell is started
with glibc's ``posix_spawn`` (through ctypes, which releases the GIL: ``os.posix_spawn`` keeps it
until the child has exec'd), at a fraction of :class:`subprocess.Popen`'s cost in this process,
which matters when thousands of short commands share two cores with the engine. Where that
cannot give the same result (commands run in another folder than this process's, a shell named
without a folder, which Popen looks up in the command's own ``PATH``, no glibc >= 2.34) Popen
starts it instead. Either way the child gets ``/dev/null`` as stdin, two pipes as stdout and
stderr, no other descriptor, and SIGPIPE/SIGXFSZ at their defaults.

Logs. The last ``log_limit`` bytes of stdout and stderr go to ``logs/<seq>.out`` / ``.err`` (mode
0600), only when that stream is non-empty: thousands of empty files per run would cost more time
than the commands. A retry overwrites them (and removes a stale one its own run left empty).
Every file and folder made in the batch directory (``logs/``, ``out/<seq>``, ``tmp/``) is opened
through descriptors of its folders, never following a symbolic link: a link there halts the batch
(:class:`Fatal`) instead of sending a log outside it.

The item's variables. ``BATCHTUI_ITEM_JSON`` holds ``{"seq","key","data","attempt"}`` as JSON;
``BATCHTUI_SEQ``, ``BATCHTUI_ATTEMPT`` and ``BATCHTUI_BATCH_DIR`` the rest. An environment
variable holds at most 128 KiB on Linux (MAX_ARG_STRLEN): a larger JSON goes to
``tmp/<seq>.<attempt>.json`` (0600) in the batch directory, removed after the attempt, whose path
is in ``BATCHTUI_ITEM_JSON_FILE`` (BATCHTUI_ITEM_JSON is then empty; otherwise the file variable
is). A file name that is not UTF-8 comes as Python's surrogate-escaped str: ``{path}`` passes its
exact bytes, the JSON has ``\\udcXX`` escapes for the bytes that do not decode.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from .errors import CommandFailed, CommandKilled, Fatal, ItemTimeout, UserError
from .outputs import DEFAULT_MAX_RESULT_BYTES, check_finite, cost_of, too_large

if TYPE_CHECKING:
    import ctypes  # imported on first use: only shell runs pay for it

__all__ = [
    "BUILTINS",
    "CommandTemplate",
    "Item",
    "MissingField",
    "ProcessOutput",
    "ShellProcessor",
]

#: Placeholder names with a fixed meaning; any other name is a record field.
BUILTINS: Final = frozenset({"", "path", "name", "stem", "suffix", "parent", "seq", "key", "out"})
#: Built-ins a record field of the same name stands in for: a path's parts of a JSON text mean nothing,
#: while a CSV column called ``name`` or ``path`` is common.
_PATHLIKE: Final = frozenset({"path", "name", "stem", "suffix", "parent"})
#: A field name: an identifier, where ``-`` may also follow the first character (``user-id``).
_FIELD: Final = re.compile(r"[^\W\d][\w-]*")

STDERR_TAIL: Final = 8192  # bytes of stderr carried by the exception (errors.DETAIL_LIMIT)
_STDOUT_KEEP: Final = 1 << 16  # stdout kept in memory at least, to find a JSON last line
_RESULT_TAIL: Final = 200  # characters of plain stdout kept as the result
_READ: Final = 1 << 16
#: After the shell exits (or is killed) its group is killed; this long at most is then spent reading
#: what is left in the pipes, in case a process that left the group still holds them open.
_DRAIN_GRACE: Final = 0.5
_POLL_TICK_MS: Final = 20  # only where pidfd_open is missing: how often to look for the exit
#: Signals Python ignores that a command must get at their defaults (as Popen's restore_signals).
_SIGDEF: Final = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name))


class MissingField(KeyError):
    """The template names a record field this item does not have."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "missing field"


@dataclass(frozen=True, slots=True)
class Item:
    """What a processor receives for one attempt at one item.

    ``data`` is a str (a resolved file path or a stripped line) or a dict (a CSV/JSONL record);
    ``kind`` is the source kind: ``dir``/``files``, ``lines``/``stdin``, ``csv``/``jsonl``.
    """

    seq: int
    key: str
    data: Any
    attempt: int
    batch_dir: str
    kind: str = "lines"

    @property
    def value(self) -> str:
        """The item's main value: a path, a line, or a record as compact JSON."""
        data = self.data
        return data if isinstance(data, str) else _text(data)


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    """A processor's result for one item; ``cost`` counts toward ``--max-cost``."""

    result: Any
    cost: float | None = None


# -- templates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    wrap: str  # "" outside quotes, "'" or '"' inside the template's own quotes


class CommandTemplate:
    """A parsed ``--cmd`` template; :meth:`render` fills it for one item, every value quoted."""

    __slots__ = ("_parts", "template")

    def __init__(self, template: str) -> None:
        if not template.strip():
            raise UserError("the command template is empty")
        self.template = template
        parts: list[str | _Slot] = []
        ctx = _ShellContext(template)
        buf: list[str] = []
        i, n = 0, len(template)
        while i < n:
            ch = template[i]
            if ch == "{" and template.startswith("{{", i):
                buf.append("{")
                i += 2
            elif ch == "}" and template.startswith("}}", i):
                buf.append("}")
                i += 2
            elif ch == "}":
                raise UserError(
                    f"unbalanced '}}' at position {i} in the command template {template!r} "
                    "(write }} for a literal brace)"
                )
            elif ch == "{":
                end = template.find("}", i + 1)
                if end < 0:
                    raise UserError(
                        f"unbalanced '{{' at position {i} in the command template {template!r} "
                        "(write {{ for a literal brace)"
                    )
                name = template[i + 1 : end]
                if name not in BUILTINS and not _FIELD.fullmatch(name):
                    raise UserError(
                        f"bad placeholder {{{name}}} in the command template {template!r}: use {{}}, "
                        "{path}, {name}, {stem}, {suffix}, {parent}, {seq}, {key}, {out} or a record "
                        "field name, and write {{ and }} for literal braces"
                    )
                if buf:
                    literal = "".join(buf)
                    ctx.feed(literal)
                    parts.append(literal)
                    buf = []
                parts.append(_Slot(name, ctx.placeholder(name)))
                i = end + 1
            else:
                buf.append(ch)
                i += 1
        if buf:
            literal = "".join(buf)
            ctx.feed(literal)
            parts.append(literal)
        ctx.finish()
        self._parts: tuple[str | _Slot, ...] = tuple(parts)

    def __repr__(self) -> str:
        return f"CommandTemplate({self.template!r})"

    @property
    def fields(self) -> frozenset[str]:
        """Record field names the template uses (placeholders that are not built-ins)."""
        return frozenset(p.name for p in self._parts if isinstance(p, _Slot) and p.name not in BUILTINS)

    @property
    def uses_out(self) -> bool:
        """Whether the template uses ``{out}`` (the processor then creates that folder)."""
        return any(isinstance(p, _Slot) and p.name == "out" for p in self._parts)

    def render(self, item: Item, out_dir: str | None) -> str:
        """The command line for ``item``. ``out_dir`` is ``{out}`` (default ``<batch_dir>/out/<seq>``).

        Raises :class:`MissingField` when the item lacks a field the template names, and
        :class:`ValueError` when a value holds a NUL byte.
        """
        pieces: list[str] = []
        append = pieces.append
        for part in self._parts:
            if isinstance(part, str):
                append(part)
                continue
            text = _text(_value(item, part.name, out_dir))
            if "\x00" in text:
                raise ValueError(f"the value of {{{part.name}}} contains a NUL byte, which exec cannot pass")
            quoted = shlex.quote(text)
            if part.wrap and quoted != text:
                # Inside the template's own quotes: close them, add the quoted word, reopen them.
                quoted = part.wrap + quoted + part.wrap
            append(quoted)
        return "".join(pieces)

    def too_long(self, item: Item, out_dir: str | None, cmd: str) -> str:
        """Why ``cmd`` (this template rendered for ``item``) cannot run: the placeholders whose
        values made it longer than one exec argument may be, largest first, with their sizes."""
        sizes: dict[str, int] = {}
        for part in self._parts:
            if isinstance(part, _Slot):
                size = len(os.fsencode(shlex.quote(_text(_value(item, part.name, out_dir)))))
                sizes[part.name] = sizes.get(part.name, 0) + size
        big = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        named = ", ".join(f"{{{name}}} is {size:,} bytes" for name, size in big)
        return (
            f"the command line is {len(os.fsencode(cmd)):,} bytes, over the {_ARG_STRLEN:,} bytes one "
            f"argument may have (the whole command is one argument of `sh -c`): {named}. Have the "
            "command read the value from the item's JSON instead: $BATCHTUI_ITEM_JSON, or the file "
            "$BATCHTUI_ITEM_JSON_FILE names when the item is over 128 KiB"
        )


def _value(item: Item, name: str, out_dir: str | None) -> Any:
    data = item.data
    if name == "":
        return data
    if name == "seq":
        return item.seq
    if name == "key":
        return item.key
    if name == "out":
        return out_dir if out_dir is not None else _out_path(item)
    if isinstance(data, dict):
        if name in data:
            return data[name]
        if name not in _PATHLIKE:
            raise MissingField(f"item has no field {name!r}")
    elif name not in _PATHLIKE:
        raise MissingField(f"item has no field {name!r} (only CSV and JSONL records have fields)")
    path = data if isinstance(data, str) else _text(data)
    if name == "path":
        return path
    if name == "parent":
        return os.path.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")
    base = os.path.basename(path.rstrip("/")) or path
    if name == "name":
        return base
    stem, suffix = os.path.splitext(base)
    return stem if name == "stem" else suffix


def _text(value: Any) -> str:
    """A value as command-line text: a str as is, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError too: big ints, odd types
        return str(value)


def _out_path(item: Item) -> str:
    return os.path.join(item.batch_dir, "out", str(item.seq))


@dataclass(slots=True)
class _Frame:
    kind: str
    cases: int = 0  # plain frames: `case` statements open in it (their patterns end with a bare ")")
    word: str = ""  # plain frames: the word being read ("\x01" marks a quoted or expanded part)
    cmd: bool = True  # plain frames: whether that word is at a command's start (where keywords count)


class _ShellContext:
    """Follows the shell quoting of a template's literal text, to know where each placeholder sits.

    A stack of frames: ``N`` top level, ``C`` ``$(...)``, ``G`` ``(...)`` (the plain ones), ``S``
    '...', ``D`` "...", ``E`` $'...', ``B`` backticks, ``P`` ${...}, ``A``/``a`` $((...)) or
    ((...)), ``M`` a comment, ``H`` a here-document body. Only ``N C G S D`` can take a value. It
    reads words as far as ``case ... esac`` needs (a pattern's bare ``)`` closes nothing), so a
    template the shell can parse is followed exactly where placeholders are allowed.
    """

    _PLAIN: Final = frozenset("NCG")
    _BREAK: Final = frozenset(" \t\n;&|()<>")
    _STAY_CMD: Final = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"})
    _WHY: Final = {
        "B": "inside backticks (`...`), where quotes do not protect a backtick: use $(...)",
        "E": "inside $'...'",
        "P": "inside ${...}",
        "A": "inside $((...)) or ((...))",
        "a": "inside $((...)) or ((...))",
        "M": "inside a # comment, where a newline in the value would end the comment",
        "H": "inside a here-document, where quotes are not special: pass the value as an argument "
        "or read it from $BATCHTUI_ITEM_JSON (from the file $BATCHTUI_ITEM_JSON_FILE names when the "
        "item is over 128 KiB)",
    }

    def __init__(self, template: str) -> None:
        self.template = template
        self.stack: list[_Frame] = [_Frame("N")]
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
        if kind in self._PLAIN:
            self._taint()
            return ""
        if kind == "S":
            return "'"
        if kind == "D":
            return '"'
        raise self._refuse(name, self._WHY[kind])

    def finish(self) -> None:
        kind = self.stack[-1].kind
        if kind in "SDEB":
            quote = {"S": "'", "D": '"', "E": "$'", "B": "`"}[kind]
            raise UserError(f"unterminated {quote} quote in the command template {self.template!r}")

    def _taint(self) -> None:
        top = self.stack[-1]
        if top.kind in self._PLAIN:
            top.word += "\x01"

    def _push(self, kind: str) -> None:
        self._taint()  # a quoted or substituted part: the word is no keyword
        self.stack.append(_Frame(kind))

    def feed(self, text: str) -> None:
        """Advance over a run of literal text (braces already unescaped)."""
        self.escape = self.dollar = False
        stack = self.stack
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            kind = stack[-1].kind
            if kind == "H":
                i = self._heredoc_char(text, i)
                continue
            if c == "\\" and kind not in "SM":
                if i + 1 >= n:
                    self.escape = True
                self._taint()
                i += 2
                continue
            if kind in "SE":
                if c == "'":
                    stack.pop()
            elif kind == "M":
                if c == "\n":
                    stack.pop()
                    continue  # the newline also ends the command line (here-documents start)
            elif kind == "B":
                if c == "`":
                    stack.pop()
            elif c == "$":
                i = self._dollar(text, i)
                continue
            elif kind in "DP" and c == "`":
                self._push("B")
            elif kind == "D":
                if c == '"':
                    stack.pop()
            elif kind == "P":
                if c in "'\"":
                    self._push("S" if c == "'" else "D")
                elif c == "}":
                    stack.pop()
            elif kind in "Aa":
                if c == "(":
                    self._push("a")
                elif c == ")":
                    stack.pop()
                    if kind == "A" and text.startswith(")", i + 1):
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
                self._push("A")
                return i + 3
            self._push("C")
            return i + 2
        if nxt == "{":
            self._push("P")
            return i + 2
        if nxt == "'" and self.stack[-1].kind != "D":
            self._push("E")
            return i + 2
        return i + 1

    def _plain(self, text: str, i: int, frame: _Frame) -> int:
        """One character in a plain frame (N, C, G)."""
        c = text[i]
        if c in "'\"`":
            self._push({"'": "S", '"': "D", "`": "B"}[c])
            return i + 1
        if c == "#" and not frame.word:
            self.stack.append(_Frame("M"))
            return i + 1
        if c not in self._BREAK:
            frame.word += c
            return i + 1
        self._end_word(frame)
        if c == "(":
            if frame.cmd and text.startswith("((", i):
                self.stack.append(_Frame("A"))  # bash's (( arithmetic )), which evaluates its text
                return i + 2
            self.stack.append(_Frame("G"))
        elif c == ")":
            if frame.cases:
                frame.cmd = True  # the end of a case pattern: its commands follow
                return i + 1
            if frame.kind != "N":
                self.stack.pop()
                return i + 1
        elif c == "<" and text.startswith("<<", i) and not text.startswith("<<<", i):
            return self._heredoc_start(text, i)
        elif c == "\n" and self.heredocs:
            self.stack.append(_Frame("H"))
            self.line = []
        if c in ";&|\n":
            frame.cmd = True
        return i + 1

    def _end_word(self, frame: _Frame) -> None:
        word, frame.word = frame.word, ""
        if not word or not frame.cmd:
            return
        if word == "case":
            frame.cases += 1
        elif word == "esac" and frame.cases:
            frame.cases -= 1
        frame.cmd = word in self._STAY_CMD

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
        while i < n and (quote or text[i] not in self._BREAK):
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


# -- running -----------------------------------------------------------------------------------


class _Tail:
    """The last ``keep`` bytes written to it (and how many were written in all)."""

    __slots__ = ("buf", "keep", "total")

    def __init__(self, keep: int) -> None:
        self.buf = bytearray()
        self.keep = keep
        self.total = 0

    def add(self, data: bytes) -> None:
        self.buf += data
        self.total += len(data)
        if len(self.buf) > 2 * self.keep:
            del self.buf[: -self.keep]

    def last(self, limit: int) -> bytes:
        return bytes(self.buf[-limit:]) if limit > 0 else b""


_BLANK: Final = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


class _StdoutTail(_Tail):
    """A :class:`_Tail` of stdout that keeps its last non-blank line whole (that line may be
    the result) while it is at most ``line_cap`` bytes long, however small ``keep`` is: memory
    grows past ``2 * keep`` only for such a line. A longer one is cut as any output is, and
    ``cut_object`` says whether it began with ``{`` (a result too large, not plain output)."""

    __slots__ = ("cut_object", "last_line", "line_cap", "line_start")

    def __init__(self, keep: int, line_cap: int) -> None:
        super().__init__(keep)
        self.line_cap = line_cap
        self.line_start = 0  # where the line being written began (an offset among all bytes written)
        self.last_line = 0  # where the line holding the last non-blank byte began
        self.cut_object = False

    def add(self, data: bytes) -> None:
        total = self.total
        end = len(data)
        while end and data[end - 1] in _BLANK:
            end -= 1
        if end:
            nl = data.rfind(b"\n", 0, end)
            self.last_line = total + nl + 1 if nl >= 0 else self.line_start
        nl = data.rfind(b"\n")
        if nl >= 0:
            self.line_start = total + nl + 1
        buf = self.buf
        buf += data
        self.total = total = total + len(data)
        if len(buf) > 2 * self.keep:
            cut = len(buf) - self.keep
            start = self.last_line - (total - len(buf))  # in buf; < 0 once cut
            if 0 <= start < cut:
                if total - self.last_line <= self.line_cap:
                    cut = start
                else:
                    self.cut_object = buf[start : start + 256].lstrip()[:1] == b"{"
            del buf[:cut]

    @property
    def last_line_cut(self) -> bool:
        """Whether the last non-blank line began before what is kept."""
        return self.last_line < self.total - len(self.buf)


_pidfd_ok = hasattr(os, "pidfd_open")


def _open_pidfd(pid: int) -> int:
    """A pidfd for ``pid`` (readable once it exits, without reaping it), or -1 where unsupported."""
    global _pidfd_ok
    if _pidfd_ok:
        try:
            return os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                _pidfd_ok = False  # an old kernel or a sandbox: poll for the exit instead
            else:
                raise
    return -1


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped (so its process group id stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reap(pid: int) -> int:
    """Wait for ``pid``; its return code as Popen gives it (``-N`` for death by signal N)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 0  # reaped elsewhere: Popen.wait reports 0 then too
    return os.waitstatus_to_exitcode(status)


# glibc's posix_spawn attribute flags (spawn.h); os exposes only the file-action constants.
_SPAWN_SETSIGDEF: Final = 0x04
_SPAWN_SETSID: Final = 0x80
# Room for glibc's opaque posix_spawnattr_t (336 bytes on x86-64), posix_spawn_file_actions_t (80)
# and sigset_t (128): generous on every architecture.
_ATTR_SIZE: Final = 1024
_ACTIONS_SIZE: Final = 512
_SIGSET_SIZE: Final = 512
_ACTIONS_KEPT: Final = 1024  # (stdout, stderr) descriptor pairs whose file actions are kept


class _LibcSpawn:
    """glibc's posix_spawn called through ctypes, which releases the GIL for the call.

    os.posix_spawn holds the GIL until the child has exec'd (glibc's vfork-style clone keeps the
    caller waiting), so the engine's other threads stall for every start; Popen releases it, and
    so does this. The child gets what Popen gives it: a new session, SIGPIPE/SIGXFSZ at their
    defaults, /dev/null (read-write) as stdin, the two pipes as stdout and stderr, and every other
    descriptor closed (``addclosefrom_np``, glibc 2.34, as Popen's close_fds).
    """

    __slots__ = (
        "_attr",
        "_buffer",
        "_byref",
        "_cache",
        "_closefrom",
        "_destroy",
        "_dup2",
        "_init",
        "_open",
        "_pid_t",
        "_spawn",
        "char_p",
    )

    def __init__(self) -> None:
        import ctypes

        self.char_p = ctypes.c_char_p
        self._pid_t, self._byref, self._buffer = ctypes.c_int, ctypes.byref, ctypes.create_string_buffer
        libc = ctypes.CDLL(None, use_errno=True)
        ptr, cint = ctypes.c_void_p, ctypes.c_int
        self._spawn = libc.posix_spawn
        self._spawn.argtypes = [ctypes.POINTER(cint), ctypes.c_char_p, ptr, ptr, ptr, ptr]
        self._init = libc.posix_spawn_file_actions_init
        self._init.argtypes = [ptr]
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._destroy.argtypes = [ptr]
        self._open = libc.posix_spawn_file_actions_addopen
        self._open.argtypes = [ptr, cint, ctypes.c_char_p, cint, ctypes.c_uint]
        self._dup2 = libc.posix_spawn_file_actions_adddup2
        self._dup2.argtypes = [ptr, cint, cint]
        self._closefrom = libc.posix_spawn_file_actions_addclosefrom_np
        self._closefrom.argtypes = [ptr, cint]
        for func in (self._spawn, self._init, self._destroy, self._open, self._dup2, self._closefrom):
            func.restype = cint
        self._cache: dict[tuple[int, int], ctypes.Array[ctypes.c_char]] = {}
        # The attributes never change: set once, then only read (by any thread at once).
        self._attr = ctypes.create_string_buffer(_ATTR_SIZE)
        sigset = ctypes.create_string_buffer(_SIGSET_SIZE)
        if libc.posix_spawnattr_init(self._attr) or libc.sigemptyset(sigset):
            raise OSError("posix_spawnattr_init or sigemptyset failed")
        for sig in _SIGDEF:
            if libc.sigaddset(sigset, int(sig)):
                raise OSError(f"sigaddset({int(sig)}) failed")
        if libc.posix_spawnattr_setsigdefault(self._attr, sigset) or libc.posix_spawnattr_setflags(
            self._attr, ctypes.c_short(_SPAWN_SETSIGDEF | _SPAWN_SETSID)
        ):
            raise OSError("posix_spawnattr_setsigdefault or setflags failed")

    def _actions(self, out_w: int, err_w: int) -> tuple[ctypes.Array[ctypes.c_char], bool]:
        """File actions giving the child /dev/null, ``out_w`` and ``err_w`` as 0-2 and nothing
        else, and whether they are kept. They depend on the two numbers only, so each pair is
        built once and kept (then only read, by any thread); the pipes' numbers repeat."""
        actions = self._cache.get((out_w, err_w))
        if actions is not None:
            return actions, True
        actions = self._buffer(_ACTIONS_SIZE)
        code = self._init(actions)
        if code:
            raise OSError(code, os.strerror(code))
        code = (
            self._open(actions, 0, b"/dev/null", os.O_RDWR, 0)  # subprocess.DEVNULL's mode
            or self._dup2(actions, out_w, 1)
            or self._dup2(actions, err_w, 2)
            or self._closefrom(actions, 3)
        )
        if code:
            self._destroy(actions)
            raise OSError(code, os.strerror(code))
        if len(self._cache) >= _ACTIONS_KEPT:
            return actions, False  # that many pairs: the caller frees these after use
        # Another thread may have built the same pair meanwhile: keep one, free the other.
        kept = self._cache.setdefault((out_w, err_w), actions)
        if kept is not actions:
            self._destroy(actions)
        return kept, True

    def spawn(
        self,
        path: bytes,
        argv: ctypes.Array[ctypes.c_char_p],
        envp: ctypes.Array[ctypes.c_char_p],
        out_w: int,
        err_w: int,
    ) -> int:
        """Start ``path`` with ``argv`` and ``envp`` (NULL-terminated), ``out_w`` and ``err_w``
        (both above 2) as its stdout and stderr; its pid, or OSError as Popen raises it."""
        actions, kept = self._actions(out_w, err_w)
        pid = self._pid_t()
        try:
            code = self._spawn(self._byref(pid), path, actions, self._attr, argv, envp)
        finally:
            if not kept:
                self._destroy(actions)
        if code:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return pid.value


_libc_spawn: _LibcSpawn | None = None
_libc_spawn_tried = False


def _get_libc_spawn() -> _LibcSpawn | None:
    """The process-wide :class:`_LibcSpawn`, or None where this is not glibc >= 2.34."""
    global _libc_spawn, _libc_spawn_tried
    if not _libc_spawn_tried:
        spawner = None
        try:
            libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        except (AttributeError, ValueError, OSError):
            libc = ""
        if libc.startswith("glibc "):  # the flag values above are glibc's
            try:
                spawner = _LibcSpawn()
            except (ImportError, OSError, AttributeError):  # no ctypes, library or symbol (glibc < 2.34)
                spawner = None
        _libc_spawn = spawner
        _libc_spawn_tried = True
    return _libc_spawn


#: The variables each item adds to the environment, in the order they are set.
_ITEM_VARS: Final = (
    b"BATCHTUI_ITEM_JSON",
    b"BATCHTUI_SEQ",
    b"BATCHTUI_ATTEMPT",
    b"BATCHTUI_BATCH_DIR",
    b"BATCHTUI_ITEM_JSON_FILE",
)


def _arg_strlen() -> int:
    """The longest single argument or ``NAME=value`` exec takes, with its NUL: Linux's
    MAX_ARG_STRLEN, 32 pages (128 KiB with 4 KiB pages). Other systems limit only the total
    (ARG_MAX); 128 KiB is kept there as well, so an item behaves alike everywhere."""
    try:
        page = os.sysconf("SC_PAGE_SIZE") if sys.platform.startswith("linux") else 4096
    except (ValueError, OSError):
        page = 4096
    return 32 * page


_ARG_STRLEN: Final = _arg_strlen()
#: The longest item JSON passed in BATCHTUI_ITEM_JSON; a longer one goes to a file.
_ENV_JSON_MAX: Final = _ARG_STRLEN - len(b"BATCHTUI_ITEM_JSON=") - 1
#: When exec finds the environment too big as a whole, an item JSON at least this long is moved
#: to its file and the start tried again (a shorter one would not make the difference).
_ENV_JSON_FILE_MIN: Final = 4096


class ShellProcessor:
    """Runs ``<shell> -c <rendered template>`` for each item, one process group per item.

    Thread-safe: worker threads call :meth:`run` concurrently and any thread may call
    :meth:`kill` or :meth:`kill_all`. ``cwd`` is the folder commands run in (the folder the
    batch was started from; default: this process's).
    """

    def __init__(
        self,
        template: str,
        *,
        shell: str = "/bin/sh",
        timeout: float | None = None,
        log_limit: int = 1 << 20,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.template = CommandTemplate(template)
        self.shell = shell
        self.timeout = timeout if timeout is not None and timeout > 0 else None
        self.log_limit = max(0, log_limit)
        self.max_result_bytes = max_result_bytes
        if cwd is not None and not os.path.isdir(cwd):
            raise UserError(f"the folder to run commands in does not exist: {cwd}")
        self.cwd = cwd
        # The environment is copied (and encoded) once; each item adds its four variables.
        base = dict(os.environ)
        base.update(env or {})
        self._env: dict[bytes, bytes] = {os.fsencode(k): os.fsencode(v) for k, v in base.items()}
        self._uses_out = self.template.uses_out
        # The spawn path needs the shell's path (Popen looks a bare name up in the command's PATH)
        # and an environment Popen would take (else Popen runs, and raises what it raises).
        self._spawner = _get_libc_spawn() if os.sep in shell else None
        self._shell_b = os.fsencode(shell)
        # The environment as posix_spawn takes it: entries in the order of the dict Popen gets
        # (an item variable already inherited keeps its place, the others follow in order) and,
        # per item, only the four item variables' slots are refilled.
        entries: list[bytes | None] = []
        for key, value in self._env.items():
            if b"=" in key or b"\0" in key or b"\0" in value:
                self._spawner = None
            entries.append(None if key in _ITEM_VARS else key + b"=" + value)
        keys = list(self._env)
        slots = []
        for key in _ITEM_VARS:
            if key in self._env:
                slots.append(keys.index(key))
            else:
                slots.append(len(entries))
                entries.append(None)
        self._env_entries = entries
        self._env_slots: tuple[int, ...] = tuple(slots)
        self._local = threading.local()  # per worker thread: its argv and envp arrays, reused
        self._lock = threading.Lock()
        # seq -> the running shell's pid. While listed, the shell is not reaped, so its pid (= the
        # group id) cannot be reused: kill() never hits an unrelated group.
        self._running: dict[int, int] = {}
        self._killed: set[int] = set()
        # (seq, attempt) of items a kill reached before their shell was started: it is killed
        # as soon as it is (an attempt runs once, so an entry never matches another run).
        self._doomed: set[tuple[int, int]] = set()

    def __repr__(self) -> str:
        return f"ShellProcessor({self.template.template!r}, timeout={self.timeout})"

    def run(self, item: Item) -> ProcessOutput:
        """Run the command for ``item``.

        Raises :class:`CommandFailed` (exit > 0), :class:`CommandKilled` (a signal, or
        :meth:`kill`), :class:`ItemTimeout`, :class:`MissingField` or :class:`ValueError` (a value
        the template cannot take).
        """
        out_dir = _out_path(item) if self._uses_out else None
        cmd = self.template.render(item, out_dir)
        # The whole command line is one argument of `sh -c`: past the kernel's limit for one
        # argument, exec fails. Say which placeholder made it so long (checked cheaply first:
        # a character takes at most 4 bytes).
        if len(cmd) * 4 >= _ARG_STRLEN and len(os.fsencode(cmd)) >= _ARG_STRLEN:
            raise ValueError(self.template.too_long(item, out_dir, cmd))
        if out_dir is not None:
            _make_out_dir(item)
        env = _ItemEnv(item)
        try:
            if len(env.json) > _ENV_JSON_MAX:
                env.to_file()  # too big for one variable: BATCHTUI_ITEM_JSON_FILE names it
            return self._run(item, cmd, env)
        finally:
            env.remove()

    def _run(self, item: Item, cmd: str, env: _ItemEnv) -> ProcessOutput:
        """:meth:`run` once the command line and the item's variables are ready."""
        try:
            pid, out_fd, err_fd, popen = self._start(cmd, env.values())
        except OSError as exc:
            if exc.errno != errno.E2BIG:
                raise
            if env.path is not None or len(env.json) < _ENV_JSON_FILE_MIN:
                raise ValueError(_too_big(cmd, self._env, env.values())) from exc
            # The environment as a whole is over the system's limit (ARG_MAX): move the item's
            # JSON to its file and try once more.
            env.to_file()
            try:
                pid, out_fd, err_fd, popen = self._start(cmd, env.values())
            except OSError as again:
                if again.errno == errno.E2BIG:
                    raise ValueError(_too_big(cmd, self._env, env.values())) from again
                raise
        with self._lock:
            self._running[item.seq] = pid
            if self._doomed and (item.seq, item.attempt) in self._doomed:
                self._doomed.discard((item.seq, item.attempt))
                self._killed.add(item.seq)
                _killpg(pid)
        try:
            out, err, timed_out = self._collect(pid, out_fd, err_fd)
        finally:
            with self._lock:
                self._running.pop(item.seq, None)
                killed = item.seq in self._killed
                self._killed.discard(item.seq)
            _killpg(pid)  # before reaping: the group id is still ours
            if popen is None:
                code = _reap(pid)
                os.close(out_fd)
                os.close(err_fd)
            else:
                code = popen.wait()
                assert popen.stdout is not None and popen.stderr is not None
                popen.stdout.close()
                popen.stderr.close()
        if out.total or err.total or item.attempt > 1:
            self._write_logs(item, out, err)
        if killed:
            raise CommandKilled(signal.SIGKILL, _decode_tail(err))
        if timed_out:
            raise ItemTimeout(self.timeout or 0.0, _decode_tail(err))
        if code < 0:
            raise CommandKilled(-code, _decode_tail(err))
        if code > 0:
            raise CommandFailed(code, _decode_tail(err))
        return _parse_stdout(out, self.max_result_bytes)

    def _start(self, cmd: str, item_vars: tuple[bytes, ...]) -> tuple[int, int, int, subprocess.Popen[bytes] | None]:
        """Start the shell: its pid, the read ends of its stdout and stderr, and the Popen object
        when Popen started it (it then owns those descriptors and must reap the shell)."""
        started = self._spawn(cmd, item_vars)
        if started is not None:
            return started[0], started[1], started[2], None
        env = self._env.copy()
        env.update(zip(_ITEM_VARS, item_vars, strict=True))
        proc = subprocess.Popen(
            [self.shell, "-c", cmd],
            bufsize=0,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            cwd=self.cwd,
        )
        assert proc.stdout is not None and proc.stderr is not None
        return proc.pid, proc.stdout.fileno(), proc.stderr.fileno(), proc

    def _spawn(self, cmd: str, item_vars: tuple[bytes, ...]) -> tuple[int, int, int] | None:
        """Start the shell with posix_spawn exactly as Popen would; None where only Popen can."""
        spawner = self._spawner
        if spawner is None:
            return None
        if self.cwd is not None:
            try:
                if os.getcwd() != self.cwd:
                    return None  # posix_spawn cannot enter another folder, and this process must not
            except OSError:
                return None  # this process's folder is gone: Popen enters self.cwd by its path
        command = os.fsencode(cmd)
        if b"\0" in command or any(b"\0" in value for value in item_vars):
            return None  # Popen raises its ValueError
        local = self._local
        try:
            argv, envp = local.arrays
        except AttributeError:
            argv = (spawner.char_p * 4)(self._shell_b, b"-c", None, None)
            envp = (spawner.char_p * (len(self._env_entries) + 1))(*self._env_entries, None)
            local.arrays = argv, envp
        argv[2] = command
        for index, key, value in zip(self._env_slots, _ITEM_VARS, item_vars, strict=True):
            envp[index] = key + b"=" + value
        out_r, out_w = os.pipe()
        try:
            err_r, err_w = os.pipe()
        except BaseException:
            os.close(out_r)
            os.close(out_w)
            raise
        fds = (out_r, out_w, err_r, err_w)
        if min(fds) <= 2:  # one of 0-2 is closed here: the dup2s could clash, Popen sorts that out
            for fd in fds:
                os.close(fd)
            return None
        try:
            pid = spawner.spawn(self._shell_b, argv, envp, out_w, err_w)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        return pid, out_r, err_r

    def _collect(self, pid: int, out_fd: int, err_fd: int) -> tuple[_StdoutTail, _Tail, bool]:
        """Read both pipes until the shell has exited and they are drained; returns with the shell
        exited but not reaped, and its group killed. Keeps only the tails of the output."""
        out = _StdoutTail(max(self.log_limit, _STDOUT_KEEP), self.max_result_bytes)
        err = _Tail(max(self.log_limit, STDERR_TAIL))
        tails = {out_fd: out, err_fd: err}
        poller = select.poll()
        for fd in tails:
            poller.register(fd, select.POLLIN)
        pidfd = _open_pidfd(pid)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        end = None if self.timeout is None else time.monotonic() + self.timeout
        exited = timed_out = group_killed = False
        try:
            while not (exited and not tails):
                if end is None:
                    wait_ms = -1
                else:
                    left = end - time.monotonic()
                    if left <= 0:
                        if group_killed:
                            break  # draining took too long: something outside the group holds a pipe
                        timed_out = group_killed = True
                        _killpg(pid)
                        end = time.monotonic() + _DRAIN_GRACE
                        continue
                    # poll() takes an int of milliseconds (24.8 days at most): wake at least
                    # hourly, the loop looks at the time again anyway.
                    wait_ms = min(math.ceil(left * 1000), 3_600_000)
                if pidfd < 0 and not exited:
                    wait_ms = _POLL_TICK_MS if wait_ms < 0 else min(wait_ms, _POLL_TICK_MS)
                for fd, _event in poller.poll(wait_ms):
                    if fd == pidfd:
                        exited = True
                        poller.unregister(pidfd)
                        continue
                    data = os.read(fd, _READ)
                    if data:
                        tails[fd].add(data)
                    else:
                        poller.unregister(fd)
                        del tails[fd]
                if not exited and pidfd < 0:
                    exited = _exited(pid)
                if exited and not group_killed:
                    # The shell is done: what it left running in the background goes too.
                    group_killed = True
                    _killpg(pid)
                    if tails:
                        end = time.monotonic() + _DRAIN_GRACE
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return out, err, timed_out

    def _write_logs(self, item: Item, out: _Tail, err: _Tail) -> None:
        tails = {f"{item.seq}.out": out.last(self.log_limit), f"{item.seq}.err": err.last(self.log_limit)}
        # Through descriptors of the batch directory and of logs/, neither followed if it is a
        # link: a log never lands outside the batch (a link there halts the batch instead).
        with _BatchFolder(item.batch_dir, "logs", create=any(tails.values())) as logs:
            if logs is None:
                return  # no logs/ yet and nothing to write (or to remove)
            for name, data in tails.items():
                if not data:
                    if item.attempt > 1:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=logs)  # an earlier attempt's: the logs are the latest one's
                    continue
                fd = _create_file(logs, name, item.batch_dir)
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        """Kill the process group running item ``seq``; its :meth:`run` then raises
        ``CommandKilled(SIGKILL)``. False if that item is not running here, unless ``attempt``
        is given: the executor knows that attempt has begun, and its shell dies as it starts."""
        with self._lock:
            pid = self._running.get(seq)
            if pid is None:
                if attempt is None:
                    return False
                self._doomed.add((seq, attempt))
                return True
            self._killed.add(seq)
            _killpg(pid)
        return True

    def kill_all(self) -> int:
        """Kill every running item's process group; returns how many."""
        with self._lock:
            for seq, pid in self._running.items():
                self._killed.add(seq)
                _killpg(pid)
            return len(self._running)


# -- files in the batch directory ----------------------------------------------------------------

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | os.O_CLOEXEC


def _unsafe(batch_dir: str, what: str) -> Fatal:
    # Fatal: every later item would meet the same link, so the batch halts (resumable once the
    # link is gone; until then the engine refuses to start on it).
    return Fatal(
        f"{what} in batch {os.path.basename(batch_dir)} is a symbolic link (or not a folder): refusing to "
        "write item files through it; remove it, then resume the batch"
    )


class _BatchFolder:
    """``with _BatchFolder(batch_dir, "logs") as fd``: a descriptor of that folder of the batch
    directory, made (mode 0700, whatever the umask) when missing and ``create``, else None when
    missing. Neither the batch directory nor the folder is followed when it is a symbolic link:
    :class:`Fatal` instead."""

    __slots__ = ("batch_dir", "create", "fds", "name")

    def __init__(self, batch_dir: str, name: str, *, create: bool = True) -> None:
        self.batch_dir, self.name, self.create = batch_dir, name, create
        self.fds: list[int] = []

    def __enter__(self) -> int | None:
        try:
            self.fds.append(os.open(self.batch_dir, _DIR_FLAGS))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unsafe(self.batch_dir, "the batch directory") from None
            raise
        try:
            fd = _open_folder(self.fds[0], self.name, self.create, self.batch_dir)
        except BaseException:
            self.__exit__()
            raise
        if fd is not None:
            self.fds.append(fd)
        return fd

    def __exit__(self, *exc: object) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _open_folder(parent: int, name: str, create: bool, batch_dir: str) -> int | None:
    """A descriptor of the folder ``name`` in the folder ``parent`` (made 0700 when missing and
    ``create``; None when missing and not), never through a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(batch_dir, f"{name}/") from None
        raise
    made = True
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        made = False  # another worker made it meanwhile
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(batch_dir, f"{name}/") from None
        raise
    if made:
        os.fchmod(fd, 0o700)  # mkdir's mode passes through the umask
    return fd


def _create_file(folder: int, name: str, batch_dir: str) -> int:
    """``name`` in ``folder`` opened for writing, emptied, mode 0600; a symbolic link there is
    replaced by the file, never followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, 0o600, dir_fd=folder)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    os.unlink(name, dir_fd=folder)
    return os.open(name, flags | os.O_EXCL, 0o600, dir_fd=folder)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _make_out_dir(item: Item) -> None:
    """``{out}``: ``out/<seq>`` in the batch directory, made 0700 without following a link."""
    with _BatchFolder(item.batch_dir, "out") as out:
        assert out is not None
        fd = _open_folder(out, str(item.seq), True, item.batch_dir)
        if fd is not None:
            os.close(fd)


class _ItemEnv:
    """The item's variables for one attempt. Its JSON goes in ``BATCHTUI_ITEM_JSON`` or, when too
    big for one variable (:data:`_ENV_JSON_MAX`), in ``tmp/<seq>.<attempt>.json`` (0600) of the
    batch directory, named by ``BATCHTUI_ITEM_JSON_FILE`` (and BATCHTUI_ITEM_JSON is empty);
    :meth:`remove` deletes that file after the attempt."""

    __slots__ = ("item", "json", "name", "path", "tmp")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.json = _item_json(item)
        self.path: str | None = None
        self.tmp: int | None = None  # a descriptor of tmp/ while the file exists
        self.name = f"{item.seq}.{item.attempt}.json"

    def values(self) -> tuple[bytes, ...]:
        """The values of :data:`_ITEM_VARS`, in order."""
        item = self.item
        in_file = self.path is not None
        return (
            b"" if in_file else self.json,
            str(item.seq).encode(),
            str(item.attempt).encode(),
            os.fsencode(item.batch_dir),
            os.fsencode(self.path) if self.path is not None else b"",
        )

    def to_file(self) -> None:
        if self.path is not None:
            return
        item = self.item
        with _BatchFolder(item.batch_dir, "tmp") as tmp:
            assert tmp is not None
            self.tmp = os.dup(tmp)
        prefix = f"{item.seq}."
        # Files of this item's earlier attempts outlive only an engine killed with -9: go now.
        for entry in os.scandir(self.tmp):
            if entry.name.startswith(prefix) and entry.name.endswith(".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=self.tmp)
        fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.tmp)
        try:
            _write_all(fd, self.json)
        finally:
            os.close(fd)
        self.path = os.path.join(item.batch_dir, "tmp", self.name)

    def remove(self) -> None:
        if self.tmp is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.tmp)
        os.close(self.tmp)
        self.tmp = None


def _item_json(item: Item) -> bytes:
    """``{"seq","key","data","attempt"}`` as JSON. A file name that is not UTF-8 (Python's
    surrogate-escaped str, as os.fsdecode gives it) cannot be UTF-8 JSON text: its bytes that
    do not decode become ``\\udcXX`` escapes then (as items.db holds it); ``{path}`` in the
    template passes the exact bytes."""
    obj = {"seq": item.seq, "key": item.key, "data": item.data, "attempt": item.attempt}
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: lone surrogates
        import json

        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def _too_big(cmd: str, env: Mapping[bytes, bytes], item_vars: tuple[bytes, ...]) -> str:
    """Why exec said E2BIG when the command line was not too long: one variable too long, or
    all of them with the command line over the total (ARG_MAX)."""
    entries = {**env, **dict(zip(_ITEM_VARS, item_vars, strict=True))}
    name, value = max(entries.items(), key=lambda kv: len(kv[0]) + len(kv[1]))
    if len(name) + len(value) + 2 > _ARG_STRLEN:
        return (
            f"the environment variable {os.fsdecode(name)} is {len(name) + len(value) + 1:,} bytes, over the "
            f"{_ARG_STRLEN:,} bytes one variable may have: make it shorter"
        )
    env_bytes = sum(len(k) + len(v) + 2 for k, v in entries.items())
    try:
        arg_max = f" (ARG_MAX is {os.sysconf('SC_ARG_MAX'):,} bytes)"
    except (ValueError, OSError):
        arg_max = ""
    return (
        f"the command line ({len(os.fsencode(cmd)):,} bytes) and the environment ({env_bytes:,} bytes) "
        f"together are over the system's limit for starting a command{arg_max}: shrink the environment"
    )


def _decode_tail(err: _Tail) -> str:
    return err.last(STDERR_TAIL).decode(errors="replace")


def _parse_stdout(out: _StdoutTail, max_result_bytes: int) -> ProcessOutput:
    """A JSON object on the last non-blank stdout line is the result; else the output's tail.

    Its ``cost`` must be a finite number >= 0 when given (:class:`InvalidCost`), and the line
    at most ``max_result_bytes`` long (:class:`ResultTooLarge`, also when it was too long to
    keep). A line only the json module reads (``NaN``, ``Infinity``, ``1e400``: orjson refuses
    them) is read with it, so a cost there is never dropped: the item fails
    (:class:`InvalidCost` or :class:`InvalidResult`)."""
    text = bytes(out.buf).strip()
    if not text:
        return ProcessOutput(None)
    if out.last_line_cut and out.cut_object:
        raise too_large(out.total - out.last_line, max_result_bytes, at_least=True)
    last = text[text.rfind(b"\n") + 1 :].strip()
    if last.startswith(b"{") and not out.last_line_cut:
        if len(last) > max_result_bytes:
            raise too_large(len(last), max_result_bytes)
        try:
            obj = orjson.loads(last)
        except orjson.JSONDecodeError:
            obj = _loads_nonfinite(last)
        if isinstance(obj, dict):
            cost = cost_of(obj)
            check_finite(obj)
            return ProcessOutput(obj, cost)
    tail = text[-_RESULT_TAIL * 4 :].decode(errors="replace")[-_RESULT_TAIL:].strip()
    return ProcessOutput({"stdout_tail": tail})


def _loads_nonfinite(line: bytes) -> Any:
    """``line`` read by the json module (which takes NaN, Infinity and 1e400), or None."""
    import json  # only a line orjson refused gets here

    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None
