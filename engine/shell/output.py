"""A command's output: the tails of stdout and stderr kept in memory, and the result read from them.

Only the last bytes of each stream are kept (at least what the logs keep), except that stdout's
last non-blank line is kept whole while it may be the result: a JSON object there is the item's
result (its ``cost`` counts toward the budget); otherwise the end of the output is.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ..errors import InvalidResult
from ..fmt import decode_output
from ..jsonexact import inexact_integer
from ..outputs import check_finite, cost_of, too_large
from .item import ProcessOutput

__all__ = ["STDERR_TAIL", "STDOUT_KEEP", "StdoutTail", "Tail", "decode_tail", "parse_stdout"]

STDERR_TAIL: Final = 8192  # bytes of stderr carried by the exception (errors.DETAIL_LIMIT)
STDOUT_KEEP: Final = 1 << 16  # stdout kept in memory at least, to find a JSON last line
_RESULT_TAIL: Final = 200  # characters of plain stdout kept as the result
_BLANK: Final = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


class Tail:
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
        """The last ``limit`` bytes. Where that cuts the output, it begins at a character: the
        continuation bytes of one cut in two are left out (an error message began "\\xad中")."""
        if limit <= 0:
            return b""
        tail = bytes(self.buf[-limit:])
        if len(tail) < self.total:  # cut: skip what is left of a character begun before
            skip = 0
            while skip < min(3, len(tail)) and 0x80 <= tail[skip] <= 0xBF:
                skip += 1
            tail = tail[skip:]
        return tail


class StdoutTail(Tail):
    """A :class:`Tail` of stdout that keeps its last non-blank line whole (that line may be
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


def decode_tail(err: Tail) -> str:
    """The end of stderr as the text an exception carries."""
    return decode_output(err.last(STDERR_TAIL))


def parse_stdout(out: StdoutTail, max_result_bytes: int) -> ProcessOutput:
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
            if (big := inexact_integer(last)) is not None:
                raise InvalidResult(
                    f"the result holds the integer {big}, beyond 64 bits, which would be stored as a float"
                    " with other digits: print it as a string"
                )
            return ProcessOutput(obj, cost)
    tail = decode_output(text[-_RESULT_TAIL * 4 :])[-_RESULT_TAIL:].strip()
    return ProcessOutput({"stdout_tail": tail})


def _loads_nonfinite(line: bytes) -> Any:
    """``line`` read by the json module (which takes NaN, Infinity and 1e400), or None."""
    import json  # only a line orjson refused gets here

    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None
