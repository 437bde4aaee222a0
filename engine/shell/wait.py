"""Waiting on a running shell: its two pipes and its exit. One backend per platform, chosen once.

The processor reads both pipes until the shell has exited and they are drained. It sees the exit
without reaping the shell where the system allows: while the shell is unreaped its pid (which is
its process group id) cannot be reused, so killing the group afterwards never hits another one.

- ``pidfd`` (Linux >= 5.3): a descriptor that turns readable when the shell exits, polled with
  the pipes. An old kernel or a sandbox that refuses it moves this process to the next backend.
- ``kqueue`` (macOS, the BSDs; :mod:`.wait_kqueue`): the exit (``EVFILT_PROC``/``NOTE_EXIT``)
  and the pipes in one kqueue.
- ``waitid`` (other systems with ``waitid(WNOWAIT)``): the pipes are polled in short ticks and
  ``waitid(..., WNOHANG | WNOWAIT)`` looks for the exit between them.
- ``polling``, last: as ``waitid``, but the look reaps the shell (``waitpid(WNOHANG)``). Its pid
  is free again then; the processor kills the group right after, and a pid is not reused while a
  process group of that id lives, so only an already empty group could be confused with a new
  process, and only if the system handed out the same pid in between (pids are given out in
  turn up to pid_max).
"""

from __future__ import annotations

import errno
import os
import select
import sys
from typing import Final, Protocol

from .spawn import Child

__all__ = ["TICK_MS", "ExitWatch", "backend", "watch"]

#: How often ``waitid`` and ``polling`` look for the exit (milliseconds).
TICK_MS: Final = 20


class ExitWatch(Protocol):
    """The pipes and the exit of one running shell."""

    exited: bool  # the shell has exited (it stays so)

    def wait(self, timeout_ms: int) -> list[int]:
        """Block up to ``timeout_ms`` (``-1``: until something happens); the pipes that are
        readable or at their end. :attr:`exited` is up to date afterwards."""
        ...

    def unregister(self, fd: int) -> None:
        """Stop watching a pipe (it reached its end)."""
        ...

    def close(self) -> None:
        """Release what the watch holds (the pipes stay open)."""
        ...


class _PollWatch:
    """The pipes in a :func:`select.poll`; a subclass says how the exit is seen."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.exited = False
        self.poller = select.poll()
        for fd in (child.stdout, child.stderr):
            self.poller.register(fd, select.POLLIN)

    def wait(self, timeout_ms: int) -> list[int]:
        if not self.exited:
            timeout_ms = TICK_MS if timeout_ms < 0 else min(timeout_ms, TICK_MS)
        ready = [fd for fd, _event in self.poller.poll(timeout_ms)]
        if not self.exited:
            self.exited = self._look()
        return ready

    def _look(self) -> bool:
        raise NotImplementedError

    def unregister(self, fd: int) -> None:
        self.poller.unregister(fd)

    def close(self) -> None:
        pass


if sys.platform != "darwin" and sys.platform != "win32":  # macOS's Python has no os.waitid

    class WaitidWatch(_PollWatch):
        """Looks for the exit with ``waitid(WNOWAIT)``, which leaves the shell unreaped."""

        def _look(self) -> bool:
            try:
                return os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True


class PollingWatch(_PollWatch):
    """Looks for the exit by reaping the shell if it is done (see the module's note)."""

    def _look(self) -> bool:
        return self.child.poll() is not None


class PidfdWatch(_PollWatch):
    """The shell's pidfd polled with its pipes: woken at the exit, without reaping."""

    def __init__(self, child: Child, pidfd: int) -> None:
        super().__init__(child)
        self.pidfd = pidfd
        self.poller.register(pidfd, select.POLLIN)

    def wait(self, timeout_ms: int) -> list[int]:
        ready = []
        for fd, _event in self.poller.poll(timeout_ms):
            if fd == self.pidfd:
                self.exited = True
                self.poller.unregister(fd)
            else:
                ready.append(fd)
        return ready

    def close(self) -> None:
        os.close(self.pidfd)


def _choose(*, pidfd: bool = True) -> str:
    if pidfd and hasattr(os, "pidfd_open"):
        return "pidfd"
    if hasattr(select, "kqueue") and hasattr(select, "KQ_FILTER_PROC"):
        return "kqueue"
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        return "waitid"
    return "polling"


_backend: str | None = None


def backend() -> str:
    """This process's backend, chosen on the first call: pidfd, kqueue, waitid or polling."""
    global _backend
    if _backend is None:
        _backend = _choose()
    return _backend


def watch(child: Child) -> ExitWatch:
    """A watch of ``child``'s pipes and exit, on this process's backend."""
    global _backend
    name = backend()
    if name == "pidfd" and sys.platform == "linux":
        try:
            return PidfdWatch(child, os.pidfd_open(child.pid))
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
            _backend = name = _choose(pidfd=False)  # an old kernel or a sandbox
    if name == "kqueue" and sys.platform != "linux" and sys.platform != "win32":
        from .wait_kqueue import KqueueWatch

        return KqueueWatch(child)
    if name == "waitid" and sys.platform != "darwin" and sys.platform != "win32":
        return WaitidWatch(child)
    return PollingWatch(child)
