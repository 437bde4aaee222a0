"""The entry module of a process-pool worker (:mod:`.pool`): build the processor once, then run
the chunks its engine sends, reporting outcomes as they are decided.

A worker is a fresh interpreter (the spawn start method), so what this module imports is the
wait for the run's first result: only what running items needs (:mod:`.attempts`,
:mod:`.callables`, :mod:`.handoff`), never a settings model (pydantic) nor the command line
(click). tests/test_startup.py holds it to that.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from . import capture
from .attempts import Classifier, Outcome, RoomWait, may_halt, run_items
from .callables import build_processor
from .handoff import ItemKilled, SharedGate
from .reaper import die_with_parent
from .warmstart import STARTING_BLOCKED

if TYPE_CHECKING:
    import multiprocessing.connection

#: The signal that asks a worker process to unwind one running item (:meth:`SharedGate.on_signal`).
KILL_SIGNAL: Final = signal.SIGUSR1
#: The engine's answer to a part sent with ``judge`` set: it has taken those outcomes in, and
#: a halt they decide has cancelled every item not started (see :class:`_Inbox`).
VERDICT: Final = "verdict"
#: The verdict, and word that successes need none (:data:`VERDICT` says they do): no success
#: can cross the failure rate's limit now (see EarlyHalt.judges_successes).
VERDICT_SUCCESSES_FREE: Final = "verdict; successes free"


class _Inbox:
    """The worker's end of the pipe from its engine: chunks, the leave (None), and verdicts.

    An outcome that may halt the batch (a fatal error; any failure when a failure rate is
    watched) is sent with ``judge`` set, and the worker starts nothing more until the engine's
    feeder has taken it in and answered :data:`VERDICT`: by then a halt it decided has
    cancelled every item not started (in the shared gates), so the worker's next ``begin``
    says no. Without the wait the worker went straight on to its next item while the outcome
    was on its way, and a halt overshot by one item per worker (a fatal error with one worker:
    two items ran). Chunks sent ahead meanwhile are kept for :meth:`recv`."""

    __slots__ = ("_conn", "_early")

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn
        self._early: collections.deque[Any] = collections.deque()

    def recv(self) -> Any:
        return self._early.popleft() if self._early else self._conn.recv()

    def await_verdict(self) -> str:
        """Block until the engine answers the part just sent, and return the answer
        (EOFError: the engine is gone)."""
        while True:
            got = self._conn.recv()
            if isinstance(got, str) and got in (VERDICT, VERDICT_SUCCESSES_FREE):
                return got
            self._early.append(got)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs of the run's :class:`~.processors.ProcessorSpec`, as plain values."""

    kind: str
    command: str | None
    call: str | None
    cwd: str
    chunked: bool


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a pool worker needs of the run's settings: plain values (no settings model)."""

    timeout: float | None
    log_limit: int
    max_result_bytes: int
    classifier: Classifier
    #: The batch directory: the worker's descriptors 1 and 2 and its items' prints go to its
    #: logs (see .capture). None: they stay where the engine's are.
    batch_dir: str | None = None
    #: The run halts on a failure rate: every failure for good (not one retried: attempts
    #: below this) waits for the engine's :data:`VERDICT`, not only a fatal error (see
    #: :class:`_Inbox`). 0: a fatal error only.
    failures_judged_below: int = 0


def _leave_the_engines_group() -> None:
    """SIGTERM and SIGHUP sent to the engine's whole process group (a closed terminal, ``kill --
    -PGID``) killed the workers at once: their running items were lost (WorkerLost, an attempt
    spent; failed for good at ``--max-attempts 1``) while the engine meant to give them
    ``--grace``. The worker starts a session of its own, as a shell item's command does, so
    such signals miss it and what its calls start; its end is the engine's to decide (it dies
    with the engine: die_with_parent). A SIGHUP sent to it alone does nothing either (a
    handler, not SIG_IGN: what its calls start gets the default action back when it execs).
    SIGTERM keeps its default: multiprocessing ends its daemon processes with it at exit (the
    pool workers of a run refused before it began), and a stop of a whole control group
    (systemd's) still ends the workers with the engine."""
    try:
        os.setsid()
    except OSError:  # already a session leader
        pass
    signal.signal(signal.SIGHUP, _engine_decides)


