"""Running items in a worker: one :class:`Outcome` per attempt, never an exception.

:func:`run_items` is what every worker does with a chunk, in a thread, a pool process or a
dask worker alike: each item starts only if its gate lets it (the runner may have taken it
back), its result is checked where it was made (an unfit result fails its item and never
travels), its failure is classified there by a :class:`Classifier` (the exception itself may
not pickle), and the outcomes are reported as they are decided: an outcome a policy decides
on arrival (a cost for the budget, a failure that may halt the batch: a fatal error, a failure
for good while a failure rate is watched) at once, the others in groups.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import orjson

from . import capture
from .callables import CallableProcessor
from .errors import ErrorInfo, NoRoomToStart, classify
from .handoff import Gate, ItemKilled
from .outbox import Outbox
from .outputs import DEFAULT_MAX_RESULT_BYTES, checked_result, cost_of
from .shell.item import Item

if TYPE_CHECKING:  # a pool worker imports this module: it needs no settings models
    from .config import BatchConfig
    from .inflight import Slot


@dataclass(slots=True)
class Outcome:
    """The result of one attempt at one item.

    ``result`` is the checked result (:func:`.outputs.checked_result`): a scalar or short
    string as returned, anything else an :class:`orjson.Fragment` of its JSON, serialized once
    in the worker (the engine writes it as it is)."""

    seq: int
    attempt: int
    started: float
    duration: float
    result: Any = None
    cost: float | None = None
    error: ErrorInfo | None = None
    returned: bool = False  # never started after all: back to pending, no attempt counted
    #: Returned because its command could not be started (:class:`.errors.NoRoomToStart`): why.
    refused: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # An orjson.Fragment cannot be pickled: it travels (from a pool or dask worker) as bytes.
        result = self.result
        if type(result) is orjson.Fragment:
            fields = (self.seq, self.attempt, self.started, self.duration, orjson.dumps(result))
            return (_outcome_of_json, (*fields, self.cost, self.error, self.returned, self.refused))
        return (
            Outcome,
            (self.seq, self.attempt, self.started, self.duration, result, self.cost, self.error, self.returned)
            + ((self.refused,) if self.refused is not None else ()),
        )


class RoomWait:
    """A worker's wait between chunks while commands cannot be started (:class:`.errors.NoRoomToStart`).

    Each chunk with a refused start doubles the wait (from :attr:`FIRST_S` up to :attr:`MOST_S`);
    a chunk with none ends it. Workers that cannot start commands so wait, and those that can
    go on: the run goes at what the system allows, and the refused items (handed back) start as
    room frees, without a busy loop of failing starts."""

    FIRST_S: ClassVar[float] = 0.05
    MOST_S: ClassVar[float] = 2.0

    __slots__ = ("delay", "refused")

    def __init__(self) -> None:
        self.delay = 0.0
        self.refused = False

    def saw(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            if o.returned and o.refused is not None:
                self.refused = True

    def after_chunk(self) -> float:
        """Seconds to wait before taking the next chunk (0: none)."""
        if self.refused:
            self.refused = False
            self.delay = min(self.MOST_S, self.delay * 2 or self.FIRST_S)
        else:
            self.delay = 0.0
        return self.delay


def may_halt(outcome: Outcome, judged_below: int, successes: bool = False) -> bool:
    """Whether ``outcome`` may halt the batch, so that its worker starts nothing more until the
    engine has taken it in (the verdict): a fatal error, or with a failure rate watched
    (``judged_below``: --max-attempts, else 0) a failure for good, and a success too while
    ``successes`` (before --min-items outcomes: :meth:`.executors.EarlyHalt.judges_successes`)."""
    err = outcome.error
    if outcome.returned:
        return False
    if err is None:
        return successes
    return err.category == "fatal" or bool(judged_below and not (err.retryable and outcome.attempt < judged_below))


def _outcome_of_json(
    seq: int,
    attempt: int,
    started: float,
    duration: float,
    raw: bytes,
    cost: float | None,
    error: Any,
    returned: bool,
    refused: str | None = None,
) -> Outcome:
    return Outcome(seq, attempt, started, duration, orjson.Fragment(raw), cost, error, returned, refused)


class Classifier(NamedTuple):
    """Picklable classification settings, applied where the exception happens."""

    retry_exit_codes: tuple[int, ...] = ()
    fatal_exit_codes: tuple[int, ...] = ()
    transient_types: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: BatchConfig) -> Classifier:
        return cls(config.retry_exit_codes, config.fatal_exit_codes, config.transient_errors)

    def __call__(self, exc: BaseException) -> ErrorInfo:
        return classify(
            exc,
            retry_exit_codes=self.retry_exit_codes,
            fatal_exit_codes=self.fatal_exit_codes,
            transient_types=self.transient_types,
        )


Report = Callable[[list[Outcome]], None]


def _shutting_down(exc: BaseException) -> bool:
    """The one BaseException an item must not turn into its failure: the interpreter is exiting."""
    return sys.is_finalizing()


def run_items(
    processor: Any,
    items: Sequence[Item],
    classifier: Classifier,
    chunked: bool,
    gate: Gate | None = None,
    report: Report | None = None,
    successes_judged: Callable[[], bool] | None = None,
    slot: Slot | None = None,
    judged_below: int = 0,
    end: Report | None = None,
) -> list[Outcome]:
    """Run a chunk of items; never raises (every failure of an item becomes its Outcome).

    ``gate`` (when given) decides, right before each item starts, whether it may: an item the
    runner cancelled while it waited is left out (no outcome; the runner has put it back).
    ``report`` (when given) receives the outcomes as they are decided (a cost at once, a
    failure at once when it may halt the batch: :func:`may_halt` with ``judged_below``, a
    success at once while ``successes_judged()`` says it may: see
    :meth:`.executors.EarlyHalt.judges_successes`; the others at most
    :data:`.outbox.REPORT_EVERY_S` later, in groups) and the function returns []; without it the
    outcomes are returned together. Any exception of an item fails that item with its
    real type and message, ``SystemExit`` and ``KeyboardInterrupt`` included.

    ``slot`` (the thread executor's, :mod:`.inflight`) holds the item while it runs (a chunk
    taken together: its items, in as many slots), so that an item that kills this process is
    known to the next engine.

    ``end`` (with ``report``): the chunk's last group, what is decided and not handed over when
    the chunk ends (the last item's outcome at least, or nothing), goes to ``end`` instead, once,
    whatever ends the chunk, so that the caller hands it over with the word that the chunk
    ended: a pool worker sends one message where it sent two (each a wake-up of the engine's
    feeder, on the cores the items run on).
    """
    try:
        if chunked and isinstance(processor, CallableProcessor):
            if end is None:
                return _run_chunked(processor, items, classifier, gate, report, slot)
            end(_run_chunked(processor, items, classifier, gate, None, slot))
            return []
        outcomes: list[Outcome] = []
        if report is None:
            _run_each(processor, items, classifier, gate, outcomes.append, None, slot=slot)
            return outcomes
        box = Outbox(report)
        ended = end
        try:
            _run_each(
                processor, items, classifier, gate, None, box, successes_judged, slot, judged_below, end is not None
            )
        except BaseException as exc:
            if type(exc) is not ItemKilled:  # the chunk did not end (the interpreter exits)
                ended = None
            raise
        finally:
            # What is decided is handed over, whatever ends the chunk (a kill between two
            # items: the chunk ended); with the word that it ended, when it did.
            if ended is None:
                box.close()
            else:
                ended(box.take())
        return []
    finally:
        capture.put_back()  # a standard descriptor an item closed: once for the chunk


def _run_each(
    processor: Any,
    items: Sequence[Item],
    classifier: Classifier,
    gate: Gate | None,
    append: Callable[[Outcome], None] | None,
    box: Outbox | None,
    successes_judged: Callable[[], bool] | None = None,
    slot: Slot | None = None,
    judged_below: int = 0,
    keep_last: bool = False,
) -> None:
    """The items one after the other: each outcome to ``append``, or to ``box`` (the urgent
    ones marked), which hands them over as they are decided; each in ``slot`` while it runs.
    ``keep_last``: the last item's outcome stays in ``box``, for the caller to take at once.

    A failure is urgent only when it may halt the batch (:func:`may_halt`): the others go in
    groups as successes do. Each failure went on its own before, for nothing a policy decides:
    60,000 quick calls of which 60% failed took 11.2 s, 6 times as long as 60,000 that
    succeed, a pipe message and a turn of the runner each."""
    limit: int = getattr(processor, "max_result_bytes", DEFAULT_MAX_RESULT_BYTES)
    clock, wall = time.perf_counter, time.time
    soft = gate is not None and getattr(gate, "kills_by_signal", False)
    plain = type(processor) is CallableProcessor
    # The callable straight from here, as CallableProcessor.run would call it, without a
    # ProcessOutput for each result: for quick calls that object is a sizeable part of an item.
    func = processor.func if plain else processor.run
    # A callable's prints go to its item's logs (see .capture), when the run installed that.
    logged = capture.installed() and isinstance(processor, CallableProcessor)
    last = len(items) - 1
    for index, item in enumerate(items):
        if gate is not None and not gate.begin(index):
            continue
        started = wall()
        t0 = clock()
        if logged:
            capture.begin(item)
        if slot is not None:
            slot.set(item.seq, item.attempt, started)
        try:
            if soft:
                gate.arm()  # type: ignore[union-attr]
            value = func(item)
            if soft:
                gate.disarm()  # type: ignore[union-attr]
        except BaseException as exc:
            if slot is not None:
                slot.clear()
            if soft:
                gate.disarm()  # type: ignore[union-attr]
            if logged:
                _end_capture()
            if _shutting_down(exc):
                raise
            t1 = clock()
            if type(exc) is NoRoomToStart:
                # Its command never started: back to pending, the reason for the runner to say.
                outcome = Outcome(item.seq, item.attempt, started, 0.0, returned=True, refused=str(exc))
            else:
                outcome = Outcome(item.seq, item.attempt, started, t1 - t0, error=classifier(exc))
            urgent = outcome.returned or may_halt(outcome, judged_below)
        else:
            t1 = clock()
            if slot is not None:
                slot.clear()
            if logged:
                _end_capture()
            # Checked here, in the worker: an unfit result fails its item and never travels.
            try:
                if plain:
                    cost = cost_of(value)
                    result = checked_result(value, limit)
                else:
                    cost = value.cost
                    result = checked_result(value.result, limit)
            except Exception as exc:
                outcome = Outcome(item.seq, item.attempt, started, t1 - t0, error=classifier(exc))
                urgent = may_halt(outcome, judged_below)
            else:
                outcome = Outcome(item.seq, item.attempt, started, t1 - t0, result, cost)
                urgent = cost is not None or (successes_judged is not None and successes_judged())
            del value
        if gate is not None:
            gate.end(index)
        if box is not None:
            # The chunk's last outcome goes with its group now, as run_items' close() would
            # send it a moment later (or stays for the caller's ``end``, as soon): the flusher
            # is not woken to watch a group that will not wait (two thread wake-ups an item, in
            # a pool worker, for chunks of one item).
            if index != last:
                box.add(outcome, urgent, t1)
            elif keep_last:
                box.keep(outcome)
            else:
                box.add(outcome, True, t1)
        elif append is not None:
            append(outcome)


def _end_capture() -> None:
    """The item's logs closed; a log that cannot be written (a full disk) never fails the item,
    whose outcome is decided: what it printed is lost, as a full disk loses a shell item's."""
    try:
        capture.end()
    except OSError:
        pass


def _run_chunked(
    processor: CallableProcessor,
    items: Sequence[Item],
    classifier: Classifier,
    gate: Gate | None,
    report: Report | None,
    slot: Slot | None = None,
) -> list[Outcome]:
    """A chunked callable takes its items together: they begin (or were cancelled) together."""
    begun = [i for i in range(len(items)) if gate is None or gate.begin(i)]
    run = [items[i] for i in begun]
    outcomes: list[Outcome] = []
    if run:
        started = time.time()
        t0 = time.perf_counter()
        logged = capture.installed()
        if logged:
            capture.begin(run[0])  # the chunk's output: in its first item's logs
        held = slot.hold([(it.seq, it.attempt) for it in run], started) if slot is not None else None
        try:
            outputs = processor.run_chunk(run)
        except BaseException as exc:  # the whole chunk failed: each item carries the error
            if logged:
                _end_capture()
            if _shutting_down(exc):
                raise
            info = classifier(exc)
            dur = (time.perf_counter() - t0) / len(run)
            outcomes = [Outcome(it.seq, it.attempt, started + i * dur, dur, error=info) for i, it in enumerate(run)]
        else:
            if logged:
                _end_capture()
            dur = (time.perf_counter() - t0) / len(run)
            # Each item gets its share of the chunk's time, one after the other: a run rebuilt
            # from the items' starts and ends shows one item per worker at a time, as it ran.
            for i, (it, out) in enumerate(zip(run, outputs, strict=True)):
                at = started + i * dur
                if isinstance(out, BaseException):  # this item's own failure (no result, unfit)
                    outcomes.append(Outcome(it.seq, it.attempt, at, dur, error=classifier(out)))
                else:
                    outcomes.append(Outcome(it.seq, it.attempt, at, dur, out.result, out.cost))
        finally:
            if held is not None:
                held.release()
    if gate is not None:
        for i in begun:
            gate.end(i)
    if report is not None:
        if outcomes:
            report(outcomes)
        return []
    return outcomes
