"""The dispatcher: the one owner of work not yet handed to an executor.

It holds the page of pending items read from the store (in seq order, a page at a time: a 1M
item batch is never in memory), the retries waiting out their backoff, the chunk size, and
the gates that say whether anything may go out now (``--rate``, ``--max-cost``). The runner
asks it for chunks with :meth:`Dispatcher.take` and gives it back what must wait
(:meth:`schedule_retry`, :meth:`reset_scan` after items went back to pending). Every method
takes the time it runs at, so a test can drive it with a fake clock.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import orjson

from .config import BatchConfig
from .models import KeyLimit
from .policy import HaltCheck, TokenBucket
from .processors import Item, ProcessorSpec
from .shell.item import load_data

if TYPE_CHECKING:
    from .limits import KeyLimits

FETCH_PAGE: Final = 1024
MAX_CHUNK: Final = 256
SHELL_MAX_CHUNK: Final = 16
#: A chunk of quick items is sized to take about this long, so completions stream and a
#: worker never holds much that a stop would have to take back.
CHUNK_TARGET_S: Final = 0.02
#: On dask, about this long: each task is a round trip through the scheduler (messages and
#: state changes in three processes, a few ms of CPU), and a task's outcomes stream as they are
#: decided (not held for its end), so a longer chunk delays nothing.
DASK_CHUNK_TARGET_S: Final = 0.05
#: Pending items set aside because their ``--limit-by`` key is over its limit, at most: past
#: this many the scan waits for them (memory stays bounded when one key holds the whole batch).
MAX_HELD: Final = 4096
#: A retry whose key is at its in-flight cap looks again this often (an item of the key ending
#: wakes the loop anyway).
KEY_FULL_RECHECK_S: Final = 0.05
#: A retry may start up to this late (a twentieth of its backoff at most), with every retry due
#: by then: one a turn, as each backoff ended, 6,000 retries took 9,400 turns of the runner's
#: loop, in chunks of one or two items.
RETRY_GATHER_S: Final = 0.05

#: The rows of ItemStore.next_pending: seq, key, data (JSON), source kind, attempts made.
PendingRows = list[tuple[int, str, str, str, int]]
#: The rows of ItemStore.next_first: the place in the run-first queue, then as PendingRows.
FirstRows = list[tuple[int, int, str, str, str, int]]


@dataclass(order=True)
class Retry:
    """An item waiting out its backoff before its next attempt."""

    ready: float
    seq: int
    item: Item = field(compare=False)
    #: How late it may start (:data:`RETRY_GATHER_S`): it goes out once this late, with every
    #: retry whose backoff is over by then (never one before its own).
    late: float = field(compare=False, default=0.0)

    @property
    def due(self) -> float:
        """When it goes out: its backoff's end, and as late as it may be."""
        return self.ready + self.late


class Taken:
    """What :meth:`Dispatcher.take` hands out: chunks, and how many came from pending."""

    __slots__ = ("chunks", "from_pending")

    def __init__(self) -> None:
        self.chunks: list[list[Item]] = []
        self.from_pending = 0


