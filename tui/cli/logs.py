"""``batchtui logs BATCH SEQ [--attempt N] [--err] [-f]``: a shell item's output, like pueue's
``log`` and ``follow``.

It prints one stream (stdout, or stderr with ``--err``) of one attempt (the latest by default)
from ``logs/<seq>.<attempt>.out|err`` (:mod:`batchtui.engine.logs`); ``-f`` goes on printing
it as it is written, through the item's retries, and exits when the item has finished.

What reaches the terminal: the log is the item's own output, so it goes out as its bytes when
stdout is a file or a pipe (``> out.txt``, ``| grep``, ``| less -R`` get exactly what the
command wrote). On a terminal, the item's control characters are shown escaped (``\\x1b``)
instead of being sent: an item's output is untrusted, and an escape sequence can set the
window title, write the clipboard (OSC 52), move the cursor to hide lines or answer back into
the terminal's input. Newlines and tabs stay. ``--raw`` sends the bytes as they are anyway
(colours, progress bars), as ``tail -f`` would, for output the operator trusts.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.batches import resolve_batch
from batchtui.engine.fmt import clean, decode_output, shell_line
from batchtui.engine.logs import LogChunk, Stream, attempt_logs, follow, log_limit_of, log_path

from .completion import complete_batch
from .group import CONTEXT
from .options import DIR_OPTION, MAX_SEQ, SEQ, Int, scope_of
from .output import fail, plain, say

if TYPE_CHECKING:
    from batchtui.engine.store.queries import ItemQueries

__all__ = ["logs_cmd"]

#: Final statuses: an item in one of them writes no more output.
_DONE = frozenset({"complete", "failed", "skipped"})
#: How often ``-f`` asks the store whether the item has finished (and an engine still runs).
_CHECK_S = 0.25


def _terminal_text(text: str) -> str:
    """Output for a terminal: newlines kept, a tab as four spaces, other controls escaped."""
    return "\n".join(clean(part.replace("\t", "    ")) for part in text.split("\n"))


class _Printer:
    """Writes chunks to stdout: the bytes, or the escaped text on a terminal (see the module)."""

    def __init__(self, raw: bool) -> None:
        self.out: BinaryIO = sys.stdout.buffer
        self.escape = not raw and sys.stdout.isatty()
        self.attempt: int | None = None

    def write(self, chunk: LogChunk, limit: int) -> None:
        if self.attempt is not None and chunk.attempt != self.attempt:
            self.out.flush()  # where a retry's output begins, on stderr: stdout stays the output
            say(f"(attempt {chunk.attempt})")
        self.attempt = chunk.attempt
        if chunk.gap:
            self.out.flush()
            say(f"(output dropped here: it came faster than it was read, and the log keeps its last {limit:,} bytes)")
        if self.escape:
            self.out.write(_terminal_text(chunk.text).encode(errors="replace"))
        else:
            self.out.write(chunk.data)
        self.out.flush()


@click.command("logs", context_settings=CONTEXT)
@click.argument("batch", shell_complete=complete_batch)
@click.argument("seq", type=SEQ)
@click.option("--attempt", "-a", type=Int(1, MAX_SEQ), help="The attempt [default: the latest].")
@click.option("--err", "stderr", is_flag=True, help="Stderr instead of stdout.")
@click.option(
    "--follow", "-f", "following", is_flag=True, help="Go on printing as the item writes, until it has finished."
)
@click.option("--raw", is_flag=True, help="Send the bytes as they are to a terminal too (escape sequences included).")
@DIR_OPTION
@click.pass_context
def logs_cmd(
    ctx: click.Context,
    batch: str,
    seq: int,
    attempt: int | None,
    stderr: bool,
    following: bool,
    raw: bool,
    output_dir: str | None,
) -> None:
    """Print the output of item SEQ of BATCH (its stdout, or stderr with --err: a shell command's,
    or what a Python callable printed) of its latest attempt or of --attempt N; -f follows it
    until the item has finished."""
    from batchtui.engine.store.queries import ItemQueries, StoreError

    bdir = resolve_batch(batch, scope_of(ctx, output_dir))
    manifest = bdir.read_manifest()
    kind = str(manifest.processor.get("kind", ""))
    if kind not in ("shell", "python"):
        fail(
            f"batch {plain(bdir.batch_id)} runs the {kind or 'unknown'} processor: its items have no logs (a shell"
            f" command's output and a Python callable's prints are logged); an item's error is in"
            f" `{shell_line('batchtui', 'show', bdir.batch_id)}` and the item detail"
        )
    stream: Stream = "err" if stderr else "out"
    try:
        store = ItemQueries(bdir.items_db)
    except StoreError as exc:
        fail(f"cannot read the items of batch {bdir.batch_id}: {exc.describe()}")  # with its way out
    with store:
        row = store.row(seq)
        if row is None:
            size = store.size()
            known = f"its items are 0 to {size - 1}" if size else "it has no items"
            fail(f"batch {bdir.batch_id} has no item {seq}: {known}")
        logged = attempt_logs(bdir.path, seq, upto=row.attempts)
        # The store counts an attempt once it has ended: a running one is one past it.
        last = max(row.attempts + (row.status == "processing"), logged[-1].attempt if logged else 0)
        if attempt is not None and attempt > max(last, 1 if row.status != "skipped" else 0):
            tried = f"attempts 1 to {last}" if last > 1 else ("attempt 1" if last == 1 else "no attempt yet")
            fail(f"item {seq} of batch {bdir.batch_id} has no attempt {attempt}: it has {tried}")
        printer = _Printer(raw)
        limit = log_limit_of(bdir.path)
        if not following:
            _print_once(bdir, seq, attempt or last, stream, row.status, printer, limit)
            return
        done = _Done(bdir, store, seq)
        for chunk in follow(bdir.path, seq, attempt=attempt, streams=(stream,), is_done=done):
            printer.write(chunk, limit)
        if done.why:
            say(done.why)


def _print_once(
    bdir: BatchDir, seq: int, attempt: int, stream: Stream, status: str, printer: _Printer, limit: int
) -> None:
    name = "stdout" if stream == "out" else "stderr"
    if attempt == 0:
        say(f"item {seq} has not run yet ({status}): nothing logged; -f waits for its output")
        return
    path = log_path(bdir.path, seq, attempt, stream)
    try:
        data = _read_regular(path)
    except FileNotFoundError:
        say(f"attempt {attempt} of item {seq} wrote nothing to {name}")
        return
    text = decode_output(data)
    printer.write(LogChunk(stream, attempt, data, text), limit)


def _read_regular(path: Path) -> bytes:
    """The file's bytes; a link or anything but a regular file is no log (FileNotFoundError)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link
            raise FileNotFoundError(path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(path)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


class _Done:
    """``is_done`` for :func:`follow`: the item has finished, or no engine will ever run it on
    (the batch is not running: following would wait forever). Asks the store at most every
    :data:`_CHECK_S`; :attr:`why` says why it ended when that was not the item finishing."""

    def __init__(self, bdir: BatchDir, store: ItemQueries, seq: int) -> None:
        self.bdir, self.store, self.seq = bdir, store, seq
        self.why = ""
        self._stamp = 0.0
        self._done = False

    def __call__(self) -> bool:
        if self._done:
            return True
        now = time.monotonic()
        if now - self._stamp < _CHECK_S:
            return False
        self._stamp = now
        alive = self.bdir.alive() is not None  # asked first: an engine that ends meanwhile has written
        row = self.store.row(self.seq)
        status = row.status if row is not None else "gone"
        if status in _DONE or row is None:
            self._done = True
        elif not alive:
            self._done = True
            self.why = (
                f"item {self.seq} is {status} but no engine runs batch {plain(self.bdir.batch_id)}: "
                f"`{shell_line('batchtui', 'resume', self.bdir.batch_id)}` runs it"
            )
        return self._done
