"""The dask executor's verdicts: the halts its outcomes decide, and what its workers wait for.

A dask worker that ends an item with an outcome that may halt the batch (a fatal error; a
failure for good while the failure rate is near its limit) starts no more items of the run
(:meth:`.dask_worker.WorkerGates.await_verdict`) until this engine has judged it: either the
outcome halts the batch, and the halt's cancel reaches the workers' gates, or it does not, and
the worker is told to go on (a lift; one broadcast at a time carries every lift decided
meanwhile). So a halt overshoots by at most the items already running, as on the local
executors (DESIGN section 6): before, each worker started its next queued task while the
outcome went to the engine and the cancel came back (a fatal error with two workers: 8 ran).

The failure rate asks for a verdict only near its limit: while every item on the cluster could
fail without halting the batch (:meth:`.executors.EarlyHalt.headroom`), no failure can halt it
and none is held (a round trip through the scheduler each, about 3.6 ms of a worker with 20%
failing). The workers are told when that changes (numbered, so a task sent before a change
that starts after it does not undo it), before any task is sent under the new word.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any

from .attempts import Outcome
from .dask_gates import FAILURES, SUCCESSES
from .dask_ledger import Ledger, Owed
from .dask_worker import lift_on_worker, strict_on_worker
from .earlyhalt import EarlyHalt
from .executors import CompletionQueue

log = logging.getLogger("batchtui.engine.dask")


class Verdicts:
    """The dask executor's halts and its workers' holds (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        dask: Any,
        completions: CompletionQueue,
        engine: str,
        judged_below: int,
        cancel_remote: Callable[[Owed], list[int]],
    ) -> None:
        self.ledger = ledger
        self.dask = dask  # the DaskCluster: ask_all, later
        self.completions = completions
        self._engine = engine
        self._judged_below = judged_below
        self._cancel_remote = cancel_remote
        self.early: EarlyHalt | None = None
        self._lifts_lock = threading.Lock()
        self._lifts: list[tuple[int, int]] = []
        self._lifts_all = False
        self._lifting = False
        #: What holds the workers besides a fatal error (0; FAILURES: the failure rate is near
        #: its limit; SUCCESSES: and a success may still cross it), with the count of changes:
        #: what the workers are told.
        self._said: tuple[int, int] = (0, 0)
        #: What workers hold for outcomes too large for an event: judged with the task's result.
        self.held_until_result: dict[str, list[tuple[int, int]]] = {}
        #: Outcomes go from the ledger to the early halt under it: what the ledger no longer
        #: owes is counted there, when a dispatch weighs the one against the other.
        self.lock = threading.Lock()

    def set_early_halt(self, early: EarlyHalt | None) -> None:
        self.early = early
        if early is not None:
            early.on_dismiss = self._lift_all

    def report(self, out: list[Outcome], held: list[tuple[int, int]] | None = None) -> None:
        """Hand outcomes to the runner, the halts they decide decided first (:class:`EarlyHalt`).

        ``held``: the (seq, attempt) of outcomes among them that hold their worker's items of
        this run until the engine's verdict (:meth:`.dask_worker.WorkerGates.await_verdict`):
        unless they halt the batch, that worker is told to go on. A trip keeps it held until
        its cancel has reached the gates, or the runner dismisses it (:meth:`_lift_all`)."""
        early = self.early
        taken = early(out, self._take_back) if early is not None else None
        if taken is not None:
            out = out + [Outcome(seq, 0, 0.0, 0.0, returned=True) for seq in taken]
        elif held and (early is None or not early.tripped):
            self._lift(held)
        if out:
            self.completions.put(out)

    def _take_back(self) -> list[int]:
        """A trip (under its lock, on the client's event loop or the collector): what waits in
        the hand-off now; the items of tasks on the cluster by a cancel of their gates on a
        thread of its own (a broadcast must not be waited for on the event loop), reported as
        ``returned`` as its answers come."""
        cancelled, remote = self.ledger.cancel_here(None)
        if remote:

            def cancel() -> None:
                got = self._cancel_remote(remote)
                if got:
                    self.completions.put([Outcome(seq, 0, 0.0, 0.0, returned=True) for seq in got])

            threading.Thread(target=cancel, name="batchtui-dask-halt", daemon=True).start()
        return cancelled

    def _lift(self, marks: list[tuple[int, int]] | None) -> None:
        """Tell every worker that the outcomes ``marks`` (None: all) halt nothing. One broadcast
        at a time carries every lift decided meanwhile: one a failure queued behind each other
        (a run with many failures under --max-failure-rate) and held its workers ever longer."""
        with self._lifts_lock:
            if marks is None:
                self._lifts_all = True
            else:
                self._lifts.extend(marks)
            if self._lifting:
                return  # the broadcast under way sends these next
            self._lifting = True
        self.dask.later(self._send_lifts)

    def _send_lifts(self) -> None:
        while True:
            with self._lifts_lock:
                marks, every = self._lifts, self._lifts_all
                self._lifts, self._lifts_all = [], False
                if not marks and not every:
                    self._lifting = False
                    return
            self.dask.ask_all(lift_on_worker, self._engine, None if every else marks)

    def _lift_all(self) -> None:
        """The runner dismissed a trip (it did not halt after all): every worker goes on."""
        self._lift(None)

    def strict_from(self) -> tuple[int, int]:
        """Whether failures for good hold their workers from the task being sent on (the
        dispatcher's thread, the task in the ledger). Not while every item on the cluster could
        fail without halting the batch: then none of their failures needs the engine's verdict
        (a round trip through the scheduler, for each). Once not, every worker is told first,
        so that the failures of the tasks sent before hold too; told again (with room to spare,
        not to flap) once the failures could all come without a halt again. While strict, and
        before --min-items outcomes are in, successes hold too: the one that makes them so may
        cross the limit (:meth:`.executors.EarlyHalt.judges_successes`). Far from the limit no
        success can: the headroom counts the successes --min-items needs."""
        early = self.early
        if early is None or not self._judged_below:
            return self._said
        with self.lock:
            owed = self.ledger.owed()
            room = early.headroom(2 * owed)
        # Back to free only with room to spare: no flapping.
        strict = (room < 2 * owed) if self._said[1] else (room < owed)
        level = (SUCCESSES if early.judges_successes() else FAILURES) if strict else 0
        if level == self._said[1]:
            return self._said
        # Numbered: a task sent before a change and started after it does not undo it.
        self._said = (self._said[0] + 1, level)
        self.dask.ask_all(strict_on_worker, self._engine, self._said)
        return self._said

    def on_outcomes(self, event: Any) -> None:
        """Outcomes a task handed over before it ended (on the client's event loop): those it
        still owes go to the runner now; its result repeats them and is then dropped. The event
        is ``[key, pickled outcomes or None (too large: they come with the result), ended,
        held]``: its items before index ``ended`` have ended, so the next one began; ``held``,
        the (seq, attempt) of those that hold the worker until this engine's verdict."""
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else None
        if not (isinstance(msg, list | tuple) and len(msg) in (2, 3, 4)):
            return
        key, blob = msg[0], msg[1]
        ended = msg[2] if len(msg) >= 3 and isinstance(msg[2], int) else None
        held = [(int(seq), int(attempt)) for seq, attempt in msg[3]] if len(msg) >= 4 and msg[3] else []
        try:
            outcomes = [] if blob is None else pickle.loads(blob)
        except Exception:
            log.exception("dask: outcomes that cannot be read (its task's result will carry them)")
            outcomes = None
        with self.lock:
            if (outcomes is None or (held and not outcomes)) and self.ledger.has(key):
                # They come with the task's result (too large for an event): judged then.
                self.held_until_result.setdefault(key, []).extend(held)
                return
            self.report(self.ledger.take(key, outcomes or [], ended), held)
