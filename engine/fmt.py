"""Plain formatting the engine's messages and every view share (no imports: start-up stays light).

There is one sanitizer (:func:`clean`) and one duration formatter (:func:`fmt_duration`): the
CLI, the engine's messages (a path in an error) and every TUI widget show untrusted text and
durations the same way, so an item's key reads alike in `batchtui ls`, in the items table and in
an error line.
"""

from __future__ import annotations

import stat

__all__ = [
    "bar_cells",
    "clean",
    "clean_block",
    "count",
    "cut_percent",
    "decode_output",
    "error_line",
    "fmt_ago",
    "fmt_duration",
    "fmt_percent",
    "kind_of",
    "shell_line",
    "shell_word",
    "unclean",
]


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean(text: object, limit: int | None = None) -> str:
    """Untrusted text made safe for one terminal line.

    Every character that is not printable (ESC and the other C0 and C1 controls, tab, newline,
    zero-width and bidi-override format characters, lone surrogates) becomes a visible escape:
    ``\\x1b``, ``\\x09``, ``\\x0a``, ``\\u202e``, ``\\udcff``. Rich markup is not touched (a view
    draws the result as plain text, never as markup). With ``limit``, input longer than
    ``limit`` characters is cut to ``limit - 1`` of them and an ellipsis, before escaping (so an
    escape is never cut in half).
    """
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in s)


#: How bytes a process wrote (its output, its stderr, its logs) are decoded: a byte that is no
#: UTF-8 becomes the escape :func:`clean` gives a control character (``\\xff``), so every view
#: (item detail, pager, ``batchtui logs``, error lines) shows it alike and nothing is lost (the
#: replacement character ``�`` said only that something was there).
OUTPUT_ERRORS = "backslashreplace"


def decode_output(data: bytes) -> str:
    """Bytes a process wrote as text: invalid UTF-8 as ``\\xNN`` (see :data:`OUTPUT_ERRORS`)."""
    return data.decode("utf-8", OUTPUT_ERRORS)


_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}


def unclean(text: str) -> str:
    """``text`` as typed from a view: each escape :func:`clean` writes (``\\x1b``, ``\\u202e``,
    ``\\U000e0001``) back to the character it stands for, where clean would have escaped that
    character (``\\x41`` stays as typed); the rest as it is. A filter copied from the screen
    then finds the message it was shown for."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        width = _ESCAPE_DIGITS.get(text[i + 1]) if ch == "\\" and i + 1 < n else None
        if width is not None:
            digits = text[i + 2 : i + 2 + width]
            if len(digits) == width and all(d in _HEX for d in digits):
                code = int(digits, 16)
                if code <= 0x10FFFF and not chr(code).isprintable():
                    out.append(chr(code))
                    i += 2 + width
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


#: The characters no POSIX shell reads specially in a word (those shlex.quote leaves as they are).
_SHELL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


def shell_word(word: object) -> str:
    """``word`` as one word of a command line to paste into a shell: as it is when no shell reads
    any of its characters specially (a batch id, most paths), else single-quoted. A word with a
    character that is not printable (a newline, ESC, an undecodable byte of a file name) is
    written in ANSI-C quotes, ``$'...'`` (bash, zsh, ksh), with that character escaped: the
    command stays on one line, pastes as the exact word, and nothing reaches the terminal raw."""
    s = str(word)
    if s and all(ch in _SHELL_SAFE for ch in s):
        return s
    if s.isprintable():
        return "'" + s.replace("'", "'\"'\"'") + "'"
    return "$'" + "".join(_ansi_c(ch) for ch in s) + "'"


def _ansi_c(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    if ch.isprintable():
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode: the byte itself
        return f"\\x{code - 0xDC00:02x}"
    return _escape(ch)


def shell_line(*words: object) -> str:
    """A command line of ``words``, each quoted by :func:`shell_word`: the commands batchtui
    suggests (``batchtui resume ID --output-dir DIR``) paste as they read, whatever DIR holds."""
    return " ".join(shell_word(w) for w in words)


def clean_block(text: str) -> str:
    """Multi-line text (logs, tracebacks): newlines kept, a tab shown as four spaces (a log's
    indentation stays readable), every other control character escaped as by :func:`clean`."""
    return "\n".join(clean(line.replace("\t", "    ")) for line in text.splitlines())


def fmt_duration(seconds: float | None, *, fine: bool = False) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``?`` when unknown.

    ``fine`` shows what a single item's run time needs below a minute: ``350ms``, ``4.2s``
    (from a minute up both forms are the same).
    """
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if fine and seconds < 59.95:
        return f"{seconds * 1000:.0f}ms" if seconds < 0.9995 else f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_ago(seconds: float | None) -> str:
    """How long ago, as a person says it: ``just now``, ``42 s ago``, ``3 min ago``,
    ``5 h ago``, ``2 d ago``, ``7 mo ago``, ``2 y ago``; ``?`` when unknown. A moment in the
    future (a clock skewed between hosts) reads ``just now``."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 5:
        return "just now"
    for size, unit in ((365 * 86400, "y"), (30 * 86400, "mo"), (86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def cut_percent(percent: float, digits: int = 0) -> float:
    """``percent`` cut to ``digits`` decimals, never rounded up: with one item of 2,500 left, or
    one failure among them, it reads 99.96, 99.9 or 99, never 100, at any precision (100 is
    said only of all of them). A billionth absorbs float error (29 / 100 * 100 is
    28.999999999999996, which must read 29)."""
    scale = 10.0**digits
    return int(max(0.0, percent) * scale + 1e-9) / scale


def fmt_percent(percent: float, digits: int = 0) -> str:
    """``percent`` as a view shows it: :func:`cut_percent`, then ``%``."""
    return f"{cut_percent(percent, digits):.{digits}f}%"


def bar_cells(percent: float, cells: int) -> int:
    """How many of a progress bar's ``cells`` are filled at ``percent``: cut like the percent
    shown beside it, so the bar is full only when every item is finished."""
    return int(cells * cut_percent(min(percent, 100.0)) / 100)


def count(n: int, noun: str, *, grouped: bool = False) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 item", "0 items", "2 duplicates" (with
    thousands separators when ``grouped``: "1,024 items"). Regular plurals only (noun + "s")."""
    number = f"{n:,}" if grouped else str(n)
    return f"{number} {noun}" if n == 1 else f"{number} {noun}s"


def error_line(error_type: str | None, message: str | None) -> str:
    """``type: message``, the way every view names a failure, with a message that only says
    its type again (a command's ``exit 1`` with nothing on stderr) given once: "exit 1", never
    "exit 1: exit 1"."""
    first = (message or "").split("\n", 1)[0].strip()
    kind = error_type or ""
    if not first or first == kind:
        return kind
    return f"{kind}: {first}" if kind else first


def kind_of(mode: int, other: str) -> str:
    """What a file of ``mode`` (``st_mode``) is, for a message: "a folder", "a fifo", "a device",
    "a socket", else ``other``."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return other
