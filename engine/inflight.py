"""The items this process runs, in a file that outlives it: an item that kills the engine is found.

An item run in the engine's own process (the thread executor: a ``--call`` function, or the
thread that starts a shell) can take the engine down with it: a segfault in a C extension, an
``os._exit``, the OOM killer, a ``kill $PPID``. Its start is not in the store yet (the store is
group-committed), so the next engine ran it again, first, and died again: a batch that never got
past it, and that paid again, at each resume, for whatever had finished and was not committed.

So each worker thread holds a slot of ``inflight``, a file of the batch mapped into memory: the
seq, attempt and start time of the item it runs, set right before the item starts and cleared
right after it ends. A store to a shared file mapping is in the page cache at once, so it
survives the death of the process (not a crash of the machine: the page cache goes with it, and
such an item is run again, as before). An engine that ends clears the file; the next engine to
take the batch reads what a dead one left (:func:`left_by_dead_engine`): those items were running
when it died. Each of those attempts is counted and logged as ``WorkerLost`` (transient, as when
a pool worker dies). Items that were running at two deaths run again one at a time, and one that
dies alone fails once it reaches ``--max-attempts`` (engine/takeover.py, ``_charge_dead``): an
item that keeps killing the engine stops doing so, and the batch goes on.

Layout: slots of 32 bytes, four 8-byte integers in this machine's byte order: seq + 1 (0: free),
attempt, start (Unix time in milliseconds), unused. A slot is written attempt and start first, seq
last, and cleared by its seq, each word by one aligned 8-byte store (not torn): a death between
two stores leaves either a free slot or a whole one. About 0.2 us an item.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Final

from .files import FILE_MODE

__all__ = ["NAME", "SLOTS", "Held", "InflightFile", "Slot", "left_by_dead_engine"]

#: The file in the batch directory.
NAME: Final = "inflight"
_SLOT: Final = struct.Struct("=qqqq")
_WORDS: Final = _SLOT.size // 8
_MOST_SEQ: Final = 1 << 62
_MOST_ATTEMPT: Final = 1 << 31
_MOST_MS: Final = 1 << 53  # (as a float, still exact)
#: Slots in the file: twice the most workers a run may have (threads retired by a shrink finish
#: their item while new ones start). 256 KiB, sparse: only the pages written take room.
SLOTS: Final = 2 * 4096


class Slot:
    """One worker thread's slot: :meth:`set` before an item starts, :meth:`clear` after it ends;
    :meth:`hold` for a chunk's items together."""

    __slots__ = ("_at", "_file", "_words")

    def __init__(self, words: memoryview, index: int, file: InflightFile) -> None:
        self._words, self._at, self._file = words, index * _WORDS, file

    def set(self, seq: int, attempt: int, started: float) -> None:
        at, words = self._at, self._words
        words[at + 1] = attempt
        words[at + 2] = int(started * 1000)
        words[at] = seq + 1

    def clear(self) -> None:
        self._words[self._at] = 0

    @property
    def index(self) -> int:
        return self._at // _WORDS

    def hold(self, runs: list[tuple[int, int]], started: float) -> Held:
        """Note ``(seq, attempt)`` of a chunk's items, run together: this slot and as many more
        as the file has free (items past them go unmarked); :meth:`Held.release` after."""
        extra = self._file.take_many(len(runs) - 1)
        held = Held(self, extra)
        for slot, (seq, attempt) in zip([self, *extra], runs, strict=False):
            slot.set(seq, attempt, started)
        return held


class Held:
    """The slots a chunk's items are noted in while it runs."""

    __slots__ = ("_extra", "_own")

    def __init__(self, own: Slot, extra: list[Slot]) -> None:
        self._own, self._extra = own, extra

    def release(self) -> None:
        self._own.clear()
        self._own._file.give_back_many(self._extra)


class InflightFile:
    """The batch's ``inflight`` file, mapped; :meth:`take` gives a worker thread its slot."""

    def __init__(self, batch_dir: Path) -> None:
        self.path = batch_dir / NAME
        # O_NOFOLLOW: never written through a link (check_batch_dir refuses one too). Truncated
        # to nothing first: what a dead engine left was read before this engine made its own.
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, FILE_MODE)
        try:
            os.ftruncate(fd, SLOTS * _SLOT.size)
            buf = mmap.mmap(fd, SLOTS * _SLOT.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # Stores through these views are single machine stores (struct.pack_into costs 5 times
        # more an item). They keep the map alive: it is unmapped once no slot refers to it.
        self._words = memoryview(buf).cast("q")
        self._lock = threading.Lock()
        self._free = list(range(SLOTS - 1, -1, -1))
        self._closed = False

    def take(self) -> Slot | None:
        """A free slot (None when all are taken: that thread's items go unmarked)."""
        with self._lock:
            if self._closed or not self._free:
                return None
            return Slot(self._words, self._free.pop(), self)

    def take_many(self, n: int) -> list[Slot]:
        """Up to ``n`` free slots (fewer when the file has fewer)."""
        with self._lock:
            if self._closed or n <= 0:
                return []
            taken = [Slot(self._words, self._free.pop(), self) for _ in range(min(n, len(self._free)))]
        return taken

    def give_back_many(self, slots: list[Slot]) -> None:
        """Slots of :meth:`take_many`, cleared."""
        for slot in slots:
            self.give_back(slot)

    def give_back(self, slot: Slot | None) -> None:
        """The slot of a thread that ends (cleared)."""
        if slot is None:
            return
        with self._lock:
            if self._closed:
                return
            slot.clear()
            self._free.append(slot.index)

    def close(self, *, forget: bool) -> None:
        """Let the file go; ``forget``: remove it (the engine ends and has settled every item it
        ran: nothing in it is news to the next one). Without, what it holds stays for the next
        engine, as when this process dies."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if forget:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            # Not unmapped here: a thread still running an item (a stop that gave up on it) must
            # not write into unmapped memory. The views keep the map until the last one goes.


def left_by_dead_engine(batch_dir: Path) -> list[tuple[int, int, float]]:
    """``(seq, attempt, started)`` of the items the last engine was running when it died, from
    its ``inflight`` file (empty when there is none, or it ended cleanly). Call it holding the
    batch's lock, before :class:`InflightFile` makes a new one."""
    try:
        fd = os.open(batch_dir / NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []  # none; or a link, unreadable: nothing to trust in it (check_batch_dir says why)
    try:
        data = os.pread(fd, SLOTS * _SLOT.size, 0)
    except OSError:
        return []  # a folder in its place (check_batch_dir refuses it first), an I/O error
    finally:
        os.close(fd)
    data = data[: len(data) - len(data) % _SLOT.size]
    found: dict[int, tuple[int, int, float]] = {}
    for seq1, attempt, started_ms, _unused in _SLOT.iter_unpack(data):
        # What no engine writes (a damaged file) is passed over.
        if 0 < seq1 <= _MOST_SEQ and 0 < attempt < _MOST_ATTEMPT and 0 <= started_ms < _MOST_MS:
            seq = seq1 - 1
            if seq not in found or attempt > found[seq][1]:
                found[seq] = (seq, attempt, started_ms / 1000)
    return sorted(found.values())
