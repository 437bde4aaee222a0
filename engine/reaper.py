"""Processes started for a run die with the engine, even when the engine is killed with -9.

An engine's items start processes the engine cannot follow: a shell item's ``setsid`` child
leaves the process group the engine kills, a ``--call`` function's ``Popen`` child is not even
known to the engine, and a pool worker left behind by a ``kill -9`` finishes its items
unsupervised (a prompt resume then runs the same items twice). So every process of a run is
marked, the way Jenkins' ProcessTreeKiller marks a build's processes, with an environment
cookie: :func:`reaping` puts ``BATCHTUI_RUN_TOKEN=<random>`` into ``os.environ``, and every
shell, pool worker and their descendants inherit it, whatever session or group they move to.

A small watchdog process holds the read end of a pipe whose only write end is the engine's.
When the engine exits, normally or by SIGKILL, the kernel closes that end, the watchdog reads
EOF and kills every process whose environment carries this run's token, then exits. The
engine pays nothing per item; the watchdog is one short-lived ``python`` per run.

Limits, by design of the cookie. The environment /proc (Linux) and sysctl (macOS) show is the
one a process was exec'd with: a process that rewrites its environment before it execs
(``env -i``, a daemon that clears it) is not found, nor one whose environment this user cannot
read (a setuid program; a hardened binary on macOS), nor a child made by ``os.fork()`` without
an exec. The kernel covers what it can on Linux: :func:`die_with_parent` for pool workers,
and a ``PR_SET_PDEATHSIG`` for every ``os.fork()`` child of a process of the run (see
:func:`_after_fork_in_child`); on macOS such fork children are not reaped.

Given the batch lock's descriptor, the watchdog also keeps a killed engine's batch locked until
its sweep is over, so that a resume cannot start an item while the dead run's copy still runs.

Layout::

    engine ──(write end, CLOEXEC)──┐
      │ os.environ[RUN_TOKEN_VAR]  │ pipe (+ the batch lock's descriptor)
      ├─ sh -c CMD ── setsid x     └──> watchdog (own session, no token)
      └─ pool worker ── Popen y          on EOF: kill every process with the token, exit
"""

from __future__ import annotations

# The watchdog runs this file as a script and stops at the ``__main__`` test below: it imports
# only what the sweep needs (os, signal, sys, time; psutil when it sweeps), the engine's part
# after that test imports the rest.
import os
import signal
import sys
import time

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing in the watchdog)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType
    from typing import Final

#: The environment variable that marks the processes of one run.
RUN_TOKEN_VAR: Final = "BATCHTUI_RUN_TOKEN"
#: How long processes get to end on SIGTERM before SIGKILL: items are abandoned work, but a
#: program that holds a lock file or a remote session gets a moment to let go of it.
TERM_GRACE_S: Final = 0.3
#: Scans after the first kill: a process forked during the kill escapes one scan, not several.
MAX_ROUNDS: Final = 8
#: The watchdog's sweep ends by then whatever happens (a /proc read stuck on a hung process):
#: it must not hold the batch lock (``lock_fd``) for ever.
SWEEP_LIMIT_S: Final = 10

# -- the watchdog process ---------------------------------------------------------------------


#: multiprocessing's helpers serve every pool of the process that started them, this run's and
#: the next: the resource tracker, started by the first semaphore (a process pool's), carries the
#: token of the run that happened to start it. Killed with that run, it is found dead by the next
#: pool of the process ("resource_tracker: process died unexpectedly, relaunching", semaphores
#: leaked). Each ends by itself once every process holding its pipe has ended.
_SHARED_HELPERS: Final = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


def _shared_helper(cmdline: list[str]) -> bool:
    """``python [interpreter flags] -c 'from multiprocessing.… import main…'``"""
    return "-c" in cmdline[1:-1] and cmdline[cmdline.index("-c", 1) + 1].startswith(_SHARED_HELPERS)


