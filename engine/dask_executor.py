"""The dask executor (``--executor dask``): items run on a dask.distributed cluster.

dask is an optional extra (``pip install 'batchtui[dask]'``), imported only when a run uses it;
the worker side (:mod:`.dask_worker`) needs only batchtui itself.

How it works. The engine stays the single writer of the batch directory, and the control
contract (DESIGN section 6) holds here as on the local executors: work the runner hands out
waits in the engine, in a :class:`~.handoff.Handoff`, not in dask. A dispatcher thread takes a
chunk from it only when the cluster has room (three tasks per worker thread: one running, two
waiting on its worker, so the thread never idles for a round trip through the scheduler and this
engine; never a deep queue) and submits it as one task, ``run_chunk(spec, chunk, key)``. On the
worker each item starts only through that worker process's gate (:class:`~.dask_worker.WorkerGates`),
which the engine reaches with a broadcast:

::

    runner ── submit ──▶ Handoff ── dispatcher (room on the cluster) ──▶ dask task (key)
    runner ── cancel ──▶ Handoff.cancel (still here: done)
                         └─ the rest: client.run(cancel_tokens) on every worker: queued ->
                            cancelled (a task in transit finds its slots pre-cancelled);
                            cancelled = asked - begun anywhere, when every worker answered
    worker ── outcomes event (as decided) ──▶ on_outcomes ───┐
    collector (as_completed) ──▶ each task's result ─────────┴──▶ the runner's completion queue

An item's outcome reaches the runner as it is decided, not when its chunk ends: the task hands
its outcomes over as a dask event (grouped as the local executors group them,
:mod:`.outbox`), and its result repeats them with ``returned`` for the items it refused. So a
chunk's slow item holds back none of its finished chunk-mates (the dashboard shows them, and a
kill -9 of the engine loses none of them). An outcome is handed over only for an item the
executor still owes one: the second copy of an outcome, an item reported cancelled, or
dispatched again since (a timed-out call the runner gave up on), is dropped. A chunk is never
submitted twice.

Kills. Shell items: the process group of the item, on the worker whose gate began it. A Python
call cannot be interrupted in a dask worker's thread: on the engine's own LocalCluster the worker
running it is restarted, after its gate gave up the chunk-mates (the outcomes decided so far come
back, the items not begun come back ``returned``; nothing is submitted while it restarts, and a
task lost with it all the same is put down to the restart, not to its items); on an existing
cluster ``kill`` answers False, as the thread executor does: the runner fails a timed-out item
at once and ignores its late outcome, and a skipped or stopped call runs to its end. Each item of
a task runs on its own clock (``started``, for ``--timeout``, the in-flight list and the ETA): the
first from when its worker's event saying the task began arrives, each next one from when the
event saying the one before ended arrives (it comes with the outcomes, so no message more). Time
spent waiting on the scheduler, behind another task or behind a chunk-mate is not the item's.

Failures. A worker that dies takes its tasks with it: dask reports ``KilledWorker`` (a
LocalCluster is started with ``allowed-failures=0`` so this happens at once; an existing cluster
first runs the task again on another worker, per its own setting), or the connection fails.
Items that may have begun come back as ``WorkerLost`` (transient, retried with the backoff and
``--max-attempts``); items known not to have begun come back ``returned`` (back to pending, no
attempt counted); how that is known: :meth:`.dask_ledger.Ledger.lost`. A worker that dies after
a task ended and before the engine let go of its result (gathered, then released to the
scheduler every 10 ms) loses it: dask runs the task again elsewhere (its items counted once).

Cluster. An existing one (``--scheduler``), left running, or a ``LocalCluster`` the engine starts
and closes (:mod:`.dask_cluster` connects, checks and asks it). batchtui, the ``--call`` module
(same path for a ``file.py``), the command's programs and the inputs must be reachable on every
worker; shell items run on the worker's machine, their ``logs/`` are written there, under the
same batch path. On a LocalCluster ``set_workers(n)`` scales the cluster; on an existing cluster
``--workers`` only sets the runner's window (the tasks in flight follow the cluster's threads).
On an existing cluster an engine killed -9 leaves its running items behind: the next run of
the batch kills or waits for them before they run again (:mod:`.dask_orphans`).

The parts: this module's threads (dispatcher, collector, poller) and :mod:`.dask_reaper`'s (a
LocalCluster's worker restarts) talk to dask; :mod:`.dask_ledger` keeps where each item is and
the one outcome it owes (the promise above, in one place, under one lock); :mod:`.dask_worker`
runs on the workers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Final

from .attempts import Classifier, Outcome
from .config import BatchConfig
from .dask_cluster import BROADCAST_TIMEOUT_S, DaskCluster
from .dask_ledger import Ledger, Owed, Task, lost_outcomes
from .dask_orphans import Orphans
from .dask_reaper import WorkerReaper
from .dask_verdicts import Verdicts
from .dask_worker import (
    TaskSpec,
    batch_token,
    cancel_tokens,
    kill_all_on_worker,
    kill_on_worker,
    outcomes_topic,
    run_chunk,
    started_topic,
)
from .earlyhalt import EarlyHalt
from .errors import WorkerLost
from .executors import CompletionQueue
from .handoff import Handoff
from .models import ClusterInfo
from .processors import Item, ProcessorSpec, code_digest

log = logging.getLogger("batchtui.engine.dask")

INFO_INTERVAL_S: Final = 1.0
SWEEP_AFTER_S: Final = 5.0
#: Tasks in flight per worker thread: with two, a thread idled whenever the round trip (its
#: worker, the scheduler, this engine's collector and dispatcher) outlasted one task on a busy
#: machine.
TASKS_PER_THREAD: Final = 3


class DaskExecutor:
    """Runs chunks as tasks on a dask.distributed cluster (see the module docstring)."""

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        self.spec = spec
        self.config = config
        self.completions = completions
        self.classifier = Classifier.from_config(config)
        self._key_prefix = f"batchtui-{uuid.uuid4().hex[:8]}"
        self.task = TaskSpec(
            spec_json=spec.model_dump_json(),
            timeout=config.timeout,
            log_limit=config.log_limit,
            chunked=spec.chunked,
            classifier=self.classifier,
            engine=self._key_prefix,
            max_result_bytes=config.max_result_bytes,
            code=code_digest(spec.call, spec.cwd) if spec.kind == "python" and spec.call else None,
            judged_below=config.max_attempts if config.max_failure_rate is not None else 0,
        )
        self.workers = 0
        self.dask = DaskCluster(config)
        self.handoff = Handoff()
        self.ledger = Ledger(self.handoff)
        self.verdicts = Verdicts(
            self.ledger, self.dask, completions, self._key_prefix, self.task.judged_below, self._cancel_remote
        )
        self._ac: Any = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: dict[tuple[str, int], int] = {}  # (task, index) -> seq of calls given up (abandon)
        self.lost = 0
        self._counter = itertools.count()
        self._cluster_info: ClusterInfo | None = None
        self.reaper = WorkerReaper(self)
        self.orphans = Orphans(self)
        self.shortfall: str | None = None  # what holds the run back as it starts (said once)

    @property
    def client(self) -> Any:
        """The dask client (None before :meth:`start`)."""
        return self.dask.client

    @property
    def cluster(self) -> Any:
        """The LocalCluster this engine started and owns; None on an existing cluster."""
        return self.dask.local

    @property
    def early_halt(self) -> EarlyHalt | None:
        """The halts an outcome decides, decided as the outcomes arrive here (set by the runner;
        see :mod:`.dask_verdicts`)."""
        return self.verdicts.early

    @early_halt.setter
    def early_halt(self, early: EarlyHalt | None) -> None:
        self.verdicts.set_early_halt(early)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.dask.connect()
        self.workers = self.config.workers
        try:
            if self.cluster is None and self.task.batch and self.orphans.earlier:  # before the check: .dask_orphans
                self.shortfall = self.orphans.take_batch()
            # (shell ones: killed; a worker that did not answer may be busy with such a call)
            calls_left = (bool(self.orphans.seqs) and self.spec.kind != "shell") or self.orphans.unknown
            self.dask.check(self.task, self.spec, key=f"{self._key_prefix}-probe", probe_task=not calls_left)
        except BaseException:
            self.shutdown(wait=1.0)
            raise
        self._ac = self.dask.distributed.as_completed(loop=self.client.loop, with_results=True, raise_errors=False)
        self.client.subscribe_topic(started_topic(self._key_prefix), self._on_began)
        self.client.subscribe_topic(outcomes_topic(self._key_prefix), self.verdicts.on_outcomes)
        self._refresh_info()
        threads: list[tuple[Callable[[], None], str]] = [
            (self._dispatch, "batchtui-dask-dispatcher"),
            (self._collect, "batchtui-dask-collector"),
            (self._poll, "batchtui-dask-info"),
        ]
        if self.cluster is not None and self.spec.kind != "shell":
            threads.append((self.reaper.run, "batchtui-dask-reaper"))
        for target, name in threads:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, wait: float = 5.0) -> None:
        """Nothing handed out starts any more (on an existing cluster too), then leave."""
        self._closing.set()
        self._wake.set()
        self.handoff.close(1)
        tasks = self.ledger.close()
        if self.client is not None and tasks:
            wanted = {t.key: (len(t.items), list(t.owed.values())) for t in tasks}
            self.dask.ask_all(cancel_tokens, wanted, timeout=min(wait, BROADCAST_TIMEOUT_S))
            with contextlib.suppress(Exception):
                self.client.cancel([t.future for t in tasks if t.future is not None])
            if self.spec.kind == "shell":
                self.dask.ask_all(kill_all_on_worker, self.task.cache_key, timeout=min(wait, BROADCAST_TIMEOUT_S))
        if self._ac is not None:
            self._ac.clear()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.dask.close(wait, (started_topic(self._key_prefix), outcomes_topic(self._key_prefix)))

    def send_output_to(self, batch_dir: str) -> None:
        """The batch this run holds: named in every task, so the next run finds what is left."""
        self.task = replace(self.task, batch=batch_token(batch_dir))

    # -- the Executor interface ----------------------------------------------------------------

    def submit(self, chunk: list[Item]) -> None:
        early = self.verdicts.early
        if early is None or early.admit(lambda: self.handoff.put(chunk)):
            return
        # Held back by a trip the runner has not taken in yet: back to it, never started.
        self.completions.put([Outcome(item.seq, 0, 0.0, 0.0, returned=True) for item in chunk])

    def set_workers(self, n: int) -> None:
        """LocalCluster: scale to ``n`` worker processes. Existing cluster: the window size."""
        if self.cluster is not None:
            self.cluster.scale(n)
        self.workers = n

    def cancel(self, seqs: Iterable[int]) -> list[int]:
        """The items of ``seqs`` that will never start: taken back from the hand-off, or refused
        by every worker's gate (see the module docstring)."""
        cancelled, remote = self.ledger.cancel_here(list(seqs))
        if remote:
            cancelled += self._cancel_remote(remote)
        return cancelled

    def cancel_all(self) -> list[int]:
        cancelled, remote = self.ledger.cancel_here(None)
        if remote:
            cancelled += self._cancel_remote(remote)
        return cancelled

    def started(self, seq: int) -> float | None:
        """When ``seq`` began to run, each item of a chunk by its own start (see
        :meth:`.dask_ledger.Ledger.since`); None while it waits."""
        return self.ledger.since(seq, together=self.task.chunked)

    def counts(self) -> tuple[int, int]:
        """(queued, running): running, the item each task that began runs now (all of a chunked
        callable's), at most one a worker thread (see :meth:`.dask_ledger.Ledger.counts`)."""
        queued, _ = self.handoff.counts()
        owed_queued, running = self.ledger.counts(together=self.task.chunked, threads=self._cluster_threads())
        return queued + owed_queued, running

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        """Kill ``seq`` where it runs (see the module docstring); False if it is not in a task
        here, or it is a Python call on a cluster the engine does not own (it cannot be)."""
        owing = self.ledger.owing(seq, attempt)
        if owing is None:
            return False
        task, index = owing
        if self.spec.kind == "shell":
            self.dask.broadcast(kill_on_worker, self.task.cache_key, task.key, index, seq, task.items[index].attempt)
            return True
        if self.cluster is None:
            return False
        self.reaper.put((task.key, index))
        return True

    #: What becomes of a call given up (:meth:`abandon`), and what would stop such calls.
    GIVE_UP, REMEDY = "it holds its worker's thread until it returns", "without --scheduler such calls are killed"

    def abandon(self, seq: int) -> bool | None:
        """Give up on ``seq``'s call (a Python call on a cluster this engine does not own cannot be
        stopped): it holds its worker's thread until it returns. False once such calls hold every
        thread of the cluster (the run halts); None if no task here owes ``seq``."""
        owing = self.ledger.owing(seq, None)
        if owing is None:
            return None
        self._held[(owing[0].key, owing[1])] = seq
        self.held()
        self.lost = len({key for key, _ in self._held})  # a chunked call's items hold one thread
        return self.lost < self._cluster_threads()

    def held(self) -> set[int]:
        """The items whose calls were given up and still run (a retry must wait for them)."""
        owed = set(self.ledger.owed_everywhere())
        self._held = {where: seq for where, seq in self._held.items() if where in owed}
        return set(self._held.values())

    def kill_all(self) -> int:
        owed = self.ledger.owed_everywhere()
        if self.spec.kind == "shell":
            self.dask.broadcast(kill_all_on_worker, self.task.cache_key)
        elif self.cluster is not None:
            for where in owed:
                self.reaper.put(where)
        return len(owed)

    def cluster_info(self) -> ClusterInfo | None:
        """Workers and memory of the cluster, sampled about once a second (never blocks)."""
        return self._cluster_info

    # -- what the workers say ------------------------------------------------------------------

    def _cancel_remote(self, remote: Owed) -> list[int]:
        """Cancel items of submitted tasks on every worker's gate; the seqs that will never start."""
        wanted = {key: (len(task.items), list(owed.values())) for key, (task, owed) in remote.items()}
        answers, complete = self.dask.ask_all(cancel_tokens, wanted)
        arrived: set[str] = set()
        begun: dict[str, set[int]] = {}
        for reply in answers:
            for key, (here, indexes) in reply.items():
                if here:
                    arrived.add(key)
                begun.setdefault(key, set()).update(indexes)
        cancelled, idle = self.ledger.cancelled(remote, arrived, begun, complete)
        if idle:  # nothing of them will run: their threads are free at once
            with contextlib.suppress(Exception):
                self.client.cancel(idle)
        return cancelled

    def _on_began(self, event: Any) -> None:
        """A task's worker says it began (on the client's event loop): ``(time, key)``."""
        self.ledger.began(event[1] if isinstance(event, tuple) and len(event) == 2 else None)

    # -- threads -------------------------------------------------------------------------------

    def _cluster_threads(self) -> int:
        """The cluster's worker threads (sampled about once a second), else --workers."""
        info = self._cluster_info
        return max(1, info.threads if info is not None and info.threads else self.config.workers)

    def _capacity(self) -> int:
        """Tasks in flight: TASKS_PER_THREAD per worker thread of the cluster, one running and the
        next ones waiting on its worker (behind its gate), so a thread never idles for a round trip."""
        return TASKS_PER_THREAD * self._cluster_threads()

    def _dispatch(self) -> None:
        """Take a chunk from the hand-off when a worker thread is free; submit it as one task."""
        handoff, ledger, orphans = self.handoff, self.ledger, self.orphans
        prefix, counter = self._key_prefix, self._counter

        def key_for(first: Item) -> str:
            return f"{prefix}-{first.seq}-{next(counter)}"

        while not self._closing.is_set():
            if not ledger.wait_for_room(self._capacity(), 0.2):
                continue
            try:
                chunk = handoff.take(timeout=0.2, held=orphans.blocks if orphans.holding else None)
            except TimeoutError:
                continue
            if chunk is None:
                return
            task = ledger.dispatch(chunk, key_for)
            if task is None:
                continue
            try:
                self._send(task)
            finally:
                ledger.sending_done()

    def _send(self, task: Task) -> None:
        try:
            strict = self.verdicts.strict_from()
            future = self.client.submit(run_chunk, self.task, task.items, task.key, strict, key=task.key, pure=False)
        except Exception as exc:  # the client is closed or the scheduler is gone
            self.completions.put(self._lost(self.ledger.not_sent(task), exc))
            return
        if not self.ledger.sent(task, future):  # every item was cancelled while it was being sent
            with contextlib.suppress(Exception):
                self.client.cancel([future])
            return
        future.add_done_callback(self.ledger.released)
        self._ac.add(future)
        self._wake.set()

    def _collect(self) -> None:
        """Follow the futures as they complete (their results gathered on the client's loop as
        each finishes); hand each task's outcomes to the runner."""
        ac = self._ac
        while not self._closing.is_set():
            try:
                done = ac.next_batch(block=True)
            except StopIteration:  # nothing in flight: wait for a submit
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            except Exception:
                if self._closing.is_set():
                    return
                log.exception("dask collector")
                time.sleep(0.1)
                continue
            for future, value in done:
                try:
                    self._deliver(future, value)
                except Exception:
                    if self._closing.is_set():
                        return
                    log.exception("dask collector: a task's outcomes")
            done = future = value = None  # held, a key stays wanted: dask would run it again

    def _deliver(self, future: Any, value: Any) -> None:
        """One completed future: the outcomes still owed, or (no list came back) the task lost."""
        exc: BaseException | None = None
        if not (future.status == "finished" and isinstance(value, list)):
            if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
                exc = value[1]  # (type, exception, traceback) of an erred task
            elif isinstance(value, BaseException):
                exc = value
            else:
                exc = WorkerLost(f"dask task {future.status}")
        with self.verdicts.lock:
            done = self.ledger.finished(future, value if exc is None else None)
            if done is None:
                return  # cancelled or salvaged: what it owed was settled then
            task, began, out, missing = done
            if exc is None:
                if missing:  # never: run_chunk answers for every item
                    out += self._lost(missing, WorkerLost("the dask task left items without an outcome"))
                self.verdicts.report(out, self.verdicts.held_until_result.pop(future.key, None))
                return
        self._lost_task(task, exc, began)

    def _lost_task(self, task: Task, exc: BaseException, began: bool) -> None:
        """A task that did not return: ask the live workers' gates what became of its items."""
        wanted = self.ledger.wanted(task)
        if wanted is None:
            return
        begun: set[int] = set()
        arrived = False
        killed = type(exc).__name__ == "KilledWorker"  # its worker is gone, with what it knew
        ours = killed and self.reaper.restarted_for(exc)
        if not killed:
            answers, _ = self.dask.ask_all(cancel_tokens, wanted)
            for reply in answers:
                here, indexes = reply.get(task.key, (False, []))
                arrived = arrived or here
                begun.update(indexes)
        with self.verdicts.lock:
            returned, lost = self.ledger.lost(task, arrived, begun, killed, ours, began)
            self.verdicts.report(returned + self._lost(lost, exc))

    def _poll(self) -> None:
        while not self._closing.wait(INFO_INTERVAL_S):
            self._refresh_info()
            self.orphans.refresh()
            self.ledger.wake()  # the cluster may have more threads now
            self._sweep()

    def _sweep(self) -> None:
        """Safety net: a future that erred after it had finished (its result lost, then its
        recomputation failed) is never yielded by as_completed; settle its task as lost."""
        now = time.monotonic()
        for task in self.ledger.tasks():
            if task.future is None or task.future.status not in ("error", "cancelled", "lost"):
                task.failed_at = None
            elif task.failed_at is None:
                task.failed_at = now
            elif now - task.failed_at > SWEEP_AFTER_S:
                self._deliver(task.future, WorkerLost(f"dask task {task.future.status}"))

    def _refresh_info(self) -> None:
        info = self.dask.info()
        if info is not None:
            self._cluster_info = info

    def _lost(
        self, items: list[Item], exc: BaseException | None, text: str = "", began_at: float | None = None
    ) -> list[Outcome]:
        return lost_outcomes(items, exc, self.classifier, self.dask.distributed.KilledWorker, text, began_at)


__all__ = ["DaskExecutor"]
