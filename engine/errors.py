"""Failure classification: every failure becomes (error_type, category, message, detail).

Categories are a contract (DESIGN section 5): ``transient`` (retried with backoff),
``item`` (failed at once, the batch goes on), ``fatal`` (the batch halts, resumable) and
``timeout`` (killed, then handled like transient).
"""

from __future__ import annotations

import errno
import math
import os
import sys
from collections.abc import Collection
from typing import Final, Literal, NamedTuple

Category = Literal["transient", "item", "fatal", "timeout"]
CATEGORIES: Final[tuple[Category, ...]] = ("transient", "item", "fatal", "timeout")

#: Exit code conventionally meaning "temporary failure, try again" (sysexits EX_TEMPFAIL).
EX_TEMPFAIL: Final = 75
DETAIL_LIMIT: Final = 8192
#: A full disk (or quota, or file size limit) is about the machine, not the item: fatal.
NO_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MESSAGE_LIMIT: Final = 500
#: The exit code of a usage or config error (a :class:`UserError`): the CLI contract, DESIGN
#: section 8. Here rather than only in the runner, so the CLI can exit with it without loading
#: the runner.
EXIT_USAGE: Final = 2
#: Settings whose empty value means something: an empty list (no exit codes retried, no hook),
#: which clears what batchtui.toml sets. Any other empty value, flag (tui/cli/group.py), config
#: file or environment (engine/config.py), is refused. Here so the CLI has it without pydantic.
EMPTY_MEANS_NONE: Final = frozenset({"retry_exit_codes", "fatal_exit_codes", "transient_errors", "on_finish"})
#: Interrupted (Ctrl-C, SIGTERM, `batchtui stop`): resumable (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED: Final = 130


class BatchtuiError(Exception):
    """Base class of batchtui's own errors, and what the CLI makes of one that reaches it.

    The CLI catches this one class and shows :meth:`describe` (the message, with ``hint`` on a
    line below it) as one ``error:`` line, then exits with ``exit_code`` (DESIGN section 8),
    never a traceback. So each error says its own message, exit code and way out, and the CLI
    needs no module's error class to catch it (importing the store to catch its errors would
    cost a ``batchtui ls`` more than the command). The per-item failures below never reach the
    CLI (the engine classifies them); :class:`CommandFailed`'s ``exit_code`` is its command's.
    """

    #: What the CLI exits with: the usage or config error unless a subclass says otherwise.
    exit_code: int = EXIT_USAGE
    #: The way out, shown below the message (None: the message says it all).
    hint: str | None = None

    def describe(self) -> str:
        """The message as the CLI shows it: ``str(self)``, then the hint on its own line."""
        return str(self) + (f"\n  {self.hint}" if self.hint else "")


class UserError(BatchtuiError):
    """A mistake of the user's (bad flag, missing file, bad config): one line, no traceback.

    ``exit_code`` is what the CLI exits with (2, the usage error, unless a subclass says
    otherwise: a valid command that could not take effect is 1)."""


class Fatal(BatchtuiError):
    """Raise from a processor to halt the whole batch (resumable), e.g. an expired API key."""


class CommandFailed(BatchtuiError):
    """A shell command exited non-zero. ``retry_after``: seconds its last stdout or stderr line
    asked for, ``{"retry_after": 5}`` (:func:`retry_after_of_output`)."""

    def __init__(self, exit_code: int, stderr_tail: str = "", retry_after: float | None = None) -> None:
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.retry_after = retry_after
        last = _last_line(stderr_tail)
        super().__init__(f"exit {exit_code}" + (f": {last}" if last else ""))


class CommandKilled(BatchtuiError):
    """A shell command died from a signal it did not expect from us."""

    def __init__(self, signum: int, stderr_tail: str = "") -> None:
        self.signum = signum
        self.stderr_tail = stderr_tail
        super().__init__(f"killed by signal {signum}")


class ItemTimeout(BatchtuiError):
    """The item ran past ``--timeout`` and was killed."""

    def __init__(self, seconds: float, stderr_tail: str = "") -> None:
        self.seconds = seconds
        self.stderr_tail = stderr_tail
        super().__init__(f"timed out after {seconds:g}s")


#: Why a thread could not be started ("can't start new thread").
NO_THREAD: Final = (
    "the limit on processes is reached: ulimit -u, or a container's pids limit, which threads count against"
)

