"""The item detail's live output: a shell item's stdout and stderr as they are written, like
``tail -f``, through its retries, until the item ends.

A thread worker reads :func:`batchtui.engine.logs.follow` (the one follower: ``batchtui logs -f``
uses it too) and posts what it read; the widget keeps the last lines of both streams and shows
both interleaved or one of them (``show``), so switching streams never reads the files again.
The worker belongs to the widget: it is cancelled when the widget (its screen) goes away, and
the follower sees that at its next look (``is_done``). Output is plain text (never markup, no
terminal escapes).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import RichLog
from textual.worker import get_current_worker

from batchtui.engine.batchdir import engine_alive
from batchtui.engine.fmt import clean
from batchtui.engine.logs import LogChunk, Stream, follow
from batchtui.engine.store.queries import ItemQueries, StoreError

__all__ = ["OutputFollow", "Shown"]

Shown = Literal["both", "out", "err"]
#: Lines kept for re-showing after a stream switch (the log files hold the rest: `o` opens them).
KEEP_LINES = 5000
#: The item's status is read at most this often while following (items.db, read-only).
STATUS_EVERY_S = 0.25
_PREFIX = {"out": "  ", "err": "! "}


@dataclass(frozen=True, slots=True)
class _Line:
    stream: Stream | None  # None: a note of the follower's (an attempt began, the item ended)
    text: str


class OutputFollow(RichLog):
    """Follows one item's output live; ``start`` begins, ``stop`` ends (or the item's end)."""

    DEFAULT_CSS = """
    OutputFollow { height: 1fr; min-height: 6; border-top: solid $primary; display: none; }
    OutputFollow.-following { display: block; }
    """

    class Read(Message):
        """Chunks the follower read (posted from its thread)."""

        def __init__(self, chunks: list[LogChunk]) -> None:
            super().__init__()
            self.chunks = chunks

    class Ended(Message):
        """The follower ended: the item is done (its status), or following was stopped."""

        def __init__(self, status: str | None) -> None:
            super().__init__()
            self.status = status

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False, highlight=False, wrap=True, max_lines=KEEP_LINES)
        self.kept: deque[_Line] = deque(maxlen=KEEP_LINES)
        self.show: Shown = "both"
        self.following = False
        self._partial: dict[tuple[Stream, int], str] = {}
        self._attempt: int | None = None

    # -- starting and stopping ------------------------------------------------------------------

    def start(self, batch: Path, seq: int) -> None:
        """Follow item ``seq`` of ``batch`` from what its latest attempt's logs hold now."""
        self.stop()
        self.kept.clear()
        self._partial.clear()
        self._attempt = None
        self.clear()
        self.following = True
        self.add_class("-following")
        self._note(f"following item {seq}: its output appears as it is written")
        self._follow(batch, seq)

    def stop(self) -> None:
        """Stop following (the worker ends at its next look)."""
        self.following = False
        self.workers.cancel_group(self, "follow")

    def hide(self) -> None:
        self.stop()
        self.remove_class("-following")

    def switch(self) -> Shown:
        """Show both streams, then stdout only, then stderr only; returns what is shown now."""
        order: list[Shown] = ["both", "out", "err"]
        self.show = order[(order.index(self.show) + 1) % len(order)]
        self.clear()
        for line in self.kept:
            self._write(line)
        return self.show

    # -- the worker -----------------------------------------------------------------------------

    @work(thread=True, group="follow", exclusive=True, exit_on_error=False, name="following the output")
    def _follow(self, batch: Path, seq: int) -> None:
        worker = get_current_worker()
        status = _StatusWatch(batch, seq)
        try:
            for chunk in follow(batch, seq, is_done=lambda: worker.is_cancelled or status.done()):
                if worker.is_cancelled:
                    return
                self.post_message(self.Read([chunk]))
        finally:
            status.close()
        if not worker.is_cancelled:
            self.post_message(self.Ended(status.last))

    def on_output_follow_read(self, event: Read) -> None:
        event.stop()
        for chunk in event.chunks:
            if chunk.attempt != self._attempt:
                self._flush_partial()
                self._attempt = chunk.attempt
                self._note(f"── attempt {chunk.attempt} ──")
            if chunk.gap:
                self._note("… output lost here: the log was cut before it could be read")
            key = (chunk.stream, chunk.attempt)
            text = self._partial.pop(key, "") + chunk.text
            *whole, rest = text.split("\n")
            for line in whole:
                self._add(_Line(chunk.stream, line))
            if rest:
                self._partial[key] = rest

    def on_output_follow_ended(self, event: Ended) -> None:
        self._flush_partial()
        self.following = False
        self._note(f"── the item ended ({event.status}): no more output ──" if event.status else "── stopped ──")

    # -- lines ----------------------------------------------------------------------------------

    def _flush_partial(self) -> None:
        for (stream, _), rest in list(self._partial.items()):
            self._add(_Line(stream, rest))
        self._partial.clear()

    def _note(self, text: str) -> None:
        self._add(_Line(None, text))

    def _add(self, line: _Line) -> None:
        self.kept.append(line)
        self._write(line)

    def _write(self, line: _Line) -> None:
        if line.stream is None:
            self.write(Text(line.text, style="bold"))
        elif self.show in ("both", line.stream):
            prefix = _PREFIX[line.stream] if self.show == "both" else ""
            self.write(Text(prefix + clean(line.text), no_wrap=False))


class _StatusWatch:
    """Whether the followed item is done, read from items.db at most every STATUS_EVERY_S: the
    item is finished (complete, failed, skipped), or no engine holds the batch any more (what
    is written is all there will be). A retry puts the item back to pending: still followed."""

    def __init__(self, batch: Path, seq: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.batch, self.seq, self.clock = batch, seq, clock
        self.last: str | None = None
        self._checked = -STATUS_EVERY_S
        self._done = False
        self._store: ItemQueries | None = None

    def done(self) -> bool:
        if self._done or self.clock() - self._checked < STATUS_EVERY_S:
            return self._done
        self._checked = self.clock()
        try:
            if self._store is None:
                self._store = ItemQueries(self.batch / "items.db")
            detail = self._store.item(self.seq)
        except StoreError:
            return False  # being written or replaced: look again next time
        self.last = detail.row.status if detail is not None else None
        self._done = self.last in (None, "complete", "failed", "skipped") or engine_alive(self.batch) is None
        return self._done

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