def find_carriers(token: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``token`` (never this process,
    nor multiprocessing's shared helpers: see :data:`_SHARED_HELPERS`)."""
    import psutil

    wanted, me = token, os.getpid()
    pids: list[int] = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_TOKEN_VAR) == wanted and not _shared_helper(proc.cmdline()):
                pids.append(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue  # another user's, gone, or a zombie (dead already)
    return pids


def sweep(token: str) -> list[int]:
    """Kill every process carrying ``token``: SIGTERM, at most :data:`TERM_GRACE_S` to end,
    then SIGKILL; scan again until a scan finds none (a process forked meanwhile escapes one
    scan). Returns the pids it signalled."""
    import psutil

    killed: list[int] = []
    for round_no in range(MAX_ROUNDS):
        procs: list[psutil.Process] = []
        for pid in find_carriers(token):
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                continue
        if not procs:
            break
        sig = signal.SIGTERM if round_no == 0 else signal.SIGKILL
        for proc in procs:
            try:
                proc.send_signal(sig)  # psutil checks the pid was not reused
            except psutil.Error:
                continue
        killed += [p.pid for p in procs]
        # Let them go before the next scan. A zombie whose parent is still alive (the engine
        # itself, on a normal exit) keeps the wait to its bound, which blocks nobody.
        _, alive = psutil.wait_procs(procs, timeout=TERM_GRACE_S if sig == signal.SIGTERM else 0.1)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                continue
    return sorted(set(killed))


def _watch(read_fd: int, token: str, log: str, psutil_home: str) -> None:
    """Block until the engine's end of the pipe closes, then sweep and note it in the log."""
    while os.read(read_fd, 4096):
        pass
    signal.alarm(SWEEP_LIMIT_S)  # SIGALRM's default action ends this process, even in a read
    _reach_psutil(psutil_home)
    killed = sweep(token)
    if killed and log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        line = f"{stamp} reaper: the engine ended; killed {len(killed)} process(es) left by its items: {killed}\n"
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass


def _reach_psutil(home: str) -> None:
    """Make psutil importable in the watchdog, which starts without ``site`` (``-S``): from the
    folder the engine finds it in (:func:`_psutil_home`), at the end of sys.path as site would
    put it; failing that, from site's own folders. Done when the sweep starts: the watchdog's
    start is then a bare interpreter's, on the engine's busiest moment."""
    if home and home not in sys.path:
        sys.path.append(home)
    try:
        import psutil  # noqa: F401
    except ImportError:
        import site

        site.main()


def main(argv: list[str]) -> int:
    """``python -S -P reaper.py READ_FD TOKEN LOG [PSUTIL_HOME]``: the watchdog's entry point."""
    # The engine's terminal signals never reach this session; SIGINT from elsewhere must not
    # end the watch early with a traceback either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(int(argv[0]), argv[1], argv[2], argv[3] if len(argv) > 3 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- the engine's side --------------------------------------------------------------------------

import contextlib  # noqa: E402  (after the watchdog's exit: see the imports at the top)
import fcntl  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

#: Where the watchdog reports what it killed, in the batch directory (as ``--detach`` logs).
LOG_NAME: Final = "engine.log"

#: How often the portable :func:`die_with_parent` fallback looks at its parent.
PARENT_POLL_S: Final = 0.5

_PR_SET_PDEATHSIG: Final = 1
#: The watchdog runs this file as a script: it needs only the standard library and psutil, so
#: it starts even where ``batchtui`` is importable only through the engine's own sys.path.
_SCRIPT: Final = os.path.abspath(__file__)


def _psutil_home() -> str:
    """The sys.path folder psutil is imported from in this process ('' if it cannot be found):
    the watchdog, started without ``site``, imports it from there when it sweeps."""
    module = sys.modules.get("psutil")
    origin = getattr(module, "__file__", None)
    if origin is None:
        import importlib.util

        try:
            spec = importlib.util.find_spec("psutil")
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
    return os.path.dirname(os.path.dirname(origin)) if origin else ""


_lock = threading.Lock()
#: The runs active in this process, oldest first: (token, the variable's value before it).
_stack: list[tuple[str, str | None]] = []
#: Write ends of the watchdogs' pipes: a child made by ``os.fork()`` must not hold one, or the
#: watchdog would wait for that child instead of the engine.
_write_fds: set[int] = set()


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()
    if RUN_TOKEN_VAR in os.environ:
        _load_prctl()  # here, so the child need not import anything


def _after_fork_in_child() -> None:
    """A child made by ``os.fork()`` (no exec): a callable's ``multiprocessing`` fork pool, say.

    It must not hold a watchdog's write end (the watchdog would wait for it instead of the
    engine). And the watchdog cannot find it: /proc and sysctl show the environment a process
    was exec'd with, and this one was never exec'd. So on Linux the kernel kills it with its
    parent instead; elsewhere it is not reaped (documented).
    """
    for fd in _write_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _write_fds.clear()
    if RUN_TOKEN_VAR in os.environ and _set_pdeathsig(signal.SIGKILL) and os.getppid() != _fork_parent:
        os.kill(os.getpid(), signal.SIGKILL)  # the parent died before the signal was armed


_fork_parent = 0
os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) without the run token.

    For whatever a process hosting an engine starts that must outlive the engine: the TUI's
    hand-off to a background engine, a ``$PAGER``. With the token it would be killed with the run.
    """
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k != RUN_TOKEN_VAR}


class Reaper:
    """One run's token and its watchdog; use it as a context manager, or :func:`reaping`.

    Entering sets ``os.environ[RUN_TOKEN_VAR]``; leaving restores the variable as it was and
    closes the pipe, upon which the watchdog kills the run's leftover processes. Processes
    started while it is entered are the run's: enter it before the executor builds its
    processor (the shell processor copies the environment once).

    ``lock_fd``: the batch lock's descriptor (an ``flock``). The watchdog inherits it: an flock
    belongs to the open file description, so after a kill -9 the batch stays locked until the
    watchdog has killed the run's processes, and a prompt resume (``BatchLock.acquire`` retries
    for a second) cannot start an item while the dead run's copy of it still runs. The sweep is
    bounded (:data:`SWEEP_LIMIT_S`), so that lock is too. A normal :meth:`close` unlocks at once
    (``LOCK_UN`` on any descriptor of the description): the engine has ended its items itself.
    So close the reaper after the batch is let go (``BatchLock.release()``), never before.
    """

    def __init__(
        self, batch_dir: str | os.PathLike[str] | None = None, *, lock_fd: int | None = None, token: str | None = None
    ) -> None:
        #: ``token``: one that processes started ahead for this run carry already (.warmstart).
        self.token = token or os.urandom(16).hex()
        self.log = Path(batch_dir) / LOG_NAME if batch_dir is not None else None
        self.lock_fd = lock_fd
        # Our own descriptor of the lock's description: the engine may close its own first.
        self._lock_dup: int | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self._write_fd: int | None = None

    def __enter__(self) -> str:
        self.start()
        return self.token

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the watchdog (without waiting for it to boot), then mark this process's environment.

        The watchdog gets the pipe's read end at spawn, so an engine killed a moment later is
        still seen to die. If no watchdog can start, the run goes on unguarded (and unmarked).
        """
        if self._write_fd is not None:
            raise RuntimeError("this Reaper is already started")
        read_fd, write_fd = os.pipe()  # both close-on-exec: items never inherit them
        with _lock:
            _write_fds.add(write_fd)  # (before a fork in another thread can copy it)
        try:
            self.watchdog = subprocess.Popen(
                # -S: no site, so the watchdog's start is a bare interpreter's (psutil comes from
                # _psutil_home() when it sweeps). -P: this file's folder (engine/) must not shadow
                # a module it imports.
                [sys.executable, "-S", "-P", _SCRIPT, str(read_fd), self.token, str(self.log or ""), _psutil_home()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # never a line on the user's terminal (or dashboard)
                pass_fds=(read_fd,) if self.lock_fd is None else (read_fd, self.lock_fd),
                start_new_session=True,  # Ctrl-C, a hang-up or a killpg of the engine miss it
                cwd="/",  # it must not keep the user's folder busy
                env=clean_env(),  # it must never be one of the processes it kills
            )
        except OSError:
            with _lock:
                _write_fds.discard(write_fd)
                os.close(write_fd)
            return
        finally:
            os.close(read_fd)
        self._write_fd = write_fd
        if self.lock_fd is not None:
            self._lock_dup = os.dup(self.lock_fd)  # (not inheritable)
        with _lock:
            _stack.append((self.token, os.environ.get(RUN_TOKEN_VAR)))
            os.environ[RUN_TOKEN_VAR] = self.token

    def close(self, wait: float = 0.0, *, unlock: bool = True) -> None:
        """Unlock ``lock_fd``, restore the environment and let the watchdog sweep; idempotent.

        ``wait`` bounds how long to wait for the sweep to end (0: not at all, a thread reaps
        the watchdog later, so a long-lived host such as the TUI keeps no zombie).
        ``unlock=False`` leaves the lock to its holder (work of the run still runs in this
        process: the batch stays locked until the process lets go or exits).
        """
        write_fd, self._write_fd = self._write_fd, None
        if write_fd is None:
            return
        if self._lock_dup is not None:
            if unlock:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_dup, fcntl.LOCK_UN)
            os.close(self._lock_dup)
            self._lock_dup = None
        with _lock:
            self._unmark()
            _write_fds.discard(write_fd)
            os.close(write_fd)
        watchdog = self.watchdog
        if watchdog is None:
            return
        if wait > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(wait)
        if watchdog.returncode is None:
            threading.Thread(target=watchdog.wait, name="batchtui-reaper-wait", daemon=True).start()

    def _unmark(self) -> None:
        """Take this run off the stack of active runs (called with ``_lock`` held).

        Runs in one process normally nest; should two overlap out of order, the variable still
        ends as it was before the first of them.
        """
        index = next(i for i, (token, _) in enumerate(_stack) if token == self.token)
        _, before = _stack.pop(index)
        if index < len(_stack):  # a later run is still active: it now restores our "before"
            later, _ = _stack[index]
            _stack[index] = (later, before)
            return
        if before is None:
            os.environ.pop(RUN_TOKEN_VAR, None)
        else:
            os.environ[RUN_TOKEN_VAR] = before