#: What starting a command fails with when the system, not the item, lacks room for it.
_NO_ROOM: Final[dict[int, str]] = {
    errno.EAGAIN: "no room under the limit on processes: ulimit -u, or a container's pids limit",
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "no room under this process's limit on open files: ulimit -n",
    errno.ENFILE: "no room under the system's limit on open files",
}


class NoRoomToStart(BatchtuiError):
    """An item's command could not be started for lack of processes, memory or open files.

    The item never ran, so this is no failure of the item's, and the engine never classifies it:
    the worker hands the item back unstarted (pending again, no attempt counted) and waits
    before it starts another, so the run goes on at what the system allows."""

    def __init__(self, cause: OSError) -> None:
        self.errno = cause.errno
        #: What the system lacks, as the message says it.
        self.lacks = _NO_ROOM.get(cause.errno or 0, "no room")
        super().__init__(f"cannot start commands: {cause.strerror or cause} ({self.lacks})")

    @staticmethod
    def of(exc: BaseException) -> NoRoomToStart | None:
        """``exc`` as a lack of room to start a command, None when it is anything else."""
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return NoRoomToStart(exc)
        return None


class WorkerLost(BatchtuiError):
    """The worker process running the item died (killed, out of memory, crashed)."""


class InvalidRecord(BatchtuiError):
    """The source record could not be read (invalid JSON line, ragged CSV row...)."""


class ResultTooLarge(BatchtuiError):
    """A result's JSON is over ``--max-result-bytes``: the item fails (not retried), the engine
    never holds, stores or writes it."""


class InvalidCost(BatchtuiError):
    """A result's ``cost`` is not a finite number >= 0 (a string, null, NaN, an infinity, a
    negative number): counting it, or leaving it out, would defeat ``--max-cost``."""


class InvalidResult(BatchtuiError):
    """A result JSON cannot hold as it is (NaN or an infinity, which JSON would turn into null)."""


class ChunkResultMismatch(BatchtuiError):
    """A chunked callable's return value cannot be matched to the chunk's items (a list of
    another length, a dict with keys that are not the chunk's seqs, neither a list nor a dict)."""


class MissingResult(BatchtuiError):
    """A chunked callable's ``{seq: result}`` dict has no entry for this item."""


class ErrorInfo(NamedTuple):
    """A classified failure, as stored on the item and its attempt row."""

    error_type: str
    category: Category
    message: str
    detail: str
    #: Seconds the failure asked to wait before a retry (a 429's Retry-After): the retry waits
    #: at least that long, and the item's ``--limit-by`` key slows down (engine/limits.py).
    retry_after: float | None = None
    #: Not retried whatever its category: a timed-out Python call on a thread, which cannot be
    #: stopped and runs on (a retry would run the item twice at once; engine/executors.py).
    final: bool = False

    @property
    def retryable(self) -> bool:
        return not self.final and self.category in ("transient", "timeout")


#: The longest retry-after taken: a day (a larger one is taken as a day).
MAX_RETRY_AFTER: Final = 86400.0


