"""One pydantic model per batch-directory file format, shared by the writer and every reader.

The field names here are the contract of DESIGN section 2: scripts and other processes read
these files, so a rename is a breaking change.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from .basemodel import Model
from .errors import UserError
from .files import DamagedFile

#: The manifest format this batchtui writes and the newest it reads.
MANIFEST_VERSION: Final = 1
#: The largest seq there can be (SQLite's integers are 64-bit): a larger one names no item.
MAX_SEQ: Final = (1 << 63) - 1


class NewerFormat(DamagedFile, UserError):
    """A manifest written by a newer batchtui: refused, never read as ours (nor rewritten).

    A DamagedFile, so every listing shows the batch as unreadable and goes on with the others;
    a UserError, so a command on the batch itself ends with this message (exit 2).
    """

    def __init__(self, version: int, path: Path | None = None) -> None:
        self.version = version
        where = f"{path}: " if path else ""
        super().__init__(
            path or Path("manifest.json"),
            f"made by a newer batchtui (format {version}; this one reads up to {MANIFEST_VERSION}): upgrade batchtui",
        )
        self.args = (where + self.reason,)

    def describe(self) -> str:
        return str(self)  # names the file and the way out (not DamagedFile's "no good backup")

    def at(self, path: Path) -> NewerFormat:
        """The same error naming the manifest it was read from."""
        return NewerFormat(self.version, path)


class ItemStatus(StrEnum):
    """Status of one item (DESIGN section 3)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETE = "complete"
    FAILED = "failed"
    SKIPPED = "skipped"


STATUSES: Final[tuple[str, ...]] = tuple(s.value for s in ItemStatus)


