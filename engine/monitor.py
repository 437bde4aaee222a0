"""Measurements for live progress: memory of the engine and its children (the rate and the
ETA are engine/eta.py's); and the CPU a run used, for report.json.

Memory (DESIGN section 2, ``memory`` of live_progress.json and report.json's peak) is the RSS
of the engine's process plus its children's (process-executor workers, shell commands),
sampled at most once a second. A peak between two samples, or after the last one (finalizing
a 1M-item run sorts a million durations), is caught by the kernel's own high-water marks:
this process's peak RSS and the biggest peak of its children that have exited
(``getrusage``; Linux and BSD count KiB, macOS bytes). Each counts only once it has grown
since the run began, so a long-lived process (the TUI) never reports an earlier run's peak.

The children are found through /proc/PID/task/TID/children on Linux (each thread's children,
then theirs): psutil finds them by reading the parent of every process of the system, which on
a host of 3,000 processes took 56 ms of the runner's thread each second (0.03 ms this way).
Elsewhere, or on a kernel built without those files, psutil's way. A child between its vfork
and its exec shares its parent's memory: on Linux it is left out (:func:`children_rss_bytes`);
through psutil it counts a second time for that moment.

CPU (report.json's ``engine_cpu_s`` and ``children_cpu_s``, user + system seconds of this run):
the engine's process (less the dashboard's own thread, when the engine runs in the app), and its
children: those waited for (a shell item's command, with what it
waited for in turn; ``os.times``), and those still running when the report is written (the
pool's workers, the engine's watchdog; each with what it waited for). Where an operator asks
"is batchtui or my command using the machine?", this is the answer: 3,000 x ``true`` on 2 cores
here used about 0.25 ms of the engine's CPU and 0.7 ms of the commands' per item.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .models import Memory

if TYPE_CHECKING:
    import psutil


class MemoryMonitor:
    """RSS of this process and its children, sampled at most once a second: from /proc on
    Linux (psutil is not even imported: 5-10 ms of every run's start), elsewhere psutil."""

    def __init__(self, interval: float = 1.0) -> None:
        self.pid = os.getpid()
        self.interval = interval
        self.peak_mb = 0.0
        self.last = Memory()
        self._stamp = 0.0
        self._kernel_start = kernel_peaks_mb()
        self._times_start = os.times()
        self._host: tuple[int, float] | None = None  # see begin_run()
        # psutil only where the kernel has no children files (the main thread's exists for as
        # long as the process does, where it has them).
        self._proc: psutil.Process | None = None
        if not os.path.exists(f"/proc/{self.pid}/task/{self.pid}/children"):
            import psutil  # here, not at module level: importing the runner (the TUI does) needs no psutil

            self._proc = psutil.Process(self.pid)

    def sample(self, force: bool = False) -> Memory:
        now = time.monotonic()
        if not force and now - self._stamp < self.interval:
            return self.last
        self._stamp = now
        if self._proc is None:
            rss = _rss_bytes(self.pid) / 1048576
            children = children_rss_bytes(self.pid) / 1048576
            available = _available_bytes() / 1048576
        else:
            rss, children, available = _psutil_sample(self._proc)
        self.peak_mb = max(self.peak_mb, rss + children, self._grown_peaks()[0])
        self.last = Memory(
            rss_mb=round(rss, 1),
            peak_rss_mb=round(self.peak_mb, 1),
            children_rss_mb=round(children, 1),
            system_available_mb=round(available, 1),
        )
        return self.last

    def run_peak_mb(self) -> float:
        """The run's peak memory for report.json, read when the report is written: one last
        sample, and the kernel's high-water marks of this process and of its exited children
        where they grew during this run (each is a peak the samples may have missed)."""
        self.sample(force=True)
        self.peak_mb = max(self.peak_mb, *self._grown_peaks())
        return round(self.peak_mb, 1)

    def begin_run(self) -> None:
        """The run begins (on this thread): its CPU is counted from now. A runner may be made
        well before it runs (the dashboard's is made before the app starts, whose start is no
        engine's CPU). Where the run is not on the main thread, that thread is a host's (the
        dashboard's event loop): its CPU over the run is left out of the engine's."""
        self._times_start = os.times()
        self._host = None
        main = threading.main_thread()
        if threading.current_thread() is main or main.ident is None or not hasattr(time, "pthread_getcpuclockid"):
            return
        try:
            clock = time.pthread_getcpuclockid(main.ident)
            self._host = (clock, time.clock_gettime(clock))
        except OSError:  # no clock for another thread here: the host's CPU stays in
            pass

    def _host_cpu_s(self) -> float:
        if self._host is None:
            return 0.0
        clock, start = self._host
        try:
            return max(time.clock_gettime(clock) - start, 0.0)
        except OSError:  # the host's thread has ended: its CPU cannot be told apart any more
            return 0.0

    def run_cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) since the run began: this process's (less its host's
        thread, see :meth:`begin_run`), and its children's (those waited for, and those alive
        now with what they waited for)."""
        now, start = os.times(), self._times_start
        own = now.user - start.user + now.system - start.system - self._host_cpu_s()
        waited = now.children_user - start.children_user + now.children_system - start.children_system
        alive = (
            sum(_cpu_s(fields) for *_, fields in _family(self.pid))
            if self._proc is None
            else _psutil_children_cpu_s(self._proc)
        )
        return round(max(own, 0.0), 3), round(max(waited, 0.0) + alive, 3)

    def _grown_peaks(self) -> tuple[float, float]:
        """The kernel's high-water marks (this process, its exited children) that grew since
        the run began; 0 for one that did not (it may be an earlier run's)."""
        own, children = kernel_peaks_mb()
        own_before, children_before = self._kernel_start
        return (own if own > own_before else 0.0, children if children > children_before else 0.0)


def kernel_peaks_mb() -> tuple[float, float]:
    """The kernel's peak RSS in MiB of this process and of the biggest of its children that
    have exited and been waited for; (0, 0) where there is no getrusage."""
    try:
        import resource
    except ImportError:  # not a Unix
        return 0.0, 0.0
    unit = 1.0 if sys.platform == "darwin" else 1024.0  # macOS counts bytes, the others KiB
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 1048576
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 1048576
    return own, children


_PAGE: int = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def descendants(pid: int) -> list[int]:
    """The pids of every descendant of ``pid`` (Linux, /proc/PID/task/TID/children): its
    children, theirs, and so on. A process that ends meanwhile is left out, with its own."""
    return [child for child, _, _, _ in _family(pid)]


def _family(pid: int) -> list[tuple[int, int, str, list[bytes]]]:
    """(descendant, its parent, the parent's thread that made it, the descendant's /proc stat
    fields) for every descendant of ``pid``, as :func:`descendants` finds them.

    Each descendant's stat is read once (its flags, threads, CPU). A process of one thread (a
    shell, most commands) has its children read from that thread's file, without listing its
    threads: with hundreds of processes a sample is a few small reads each, on the runner's
    thread every second (600 descendants here: 28 ms a sample before, 18 ms). A thread started
    between the two reads, whose child it has already made, is found at the next sample."""
    found: list[tuple[int, int, str, list[bytes]]] = []
    seen = {pid}
    todo: list[tuple[int, list[bytes] | None]] = [(pid, None)]
    while todo:
        parent, fields = todo.pop()
        if fields is not None and len(fields) > _THREADS and fields[_THREADS] == b"1":
            tids = [str(parent)]
        else:
            try:
                tids = os.listdir(f"/proc/{parent}/task")
            except OSError:
                continue  # it ended
        for tid in tids:
            data = _read(f"/proc/{parent}/task/{tid}/children")
            if data is None:
                continue  # the thread ended
            for word in data.split():
                child = int(word)
                if child not in seen:
                    seen.add(child)
                    stat = _stat_fields(f"/proc/{child}/stat")
                    if stat is None:
                        continue  # it ended (its own are no longer ours to find)
                    found.append((child, parent, tid, stat))
                    todo.append((child, stat))
    return found


def _read(path: str) -> bytes | None:
    """A /proc file's bytes; None once what it describes ended. os.read, not open(): a buffered
    file object costs more than the read itself (10 us a file here, not 20)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = []
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def children_rss_bytes(pid: int) -> int:
    """The resident memory of ``pid``'s descendants, each counted once: a child started by
    ``vfork`` (posix_spawn, how every shell item starts, and subprocess) runs in its parent's
    memory until it execs, and its /proc files show the parent's RSS; counted, it doubled the
    engine's memory in about one sample in eight of a run of quick commands (and could hold
    dispatch back under ``--memory-limit-mb``). Such a child is left out."""
    total = 0
    for child, parent, tid, fields in _family(pid):
        if not _in_parents_memory(fields, parent, tid):
            total += _rss_bytes(child)
    return total


#: /proc/PID/stat's flag of a process that has not exec'd since it was made (PF_FORKNOEXEC).
_FORKNOEXEC = 0x40
#: Where /proc/PID/stat's fields (after the name: the state first) hold its flags, its number of
#: threads, and its CPU ticks (utime, stime, cutime, cstime).
_FLAGS, _THREADS, _CPU = 6, 17, slice(11, 15)


def _in_parents_memory(fields: list[bytes], parent: int, tid: str) -> bool:
    """Whether the descendant of these stat ``fields``, made by thread ``tid`` of ``parent``,
    is between its vfork and its exec: it has not exec'd (PF_FORKNOEXEC)
    and the thread that made it still waits for it (state D: vfork's wait; after a fork the
    thread goes on at once, and the child has its own memory). From /proc alone: no system
    call a sandbox (seccomp) could refuse or punish."""
    if len(fields) <= _FLAGS or not int(fields[_FLAGS]) & _FORKNOEXEC:
        return False
    thread = _stat_fields(f"/proc/{parent}/task/{tid}/stat")
    return thread is not None and thread[:1] == [b"D"]


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a /proc stat file after the name (the state first); None once it ended."""
    data = _read(path)
    return None if data is None else data.rpartition(b")")[2].split()  # the name may hold spaces and ")"