def retry_after_seconds(value: object) -> float | None:
    """A retry-after as seconds: a finite number (or numeric text) >= 0, at most
    :data:`MAX_RETRY_AFTER`; None for anything else (a bool, a date, NaN, a negative number),
    so a bad value never fails the item or stalls it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def retry_after_of_output(*tails: bytes) -> float | None:
    """The retry-after a failed command asked for: ``{"retry_after": N}`` as the last non-blank
    line of its stdout or stderr (``tails``, in that order; the first one found counts)."""
    import orjson

    for tail in tails:
        text = tail.strip()
        last = text[text.rfind(b"\n") + 1 :].strip()
        if not last.startswith(b"{"):
            continue
        try:
            obj = orjson.loads(last)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "retry_after" in obj:
            seconds = retry_after_seconds(obj["retry_after"])
            if seconds is not None:
                return seconds
    return None


def _lines(text: str) -> list[str]:
    """The lines of a process's output or a message: split at a newline only. str.splitlines
    also splits at U+0085 (NEL), U+2028 and the C0 separators, and an error's message was cut
    to "nel" there."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _last_line(text: str) -> str:
    for line in reversed(_lines(text)):
        if line.strip():
            return line.strip()[:MESSAGE_LIMIT]
    return ""


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a note when the exception's ``__str__`` itself raises (a user's class)."""
    try:
        return str(exc)
    except Exception as again:
        return f"<{type(exc).__name__}.__str__ raised {type(again).__name__}>"


def _first_line(text: str) -> str:
    for line in _lines(text):
        if line.strip():
            return line.strip()[:MESSAGE_LIMIT]
    return ""


def classify(
    exc: BaseException,
    *,
    retry_exit_codes: Collection[int] = (),
    fatal_exit_codes: Collection[int] = (),
    transient_types: Collection[str] = (),
) -> ErrorInfo:
    """Classify an exception raised while processing one item."""
    detail = ""
    # A command's failure is told by its own stderr (maybe empty), never by a traceback of the
    # engine that ran it: batchtui raised these exceptions itself, nothing above them is the user's.
    command = isinstance(exc, (CommandFailed, CommandKilled, ItemTimeout))
    if isinstance(exc, CommandFailed):
        code = exc.exit_code
        error_type = f"exit {code}"
        if code in fatal_exit_codes:
            category: Category = "fatal"
        elif code == EX_TEMPFAIL or code in retry_exit_codes:
            category = "transient"
        else:
            category = "item"
        message = _last_line(exc.stderr_tail) or error_type
        detail = exc.stderr_tail
    elif isinstance(exc, CommandKilled):
        error_type = f"signal {exc.signum}"
        category = "item"
        message = str(exc)
        detail = exc.stderr_tail
    elif isinstance(exc, ItemTimeout):
        error_type = "timeout"
        category = "timeout"
        message = str(exc)
        detail = exc.stderr_tail
    elif isinstance(exc, Fatal) or (isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS):
        error_type = type(exc).__name__
        category = "fatal"
        message = _first_line(_safe_str(exc)) or error_type
    else:
        error_type = _type_name(exc)
        if isinstance(exc, (TimeoutError, ConnectionError, WorkerLost)) or error_type in transient_types:
            category = "transient"
        else:
            category = "item"
        message = _first_line(_safe_str(exc)) or error_type
    if not detail and not command:
        try:
            detail = own_traceback(exc)
        except Exception as again:  # the exception's own __str__ or __repr__ raises
            detail = f"{error_type} (its traceback could not be formatted: {type(again).__name__})"
    # items.db takes UTF-8 text only: a file name of raw bytes (os.fsdecode's surrogate escapes)
    # in a message would fail the commit. Its bytes are shown as \xNN, as in the item's key.
    try:
        retry_after = retry_after_seconds(getattr(exc, "retry_after", None))
    except Exception:  # a user's property that raises: no retry-after
        retry_after = None
    return ErrorInfo(_utf8(error_type), category, _utf8(message), _utf8(detail[-DETAIL_LIMIT:]), retry_after)


#: The error types of batchtui's own refusals of an item (store.selection.UNRETRIABLE_TYPES: no
#: retry puts them back). A user's exception class of one of these names is not one of them.
#: The name of the module a ``--call path/to/file.py:fn`` is loaded as starts so (callables.py).
USER_MODULE_PREFIX: Final = "batchtui_user_"
RESERVED_TYPES: Final = frozenset({"CommandTooLong", "InvalidRecord", "MissingField", "NulByte"})


def _type_name(exc: BaseException) -> str:
    """``exc``'s class name, as error_type; a user's class named like one of batchtui's refusals
    (:data:`RESERVED_TYPES`) by its module too (``mylib.MissingField``), so retry puts its items
    back as any other failure's, and the error groups keep the two apart."""
    cls = type(exc)
    if cls.__name__ not in RESERVED_TYPES:
        return cls.__name__
    from .shell.template import CommandTooLong, MissingField, NulByte  # only for these names

    if isinstance(exc, (CommandTooLong, InvalidRecord, MissingField, NulByte)):
        return cls.__name__
    module = cls.__module__
    if module.startswith(USER_MODULE_PREFIX):  # a callable's file (callables.py): its name, not ours
        file = getattr(sys.modules.get(module), "__file__", None) or module
        module = os.path.splitext(os.path.basename(file))[0]
    return f"{module}.{cls.__qualname__}"


#: Frames in files under this folder are batchtui's engine (the code that called the user's).
_ENGINE_DIR: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep


def own_traceback(exc: BaseException) -> str:
    """``exc``'s traceback from the first frame that is not batchtui's engine: a callable's failure
    shows the frames of the user's code (and what it called), not the worker loop above it. An
    error the engine raised itself (a result too large, a missing field) is its type and message."""
    from .tracebacks import format_traceback  # only a failure needs it (the CLI imports this module)

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_ENGINE_DIR):
        tb = tb.tb_next
    return format_traceback(exc, tb)


def _utf8(text: str) -> str:
    """``text``, with lone surrogates (which UTF-8 cannot hold) written as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate no byte gave: \udXXX
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