class Dispatcher:
    """Decides what goes to the executor next (see the module docstring)."""

    def __init__(
        self,
        config: BatchConfig,
        spec: ProcessorSpec,
        batch_dir: str,
        next_pending: Callable[[int, int], PendingRows],
        before_rescan: Callable[[], None],
        next_first: Callable[[int | None, int], FirstRows] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.batch_dir = batch_dir
        self._next_pending = next_pending
        self._before_rescan = before_rescan
        self.retries: list[Retry] = []
        self.bucket = TokenBucket(config.rate) if config.rate else None
        self.limits: KeyLimits | None = None
        if config.limit_by:  # limits' module only for a run that sets --limit-by
            from .limits import KeyLimits, parse_limit_by

            self.limits = KeyLimits(parse_limit_by(config.limit_by))
        # Pending items whose key was over its limit when the scan reached them, by key, in
        # seq order: they go out first once their key may take them (no head-of-line blocking:
        # the scan goes on past them). Still pending in the store: a re-scan drops them.
        self._held: dict[str, deque[Item]] = {}
        self._held_seqs: set[int] = set()
        self.halts = HaltCheck(config)
        self.chunk = 1
        self.avg_item_s: float | None = None
        dask = config.resolved_executor(spec.kind) == "dask"
        self._chunk_target_s = DASK_CHUNK_TARGET_S if dask else CHUNK_TARGET_S
        self._buffer: list[Item] = []  # the fetched page of pending items, taken from _pos on
        self._pos = 0
        self._cursor = -1
        self._high = -1  # the highest seq fetched this run: a scan below it must commit first
        self.exhausted = False
        # The run-first queue (prioritize): read only while something is prioritized, so the
        # common path costs one attribute test; a page at a time by a cursor on the place.
        self._next_first = next_first
        self._first_on = False
        self._first: list[Item] = []
        self._first_pos = 0
        self._first_cursor: int | None = None
        # Taken from that queue in this take(): not in the runner's in-flight set until take()
        # returns, and still 'pending' in the store, so the seq scan must leave them out.
        self._first_taken: set[int] = set()

    # -- state -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing left to hand out: no retry waiting, no pending item in the store."""
        return (
            not self.retries
            and not self._held_seqs
            and self.exhausted
            and self._pos >= len(self._buffer)
            and self._first_pos >= len(self._first)
        )

    def reset_scan(self) -> None:
        """Items went back to pending (a retry, a skip, work taken back): read the store again."""
        self._buffer, self._pos = [], 0
        self._cursor = -1
        self.exhausted = False
        self._first, self._first_pos, self._first_cursor = [], 0, None
        self._drop_held()

    def prioritized(self) -> None:
        """Items were put at the front of the queue (``prioritize``, or found so at the start
        of a run): they go out before any other pending item, read again from the front."""
        if self._next_first is None:
            raise RuntimeError("this dispatcher has no run-first queue")
        self._first_on = True
        self.reset_scan()  # the page in hand may hold them: they must not go out twice

    def drop_buffer(self) -> None:
        """Stopping: nothing more goes out."""
        self._buffer, self._pos = [], 0
        self._first, self._first_pos = [], 0
        self._drop_held()

    def _drop_held(self) -> None:
        """Items held for their key are pending in the store: dropped, the scan reads them again."""
        if self._held_seqs:
            self._held.clear()
            self._held_seqs.clear()

    def schedule_retry(self, item: Item, ready: float, now: float) -> None:
        late = min(RETRY_GATHER_S, max(0.0, ready - now) / 20)
        heapq.heappush(self.retries, Retry(ready, item.seq, item, late))

    def _retry_due(self, now: float) -> bool:
        return bool(self.retries) and self.retries[0].due <= now

    def take_retries(self, seqs: Container[int] | None = None) -> list[int]:
        """Retries waiting out a backoff, dropped (all, or those of ``seqs``): their seqs."""
        if seqs is None:
            taken = [r.seq for r in self.retries]
            self.retries.clear()
            return taken
        taken = [r.seq for r in self.retries if r.seq in seqs]
        if taken:
            self.retries = [r for r in self.retries if r.seq not in seqs]
            heapq.heapify(self.retries)
        return taken

    def next_event(self, now: float, paused: bool) -> float | None:
        """Seconds until something may be handed out that cannot now (a retry, a token)."""
        wait: float | None = None
        if self.retries:
            wait = max(0.0, self.retries[0].due - now)
        if self.bucket is not None and not paused:
            bucket = max(0.001, self.bucket.wait_time(now))
            wait = bucket if wait is None else min(wait, bucket)
        if self._held and self.limits is not None and not paused:
            # A held key whose rate or retry-after holds it (one at its in-flight cap waits for
            # one of its items to end, which wakes the loop).
            for key in self._held:
                key_wait = self.limits.blocked(key, now)
                if key_wait is not None and key_wait != math.inf:
                    key_wait = max(0.001, key_wait)
                    wait = key_wait if wait is None else min(wait, key_wait)
        return wait

    # -- chunk size ------------------------------------------------------------------------

    def note_duration(self, avg_item_s: float) -> None:
        """The recent average time of an item: a chunk is sized to ~CHUNK_TARGET_S of them."""
        self.avg_item_s = avg_item_s
        self.chunk = max(1, min(MAX_CHUNK, int(self._chunk_target_s / max(avg_item_s, 1e-7))))

    def chunk_size(self, total: int) -> int:
        if self.spec.kind == "shell":
            # Each command is its own process (timed out and killed one by one), so a chunk only
            # saves the loop's round trips: quick commands go a few at a time, slow ones alone.
            return min(self.chunk, SHELL_MAX_CHUNK)
        times_out = self.config.timeout is not None or self.config.adaptive_timeout is not None
        if times_out and not self.spec.chunked and self.config.resolved_executor(self.spec.kind) in ("process", "dask"):
            # A timed-out call that does not unwind takes its process down: one item each. A
            # chunked callable's chunk is one call (a bulk insert, say): its items time out together.
            return 1
        cs = self.config.chunk_size
        if self.spec.chunked:
            if cs == "auto" or cs is None:
                from .processors import chunk_size_for

                return chunk_size_for(total)
            return int(cs)
        if isinstance(cs, int):
            return cs
        return self.chunk

    # -- handing out -----------------------------------------------------------------------

    def budget_blocks(self, spent: float, in_flight: int, max_item_cost: float) -> str | None:
        """Why one more item may not go out under ``--max-cost`` (None: it may)."""
        if self.config.max_cost is None:
            return None
        return self.halts.budget(spent, in_flight, max_item_cost)

    def take(
        self,
        now: float,
        room: int,
        chunk_size: int,
        inflight: Container[int],
        in_flight: int = 0,
        budget: tuple[float, float] | None = None,
    ) -> Taken:
        """Up to ``room`` items in chunks of ``chunk_size``: retries whose backoff is over
        first, then pending items in seq order. ``budget`` (spent, largest item cost) holds
        each item to ``--max-cost`` with ``in_flight`` items already out; the rate limit holds
        each item to ``--rate``."""
        taken = Taken()
        if self._first_taken:
            self._first_taken = set()
        if self.limits is not None:
            return self._take_limited(now, room, chunk_size, inflight, in_flight, budget, taken)
        if self.bucket is None and budget is None:
            while room > 0:
                want = min(room, chunk_size)
                if self._retry_due(now):
                    chunk = self._pop_ready(now, want)
                else:
                    chunk = self._take_pending(want, inflight)
                    taken.from_pending += len(chunk)
                    if not chunk:
                        break
                taken.chunks.append(chunk)
                room -= len(chunk)
            return taken
        chunk = []
        while room > 0:
            if budget is not None and self.budget_blocks(budget[0], in_flight, budget[1]):
                break  # every item out at the largest cost seen, plus this one, must fit
            if self.bucket is not None and not self.bucket.try_take(now):
                break
            ready = self._pop_ready(now, 1)
            if not ready:
                ready = self._take_pending(1, inflight)
                taken.from_pending += len(ready)
            if not ready:
                if self.bucket is not None:
                    self.bucket.give_back()
                break
            chunk += ready
            room -= 1
            in_flight += 1
            if len(chunk) >= chunk_size:
                taken.chunks.append(chunk)
                chunk = []
        if chunk:
            taken.chunks.append(chunk)
        return taken

    def _take_limited(
        self,
        now: float,
        room: int,
        chunk_size: int,
        inflight: Container[int],
        in_flight: int,
        budget: tuple[float, float] | None,
        taken: Taken,
    ) -> Taken:
        """:meth:`take` under ``--limit-by``: one item at a time, each only when its key may
        take it; an item of a key over its limit is set aside and the next one looked at."""
        limits = self.limits
        assert limits is not None
        limits.settle(inflight)
        bucket = self.bucket
        # Held keys open now, oldest first (looked at once a take: a blocked key stays blocked
        # within it, the time being the same).
        open_keys = deque(key for key in self._held if limits.blocked(key, now) is None)
        chunk: list[Item] = []
        while room > 0:
            if budget is not None and self.budget_blocks(budget[0], in_flight, budget[1]):
                break
            if bucket is not None and bucket.wait_time(now) > 0:
                break
            picked = self._next_allowed(now, inflight, open_keys)
            if picked is None:
                break
            item, key, from_store = picked
            limits.acquire(item.seq, key, now)
            if bucket is not None:
                bucket.try_take(now)
            taken.from_pending += from_store
            chunk.append(item)
            room -= 1
            in_flight += 1
            if len(chunk) >= chunk_size:
                taken.chunks.append(chunk)
                chunk = []
        if chunk:
            taken.chunks.append(chunk)
        return taken

    def _next_allowed(
        self, now: float, inflight: Container[int], open_keys: deque[str]
    ) -> tuple[Item, str, bool] | None:
        """The next item whose key may take it now: (item, key, read from the store); retries
        whose backoff is over first (they came before), then held items of open keys, then the
        scan."""
        limits = self.limits
        assert limits is not None
        retries = self.retries
        while retries and retries[0].ready <= now:
            retry = heapq.heappop(retries)
            key = limits.key_of(retry.item)
            wait = limits.blocked(key, now)
            if wait is None:
                return retry.item, key, False
            # Its key is over its limit: it waits for the key, the others go on.
            retry.ready = now + (KEY_FULL_RECHECK_S if wait == math.inf else max(wait, 0.001))
            heapq.heappush(retries, retry)
        held = self._held
        while open_keys:
            key = open_keys[0]
            waiting = held.get(key)
            if not waiting or limits.blocked(key, now) is not None:
                open_keys.popleft()
                continue
            item = waiting.popleft()
            if not waiting:
                del held[key]
            self._held_seqs.discard(item.seq)
            return item, key, True
        while len(self._held_seqs) < MAX_HELD:
            items = self._take_pending(1, inflight)
            if not items:
                return None
            item = items[0]
            if item.seq in self._held_seqs:
                continue  # put first (prioritize) while held: already set aside
            key = limits.key_of(item)
            if limits.blocked(key, now) is None:
                return item, key, True
            held.setdefault(key, deque()).append(item)
            self._held_seqs.add(item.seq)
        return None

    def held_by_key(self) -> dict[str, int]:
        """Items of each key waiting for its limit: set aside from the scan, or a retry whose
        backoff is over (or not) that will go out under the key."""
        out = {key: len(items) for key, items in self._held.items()}
        if self.limits is not None:
            for retry in self.retries:
                key = self.limits.key_of(retry.item)
                out[key] = out.get(key, 0) + 1
        return out

    def note_failure(self, item: Item, retry_after: float | None, now: float) -> None:
        """An attempt of ``item`` failed; with a retry-after its ``--limit-by`` key slows down."""
        if self.limits is not None and retry_after is not None:
            self.limits.retry_after(item, retry_after, now)

    def limits_view(self, inflight: Container[int], now: float) -> list[KeyLimit]:
        """The busiest keys for live_progress.json (empty without ``--limit-by``)."""
        if self.limits is None:
            return []
        self.limits.settle(inflight)
        return self.limits.view(self.held_by_key(), now)

    def _pop_ready(self, now: float, n: int) -> list[Item]:
        retries, out = self.retries, list[Item]()
        while retries and retries[0].ready <= now and len(out) < n:
            out.append(heapq.heappop(retries).item)
        return out

    def _take_pending(self, n: int, inflight: Container[int]) -> list[Item]:
        """Up to ``n`` pending items, those put first (``prioritize``) ahead, then in seq order;
        fewer only when the store has no more."""
        taken: list[Item] = []
        while self._first_on and len(taken) < n:
            first, pos = self._first, self._first_pos
            if pos < len(first):
                end = min(len(first), pos + n - len(taken))
                part = [item for item in first[pos:end] if item.seq not in inflight]
                self._first_pos = end
                self._first_taken.update(item.seq for item in part)
                taken += part
            elif not self._fetch_first(inflight):
                break
        while len(taken) < n:
            buffer, pos = self._buffer, self._pos
            if pos < len(buffer):
                part = buffer[pos : pos + n - len(taken)]
                self._pos = pos + len(part)
                taken += [item for item in part if item.seq not in inflight]
            elif self.exhausted or not self._fetch(inflight):
                break
        return taken

    def _fetch_first(self, inflight: Container[int]) -> bool:
        """The next page of the run-first queue; False (and the queue is left alone until the
        next ``prioritized``) when it holds no more pending items."""
        assert self._next_first is not None
        # Items of this queue may have finished since they went out and be staged only: the
        # store must not show them as still pending (as for a re-scan, see _fetch).
        self._before_rescan()
        rows = self._next_first(self._first_cursor, FETCH_PAGE)
        if not rows:
            self._first_on = False
            self._first, self._first_pos = [], 0
            return False
        self._first = [
            Item(seq, key, load_data(data), attempts + 1, self.batch_dir, kind)
            for _, seq, key, data, kind, attempts in rows
            if seq not in inflight
        ]
        self._first_pos = 0
        self._first_cursor = rows[-1][0]
        # The seq scan must commit before it reads any of them again (see _fetch).
        self._high = max(self._high, *(row[1] for row in rows))
        return True

    def _fetch(self, inflight: Container[int]) -> bool:
        """The next page of pending items into the buffer; False when there are no more."""
        # A page past every seq fetched so far holds only items this run never touched. A
        # re-scan (after a skip or a retry) comes back over items this run has finished:
        # the store must not show our own outcomes as still pending, so everything staged
        # is committed first. An item still running is 'pending' there too (it is marked
        # 'processing' only after a while), so it is left out of the page now, not only
        # when taken: it may finish (leave the in-flight set) before its row would come up.
        if self._cursor < self._high:
            self._before_rescan()
        rows = self._next_pending(self._cursor, FETCH_PAGE)
        if not rows:
            self.exhausted = True
            return False
        loads, batch_dir = orjson.loads, self.batch_dir
        try:
            self._buffer = [
                Item(seq, key, loads(data), attempts + 1, batch_dir, kind)
                for seq, key, data, kind, attempts in rows
                if seq not in inflight
            ]
        except orjson.JSONDecodeError:  # a page with a file name that is not UTF-8: rare, slower
            self._buffer = [
                Item(seq, key, load_data(data), attempts + 1, batch_dir, kind)
                for seq, key, data, kind, attempts in rows
                if seq not in inflight
            ]
        if self._first_taken:  # items of the run-first queue this take() handed out
            self._buffer = [item for item in self._buffer if item.seq not in self._first_taken]
        self._pos = 0
        self._cursor = rows[-1][0]
        self._high = max(self._high, self._cursor)
        return True