class BatchState(StrEnum):
    """State of a whole batch (DESIGN section 2)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    HALTED = "halted"
    FINISHED = "finished"


#: States in which an engine may be working on the batch.
ACTIVE_STATES: Final = frozenset({BatchState.RUNNING, BatchState.PAUSED, BatchState.STOPPING})


class _Model(Model):
    # Readers ignore fields they do not know, so a newer engine's files stay readable.
    # An empty list or dict default is written as the value (``= []``): pydantic copies a mutable
    # default for each instance, as ``default_factory=list`` would; but for a factory it reads the
    # signature, and the builtin list's is parsed from its text (tokenize: 0.2 ms a field, 4.6 ms
    # the first), paid by every command that validates the model. Built at first use (Model).
    model_config = ConfigDict(extra="ignore")


class Counts(_Model):
    """Items per status. ``total`` is the number of enqueued (distinct) items."""

    total: int = 0
    pending: int = 0
    processing: int = 0
    complete: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def finished(self) -> int:
        """Items that reached a final status (complete, failed or skipped)."""
        return self.complete + self.failed + self.skipped

    @property
    def percent(self) -> float:
        return 100.0 * self.finished / self.total if self.total else 100.0


class LiveCounts(Counts):
    """The counts of ``live_progress.json``: of the items handed out ('processing'), those
    ``running`` in a worker, those ``queued`` behind them (handed out, not started) and those
    ``retrying`` (waiting out a retry's backoff before their next attempt)."""

    running: int = 0
    queued: int = 0
    retrying: int = 0


class HistoryEntry(_Model):
    """One run or resume of the batch."""

    action: Literal["run", "resume"]
    at: str
    pid: int
    host: str
    overrides: dict[str, Any] = {}
    ended_at: str | None = None
    outcome: str | None = None
    #: What this run found wrong with the batch's files when it began (result lines rejected
    #: or adopted, results.jsonl rebuilt): kept here for good, live warnings scroll away.
    notes: list[str] = []


#: How many of the paths a source could not read are kept as examples (the count is exact).
UNREADABLE_EXAMPLES: Final = 5


class UnreadablePath(_Model):
    """One path a source could not read, and why (``permission denied``, ``path longer than
    PATH_MAX, 4096 bytes``...). ``path`` is shown safely: control characters and bytes that
    are not UTF-8 escaped."""

    path: str
    reason: str


class Unreadable(_Model):
    """What a source could not read, so is not in the batch: a directory walk's unreadable
    folders, paths longer than PATH_MAX, broken links it was asked to follow. ``count`` is
    exact, ``examples`` the first few. Optional in manifest.json and report.json (an older
    batch has none: nothing was counted).

    ``left_out`` counts, apart, what the walk leaves out by its rules rather than for an error:
    symbolic links it was not asked to follow, and entries that are no regular file (a fifo, a
    socket, a device), each only where the ``--glob`` would have taken it. A folder of links
    would otherwise become a batch of 0 items without a word."""

    count: int = 0
    examples: list[UnreadablePath] = []
    left_out: int = 0
    left_out_examples: list[UnreadablePath] = []

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        _keep(self.examples, path, reason)

    def leave_out(self, path: str, reason: str) -> None:
        self.left_out += 1
        _keep(self.left_out_examples, path, reason)

    def summary(self) -> str:
        """E.g. ``2 paths of the source could not be read and were left out: /d/x (permission
        denied), /d/y (path longer than PATH_MAX, 4096 bytes)``; "" when there is none."""
        return _said(self.count, self.examples, ("path", "paths"), "could not be read and {verb} left out")

    def left_out_summary(self) -> str:
        """E.g. ``2 entries of the source were left out by rule: /d/link (a symbolic link, not
        followed: --follow-symlinks), /d/fifo (a fifo, not a regular file)``; "" when none."""
        return _said(self.left_out, self.left_out_examples, ("entry", "entries"), "{verb} left out by rule")


def _keep(examples: list[UnreadablePath], path: str, reason: str) -> None:
    if len(examples) < UNREADABLE_EXAMPLES:
        examples.append(UnreadablePath(path=path, reason=reason))


def _said(n: int, examples: list[UnreadablePath], nouns: tuple[str, str], what: str) -> str:
    """``n`` things of a source and what became of them, the first few named with why."""
    if not n:
        return ""
    shown = ", ".join(f"{e.path} ({e.reason})" for e in examples)
    more = f", and {n - len(examples)} more" if n > len(examples) else ""
    noun = f"1 {nouns[0]}" if n == 1 else f"{n} {nouns[1]}"
    return f"{noun} of the source {what.format(verb='was' if n == 1 else 'were')}: {shown}{more}"


class Manifest(_Model):
    """``manifest.json``: the batch header."""

    version: int = Field(default=MANIFEST_VERSION, ge=1, strict=True)
    batch_id: str
    name: str
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    state: BatchState = BatchState.CREATED
    halt_reason: str | None = None
    source: dict[str, Any]
    processor: dict[str, Any]
    config: dict[str, Any]
    totals: Counts = Field(default_factory=Counts)
    duplicates_dropped: int = 0
    unreadable: Unreadable = Field(default_factory=Unreadable)
    history: list[HistoryEntry] = []
    #: Sources added to the batch since (``batchtui add``), each a ``source``; a rescan reads
    #: ``source`` and these again, in this order.
    added_sources: list[dict[str, Any]] = []
    #: When a change made without an engine (skip, retry, prioritize, add, resume --retry-failed)
    #: began; None once its totals are written. Set before the store is changed: while it is
    #: set (the change killed half-way), ``totals`` may be stale and views count in items.db.
    changing: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_newer(cls, data: Any) -> Any:
        # Raised as itself (not a ValueError): pydantic lets it through, so a reader never
        # falls back to the .bak (written by the same newer version) or calls it damaged.
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
            raise NewerFormat(version)
        return data


class InFlight(_Model):
    """An item handed out: running since ``started_at``, or queued (``started_at`` is then
    when it was handed out)."""

    seq: int
    key: str
    attempt: int
    started_at: str
    queued: bool = False


class History(_Model):
    """``history`` of live_progress.json: the last samples of the throughput and the memory
    (process and children), oldest first, one every ``interval_s`` seconds, so a view
    attached late draws the same charts as one that watched from the start."""

    interval_s: float = 1.0
    rate_per_s: list[float] = []
    rss_mb: list[float] = []


class Memory(_Model):
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    children_rss_mb: float = 0.0
    system_available_mb: float = 0.0


class Cost(_Model):
    spent: float = 0.0
    budget: float | None = None


class ErrorGroup(_Model):
    """Failures grouped by error type and normalized message; ``id`` is the group's short
    stable id (grouping.group_id), what ``--group`` and the views' group filter take;
    ``first_seen``/``last_seen`` are the earliest and latest ``finished_at`` of its items."""

    error_type: str
    category: str
    message: str
    count: int
    example_seq: int
    example_message: str
    id: str = ""
    first_seen: str | None = None
    last_seen: str | None = None


class RecentError(_Model):
    seq: int
    key: str
    error_type: str
    category: str
    message: str
    at: str
    attempt: int


class ClusterInfo(_Model):
    """The dask cluster the items run on (``--executor dask`` only): sampled from the scheduler."""

    scheduler: str = ""
    local: bool = False  # a LocalCluster the engine started (and closes)
    workers: int = 0
    threads: int = 0
    memory_total_mb: float = 0.0  # the workers' summed memory limits (0: no limit set)
    memory_used_mb: float = 0.0  # the workers' summed process memory


class TimeoutInForce(_Model):
    """The ``--timeout`` in force (live_progress.json ``timeout``; engine/adaptive.py).

    ``basis``: ``absolute`` (``--timeout N``); with ``--timeout P%``: ``learning`` (fewer than
    ``after`` successes: only ``max_s`` applies, if any), ``median`` (P% of the median
    success), ``floor`` (that was below ``floor_s``), ``max`` (that was above ``max_s``)."""

    limit_s: float | None = None  # None: no limit applies yet
    basis: Literal["absolute", "learning", "median", "floor", "max"] = "absolute"
    median_s: float | None = None
    successes: int = 0
    percent: float | None = None
    floor_s: float | None = None
    after: int | None = None
    max_s: float | None = None


class KeyLimit(_Model):
    """One ``--limit-by`` key as live_progress.json shows it (``limits``: the busiest few,
    engine/limits.py): its rate now (lowered after a retry-after, back up on successes), its
    items in flight and waiting for it, the retry-afters it got, and how long it still waits
    after the last one."""

    key: str
    rate: float
    in_flight: int = 0
    waiting: int = 0
    backoffs: int = 0
    done: int = 0
    cooldown_s: float = 0.0


class LiveProgress(_Model):
    """``live_progress.json``: the engine's committed state, for every view."""

    batch_id: str
    state: BatchState
    updated_at: str
    commit_seq: int = 0
    total: int = 0
    counts: LiveCounts = Field(default_factory=LiveCounts)
    percent: float = 0.0
    rate_per_s: float = 0.0
    eta_s: float | None = None
    #: The ETA's range (engine/eta.py): eta_s lies between; None when unknown.
    eta_low_s: float | None = None
    eta_high_s: float | None = None
    #: How long nothing has finished, when much longer than usual (then eta_s is None).
    stalled_s: float | None = None
    #: The batch's active time: the sum of its runs, this one included (see engine/timing.py).
    elapsed_s: float = 0.0
    #: This run's time (None in files of an older engine, whose elapsed_s was this run's).
    run_elapsed_s: float | None = None
    in_flight: list[InFlight] = []
    #: ``--limit-by``: the busiest keys (at most limits.LIVE_KEYS); empty without it.
    limits: list[KeyLimit] = []
    memory: Memory = Field(default_factory=Memory)
    cost: Cost = Field(default_factory=Cost)
    errors_by_type: dict[str, int] = {}
    #: The biggest error groups (at most publish.LIVE_ERROR_GROUPS); error_groups_total says
    #: how many there are (None in files of an older engine): the rest are in items.db.
    error_groups: list[ErrorGroup] = []
    error_groups_total: int | None = None
    recent_errors: list[RecentError] = []
    paused: bool = False
    workers: int = 0
    control_ack: str | None = None
    acked: list[str] = []
    control_results: dict[str, str] = {}
    halt_reason: str | None = None
    pid: int | None = None
    host: str | None = None
    warnings: list[str] = []
    cluster: ClusterInfo | None = None
    #: The timeout in force (None: no --timeout).
    timeout: TimeoutInForce | None = None
    #: Why dispatch waits for memory (--memory-limit-mb), None when it does not.
    memory_hold: str | None = None
    #: Why commands cannot be started now (no processes, memory or open files), None when they can.
    start_hold: str | None = None
    history: History = Field(default_factory=History)

    def ended(self, state: BatchState, halt_reason: str | None) -> LiveProgress:
        """This progress as its run ended, for when the engine could not write that (its folder
        went while it ran, it was killed): the state it ended in and why, nothing running or
        queued, no ETA, and the items it had handed out pending (the next run runs them again,
        as its recovery puts them back to pending)."""
        c = self.counts
        counts = c.model_copy(
            update={"pending": c.pending + c.processing, "processing": 0, "running": 0, "queued": 0, "retrying": 0}
        )
        update: dict[str, Any] = {"state": state, "halt_reason": halt_reason, "in_flight": [], "counts": counts}
        return self.model_copy(update={**update, "eta_s": None, "eta_low_s": None, "eta_high_s": None})


#: ``index`` (value: an order of ``queries.ORDERS``, "duration"): a view shows the items in that
#: order; the engine builds the index it is read from (engine/store/slowest.py), once a store.
ControlOp = Literal["pause", "resume", "stop", "retry", "skip", "prioritize", "set_workers", "index"]


class ControlCommand(_Model):
    """One line of ``control.jsonl``."""

    id: str
    ts: str
    op: ControlOp
    seqs: list[Annotated[int, Field(ge=0, le=MAX_SEQ)]] | None = None
    filter: dict[str, Any] | None = None
    value: Any = None
    #: A :class:`~batchtui.engine.store.queries.Selection`'s JSON (``to_json``): the items of
    #: retry, skip and prioritize; checked by ``Selection.from_json`` where it is applied.
    select: dict[str, Any] | None = None
    #: The engine the sender saw holding the batch (:meth:`LockInfo.token`). A command an
    #: engine finds unread when it takes the batch over is its own if it names that engine (it
    #: was sent after the batch was taken, before the engine read control.jsonl); otherwise it
    #: was meant for an engine that is gone. Absent in lines written by hand or older versions.
    to: str | None = None


class DurationStats(_Model):
    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class Report(_Model):
    """``report.json``: written at the end of every run (also a halted or stopped one)."""

    batch_id: str
    name: str
    state: BatchState
    halt_reason: str | None = None
    started_at: str | None = None
    ended_at: str
    #: The batch's active time: the sum of its runs (engine/timing.py), not ended_at - started_at.
    duration_s: float
    #: This run's time, and how many runs the batch has had (0: an older engine's report).
    run_duration_s: float = 0.0
    runs: int = 0
    totals: Counts
    duplicates_dropped: int = 0
    unreadable: Unreadable = Field(default_factory=Unreadable)
    success_rate: float
    #: Processed items (complete + failed) over duration_s.
    items_per_s: float
    durations: DurationStats
    peak_memory_mb: float
    #: This run's CPU seconds: the engine's process, its child processes' (engine/monitor.py).
    engine_cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    cost_spent: float = 0.0
    errors_by_type: dict[str, int] = {}
    errors_by_category: dict[str, int] = {}
    error_groups: list[ErrorGroup] = []
    config: dict[str, Any]
    resume_command: str | None = None


class ResultLine(_Model):
    """One line of ``results.jsonl``: what the runner writes (it builds the line as a dict for
    speed, with exactly these keys; ``cost`` only when the item had one) and what every reader
    checks. Strict: a line whose ``attempts`` is ``"3"`` was not written by an engine, so it is
    refused, not coerced (resume adopts only lines that validate, see engine/resultscheck.py)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    seq: int = Field(ge=0)
    key: str
    result: Any = None
    attempts: int = Field(ge=1)
    duration_s: float = Field(allow_inf_nan=False)
    finished_at: str
    cost: float | None = Field(default=None, allow_inf_nan=False)


class LockInfo(_Model):
    """Content of the ``lock`` file while an engine holds it."""

    pid: int
    host: str
    started_at: str
    # False for a brief holder that is no engine (a skip or retry applied offline, recover):
    # views do not send it commands. Absent in older locks, which only engines took.
    engine: bool = True
    # The holder that took the batch for this engine and handed it the lock (``run --detach``,
    # ``resume --detach``: :meth:`BatchLock.hand_over`), as its :meth:`token`: commands sent to
    # it while it read the sources or planned are this engine's.
    handed_from: str | None = None
    # This holder reads the sources (``run --detach``) or plans a resume (``resume --detach``),
    # then hands the batch to a background engine: commands sent to it meanwhile are that
    # engine's (:func:`~.control.unacked_message` says so). Absent in older locks.
    hands_over: bool = False

    def token(self) -> str:
        """This holder, as a command names the engine it is sent to (``ControlCommand.to``)."""
        return f"{self.host}:{self.pid}:{self.started_at}"
