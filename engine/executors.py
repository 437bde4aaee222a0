"""Executors: where items run. Thread and process pools behind one small interface.

The runner submits chunks (lists of items) and reads :class:`Outcome` lists from one
completion queue. Executors never touch the batch files: the runner is the single writer.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import multiprocessing.connection

from .config import BatchConfig
from .errors import ErrorInfo, WorkerLost, classify
from .processors import CallableProcessor, Item, ProcessorSpec, build_processor, cost_of


@dataclass(slots=True)
class Outcome:
    """The result of one attempt at one item."""

    seq: int
    attempt: int
    started: float
    duration: float
    result: Any = None
    cost: float | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Classifier:
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


StartHook = Callable[[Sequence[Item]], None]


def run_items(
    processor: Any, items: Sequence[Item], classifier: Classifier, chunked: bool, on_start: StartHook | None = None
) -> list[Outcome]:
    """Run a chunk of items; never raises (every failure becomes an Outcome).

    ``on_start`` (when given) is told as each item begins (the whole chunk at once for a
    chunked processor): the runner's ``--timeout`` counts from there, not from the dispatch.
    """
    if chunked and isinstance(processor, CallableProcessor):
        if on_start is not None:
            on_start(items)
        started = time.time()
        t0 = time.perf_counter()
        try:
            outputs = processor.run_chunk(items)
        except Exception as exc:  # the whole chunk failed: each item carries the error
            info = classifier(exc)
            dur = (time.perf_counter() - t0) / max(1, len(items))
            return [Outcome(it.seq, it.attempt, started, dur, error=info) for it in items]
        dur = (time.perf_counter() - t0) / max(1, len(items))
        pairs = zip(items, outputs, strict=True)
        return [Outcome(it.seq, it.attempt, started, dur, out.result, out.cost) for it, out in pairs]
    outcomes: list[Outcome] = []
    if type(processor) is CallableProcessor:
        # The callable straight from here, as CallableProcessor.run would call it, without a
        # ProcessOutput for each result: a no-op callable costs ~1 us less an item.
        func, append, clock, wall = processor.func, outcomes.append, time.perf_counter, time.time
        for item in items:
            if on_start is not None:
                on_start((item,))
            started = wall()
            t0 = clock()
            try:
                value = func(item)
            except Exception as exc:
                append(Outcome(item.seq, item.attempt, started, clock() - t0, error=classifier(exc)))
            else:
                append(Outcome(item.seq, item.attempt, started, clock() - t0, value, cost_of(value)))
        return outcomes
    for item in items:
        if on_start is not None:
            on_start((item,))
        started = time.time()
        t0 = time.perf_counter()
        try:
            out = processor.run(item)
        except Exception as exc:
            outcomes.append(Outcome(item.seq, item.attempt, started, time.perf_counter() - t0, error=classifier(exc)))
        else:
            outcomes.append(Outcome(item.seq, item.attempt, started, time.perf_counter() - t0, out.result, out.cost))
    return outcomes


CompletionQueue = queue.SimpleQueue[list[Outcome]]


class Executor(Protocol):
    """What the runner needs from an executor."""

    workers: int

    def start(self) -> None: ...

    def submit(self, chunk: list[Item]) -> None: ...

    def set_workers(self, n: int) -> None: ...

    def kill(self, seq: int) -> bool: ...

    def kill_all(self) -> int: ...

    def started(self, seq: int) -> float | None:
        """When ``seq`` began to run (``time.monotonic()``), None while it waits in a queue.

        Only tracked where the runner's watchdog needs it (a ``--timeout`` on Python calls):
        an item's timeout counts its own running time, never its wait behind other items.
        """
        ...

    def shutdown(self, wait: float = 5.0) -> None: ...


def tracks_starts(spec: ProcessorSpec, config: BatchConfig) -> bool:
    """Whether the runner times items out itself (shell commands time out in the processor)."""
    return config.timeout is not None and spec.kind != "shell"


_RETIRE = object()


class ThreadExecutor:
    """Worker threads in the engine process (default for shell commands).

    Shell items run as subprocesses, so threads are all they need; Python callables that
    release the GIL (I/O) do well here too.
    """

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        self.spec = spec
        self.config = config
        self.completions = completions
        self.classifier = Classifier.from_config(config)
        self.processor: Any = None
        self.tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.workers = 0
        self._lock = threading.Lock()
        self._counter = 0
        self._since: dict[int, float] | None = {} if tracks_starts(spec, config) else None

    def start(self) -> None:
        self.processor = build_processor(self.spec, timeout=self.config.timeout, log_limit=self.config.log_limit)
        self.set_workers(self.config.workers)

    def _mark(self, items: Sequence[Item]) -> None:
        since, now = self._since, time.monotonic()
        if since is not None:
            for item in items:
                since[item.seq] = now

    def _loop(self) -> None:
        processor, classifier, chunked = self.processor, self.classifier, self.spec.chunked
        tasks, completions, since = self.tasks, self.completions, self._since
        on_start = self._mark if since is not None else None
        while True:
            chunk = tasks.get()
            if chunk is None or chunk is _RETIRE:
                return
            outcomes = run_items(processor, chunk, classifier, chunked, on_start)
            if since is not None:
                for item in chunk:
                    since.pop(item.seq, None)
            completions.put(outcomes)

    def started(self, seq: int) -> float | None:
        return self._since.get(seq) if self._since is not None else None

    def set_workers(self, n: int) -> None:
        with self._lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            while self.workers < n:
                self._counter += 1
                t = threading.Thread(target=self._loop, name=f"batchtui-worker-{self._counter}", daemon=True)
                t.start()
                self.threads.append(t)
                self.workers += 1
            while self.workers > n:
                self.tasks.put(_RETIRE)
                self.workers -= 1

    def submit(self, chunk: list[Item]) -> None:
        self.tasks.put(chunk)

    def kill(self, seq: int) -> bool:
        return bool(self.processor.kill(seq)) if self.processor else False

    def kill_all(self) -> int:
        return int(self.processor.kill_all()) if self.processor else 0

    def shutdown(self, wait: float = 5.0) -> None:
        for _ in self.threads:
            self.tasks.put(None)
        deadline = time.monotonic() + wait
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _child_main(conn: multiprocessing.connection.Connection, spec_json: str, config_json: str) -> None:
    """Entry point of a process-pool worker: build the processor once, then serve chunks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when its workers stop
    spec = ProcessorSpec.model_validate_json(spec_json)
    config = BatchConfig.model_validate_json(config_json)
    try:
        processor = build_processor(spec, timeout=config.timeout, log_limit=config.log_limit)
    except Exception as exc:
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    classifier = Classifier.from_config(config)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        conn.send(run_items(processor, chunk, classifier, spec.chunked))


