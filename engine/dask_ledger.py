"""The dask executor's ledger: where each item handed to it is, and the one outcome it owes.

An item handed to the dask executor is in one place at a time: waiting in the executor's
:class:`~.handoff.Handoff`, or owed by one submitted :class:`Task` (a chunk run as one dask
task). The ledger holds both under one lock, and every change of place is one of its methods,
so the executor's promise is kept and read here: each item handed out gets exactly one outcome
or is reported cancelled, never both.

- Hand-over: a chunk leaves the hand-off and becomes a task's in one step (:meth:`dispatch`),
  so a cancel finds each item in one place or the other.
- Outcomes: the first copy of an item's outcome settles it (:meth:`take`, whether it came
  streamed or in its task's result); a second copy, or the outcome of an item cancelled or
  dispatched again since (a timed-out call the runner gave up on), is dropped.
- Cancels and losses: what the workers' gates answered decides which items never start
  (:meth:`cancelled`), and what becomes of the items of a task that did not return
  (:meth:`lost`, :meth:`salvaged`).
- Pacing: a task holds a worker thread until its future is done (the dispatcher waits for
  room), and nothing is submitted while a worker is restarted (:meth:`hold`).

The executor (:mod:`.dask_executor`) talks to dask, always outside this lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .attempts import Classifier, Outcome
from .errors import WorkerLost, classify
from .handoff import CANCELLED, QUEUED, RUNNING, Chunk, Handoff
from .processors import Item


@dataclass(slots=True, eq=False)
class Task:
    """A chunk submitted as one dask task, and the items it still owes an outcome for."""

    key: str
    items: list[Item]
    owed: dict[int, int] = field(default_factory=dict)  # seq -> index in items
    future: Any = None
    busy: bool = True  # it holds a worker thread (until its future is done)
    failed_at: float | None = None
    #: When the item it runs now began (the engine's monotonic clock): when the task said it
    #: began, then when its worker said the items before ``current`` had ended.
    since: float | None = None
    current: int = 0  # the items before this index ended (as its worker said): none runs now
    refused: set[int] | None = None  # indexes cancelled before they began (no time spent there)


#: Per task key: the task and some of the items it owes (seq -> index).
Owed = dict[str, tuple[Task, dict[int, int]]]


class Ledger:
    """The items handed to the dask executor: in the hand-off, or owed by a task (see above)."""

    def __init__(self, handoff: Handoff) -> None:
        self.handoff = handoff
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a task ended, a restart ended, or more threads
        self._tasks: dict[str, Task] = {}
        self._by_seq: dict[int, Task] = {}  # the latest dispatch of each seq still owed
        self._began: set[str] = set()  # tasks that said they began (an event from their worker)
        self._unproven: set[int] = set()  # items once given back after a worker death, unproven
        self._busy = 0  # tasks holding a worker thread (one running, the others waiting there)
        self._holding = 0  # restarts under way: nothing is submitted meanwhile
        self._sending = 0  # tasks being submitted now

    # -- pacing --------------------------------------------------------------------------------

    def wait_for_room(self, capacity: int, timeout: float) -> bool:
        """True if a task may go out now (fewer than ``capacity`` hold a worker thread, no
        restart under way); else wait up to ``timeout`` for a change and return False."""
        with self._room:
            if self._holding or self._busy >= capacity:
                self._room.wait(timeout)
                return False
            return True

    def wake(self) -> None:
        """The capacity may have grown (more threads on the cluster)."""
        with self._room:
            self._room.notify_all()

    def hold(self) -> None:
        """A worker restart begins: nothing more goes out, and what is going out now is out."""
        with self._room:
            self._holding += 1
            while self._sending:  # a task going out now may land on the worker restarted
                self._room.wait(0.1)

    def unhold(self) -> None:
        with self._room:
            self._holding -= 1
            self._room.notify_all()

    # -- hand-over -----------------------------------------------------------------------------

    def dispatch(self, chunk: Chunk, key_for: Callable[[Item], str]) -> Task | None:
        """``chunk``, taken from the hand-off, becomes a task (key ``key_for(its first item)``)
        of its items not cancelled meanwhile. None if none is left, or a restart began meanwhile
        (the chunk goes back to the front of the hand-off). The caller submits the task, then
        calls :meth:`sent` or :meth:`not_sent`, and :meth:`sending_done`."""
        handoff = self.handoff
        with self._lock:
            if self._holding:
                handoff.put_front(chunk)
                return None
            # From here on the hand-off forgets the chunk: what began to be sent is the task's.
            sent = [item for i, item in enumerate(chunk.items) if chunk.gate.begin(i)]
            handoff.done(chunk)
            if not sent:
                return None
            task = Task(key_for(sent[0]), sent)
            for index, item in enumerate(sent):
                old = self._by_seq.get(item.seq)
                if old is not None:
                    old.owed.pop(item.seq, None)  # a dispatch the runner gave up on
                task.owed[item.seq] = index
                self._by_seq[item.seq] = task
            self._tasks[task.key] = task
            self._busy += 1
            self._sending += 1
            return task

    def sent(self, task: Task, future: Any) -> bool:
        """``task`` went out as ``future``; False if all it held was cancelled meanwhile."""
        with self._lock:
            tracked = self._tasks.get(task.key) is task
            if tracked:
                task.future = future
            return tracked

    def not_sent(self, task: Task) -> list[Item]:
        """Submitting ``task`` failed: the items it owed (settled: the caller fails them)."""
        with self._lock:
            return self._settle(task)

    def sending_done(self) -> None:
        with self._room:
            self._sending -= 1
            self._room.notify_all()

    # -- what the runner asks ------------------------------------------------------------------

    def cancel_here(self, seqs: list[int] | None) -> tuple[list[int], Owed]:
        """Take ``seqs`` (None: every item) back from the hand-off: those cancelled there, and
        those that tasks owe (their workers' gates must be asked)."""
        with self._lock:
            if seqs is None:
                cancelled = self.handoff.cancel_all()
                seqs = list(self._by_seq)
            else:
                cancelled = self.handoff.cancel(seqs)
            remote: Owed = {}
            for seq in seqs:
                task = self._by_seq.get(seq)
                if task is not None:
                    remote.setdefault(task.key, (task, {}))[1][seq] = task.owed[seq]
            return cancelled, remote

    def cancelled(
        self, remote: Owed, arrived: set[str], begun: dict[str, set[int]], complete: bool
    ) -> tuple[list[int], list[Any]]:
        """The gates' answers to a cancel of ``remote``: the seqs that will never start (settled),
        and the futures of tasks left with nothing to run (their threads are free at once)."""
        cancelled: list[int] = []
        idle: list[Any] = []
        with self._lock:
            for key, (task, seqs) in remote.items():
                # A task no live worker has seen is in transit (refused everywhere), unless some
                # worker did not answer or it already ended (its outcomes or its loss will come).
                sure = key in arrived or (complete and not (task.future is not None and task.future.done()))
                if not sure:
                    continue
                for seq in seqs:
                    index = task.owed.get(seq)
                    if index is not None and index not in begun.get(key, ()) and self._by_seq.get(seq) is task:
                        cancelled.append(seq)
                        self._forget(task, seq)
                        if task.refused is None:
                            task.refused = set()
                        task.refused.add(index)
                if not task.owed and self._drop(task) and task.future is not None:
                    idle.append(task.future)
        return cancelled, idle

    def since(self, seq: int, *, together: bool = False) -> float | None:
        """When ``seq`` began to run (None: it is not running, or not owed). A task runs its items
        one after another: the item it runs now is the first at or after ``current`` not refused,
        and it began when the end of the one before it was heard of (a few milliseconds late, so
        its --timeout is never cut short), or when the task said it began; the items behind it have
        not begun. An item given up on (dispatched again) stays the one its task runs until its
        worker says it ended. ``together``: a chunked callable's items began all at once."""
        with self._lock:
            task = self._by_seq.get(seq)
            if task is None or task.since is None:
                return None
            if together:
                return task.since
            index, at, refused = task.owed[seq], task.current, task.refused
            while at < index and refused is not None and at in refused:
                at += 1
            return task.since if at == index else None

    def counts(self, *, together: bool = False, threads: int | None = None) -> tuple[int, int]:
        """(queued, running) of the items tasks owe. A task that began runs its items one at a
        time (``together``: a chunked callable's, all at once): one of those it owes runs, the
        others wait behind it in the task (or have ended, their outcomes on the way). One at a
        time, no more run than the cluster's worker ``threads``: a task that ended on its worker,
        its end not heard of yet, is still owing while the thread has begun the next."""
        queued = running = 0
        with self._lock:
            for task in self._tasks.values():
                owed = len(task.owed)
                now = 0 if task.since is None else owed if together else min(1, owed)
                running += now
                queued += owed - now
        if threads is not None and not together and running > threads:
            running = threads
        return queued, running

    def has(self, key: str) -> bool:
        """Whether task ``key`` is still on the cluster (its result not yet delivered)."""
        with self._lock:
            return key in self._tasks

    def owed(self) -> int:
        """How many items the tasks on the cluster owe an outcome."""
        with self._lock:
            return len(self._by_seq)

    def owing(self, seq: int, attempt: int | None) -> tuple[Task, int] | None:
        """The task that owes ``seq`` (that attempt, if given) and its index there."""
        with self._lock:
            task = self._by_seq.get(seq)
            if task is None:
                return None
            index = task.owed[seq]
            if attempt is not None and task.items[index].attempt != attempt:
                return None
            return task, index

    def owed_everywhere(self) -> list[tuple[str, int]]:
        """(task key, index) of every item owed."""
        with self._lock:
            return [(task.key, index) for task in self._tasks.values() for index in task.owed.values()]

    def tasks(self) -> list[Task]:
        with self._lock:
            return list(self._tasks.values())

    def close(self) -> list[Task]:
        """The executor shuts down: forget every task; the ones that were followed."""
        with self._room:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            self._by_seq.clear()
            self._busy = 0
            self._room.notify_all()
        return tasks

    # -- outcomes ------------------------------------------------------------------------------

    def began(self, key: Any) -> None:
        """Task ``key``'s worker says it began (on the client's event loop: no lock taken).

        Its time is when the event arrives: a few milliseconds late, so the --timeout of its first
        item (which runs from there) is never cut short, and time waiting behind another task is
        not counted. Each later item's clock starts when the end of the one before is heard of
        (:meth:`take`)."""
        task = self._tasks.get(key) if isinstance(key, str) else None
        if task is not None:
            self._began.add(task.key)
            if task.since is None:
                task.since = time.monotonic()

    def take(self, key: Any, outcomes: list[Outcome], ended: int | None = None) -> list[Outcome]:
        """Outcomes task ``key`` handed over before it ended: those it still owes (settled).
        ``ended``: its items before this index have ended (its worker says so with each group,
        also of outcomes too large to stream); without it, read from the outcomes it owed. The
        next item began then (:meth:`since`)."""
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                return []
            if ended is None:
                owed = task.owed
                ended = 1 + max((owed[o.seq] for o in outcomes if o.seq in owed), default=-1)
            if ended > task.current:
                task.current = ended
                task.since = time.monotonic()
            return self._take(task, outcomes)

    def released(self, future: Any) -> None:
        """The scheduler says ``future``'s task ended: its worker thread is free (before its
        result is gathered: the next task goes out a round trip sooner)."""
        with self._room:
            task = self._tasks.get(future.key)
            if task is not None and task.future is future:
                self._release(task)

    def finished(
        self, future: Any, outcomes: list[Outcome] | None
    ) -> tuple[Task, bool, list[Outcome], list[Item]] | None:
        """``future`` completed: None if its task is no longer followed (cancelled, salvaged:
        what it owed was settled then). Else the task, whether it said it began, and, if it
        returned ``outcomes``, those still owed and the items left without one (all settled);
        if it did not, nothing is settled yet (see :meth:`lost`)."""
        with self._lock:
            task = self._tasks.get(future.key)
            if task is None or task.future is not future:
                return None
            began = task.key in self._began
            if outcomes is None:
                self._drop(task)
                return task, began, [], []
            out = self._take(task, outcomes)
            return task, began, out, self._settle(task)

    def wanted(self, task: Task) -> dict[str, tuple[int, list[int]]] | None:
        """What to ask the gates of ``task``, which did not return; None if it owes nothing."""
        with self._lock:
            if not task.owed:
                return None
            return {task.key: (len(task.items), list(task.owed.values()))}

    def lost(
        self, task: Task, arrived: bool, begun: set[int], killed: bool, ours: bool, began: bool
    ) -> tuple[list[Outcome], list[Item]]:
        """``task`` did not return: ``returned`` outcomes for the items it owed that never
        began, and the items lost (all settled). ``arrived``/``begun``: what the live gates said; ``killed``: its worker
        died, and what its gate knew with it; ``ours``: in a restart of ours; ``began``: it said
        it began (a dask event).

        The items of a task that never said it began were waiting behind another on the dead
        worker, and come back ``returned``, but only once per item (the event may have died in
        the worker's send buffer: a call that kills its worker as it starts is then counted the
        next time). The items of a task that began and whose outcomes had not arrived are lost:
        the running one, and at most its chunk-mates behind it (a chunk is about 50 ms of work,
        one item for slower items). After other losses (a broken connection) the live workers'
        gates were asked: what none of them began comes back ``returned``."""
        returned: list[Item] = []
        lost: list[Item] = []
        with self._lock:
            # A task that never said it began was waiting behind another on the dead worker. Its
            # event could still have been in the dead worker's send buffer, so an item is given
            # back unproven once: the next time it fails (a call that kills its worker at once
            # is not retried forever without counting).
            unproven = killed and not began
            for seq, index in list(task.owed.items()):
                if self._by_seq.get(seq) is task:
                    item = task.items[index]
                    if (arrived and index not in begun) or ours:
                        returned.append(item)  # never began, or caught in a restart of ours
                    elif unproven and seq not in self._unproven:
                        self._unproven.add(seq)
                        returned.append(item)
                    else:
                        lost.append(item)
                self._forget(task, seq)
        now = time.time()
        return [Outcome(it.seq, it.attempt, now, 0.0, returned=True) for it in returned], lost

    def sizes(self) -> dict[str, int]:
        """Chunk length per task key."""
        with self._lock:
            return {key: len(task.items) for key, task in self._tasks.items()}

    def salvaged(self, key: str, reply: Any) -> tuple[list[Outcome], list[Item], Any, float | None] | None:
        """A worker's gate answered ``reply`` to a salvage of task ``key`` before its restart
        (:func:`~.dask_worker.salvage_tasks`; not a dict: it did not answer, so everything it
        held may have begun). None if the task is no longer followed; else the outcomes still
        owed with ``returned`` ones for the items that never began, the items lost (they may
        have begun: their worker is restarted), its future to cancel, and when the item it ran
        began (``time.time()`` on the worker; None: not known)."""
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                return None
            self._drop(task)
            outcomes: list[Outcome] = []
            began_at: float | None = None
            if isinstance(reply, dict):
                arrived, states, outcomes, began_at = reply.get(key, (False, b"", [], None))
            else:
                arrived, states = True, bytes([RUNNING]) * len(task.items)
            out = self._take(task, outcomes)
            now = time.time()
            lost: list[Item] = []
            left = [(index, task.items[index]) for index in task.owed.values()]
            self._settle(task)
            for index, item in left:
                state = states[index] if arrived else QUEUED
                if state in (QUEUED, CANCELLED):
                    out.append(Outcome(item.seq, item.attempt, now, 0.0, returned=True))
                else:
                    lost.append(item)
            return out, lost, task.future, began_at or None

    # -- the bookkeeping (lock held) -----------------------------------------------------------

    def _take(self, task: Task, outcomes: list[Outcome]) -> list[Outcome]:
        """Those of ``outcomes`` that ``task`` still owes the runner (now settled)."""
        by_seq, owed = self._by_seq, task.owed
        out = [o for o in outcomes if o.seq in owed and by_seq.get(o.seq) is task]
        for o in out:
            self._forget(task, o.seq)
        return out

    def _settle(self, task: Task) -> list[Item]:
        """Stop following ``task``; the items it still owed."""
        self._drop(task)
        owed = [task.items[i] for i in task.owed.values()]
        for item in owed:
            self._forget(task, item.seq)
        return owed

    def _drop(self, task: Task) -> bool:
        """Stop following ``task`` (what it owes is settled by the caller); False if already."""
        if self._tasks.get(task.key) is not task:
            return False
        del self._tasks[task.key]
        self._began.discard(task.key)
        self._release(task)
        return True

    def _release(self, task: Task) -> None:
        if task.busy:
            task.busy = False
            self._busy -= 1
            self._room.notify()

    def _forget(self, task: Task, seq: int) -> None:
        task.owed.pop(seq, None)
        if self._by_seq.get(seq) is task:
            del self._by_seq[seq]


def lost_outcomes(
    items: list[Item],
    exc: BaseException | None,
    classifier: Classifier,
    killed_worker: type,
    text: str = "",
    began_at: float | None = None,
) -> list[Outcome]:
    """Outcomes for items whose task did not return: a lost worker (``killed_worker``, a broken
    connection, a cancelled future) is transient; another error is classified as the item's.
    ``began_at``: when they began (``time.time()``), so the attempt lasted until now (a killed
    item's time is its own: the report, the ETA); else not known, a zero duration."""
    if not items:
        return []
    if exc is None or isinstance(exc, (killed_worker, OSError, TimeoutError)) or _is_cancelled(exc):
        info = classify(WorkerLost(text or _lost_text(exc)))
    else:
        info = classifier(exc)
    now = time.time()
    started = now if began_at is None else min(began_at, now)
    return [Outcome(it.seq, it.attempt, started, now - started, error=info) for it in items]


def _lost_text(exc: BaseException | None) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        worker = getattr(getattr(exc, "last_worker", None), "address", None) or "a worker"
        return f"dask worker {worker} died while running the item ({name})"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"dask worker lost: {name}" + (f": {first}" if first else "")


def _is_cancelled(exc: BaseException) -> bool:
    return any(cls.__name__ in ("CancelledError", "FutureCancelledError") for cls in type(exc).__mro__)
