"""Waiting for a batch to end (``batchtui wait``), and the exit code it ended with.

A batch has ended when no engine holds it (its end written, its hooks run) or its engine is
dead, and its state is an end: finished, halted, stopped, or interrupted (the files say running
but no engine runs it: a kill -9, a crash). The exit code is the one the engine's own process
returned (DESIGN's exit codes: 0, 1, 3, 130), from the same :func:`~.summary.summarize` every
view reads, so ``wait`` agrees with ``ls`` and ``show``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .batchdir import BatchDir
from .errors import EXIT_INTERRUPTED, EXIT_USAGE
from .fmt import shell_line
from .models import BatchState, Counts
from .summary import DAMAGED, INTERRUPTED, BatchSummary, summarize

#: ``wait --timeout`` ran out before the batch ended (GNU timeout's code): the batch is untouched.
EXIT_TIMEOUT: Final = 124
#: How often the batch is looked at while it runs.
POLL_S: Final = 0.2


@dataclass(frozen=True)
class BatchEnd:
    """How a batch ended: its state as views show it, the exit code, and what to say of it."""

    state: str
    exit_code: int
    note: str


def _exit_code(state: BatchState, counts: Counts) -> int:
    from .runner import exit_code_for  # the runner's contract; imported only once it is needed

    return exit_code_for(state, counts)


def batch_end(summary: BatchSummary) -> BatchEnd | None:
    """How the batch of ``summary`` ended; None while an engine still runs it. A batch whose
    manifest cannot be read (and that no engine runs) ends at once with exit 2."""
    engine = summary.engine
    if engine is not None and summary.state != INTERRUPTED:
        return None
    if summary.state == DAMAGED:
        return BatchEnd(DAMAGED, EXIT_USAGE, f"batch {summary.batch_id} cannot be read: {summary.error}")
    if summary.state == INTERRUPTED:  # summarize's word for active files that no engine runs
        return BatchEnd(
            INTERRUPTED,
            EXIT_INTERRUPTED,
            f"batch {summary.batch_id} was interrupted: no engine runs it (resume it: {shell_line('batchtui', 'resume', summary.batch_id)})",
        )
    if summary.state == BatchState.CREATED.value:
        return BatchEnd(
            summary.state,
            EXIT_INTERRUPTED,
            f"batch {summary.batch_id} has not been run: no engine runs it (start it: {shell_line('batchtui', 'resume', summary.batch_id)})",
        )
    state = BatchState(summary.state)
    counts = Counts(**{k: getattr(summary.totals, k) for k in Counts.model_fields})
    code = _exit_code(state, counts)
    t = summary.totals
    note = f"batch {summary.batch_id} {state.value}: {t.complete} complete, {t.failed} failed, {t.skipped} skipped"
    if t.pending:
        note += f", {t.pending} pending"
    if summary.halt_reason and state == BatchState.HALTED:
        note += f" ({summary.halt_reason})"
    return BatchEnd(state.value, code, note)


def wait_for_end(
    batch: BatchDir,
    timeout: float | None = None,
    *,
    poll: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_problem: Callable[[str], None] | None = None,
) -> BatchEnd | None:
    """Block until ``batch`` ends (:func:`batch_end`); None when ``timeout`` seconds passed
    first. ``on_problem`` is told once what is wrong with an engine that stopped writing (it
    is still waited for: it holds the batch), and again if it stops again after a recovery."""
    deadline = None if timeout is None else clock() + timeout
    told = False
    while True:
        summary = summarize(batch)
        end = batch_end(summary)
        if end is not None:
            return end
        problem = summary.engine.problem if summary.engine is not None else None
        if problem and on_problem is not None and not told:
            on_problem(problem)
        told = bool(problem)
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return None
            sleep(min(poll, left))
        else:
            sleep(poll)


__all__ = ["EXIT_TIMEOUT", "BatchEnd", "batch_end", "wait_for_end"]
