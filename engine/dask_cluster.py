"""The dask executor's cluster: connecting to it, checking it can run the batch, asking it.

``--scheduler tcp://HOST:PORT`` (``scheduler`` in batchtui.toml, env ``BATCHTUI_SCHEDULER``)
connects to an existing cluster, which the engine leaves running; without it the engine starts a
``LocalCluster`` (worker processes, ``--workers`` of them, one thread each, ``allowed-failures=0``
so that a dead worker is reported at once) and closes it at the end.

Before any item goes out, :meth:`DaskCluster.check` proves on a worker that the batch can run
there (batchtui, the ``--call`` module and the folder the batch started in exist, and every
worker holds the ``--call`` source this engine read), so a bad environment is one clear error
(:class:`DaskWorkerError`), not a failed item per worker.

dask is an optional extra: nothing here imports it before :func:`require_distributed` is called.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

from .config import BatchConfig
from .dask_worker import TaskSpec, code_on_worker, dask_setup, forget_topics, probe
from .errors import UserError
from .executors import WorkerInitError
from .fmt import count
from .models import ClusterInfo
from .processors import ProcessorSpec

log = logging.getLogger("batchtui.engine.dask")

INSTALL_HINT: Final = "pip install 'batchtui[dask]'"
CONNECT_TIMEOUT_S: Final = 15.0
WORKER_WAIT_S: Final = 120.0
#: How long a broadcast to the workers may take before its answer is treated as incomplete.
BROADCAST_TIMEOUT_S: Final = 10.0


def require_distributed() -> Any:
    """Import ``distributed``, or raise the clear :class:`UserError` naming the extra."""
    try:
        import distributed  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        raise UserError(f"the dask executor needs the optional extra: {INSTALL_HINT} ({exc})") from None
    return distributed


class DaskWorkerError(UserError, WorkerInitError):
    """The cluster cannot run this batch (no worker, batchtui or the callable missing there...).

    A :class:`WorkerInitError` for the runner (it records why the start failed) and a
    :class:`UserError` for the CLI (one clear line, exit 2, no traceback)."""


class DaskCluster:
    """The cluster a batch's items run on, and the client that reaches it."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.distributed: Any = require_distributed()
        self.client: Any = None
        self.local: Any = None  # the LocalCluster this engine started; None on an existing cluster
        self._info_kwargs: dict[str, Any] = {}
        self._rpc = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="batchtui-dask-rpc")

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect to ``--scheduler`` (UserError when it does not answer within ``timeout``), or
        start a LocalCluster of ``--workers`` processes."""
        distributed = self.distributed
        if self.config.scheduler:
            address = self.config.scheduler
            # Made, then started, so that a client whose start fails can be closed here: left to
            # the collector, it waited 30 s at the process's exit and printed a traceback.
            client = distributed.Client.__new__(distributed.Client)
            try:
                client.__init__(address, timeout=timeout, set_as_default=False)
            except Exception as exc:  # OSError, TimeoutError; ValueError for an address it cannot read
                with contextlib.suppress(Exception):
                    client.close(timeout=1)
                why = str(exc) or type(exc).__name__
                raise DaskWorkerError(f"cannot connect to the dask scheduler at {address}: {why}") from None
            self.client = client
        else:
            try:
                self.local = distributed.LocalCluster(
                    n_workers=self.config.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                    scheduler_kwargs={"allowed_failures": 0},
                    preload=[dask_setup.__module__],
                )
                self.client = distributed.Client(self.local, set_as_default=False)
            except Exception as exc:
                self._close_local()
                raise DaskWorkerError(f"the local dask cluster did not start: {exc}") from exc
        if "n_workers" in inspect.signature(self.client.scheduler_info).parameters:
            self._info_kwargs = {"n_workers": -1}

    def check(self, task: TaskSpec, spec: ProcessorSpec, key: str, *, probe_task: bool = True) -> None:
        """Wait for a worker, then build the processor on one: fail fast on a bad environment.
        ``probe_task`` False: no task (every thread is held by calls an earlier run of the batch
        left running, which ran it here just now: a task would wait behind them)."""
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (TimeoutError, OSError) as exc:
            raise DaskWorkerError(f"no dask worker joined {self.address()} within {WORKER_WAIT_S:g}s") from exc
        self._check_code(task, spec)
        if not probe_task:
            return
        future = self.client.submit(probe, task, pure=False, key=key)
        try:
            problem = future.result(timeout=WORKER_WAIT_S)
        except TimeoutError:
            with contextlib.suppress(Exception):
                self.client.cancel([future])
            raise DaskWorkerError(
                f"no dask worker thread came free within {WORKER_WAIT_S:g}s to run the start-up check:"
                f" every thread of {self.address()} is busy with other tasks"
            ) from None
        except Exception as exc:  # batchtui missing on the worker, a version mismatch...
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            raise DaskWorkerError(
                f"a dask worker cannot run this batch: {problem}"
                " (batchtui, the --call module and the folder the batch started in must exist on every worker)"
            )

    def _check_code(self, task: TaskSpec, spec: ProcessorSpec) -> None:
        """Every worker there now reads the --call source this engine read: a worker with another
        copy is named and the run refused (never run other code unnoticed). A worker that cached
        an older version imports it again (see :func:`~.processors.load_callable`); one that joins
        later is checked as it loads (its items fail fatal, the batch halts)."""
        if task.code is None or spec.call is None:
            return
        asked = self._rpc.submit(self.client.run, code_on_worker, spec.call, spec.cwd, on_error="return")
        try:
            replies = asked.result(timeout=BROADCAST_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            # A worker busy with a call that holds its GIL (another batch's) held the whole start
            # here, unbounded. Each worker checks the source as it loads it anyway (see above).
            log.warning(
                "not every dask worker answered within %gs whether it holds this --call source:"
                " each one checks it as it loads the function",
                BROADCAST_TIMEOUT_S,
            )
            return
        except Exception as exc:  # the probe that follows says what is wrong with the cluster
            log.warning("could not compare the --call source on the workers: %s", exc)
            return
        other = sorted(addr for addr, got in replies.items() if isinstance(got, str) and got != task.code)
        if other:
            source = spec.call.rpartition(":")[0]
            raise DaskWorkerError(
                f"{count(len(other), 'dask worker')} {'has' if len(other) == 1 else 'have'} another {source} than this engine"
                f" (sha256 {task.code[:12]} here): {', '.join(other)}; put the same file on every worker"
            )

    def info(self) -> ClusterInfo | None:
        """Workers, threads and memory of the cluster now; None when the scheduler did not answer."""
        try:
            info = self.client.scheduler_info(**self._info_kwargs)
        except Exception:
            return None
        workers = info.get("workers") or {}
        limit = used = 0.0
        threads = 0
        for w in workers.values():
            threads += int(w.get("nthreads") or 0)
            limit += float(w.get("memory_limit") or 0)
            used += float((w.get("metrics") or {}).get("memory") or 0)
        return ClusterInfo(
            scheduler=str(info.get("address") or self.address()),
            local=self.local is not None,
            workers=len(workers),
            threads=threads,
            memory_total_mb=round(limit / 1048576, 1),
            memory_used_mb=round(used / 1048576, 1),
        )

    def ask_all(
        self, function: Callable[..., Any], *args: Any, timeout: float = BROADCAST_TIMEOUT_S
    ) -> tuple[list[Any], bool]:
        """Run ``function`` on every worker and wait (bounded): the answers, and whether every
        worker gave one."""
        try:
            replies = self._rpc.submit(self.client.run, function, *args, on_error="return").result(timeout=timeout)
        except concurrent.futures.TimeoutError:  # each caller says what it means for it
            log.info("not every dask worker answered within %gs: the answers are not trusted", timeout)
            return [], False
        except Exception as exc:
            log.warning("a dask broadcast failed (%s: %s): its answers are not trusted", type(exc).__name__, exc)
            return [], False
        answers = [r for r in replies.values() if not isinstance(r, BaseException)]
        return answers, len(answers) == len(replies)

    def later(self, function: Callable[[], object]) -> None:
        """Run ``function`` on a thread of the broadcasts (it may wait on :meth:`ask_all`: the
        pool has a second thread for that)."""
        with contextlib.suppress(RuntimeError):  # shut down: the run is over
            self._rpc.submit(function)

    def broadcast(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on every worker without waiting for it."""
        with contextlib.suppress(Exception):
            self._rpc.submit(self.client.run, function, *args, on_error="ignore")

    def address(self) -> str:
        if self.config.scheduler:
            return self.config.scheduler
        return str(getattr(self.local, "scheduler_address", "the local cluster"))

    def close(self, wait: float, topics: tuple[str, ...] = ()) -> None:
        """Let go of the cluster: the client, and the LocalCluster this engine started. A
        scheduler left running is asked to forget the events of this run's ``topics``."""
        if self.client is not None and self.local is None and topics:
            with contextlib.suppress(Exception):  # best effort, and never more than a second
                forgot = self._rpc.submit(self.client.run_on_scheduler, forget_topics, list(topics))
                forgot.result(timeout=min(wait, 1.0))
        self._rpc.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=max(1.0, wait))
        self._close_local()

    def _close_local(self) -> None:
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close(timeout=10)
            self.local = None
