"""The app's engine on a thread of its own, and an async worker that awaits its end.

Not a Textual thread worker: those run on the event loop's default executor, and
``asyncio.run`` waits for that executor when the app ends. An engine that outlives the app
(draining its running items before a hand-off, tui/handover.py) then kept ``App.run`` from
returning: the terminal was back but nothing could be said on it, and a Ctrl-C could not reach
the wait. Here the engine runs on a plain thread (not a daemon: the interpreter's exit waits
for it), and the app's worker only awaits a future the thread settles, so ``Worker.StateChanged``
and ``Worker.wait`` work as with a thread worker and the app ends whenever it is asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Callable

from batchtui.engine.runner import BatchRunner, RunResult


def start_engine_thread(
    runner: BatchRunner,
    *,
    go: threading.Event,
    go_wait: float,
    done: threading.Event,
    on_end: Callable[[RunResult | None, BaseException | None], None],
) -> asyncio.Future[RunResult]:
    """Start ``runner.run()`` on a new thread once ``go`` is set (or after ``go_wait`` s).

    ``on_end(result, error)`` is called on that thread when the run ends, then ``done`` is set.
    Returns what an async worker awaits: the run's result, or its error raised. Call it on the
    event loop (the future is bound to the running loop).
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[RunResult] = loop.create_future()

    def settle(result: RunResult | None, error: BaseException | None) -> None:
        if finished.done():
            return
        if error is None:
            assert result is not None
            finished.set_result(result)
        else:  # a KeyboardInterrupt or SystemExit must not escape into the event loop
            finished.set_exception(error if isinstance(error, Exception) else RuntimeError(repr(error)))

    def run() -> None:
        result: RunResult | None = None
        error: BaseException | None = None
        try:
            go.wait(go_wait)  # its dashboard's first frame (the app's engine_may_start)
            # The app's own objects (widgets, styles, caches: ~10^5) are long-lived, and every
            # full collection that the engine's allocations set off would go through them
            # again: 200k no-op items ran ~0.8 s slower in the app with no dashboard update at
            # all. Frozen for the run, they are left out; unfrozen after it, so what of them
            # becomes garbage later (a screen closed) is still collected.
            gc.freeze()
            try:
                result = runner.run()
            finally:
                gc.unfreeze()
        except BaseException as exc:
            error = exc
        finally:
            on_end(result, error)
            done.set()
            with contextlib.suppress(RuntimeError):  # the app's loop has closed: nobody awaits it
                loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"batchtui-engine-{runner.batch.batch_id}").start()
    return finished
