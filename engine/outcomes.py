"""Outcomes in: each attempt's outcome becomes staged rows, a results.jsonl line, a retry.

The runner hands every report of its workers to :meth:`OutcomeRecorder.record`. A success is
appended to results.jsonl at once (before the group commit that marks it complete); a failure
is classified by its category (retried with backoff, failed, or fatal: the batch halts); an
item killed by the engine is recorded by why it was killed (stop: back to pending; skip:
skipped; timeout: a timeout failure). The recorder keeps what the report and the views need
of these outcomes: costs, durations, the recent errors.
"""

from __future__ import annotations

import array
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .attempts import Outcome
from .batchdir import iso_at
from .config import BatchConfig
from .dispatch import Dispatcher
from .errors import ErrorInfo, ItemTimeout, classify
from .files import ResultsLog
from .grouping import normalize_message
from .policy import Backoff
from .processors import Item
from .staging import Staging

RECENT_ERRORS: Final = 20


@dataclass(slots=True)
class Flight:
    """An item handed out: what was sent, and when (the loop's clock, and as written)."""

    item: Item
    started: float
    started_at: str
    marked: bool = False  # its 'processing' status is in the store
    #: Skipped while it ran: its 'skipped' status is staged already, with the skip command (a
    #: kill -9 between the skip's answer and the killed item's outcome must not lose it).
    skipped: bool = False
    #: The items of its call: a chunked callable's chunk size (its items share one call's time).
    share: int = 1


def result_line(o: Outcome, key: str, finished_at: str) -> dict[str, Any]:
    """One line of results.jsonl, with the keys of :class:`~.models.ResultLine` (a "cost" is
    added by the caller when the item has one). A dict, not the model: this is the hot path;
    tests/test_results_integrity.py checks that every line written validates against it."""
    return {
        "seq": o.seq,
        "key": key,
        "result": o.result,
        "attempts": o.attempt,
        "duration_s": round(o.duration, 6),
        "finished_at": finished_at,
    }