@contextlib.contextmanager
def reaping(
    batch_dir: str | os.PathLike[str] | None = None, *, lock_fd: int | None = None, wait: float = 0.0
) -> Iterator[str]:
    """Mark the processes started inside the block as this run's; they die when it ends or
    when this process dies. Yields the token. ``lock_fd``: see :class:`Reaper`; ``wait``:
    see :meth:`Reaper.close`."""
    reaper = Reaper(batch_dir, lock_fd=lock_fd)
    reaper.start()
    try:
        yield reaper.token
    finally:
        reaper.close(wait)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process (a pool worker) die the moment its parent, the engine, dies.

    On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (glibc and musl alike,
    through ctypes). The signal fires when the *thread* that started this process exits, not
    only the process: the engine must start workers from a thread that outlives them (the
    runner's thread, or the feeder thread of the worker's own slot). Elsewhere, or if prctl is
    unavailable, a daemon thread checks every :data:`PARENT_POLL_S` seconds whether the parent
    changed. ``parent_pid`` defaults to the multiprocessing parent, else ``os.getppid()``: a
    parent that died before this call is then noticed too.
    """
    expected = parent_pid if parent_pid is not None else _multiprocessing_parent()
    armed = _set_pdeathsig(signal.SIGKILL)
    if expected is None:
        expected = os.getppid()
    if os.getppid() != expected:  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    if not armed:
        threading.Thread(target=_watch_parent, args=(expected,), name="batchtui-parent-watch", daemon=True).start()


def _multiprocessing_parent() -> int | None:
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return None
    parent = mp.parent_process()
    return None if parent is None else int(parent.pid)


_prctl: Callable[..., int] | None = None
_prctl_loaded = False


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, else None. ``CDLL(None)`` is the process's own symbols, which
    hold libc's on glibc and musl alike (``ctypes.util.find_library`` would run ldconfig)."""
    global _prctl, _prctl_loaded
    if not _prctl_loaded:
        _prctl_loaded = True
        if sys.platform.startswith("linux"):
            import ctypes  # here: only Linux processes that need it pay for it

            with contextlib.suppress(OSError, AttributeError):
                _prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl


def _set_pdeathsig(sig: signal.Signals) -> bool:
    prctl = _load_prctl()
    return prctl is not None and int(prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0


def _watch_parent(expected: int) -> None:
    while os.getppid() == expected:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)
