"""The process executor (default for Python callables): a pool of worker processes, each fed
chunks by a feeder thread in the engine (the worker processes' side is :mod:`.poolworker`).

::

    Handoff ── feeder thread (one per process) ── pipe ──▶ worker process: run_items
       ▲            │  chunk i  through shared gate i % 2      │  outcomes ("part"), "end"
       └ reclaim ◀──┘  (sent ahead: the next chunk waits       ▼
                        in the pipe, at most one)         feeder ──▶ the runner's completions

Each chunk's gate moves into memory shared with the process (:class:`~.handoff.SharedGate`), so
the runner's cancel reaches items not started there, and a kill unwinds the one running item.
An outcome that may halt the batch (a fatal error; any failure under --max-failure-rate) is
answered "verdict" once the feeder has handed it on: the process starts nothing before (see
:class:`.poolworker._Inbox`), so a halt it decides stops that process's next item too.
The worker processes run :mod:`.poolworker`, a lean module (no settings model, no command line):
their start-up is the first result's wait.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from . import tasklimit, warmstart
from .errors import NO_THREAD, NoRoomToStart
from .executors import (
    KILL_ESCALATE_S,
    MAX_CHUNK_SLOTS,
    CompletionQueue,
    WorkerInitError,
    _HandoffExecutor,
    _salvage,
)
from .handoff import RUNNING, Chunk, SharedGate
from .poolworker import KILL_SIGNAL, VERDICT, VERDICT_SUCCESSES_FREE, WorkerSettings, WorkerSpec

if TYPE_CHECKING:
    import multiprocessing.connection

    from .config import BatchConfig
    from .processors import ProcessorSpec

log = logging.getLogger("batchtui.engine")


#: Chunks a feeder keeps sent ahead to its worker process: with two, the worker goes from one
#: chunk to the next without waiting for the round trip through the engine's feeder thread.
AHEAD: Final = 2
#: A chunk sent ahead that has waited this long behind a longer item goes back to the hand-off
#: (its items not started), where any worker may take it.
AHEAD_HOLD_S: Final = 0.05
#: A chunk is sent ahead only if its message is at most this big, or a quarter of its
#: socket's send buffer where that is more (:func:`_ahead_limit`): it waits in the socket, whose
#: send must never block (the worker's outcomes could then block on the feeder, blocked on it).
AHEAD_MAX_BYTES: Final = 4096


class PoolWorkerInitError(WorkerInitError):
    """A worker process could not build the processor: what it said, and the way out."""

    hint = "each worker process imports the callable itself: fix what fails there, then resume the batch"

    def describe(self) -> str:
        return f"worker start failed: {self}\n  {self.hint}"


class PoolWorkerLogError(PoolWorkerInitError):
    """A worker process could not open the batch's ``workers.log`` (see .capture)."""

    hint = "a worker's output goes to workers.log in the batch folder: make room there (or fix it), then resume"


@dataclass(slots=True)
class _Sent:
    """A chunk sent to a worker process and not yet ended there."""

    index: int  # of the slot's gate it runs through
    gate: SharedGate
    chunk: Chunk
    at: float  # time.monotonic() it was sent
    reported: set[int] = field(default_factory=set)  # seqs whose outcomes came
    reclaimed: bool = False


@dataclass
class _Slot:
    proc: Any
    conn: multiprocessing.connection.Connection
    gates: list[SharedGate]
    thread: threading.Thread | None = None
    sent: collections.deque[_Sent] = field(default_factory=collections.deque)  # oldest first: it runs
    next_gate: int = 0  # the gates are used in turn (the process counts alike)
    ahead_max: int = AHEAD_MAX_BYTES  # the biggest chunk message sent ahead (_ahead_limit)
    kills: dict[tuple[int, int], float] = field(default_factory=dict)  # (gate, index) -> soft kill sent at


