"""What the CLI writes for a person or a script: error lines, escaped item text, JSON, preflight.

Everything a batch holds (keys, names, error messages, paths) may come from an untrusted file:
it is shown through :func:`plain`, its control characters escaped, never sent to the terminal.
This module is loaded by every command (the group's error handler uses :func:`fail`), so it
imports only click and the engine's light basics.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from batchtui.engine.errors import EXIT_USAGE
from batchtui.engine.fmt import clean

if TYPE_CHECKING:
    from batchtui.engine.sources.spec import AsKind, SourceSpec


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """``error: message`` on stderr (one line per line of it, escaped), then exit ``code``."""
    # A message may quote a name or value from a file (a key, a path, a setting): its control
    # characters are shown escaped, line by line.
    click.echo("error: " + "\n".join(clean(line) for line in message.split("\n")), err=True)
    raise SystemExit(code)


def plain(text: str | None) -> str:
    """Item-derived text for a terminal: control characters shown escaped, never interpreted."""
    return clean(text) if text else ""


def say(line: str) -> None:
    """A note on stderr (what a command chose or did on the way), escaped."""
    click.echo(clean(line), err=True)


def echo_json(data: Any, *, indent: int | None = 2) -> None:
    """Machine output (``--json``) on stdout: the descriptor :func:`json_stdout` keeps for it
    while one is in force."""
    text = json.dumps(data, indent=indent) + "\n"
    sink = _json_sinks[-1] if _json_sinks else None
    if isinstance(sink, int):
        rest = memoryview(text.encode("utf-8"))
        while rest:  # a pipe may take it in parts; EPIPE is BrokenPipeError (the group's to report)
            rest = rest[os.write(sink, rest) :]
    else:
        click.echo(text, nl=False, file=sink)


#: Where the JSON goes while :func:`json_stdout` is in force: a descriptor of our own (the real
#: stdout, moved aside) or the stream that was ``sys.stdout`` (a test's ``CliRunner``).
_json_sinks: list[int | TextIO] = []


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """While a ``--json`` verb runs: stdout holds its JSON and nothing else.

    A ``--call`` module imported here (the preflight, the thread executor), a C library, or a
    child process that inherits descriptor 1 writes to it below Python, where no ``sys.stdout``
    swap reaches: those bytes came before the JSON and broke ``run --json | jq``. So the real
    stdout is kept on a private descriptor (close-on-exec: no child, pool worker or dask worker
    ever holds it, so a reader sees its end when this process ends), descriptor 1 points at
    stderr's file for everything else (children and worker processes started now inherit that),
    and ``sys.stdout`` is ``sys.stderr`` (a stray ``print`` comes in order with our notes).
    Only :func:`echo_json` writes to the kept descriptor. All of it is put back at the end."""
    stream = sys.stdout
    try:
        own_fd = stream is not None and stream.fileno() == 1
    except (OSError, ValueError, io.UnsupportedOperation):  # a CliRunner's stream, a closed one
        own_fd = False
    if stream is not None:
        stream.flush()
    kept: int | None = None
    with contextlib.suppress(OSError):  # descriptor 1 closed: nothing to move
        kept = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    if kept is not None:
        try:
            os.dup2(2, 1)
        except OSError:  # no stderr to point it at: leave descriptor 1 as it was
            os.close(kept)
            kept = None
    sink: int | TextIO | None = kept if own_fd and kept is not None else stream
    if sink is not None:
        _json_sinks.append(sink)
    if sys.stderr is not None:
        sys.stdout = sys.stderr
    try:
        yield
    finally:
        if sink is not None:
            _json_sinks.remove(sink)
        for each in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                if each is not None:
                    each.flush()
        sys.stdout = stream
        if kept is not None:
            os.dup2(kept, 1)
            os.close(kept)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file (report.json), or None when it is missing or not an object."""
    from batchtui.engine.files import DamagedFile, read_small_file

    try:
        data = json.loads(read_small_file(path))  # a fifo or a link there: no report, no wait
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, DamagedFile):
        return None


def print_preflight(pf: Any, as_json: bool, *, stream_err: bool = False) -> None:
    """Each preflight check with its fix, then the verdict (PROCEED / FIX_ISSUES)."""
    if as_json:
        echo_json(pf.as_dict())
        return
    marks = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}
    for c in pf.checks:
        click.echo(f"{marks[c.level]} {c.name}: {plain(c.message)}", err=stream_err)
        if c.fix and c.level != "ok":
            click.echo(f"       fix: {plain(c.fix)}", err=stream_err)
    click.echo(pf.verdict, err=stream_err)


def gate(pf: Any) -> None:
    """run/resume refuse to start when preflight fails (its checks on stderr, exit 2); its
    warnings are said and the command goes on."""
    if not pf.proceed:
        print_preflight(pf, False, stream_err=True)
        raise SystemExit(EXIT_USAGE)
    for c in pf.checks:
        if c.level == "warn":
            click.echo(f"warning: {c.name}: {plain(c.message)}", err=True)


def note_one_item_list(spec: SourceSpec, as_kind: AsKind) -> None:
    """A file without a suffix is one item; say so (run, check, add) when it reads as a list of
    lines, the likely intent: ``run urls --cmd 'curl {}'`` would run curl once, on the file's path."""
    from batchtui.engine.sources.spec import one_item_list  # pydantic: not at this module's import

    found = one_item_list(spec, as_kind)
    if found is not None:
        count = f"{found.lines:,} lines" if found.whole else f"{found.lines:,} lines in its first 64 KiB"
        click.echo(
            f"note: {plain(Path(found.path).name)} has no suffix, so it is one item (the file itself), "
            f"though it reads as a list ({count}); for one item per line, add --as lines (or name it .txt)",
            err=True,
        )


__all__ = [
    "echo_json",
    "fail",
    "gate",
    "json_stdout",
    "note_one_item_list",
    "plain",
    "print_preflight",
    "read_json",
    "say",
]


@contextlib.contextmanager
def whole_file(path: Path) -> Iterator[TextIO]:
    """A text file (UTF-8) at ``path`` that appears whole or not at all: written under a
    temporary name beside it, fsynced, then renamed over ``path`` when the block ends without
    an error (removed when it fails, or never renamed when the process is killed). A file it
    replaces keeps its mode; a new one gets 0666 under the umask, as ``open`` gives it. A
    ``path`` that exists and is no regular file (a fifo, ``/dev/stdout``) is written directly.

    Raises OSError when the file cannot be made (the caller says so)."""
    try:
        old_mode: int | None = os.stat(path).st_mode  # links followed: /dev/stdout is a pipe's
    except FileNotFoundError:
        old_mode = None
    if old_mode is not None and not stat.S_ISREG(old_mode):
        # Opened by the name given: a link such as /dev/stdout resolves to no path ("pipe:[N]").
        with open(path, "w", newline="", encoding="utf-8") as fh:
            yield fh
        return
    if path.is_symlink():  # the file it links to is replaced, the link stays
        path = Path(os.path.realpath(path))
    import secrets  # hashlib and random with it: every command imports this module

    from batchtui.engine.files import NOFOLLOW, fsync_dir, full_fsync  # the engine's own syncs

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: a new file of our own; mode 0666 under the umask, as open() would make it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666)
    try:
        try:
            if old_mode is not None:  # a file replaced keeps its mode (a 0600 export stays 0600)
                os.fchmod(fd, stat.S_IMODE(old_mode))
            fh = open(fd, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
        except BaseException:
            os.close(fd)
            raise
        with fh:
            yield fh
            fh.flush()
            full_fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename is made durable where the folder can be opened
        fsync_dir(path.parent)
