"""Waiting on a running shell with kqueue (macOS, the BSDs): its exit and its pipes in one queue.

``EVFILT_PROC``/``NOTE_EXIT`` reports the exit without reaping the shell. A shell that has
already exited (a zombie) cannot be watched on macOS (``ESRCH``): it counts as exited then.
"""

from __future__ import annotations

import select
import sys

from .spawn import Child

__all__ = ["KqueueWatch"]

if sys.platform != "linux" and sys.platform != "win32":

    class KqueueWatch:
        """The exit and both pipes of one shell in a kqueue."""

        def __init__(self, child: Child) -> None:
            self.exited = False
            self.kq = select.kqueue()
            try:
                reads = [
                    select.kevent(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD) for fd in (child.stdout, child.stderr)
                ]
                self.kq.control(reads, 0)
                proc = select.kevent(
                    child.pid, select.KQ_FILTER_PROC, select.KQ_EV_ADD | select.KQ_EV_ONESHOT, select.KQ_NOTE_EXIT
                )
                try:
                    self.kq.control([proc], 0)
                except ProcessLookupError:
                    self.exited = True  # already exited
            except BaseException:
                self.kq.close()
                raise

        def wait(self, timeout_ms: int) -> list[int]:
            timeout = None if timeout_ms < 0 else timeout_ms / 1000
            ready = []
            for event in self.kq.control(None, 4, timeout):
                if event.filter == select.KQ_FILTER_PROC:
                    self.exited = True
                elif event.filter == select.KQ_FILTER_READ:
                    ready.append(event.ident)
            return ready

        def unregister(self, fd: int) -> None:
            self.kq.control([select.kevent(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)], 0)

        def close(self) -> None:
            self.kq.close()