class ProcessExecutor(_HandoffExecutor):
    """A pool of worker processes (default for Python callables: no GIL between items).

    One feeder thread per process takes a chunk from the hand-off, moves its gate into the
    memory it shares with its process (:class:`SharedGate`) and forwards the outcomes as the
    process reports them. It keeps a second chunk sent ahead (through a second shared gate),
    so the process goes from one chunk to the next without waiting for this thread, as a
    ``multiprocessing.Pool`` worker does; a chunk sent ahead that waits behind a slow item is
    taken back (:meth:`Handoff.reclaim`) for any worker. A worker that dies (SIGKILL, out of memory, a segfault in a C
    extension) is noticed at once: its started items come back as ``WorkerLost`` (transient,
    retried), those that had not started go back to pending, and the process is replaced.
    ``kill(seq)`` unwinds the one item (:class:`ItemKilled`), which is how timeouts, skips and
    stops of running Python items work; its chunk-mates are untouched.
    """

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        super().__init__(spec, config, completions)
        import multiprocessing  # only the process executor pays for it (a shell run never does)
        from multiprocessing.reduction import ForkingPickler

        self.ctx = multiprocessing.get_context("spawn")
        self._dumps = ForkingPickler.dumps
        self.slots: list[_Slot] = []
        self._closing = False
        self._launched: list[_Slot] = []  # started by prelaunch(), not yet waited for
        cs = config.chunk_size
        self._capacity = max(MAX_CHUNK_SLOTS, cs if isinstance(cs, int) else 0, 10_000 if spec.chunked else 0)
        self._settings = WorkerSettings(
            config.timeout,
            config.log_limit,
            config.max_result_bytes,
            self.classifier,
            failures_judged_below=config.max_attempts if config.max_failure_rate is not None else 0,
        )
        self._worker_spec = WorkerSpec(spec.kind, spec.command, spec.call, spec.cwd, spec.chunked)

    def send_output_to(self, batch_dir: str) -> None:
        """The workers started from now on write their output to this batch's logs (see
        .capture), not to the engine's terminal."""
        self._settings = dataclasses.replace(self._settings, batch_dir=batch_dir)

    def _spawn(self) -> _Slot:
        return self._ready(self._launch())

    def _launch(self) -> _Slot:
        """Start a worker process, or adopt one started ahead (.warmstart), and send it the
        run's spec and settings; it is usable once :meth:`_ready` has heard from it."""
        go = (self._worker_spec, self._settings)
        warm = warmstart.take(self._capacity)
        if warm is not None:
            proc, conn, parts = warm
            try:
                conn.send(go)
                return _Slot(proc, conn, [SharedGate(*p) for p in parts], ahead_max=_ahead_limit(conn))
            except (OSError, ValueError):  # it died waiting: start one of our own
                proc.kill()
                conn.close()
        proc, conn, parts = warmstart.launch(self.ctx, self._capacity, AHEAD)
        conn.send(go)
        return _Slot(proc, conn, [SharedGate(*p) for p in parts], ahead_max=_ahead_limit(conn))

    def _ready(self, slot: _Slot) -> _Slot:
        """Wait for a launched worker to have built its processor (WorkerInitError if it could not)."""
        try:
            kind, detail = slot.conn.recv()
        except EOFError:
            slot.proc.join(1)
            kind, detail = "init_error", f"worker process exited with {slot.proc.exitcode}"
        if kind != "ready":
            slot.proc.join(1)
            raise (PoolWorkerLogError if kind == "log_error" else PoolWorkerInitError)(str(detail))
        return slot

    def prelaunch(self) -> None:
        """Start the worker processes now, without waiting for them: the runner calls this
        before it opens the store and writes the batch's files, so each process's start-up (an
        interpreter, the imports, the processor) overlaps that work; :meth:`start` waits."""
        with self._lock:
            # Those that fit the limits (start() says why fewer, as set_workers does).
            want, _ = self._fitting(self.config.workers, "process", tasklimit.POOL_WORKER_TASKS)
            more, _ = self._launch_some(want - len(self._launched))
            self._launched += more

    def _launch_some(self, count: int) -> tuple[list[_Slot], str | None]:
        """Up to ``count`` worker processes launched, and why fewer: the system had no room
        for one more (a process limit, memory, descriptors), said instead of a traceback."""
        slots: list[_Slot] = []
        for _ in range(count):
            try:
                slots.append(self._launch())
            except OSError as exc:
                room = NoRoomToStart.of(exc)
                if room is None:
                    raise
                # Out of processes says which limit; out of descriptors or memory, not that one.
                lacks = NO_THREAD if exc.errno == errno.EAGAIN else room.lacks
                return slots, f"cannot start a worker process ({exc.strerror or exc}: {lacks})"
        return slots, None

    def start(self) -> None:
        self.set_workers(self.config.workers)

    def _feed(self, slot: _Slot) -> None:
        """Keep ``slot``'s process fed (up to AHEAD chunks sent) and forward its outcomes."""
        handoff, put = self.handoff, self._report
        leaving = too_big = False
        while True:
            try:
                while not leaving and len(slot.sent) < (1 if too_big else AHEAD):
                    try:  # blocks only while the process has nothing to do
                        chunk = handoff.take(None if not slot.sent else 0)
                    except TimeoutError:
                        break
                    if chunk is None:
                        leaving = True
                    elif not self._send(slot, chunk):
                        too_big = True  # no more sent ahead until the running chunk ends
                if not slot.sent:
                    if not leaving:
                        continue
                    with contextlib.suppress(OSError, ValueError):
                        slot.conn.send(None)
                    slot.proc.join(2)
                    return
                self._unblock(slot)
                if not slot.conn.poll(AHEAD_HOLD_S if len(slot.sent) > 1 else 0.25):
                    self._escalate(slot)
                    continue
                # Outcomes ("part"), or the chunk's end with its last ones ("end").
                kind, got, judge = slot.conn.recv()
                head = slot.sent[0]  # the process runs its chunks in the order they were sent
                if got:
                    head.reported.update([o.seq for o in got])
                    put(got)  # a halt it decides cancels every item not started, then:
                    if judge:  # the process may go on (see poolworker._Inbox)
                        early = self.early_halt
                        free = early is None or not early.judges_successes()
                        slot.conn.send(VERDICT_SUCCESSES_FREE if free else VERDICT)
                if kind == "end":
                    slot.sent.popleft()
                    too_big = False
                    for key in [k for k in slot.kills if k[0] == head.index]:
                        del slot.kills[key]
                    handoff.done(head.chunk)
            except (EOFError, OSError, BrokenPipeError) as exc:
                # Its pipe broke as it died: its exit follows (1 s was short on a loaded machine,
                # and the death read "still running: ConnectionResetError").
                slot.proc.join(5)
                code = slot.proc.exitcode
                text = f"worker process died ({_exit_text(code)})"
                # The pipe's end (EOF, a reset) is how its death shows here: the exit says it
                # all ("exit 3: ConnectionResetError: [Errno 104]..." was noise). Another error
                # of the pipe, with the process still there, is told.
                said = exc if code is None and not isinstance(exc, EOFError) else None
                for sent in slot.sent:
                    put(_salvage(sent.chunk, sent.reported, said, text))
                    handoff.done(sent.chunk)
                slot.sent.clear()
                slot.kills.clear()
                if self._closing:
                    return
                try:  # replace the dead process and go on
                    fresh = self._spawn()
                except Exception:
                    log.exception("could not replace a dead pool worker")
                    return
                slot.proc, slot.conn, slot.gates = fresh.proc, fresh.conn, fresh.gates
                slot.next_gate, slot.ahead_max = 0, fresh.ahead_max

    def _send(self, slot: _Slot, chunk: Chunk) -> bool:
        """Send ``chunk`` through ``slot``'s next gate (no chunk in flight uses it: they are
        consecutive); False when it is too big to be sent ahead (it goes back to the hand-off,
        first in line, pickled: the feeder that takes it sends these bytes)."""
        index = slot.next_gate
        gate = slot.gates[index]
        if len(chunk.items) > gate.capacity:  # never: the runner's chunks are smaller
            raise ValueError(f"chunk of {len(chunk.items)} over {gate.capacity}")
        message = chunk.pickled if chunk.pickled is not None else bytes(self._dumps(chunk.items))
        if slot.sent and len(message) > slot.ahead_max:
            chunk.pickled = message
            self.handoff.put_front(chunk)
            return False
        if not chunk.gate.move_to(gate):
            self.handoff.done(chunk)  # every item was cancelled before it was sent
            return True
        slot.sent.append(_Sent(index, gate, chunk, time.monotonic()))
        slot.next_gate = (index + 1) % AHEAD
        slot.conn.send_bytes(message)
        return True

    def _unblock(self, slot: _Slot) -> None:
        """A chunk sent ahead that waits behind a longer item: its items not started go back to
        the hand-off, for any worker (the process skips them: they are cancelled in its gate)."""
        if len(slot.sent) < 2:
            return
        ahead = slot.sent[1]
        if not ahead.reclaimed and time.monotonic() - ahead.at >= AHEAD_HOLD_S:
            ahead.reclaimed = True
            self.handoff.reclaim(ahead.chunk)

    def _escalate(self, slot: _Slot) -> None:
        """An item asked to die that has not unwound in KILL_ESCALATE_S: kill its process."""
        now = time.monotonic()
        for (gate, index), sent in list(slot.kills.items()):
            if slot.gates[gate].state(index) != RUNNING:
                del slot.kills[gate, index]
            elif now - sent >= KILL_ESCALATE_S:
                log.warning("an item did not unwind %.0f s after its kill: killing its worker process", now - sent)
                with contextlib.suppress(OSError):
                    os.kill(slot.proc.pid, signal.SIGKILL)
                slot.kills.clear()

    def set_workers(self, n: int) -> None:
        with self._lock:
            asked = n
            n, note = self._fitting(n, "process", tasklimit.POOL_WORKER_TASKS)
            # Started together, then waited for: each process spends its start-up (an interpreter,
            # the imports, the processor) alongside the others, not after them.
            want = max(0, n - self.workers)
            launched, self._launched = self._launched[:want], self._launched[want:]
            more, refused = self._launch_some(want - len(launched))
            launched += more
            if refused:
                note = refused
                if not launched and not self.workers:
                    raise WorkerInitError(f"0 of {asked} workers started: {refused}")
            try:
                for slot in launched:
                    self._ready(slot)
            except BaseException:
                for slot in launched:
                    if slot.proc.is_alive():
                        slot.proc.kill()
                    slot.proc.join(1)
                raise
            for slot in launched:
                slot.thread = threading.Thread(target=self._feed, args=(slot,), daemon=True, name="batchtui-feeder")
                slot.thread.start()
                self.slots.append(slot)
                self.workers += 1
            self.shortfall = (
                f"{self.workers} of {asked} workers started: {note}" if note and self.workers < asked else None
            )
            if self.workers > n:
                self.handoff.retire(self.workers - n)
                self.workers = n

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        for slot in self.slots:
            for sent in list(slot.sent):  # a reclaimed item may be in two chunks: it runs in one
                for index, item in enumerate(sent.chunk.items):
                    if item.seq == seq and (attempt is None or item.attempt == attempt):
                        if sent.gate.request_kill(index):
                            slot.kills.setdefault((sent.index, index), time.monotonic())
                            with contextlib.suppress(OSError):
                                os.kill(slot.proc.pid, KILL_SIGNAL)
                            return True
                        break
        return False

    def shutdown(self, wait: float = 5.0) -> None:
        self._closing = True
        with self._lock:
            unused, self._launched = self._launched, []
        for slot in unused:  # started by prelaunch(), never put to work (the run ended first)
            slot.proc.kill()
            slot.proc.join(1)
            slot.conn.close()
        self.handoff.cancel_all()  # the run is over: nothing still queued may start
        self.handoff.close(len(self.slots))
        deadline = time.monotonic() + wait
        for slot in self.slots:
            if slot.thread:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(1)


def _ahead_limit(conn: multiprocessing.connection.Connection) -> int:
    """The biggest chunk message sent ahead through ``conn``: a quarter of its socket's send
    buffer, at least :data:`AHEAD_MAX_BYTES`. A chunk sent ahead is the only thing waiting in
    that direction besides a verdict or two of a few bytes (the process reads the next chunk
    as soon as it ends one), and a unix stream socket takes a write of up to half its buffer
    when nothing else waits in it, so the send never blocks. Linux: 212,992 bytes, so chunks
    up to 53,248 go ahead; 256 quick items of a lines file pickle to about 9.3 KB, over 4,096,
    and each such chunk went back to the hand-off unsent, its worker idle for a round trip
    through its feeder. macOS gives a socket pair 8,192 bytes: 4,096 there, as before."""
    try:
        with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except OSError:
        return AHEAD_MAX_BYTES
    return max(AHEAD_MAX_BYTES, size // 4)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"