def _engine_decides(signum: int, frame: Any) -> None:
    """A pool worker's SIGHUP: nothing (see :func:`_leave_the_engines_group`)."""


def child_main(conn: multiprocessing.connection.Connection, gate_parts: list[tuple[Any, ...]]) -> None:
    """Entry point of a process-pool worker: wait for its spec and settings (``go``: the engine
    sends them once it has the run, which may begin after this process started, see
    .warmstart), build the processor once, then serve chunks, the first through the first
    shared gate, the next through the second, and so on in turn."""
    die_with_parent()  # a worker never outlives its engine (kill -9 included)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when its workers stop
    _leave_the_engines_group()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTING_BLOCKED)  # (blocked as it started: .warmstart)
    try:
        go = conn.recv()
    except (EOFError, OSError):
        return
    if go is None:  # started ahead for a run that did not want it
        return
    spec, settings = go
    run_worker(conn, spec, settings, gate_parts)


def run_worker(
    conn: multiprocessing.connection.Connection,
    spec: WorkerSpec,
    settings: WorkerSettings,
    gate_parts: list[tuple[Any, ...]],
) -> None:
    """A worker given its spec and settings: build the processor, then serve chunks."""
    gates = [SharedGate(*parts) for parts in gate_parts]
    current = [gates[0]]  # the gate of the chunk running now: the one a kill may unwind

    def on_kill(signum: int, frame: Any) -> None:
        current[0].on_signal(signum, frame)

    signal.signal(KILL_SIGNAL, on_kill)
    if settings.batch_dir is not None:
        # Before the callable's module is imported: what it prints then lands in the logs too.
        try:
            capture.redirect_descriptors(settings.batch_dir)
        except OSError as exc:
            conn.send(("log_error", f"cannot open workers.log: {exc.strerror or exc}"))
            return
        capture.install(settings.log_limit)
    try:
        processor = build_processor(
            spec, timeout=settings.timeout, log_limit=settings.log_limit, max_result_bytes=settings.max_result_bytes
        )
    except BaseException as exc:
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    classifier = settings.classifier
    inbox = _Inbox(conn)
    judged = settings.failures_judged_below
    # With a failure rate watched, a success may halt the batch too until --min-items outcomes
    # are in: it is reported at once and waits for its verdict, which says when that ends.
    successes = [judged > 0]
    urgent = (lambda: successes[0]) if judged else None

    room = RoomWait()

    def report(outcomes: list[Outcome], kind: str = "part") -> None:
        room.saw(outcomes)
        judge = any(may_halt(o, judged, successes[0]) for o in outcomes)
        conn.send((kind, outcomes, judge))
        if judge:
            try:
                # Every verdict says it again (a trip the runner dismissed may lower the counts)
                successes[0] = inbox.await_verdict() == VERDICT
            except (EOFError, OSError):
                os._exit(0)  # the engine is gone: nothing more may start (it reaps its items)

    ended = [False]

    def end(outcomes: list[Outcome]) -> None:
        """The chunk ended: its last outcomes go with the word (one message, not two)."""
        ended[0] = True
        report(outcomes, "end")

    index = 0
    while True:
        try:
            got = inbox.recv()
        except (EOFError, OSError):
            return
        if got is None:
            return
        chunk = got
        gate = current[0] = gates[index]
        index = (index + 1) % len(gates)  # the engine uses the gates in turn, as it sends
        ended[0] = False
        try:
            run_items(processor, chunk, classifier, spec.chunked, gate, report, urgent, None, judged, end)
        except ItemKilled:
            pass  # a kill that landed between two items: nothing of an item was lost
        if not ended[0]:
            conn.send(("end", [], False))
        wait = room.after_chunk()
        if wait:
            time.sleep(wait)  # no room to start commands (RoomWait): let it free