class OutcomeRecorder:
    """Turns outcomes into staged changes (see the module docstring).

    ``inflight`` and ``kill_reasons`` are the runner's own maps (an outcome takes its item out
    of flight); ``on_halt`` and ``on_returned`` are the runner's reactions to a fatal error and
    to an item given back unstarted; ``stopping`` says whether a stop or halt is under way (a
    retryable failure then goes back to pending instead of waiting out a backoff).
    """

    def __init__(
        self,
        config: BatchConfig,
        staging: Staging,
        dispatcher: Dispatcher,
        inflight: dict[int, Flight],
        kill_reasons: dict[int, str],
        *,
        on_halt: Callable[[str], None],
        on_returned: Callable[[list[int]], None],
        stopping: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.staging = staging
        self.dispatcher = dispatcher
        self.inflight = inflight
        self.kill_reasons = kill_reasons
        self.backoff = Backoff(config.backoff, config.backoff_max)
        self._on_halt = on_halt
        self._on_returned = on_returned
        self._stopping = stopping
        self._clock = clock
        self.results: ResultsLog | None = None
        self._lines: list[bytes] = []
        self.cost_spent = 0.0
        self.max_item_cost = 0.0
        self.cost_known = False  # an item finished: its cost (or none) is known
        #: The signals that stop this run (the runner's handler adds them: a set's add takes no
        #: lock). A command killed by one of them was hit by it too, not failed (see _outcome).
        self.stop_signals: set[int] = set()
        # The durations of this run's completions, for the report; None when the batch had
        # completions before this run (the report then reads them all from the store).
        self.durations: array.array[float] | None = None
        #: The latest failures, in RecentError's fields and order (the model is built for the live view).
        self.recent: collections.deque[tuple[int, str, str, str, str, str, int]] = collections.deque(
            maxlen=RECENT_ERRORS
        )
        #: Told of each success's duration: the adaptive --timeout's median (engine/adaptive.py).
        self.learn: Callable[[float], None] | None = None
        #: The limit each item timed out by the runner's watchdog was killed past (seq -> s).
        self.timeout_limits: dict[int, float] = {}
        #: Told of each item that failed for good (seq, key, error type, category, message):
        #: the run's ``new-group`` event (engine/events.py).
        self.on_failed: Callable[[int, str, str, str, str, str], None] | None = None
        #: Told why an item came back unstarted when its command could not be started.
        self.on_refused: Callable[[str], None] | None = None
        self._iso_second = -1
        self._iso_prefix = ""

    def _iso(self, epoch: float) -> str:
        """``epoch`` as now_iso writes times (UTC, milliseconds), the date and time of its
        second formatted once for all the items that start or end within it."""
        second = int(epoch)
        if second != self._iso_second:
            self._iso_second = second
            self._iso_prefix = iso_at(second)[:19]
        return f"{self._iso_prefix}.{int((epoch - second) * 1000):03d}+00:00"

    def drop(self) -> None:
        """The disk is full: lines not yet written are dropped with the staged changes."""
        self._lines.clear()
        self.durations = None

    def record(self, outcomes: list[Outcome]) -> None:
        """Stage the outcomes of one report; complete ones go to results.jsonl at once."""
        assert self.results is not None
        if not outcomes:
            return
        avg = self.dispatcher.avg_item_s
        if avg is None:
            avg = max(1e-7, sum(o.duration for o in outcomes) / len(outcomes))
        # Each item's own start and end (the worker's clock), so the run can be rebuilt from
        # its files: never more items running at a time than there were workers.
        iso = self._iso
        pop, kill_reasons = self.inflight.pop, self.kill_reasons
        lines, rows = self._lines, self.staging.rows["complete"]
        dumps, opt = orjson.dumps, orjson.OPT_NON_STR_KEYS
        durations, learn = self.durations, self.learn
        plain = 0
        for o in outcomes:
            flight = pop(o.seq, None)
            if flight is None:
                continue  # a late outcome of an item already handled (timed out, abandoned)
            if flight.item.attempt != o.attempt and not o.returned:
                # A late outcome of an earlier attempt (a timed-out thread item that ran on)
                # while the item's next attempt is out: it is not that attempt's outcome.
                self.inflight[o.seq] = flight
                continue
            if o.returned:
                self.inflight[o.seq] = flight
                self._on_returned([o.seq])
                if o.refused is not None and self.on_refused is not None:
                    self.on_refused(o.refused)
                continue
            flight.started_at = iso(o.started)
            finished_at = iso(o.started + o.duration)
            if o.error is not None or o.cost is not None or (kill_reasons and o.seq in kill_reasons):
                avg = 0.9 * avg + 0.1 * o.duration
                self._outcome(o, flight, finished_at)
                continue
            avg = 0.9 * avg + 0.1 * o.duration
            # The common case inline (see _complete): a success with no cost, nothing to kill.
            try:
                result_json = dumps(o.result, option=opt)
                line = dumps(result_line(o, flight.item.key, finished_at), option=opt)
            except TypeError:
                self._complete(o, flight, finished_at)  # fails the item with the reason
                continue
            lines.append(line)
            # Its attempt row is written by the store's trigger, from this same update.
            rows.append((o.attempt, finished_at, o.duration, None, result_json.decode(), flight.started_at, o.seq))
            if durations is not None:
                durations.append(o.duration)
            if learn is not None:
                learn(o.duration)
            plain += 1
        self.dispatcher.note_duration(avg)
        if plain:
            self.cost_known = True
            self.staging.staged += plain
            if self.staging.first is None:
                self.staging.first = self._clock()
            delta = self.staging.delta
            delta["processing"] -= plain
            delta["complete"] += plain
        if lines:
            # One write for the chunk's lines: each whole and newline-terminated.
            self.results.append(b"\n".join(lines))
            lines.clear()

    def _outcome(self, o: Outcome, flight: Flight, finished_at: str) -> None:
        """One outcome off the common path: killed (stop, skip, timeout), failed, or with a cost."""
        reason = self.kill_reasons.pop(o.seq, None)
        # A signal sent to the whole process group (a Ctrl-C, a closed terminal) reaches a
        # command started that very moment, before its setsid takes it out of the group: it
        # died of the stop, as one the stop killed, and goes back to pending (it was stored
        # failed for good, "signal 2", an attempt spent).
        if reason is None and o.error is not None and o.error.error_type in self._stop_deaths():
            reason = "stop"
        # A stop's kill that came too late (a Python call in a thread cannot be cut short; a
        # command that exited 0 as it was signalled) leaves a success: it is one, never thrown
        # away to run (and be paid for) again at the resume.
        if reason == "stop" and o.error is not None:
            self.staging.add(
                "attempt",
                (
                    o.seq,
                    o.attempt,
                    "interrupted",
                    flight.started_at,
                    finished_at,
                    o.duration,
                    None,
                    None,
                    "stopped by operator",
                    None,
                ),
            )
            self.staging.add("requeue", (o.seq,))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
            return
        if reason == "skip":  # the item's 'skipped' was staged with the skip (Flight.skipped)
            self.staging.add(
                "attempt",
                (
                    o.seq,
                    o.attempt,
                    "skipped",
                    flight.started_at,
                    finished_at,
                    o.duration,
                    None,
                    None,
                    "skipped while running",
                    None,
                ),
            )
            self.staging.add("skipped_ran", (flight.started_at, o.duration, o.seq))
            return
        limit = self.timeout_limits.pop(o.seq, None)
        if reason == "timeout" and (o.error is None or o.error.category != "timeout"):
            o.error = classify(ItemTimeout(limit if limit is not None else self.config.timeout or 0))
        if o.error is None:
            self._complete(o, flight, finished_at)
        else:
            self._failed(o, flight, finished_at, o.error)

    def _stop_deaths(self) -> set[str]:
        """The error types of a command killed by a signal that stops the run (the set copied
        in one C call: the handler may add to it between two steps of a loop over it)."""
        return {f"signal {signum}" for signum in tuple(self.stop_signals)}

    def _complete(self, o: Outcome, flight: Flight, finished_at: str) -> None:
        assert self.results is not None
        line = result_line(o, flight.item.key, finished_at)
        self.cost_known = True
        if o.cost is not None:
            line["cost"] = o.cost
            self.cost_spent += o.cost
            self.max_item_cost = max(self.max_item_cost, o.cost)
        try:
            result_json = orjson.dumps(o.result, option=orjson.OPT_NON_STR_KEYS).decode()
            raw = orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            self._failed(o, flight, finished_at, classify(TypeError(f"result is not JSON-serializable: {exc}")))
            return
        self._lines.append(raw)
        if self.durations is not None:
            self.durations.append(o.duration)
        if self.learn is not None:
            self.learn(o.duration)
        # Its attempt row is written by the store's trigger, from this same update.
        self.staging.add(
            "complete", (o.attempt, finished_at, o.duration, o.cost, result_json, flight.started_at, o.seq)
        )
        self.staging.delta["processing"] -= 1
        self.staging.delta["complete"] += 1

    def _failed(self, o: Outcome, flight: Flight, finished_at: str, err: ErrorInfo) -> None:
        self.staging.add(
            "attempt",
            (
                o.seq,
                o.attempt,
                "failed",
                flight.started_at,
                finished_at,
                o.duration,
                err.error_type,
                err.category,
                err.message,
                err.detail,
            ),
        )
        # Its model (RecentError) is built only for the live view: a pydantic model for each
        # failure cost more than the rest of its bookkeeping here.
        self.recent.append((o.seq, flight.item.key, err.error_type, err.category, err.message, finished_at, o.attempt))
        group = normalize_message(err.message, flight.item.key)
        fields = (
            o.attempt,
            err.error_type,
            err.category,
            err.message,
            err.detail,
            group,
            finished_at,
            o.duration,
        )
        if err.retry_after is not None:
            self.dispatcher.note_failure(flight.item, err.retry_after, self._clock())  # its key slows
        if err.category == "fatal":
            # The cause is outside the item (an expired key...): the item goes back to pending
            # so a resume after the fix runs it again.
            self.staging.add("pending_with_error", (*fields, flight.started_at, o.seq))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
            self._on_halt(f"fatal error on item {o.seq}: {err.error_type}: {err.message}")
            return
        if err.retryable and o.attempt < self.config.max_attempts and self._stopping():
            # Stopping: a retryable failure is not the item's verdict. Back to pending (the error
            # kept); the resume retries it.
            self.staging.add("pending_with_error", (*fields, flight.started_at, o.seq))
            self.staging.delta["processing"] -= 1
            self.staging.delta["pending"] += 1
            return
        if err.retryable and o.attempt < self.config.max_attempts:
            self.staging.add("retrying", (*fields, flight.started_at, o.seq))
            delay = self.backoff.delay(o.attempt)
            if err.retry_after is not None:
                delay = max(delay, err.retry_after)  # at least what the failure asked for
            item = flight.item
            retry_item = Item(
                seq=item.seq,
                key=item.key,
                data=item.data,
                attempt=o.attempt + 1,
                batch_dir=item.batch_dir,
                kind=item.kind,
            )
            now = self._clock()
            self.dispatcher.schedule_retry(retry_item, now + delay, now)
            return
        self.staging.add("failed", (*fields, flight.started_at, o.seq))
        self.staging.delta["processing"] -= 1
        self.staging.delta["failed"] += 1
        if self.on_failed is not None:
            self.on_failed(o.seq, flight.item.key, err.error_type, err.category, err.message, group)
