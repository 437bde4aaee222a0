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
a pool worker dies): the item is retried, and fails once it reaches ``--max-attempts``, so an
item that keeps killing the engine stops doing so and the batch goes on.

Layout: slots of 32 bytes, ``<qqdq``: seq + 1 (0: free), attempt, start (Unix time), unused.
A slot is written attempt and start first, seq last, and cleared by its seq: a death between two
stores leaves either a free slot or a whole one (an aligned 8-byte store is not torn).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Final

__all__ = ["NAME", "SLOTS", "InflightFile", "Slot", "left_by_dead_engine"]

#: The file in the batch directory.
NAME: Final = "inflight"
_SLOT: Final = struct.Struct("<qqdq")
_SEQ: Final = struct.Struct("<q")
_REST: Final = struct.Struct("<qd")  # attempt, start
#: Slots in the file: twice the most workers a run may have (threads retired by a shrink finish
#: their item while new ones start). 256 KiB, sparse: only the pages written take room.
SLOTS: Final = 2 * 4096


class Slot:
    """One worker thread's slot: :meth:`set` before an item starts, :meth:`clear` after it ends."""

    __slots__ = ("_map", "_offset")

    def __init__(self, buf: mmap.mmap, index: int) -> None:
        self._map = buf
        self._offset = index * _SLOT.size

    def set(self, seq: int, attempt: int, started: float) -> None:
        _REST.pack_into(self._map, self._offset + 8, attempt, started)
        _SEQ.pack_into(self._map, self._offset, seq + 1)

    def clear(self) -> None:
        _SEQ.pack_into(self._map, self._offset, 0)


class InflightFile:
    """The batch's ``inflight`` file, mapped; :meth:`take` gives a worker thread its slot."""

    def __init__(self, batch_dir: Path) -> None:
        self.path = batch_dir / NAME
        # O_NOFOLLOW: never written through a link (check_batch_dir refuses one too). Truncated
        # to nothing first: what a dead engine left was read before this engine made its own.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, SLOTS * _SLOT.size)
            self._map = mmap.mmap(fd, SLOTS * _SLOT.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._lock = threading.Lock()
        self._free = list(range(SLOTS - 1, -1, -1))
        self._closed = False

    def take(self) -> Slot | None:
        """A free slot (None when all are taken: that thread's items go unmarked)."""
        with self._lock:
            if self._closed or not self._free:
                return None
            return Slot(self._map, self._free.pop())

    def give_back(self, slot: Slot | None) -> None:
        """The slot of a thread that ends (cleared)."""
        if slot is None:
            return
        with self._lock:
            if self._closed:
                return
            slot.clear()
            self._free.append(slot._offset // _SLOT.size)

    def close(self, *, forget: bool) -> None:
        """Unmap the file; ``forget``: remove it (the engine ends and has settled every item it
        ran: nothing in it is news to the next one). Without, what it holds stays for the next
        engine (items may still run in this process as it exits)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if forget:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            # The workers' slots point into the map: a thread still running an item (a stop that
            # gave up on it) must not write into unmapped memory, so the map stays referenced by
            # them and is closed by the garbage collector once they let go.


def left_by_dead_engine(batch_dir: Path) -> list[tuple[int, int, float]]:
    """``(seq, attempt, started)`` of the items the last engine was running when it died, from
    its ``inflight`` file (empty when there is none, or it ended cleanly). Call it holding the
    batch's lock, before :class:`InflightFile` makes a new one."""
    try:
        fd = os.open(batch_dir / NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        return []  # a link or unreadable: nothing to trust in it (check_batch_dir says why)
    try:
        data = os.pread(fd, SLOTS * _SLOT.size, 0)
    finally:
        os.close(fd)
    data = data[: len(data) - len(data) % _SLOT.size]
    found: dict[int, tuple[int, int, float]] = {}
    for seq1, attempt, started, _unused in _SLOT.iter_unpack(data):
        if seq1 > 0 and attempt > 0:
            seq = seq1 - 1
            if seq not in found or attempt > found[seq][1]:
                found[seq] = (seq, attempt, started)
    return sorted(found.values())