@dataclass
class _Slot:
    proc: Any
    conn: multiprocessing.connection.Connection
    thread: threading.Thread | None = None
    running: list[int] = field(default_factory=list)
    since: float = 0.0  # when the running chunk was sent (the process is idle until then)
    retire: bool = False


class ProcessExecutor:
    """A pool of worker processes (default for Python callables: no GIL between items).

    One feeder thread per process sends it a chunk and waits for the outcomes, so a worker
    that dies (SIGKILL, out of memory, a segfault in a C extension) is noticed at once: its
    items come back as ``WorkerLost`` (transient, retried) and the process is replaced.
    ``kill(seq)`` kills the process running that item, which is how timeouts and skips of
    in-flight Python items work.
    """

    def __init__(self, spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> None:
        self.spec = spec
        self.config = config
        self.completions = completions
        import multiprocessing  # only the process executor pays for it (a shell run never does)

        self.ctx = multiprocessing.get_context("spawn")
        self.tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.slots: list[_Slot] = []
        self.workers = 0
        self._lock = threading.Lock()
        self._closing = False

    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_child_main,
            args=(child, self.spec.model_dump_json(), self.config.model_dump_json()),
            daemon=True,
            name="batchtui-pool-worker",
        )
        proc.start()
        child.close()
        try:
            kind, detail = parent.recv()
        except EOFError:
            kind, detail = "init_error", f"worker process exited with {proc.exitcode}"
        if kind != "ready":
            proc.join(1)
            raise WorkerInitError(str(detail))
        return _Slot(proc, parent)

    def start(self) -> None:
        self.set_workers(self.config.workers)

    def _feed(self, slot: _Slot) -> None:
        while True:
            chunk = self.tasks.get()
            if chunk is None or chunk is _RETIRE:
                with contextlib.suppress(OSError, ValueError):
                    slot.conn.send(None)
                slot.proc.join(2)
                return
            slot.since = time.monotonic()
            slot.running = [it.seq for it in chunk]
            try:
                slot.conn.send(chunk)
                outcomes = slot.conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                slot.proc.join(1)
                code = slot.proc.exitcode
                lost = WorkerLost(f"worker process died ({_exit_text(code)})")
                info = classify(lost)
                now = time.time()
                outcomes = [Outcome(it.seq, it.attempt, now, 0.0, error=info) for it in chunk]
                slot.running = []
                self.completions.put(outcomes)
                if self._closing:
                    return
                try:  # replace the dead process and go on
                    fresh = self._spawn()
                except Exception:
                    return
                slot.proc, slot.conn = fresh.proc, fresh.conn
                continue
            slot.running = []
            self.completions.put(outcomes)

    def set_workers(self, n: int) -> None:
        with self._lock:
            while self.workers < n:
                slot = self._spawn()
                slot.thread = threading.Thread(target=self._feed, args=(slot,), daemon=True, name="batchtui-feeder")
                slot.thread.start()
                self.slots.append(slot)
                self.workers += 1
            while self.workers > n:
                self.tasks.put(_RETIRE)
                self.workers -= 1

    def submit(self, chunk: list[Item]) -> None:
        self.tasks.put(chunk)

    def kill(self, seq: int) -> bool:
        for slot in self.slots:
            if seq in slot.running and slot.proc.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(slot.proc.pid, signal.SIGKILL)
                return True
        return False

    def started(self, seq: int) -> float | None:
        for slot in self.slots:
            if seq in slot.running:
                return slot.since
        return None

    def kill_all(self) -> int:
        n = 0
        for slot in self.slots:
            if slot.running and slot.proc.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(slot.proc.pid, signal.SIGKILL)
                n += 1
        return n

    def shutdown(self, wait: float = 5.0) -> None:
        self._closing = True
        for _ in self.slots:
            self.tasks.put(None)
        deadline = time.monotonic() + wait
        for slot in self.slots:
            if slot.thread:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(1)


class WorkerInitError(Exception):
    """A worker process could not build the processor (e.g. the callable does not import)."""


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def make_executor(spec: ProcessorSpec, config: BatchConfig, completions: CompletionQueue) -> Executor:
    kind = config.resolved_executor(spec.kind)
    if kind == "thread":
        return ThreadExecutor(spec, config, completions)
    if kind == "process":
        return ProcessExecutor(spec, config, completions)
    if kind == "dask":
        # Imported here: dask is an optional extra and importing batchtui never imports it.
        from .dask_executor import DaskExecutor

        return DaskExecutor(spec, config, completions)
    from .errors import UserError

    raise UserError(f"unknown executor {kind!r} (use thread, process or dask)")