def _rss_bytes(pid: int) -> int:
    """The resident set of ``pid`` (/proc/PID/statm, as psutil reads it); 0 once it ended."""
    data = _read(f"/proc/{pid}/statm")
    try:
        return int(data.split()[1]) * _PAGE if data is not None else 0
    except (IndexError, ValueError):
        return 0


_TICK: int = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(fields: list[bytes]) -> float:
    """The CPU seconds of a process and of the children it waited for, from its /proc stat
    fields (utime, stime, cutime and cstime)."""
    try:
        return sum(int(tick) for tick in fields[_CPU]) / _TICK
    except ValueError:
        return 0.0


def _available_bytes() -> int:
    """The memory the system can give without swapping (MemAvailable of /proc/meminfo, as
    psutil reads it); 0 where it cannot be read."""
    data = _read("/proc/meminfo")
    at = -1 if data is None else data.find(b"MemAvailable:")
    try:
        return int(data[at:].split()[1]) * 1024 if data is not None and at >= 0 else 0
    except (IndexError, ValueError):
        return 0


def _psutil_sample(proc: psutil.Process) -> tuple[float, float, float]:
    """(own RSS, the children's, the system's available) in MiB, through psutil."""
    import psutil

    rss = proc.memory_info().rss / 1048576
    children = _psutil_sum(proc, lambda child: child.memory_info().rss / 1048576)
    return rss, children, psutil.virtual_memory().available / 1048576


def _psutil_children_cpu_s(proc: psutil.Process) -> float:
    """The CPU seconds of ``proc``'s living descendants, with those each waited for (psutil)."""

    def cpu(child: psutil.Process) -> float:
        t = child.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    return _psutil_sum(proc, cpu)


def _psutil_sum(proc: psutil.Process, read: Callable[[psutil.Process], float]) -> float:
    """``read`` summed over ``proc``'s living descendants (one that ends or hides meanwhile: 0)."""
    import psutil

    total = 0.0
    try:
        for child in proc.children(recursive=True):
            try:
                total += read(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
    except psutil.Error:
        pass
    return total
