"""The shell processor (``--cmd``): one process group per item, its output read as it comes.

The command runs as ``/bin/sh -c <rendered template>`` in a new session (its own process
group): a timeout, a skip or a stop kills the whole tree, and when the shell exits the rest of
its group is killed too, so no background child outlives its item. How the shell is started
(:mod:`.spawn`) and how its exit is seen (:mod:`.wait`) depend on the platform.

Logs. stdout and stderr go to ``logs/<seq>.<attempt>.out`` / ``.err`` (mode 0600) as they are read,
so they can be followed (:mod:`batchtui.engine.logs`), each kept to its last ``log_limit`` bytes
and made on its first byte: thousands of empty files per run would cost more time than the
commands. Every attempt has its own files.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Final

from ..errors import CommandFailed, CommandKilled, ItemTimeout, NoRoomToStart, UserError, retry_after_of_output
from ..outputs import DEFAULT_MAX_RESULT_BYTES
from . import direct, spawn, wait
from .item import Item, ProcessOutput, out_path
from .itemfiles import (
    ENV_JSON_FILE_MIN,
    ENV_JSON_MAX,
    ITEM_VARS,
    ItemEnv,
    LogFile,
    make_out_dir,
    too_big,
)
from .output import STDERR_TAIL, STDOUT_KEEP, StdoutTail, Tail, decode_tail, parse_stdout
from .template import ARG_STRLEN, CommandTemplate, CommandTooLong

__all__ = ["ShellProcessor"]

_READ: Final = 1 << 16
#: After the shell exits (or is killed) its group is killed; this long at most is then spent reading
#: what is left in the pipes, in case a process that left the group still holds them open.
_DRAIN_GRACE: Final = 0.5


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ShellProcessor:
    """Runs ``<shell> -c <rendered template>`` for each item, one process group per item.

    Thread-safe: worker threads call :meth:`run` concurrently and any thread may call
    :meth:`kill` or :meth:`kill_all`. ``cwd`` is the folder commands run in (the folder the
    batch was started from; default: this process's).
    """

    def __init__(
        self,
        template: str,
        *,
        shell: str = "/bin/sh",
        timeout: float | None = None,
        log_limit: int = 1 << 20,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.template = CommandTemplate(template)
        self.shell = shell
        self.timeout = timeout if timeout is not None and timeout > 0 else None
        self.log_limit = max(0, log_limit)
        self.max_result_bytes = max_result_bytes
        if cwd is not None and not os.path.isdir(cwd):
            raise UserError(f"the folder to run commands in does not exist: {cwd}")
        self.cwd = cwd
        # The environment is copied (and encoded) once; each item adds its variables.
        base = dict(os.environ)
        base.update(env or {})
        self._env: dict[bytes, bytes] = {os.fsencode(k): os.fsencode(v) for k, v in base.items()}
        self._uses_out = self.template.uses_out
        self._launcher = spawn.launcher(shell, self._env, ITEM_VARS, cwd)
        self._lock = threading.Lock()
        # seq -> the running shell's pid. While listed, the shell is not reaped (but see
        # wait.py's "polling"), so its pid (= the group id) cannot be reused: kill() never hits
        # an unrelated group.
        self._running: dict[int, int] = {}
        self._killed: set[int] = set()
        # (seq, attempt) of items a kill reached before their shell was started: it is killed
        # as soon as it is (an attempt runs once, so an entry never matches another run).
        self._doomed: set[tuple[int, int]] = set()
        # (seq, attempt) of items whose shell is being started: kill_all() dooms them too, so a
        # shell that starts while everything is killed dies at once instead of running on.
        self._starting: set[tuple[int, int]] = set()

    def __repr__(self) -> str:
        return f"ShellProcessor({self.template.template!r}, timeout={self.timeout})"

    def run(self, item: Item) -> ProcessOutput:
        """Run the command for ``item``.

        Raises :class:`CommandFailed` (exit > 0), :class:`CommandKilled` (a signal, or
        :meth:`kill`), :class:`ItemTimeout`, :class:`MissingField`, :class:`NulByte` or :class:`CommandTooLong` (a
        value the template cannot take).
        """
        out_dir = out_path(item) if self._uses_out else None
        cmd = self.template.render(item, out_dir)
        # The whole command line is one argument of `sh -c`: past the kernel's limit for one
        # argument, exec fails. Say which placeholder made it so long (checked cheaply first:
        # a character takes at most 4 bytes).
        if len(cmd) * 4 >= ARG_STRLEN and len(os.fsencode(cmd)) >= ARG_STRLEN:
            raise CommandTooLong(self.template.too_long(item, out_dir, cmd))
        if out_dir is not None:
            make_out_dir(item)
        env = ItemEnv(item)
        try:
            if len(env.json) > ENV_JSON_MAX:
                env.to_file()  # too big for one variable: BATCHTUI_ITEM_JSON_FILE names it
            return self._run(item, cmd, env)
        finally:
            env.remove()

    def _start(self, cmd: str, env: ItemEnv) -> spawn.Child:
        """Start the shell; on E2BIG, the item's JSON moves to its file and the start is tried
        once more, else the error says which variable or total was too big. Raises
        :class:`NoRoomToStart` when the system lacks processes, memory or descriptors for it
        (the item is not at fault: it goes back unstarted)."""
        try:
            return self._launch(cmd, env)
        except OSError as exc:
            if exc.errno != errno.E2BIG:
                raise
            if env.path is not None or len(env.json) < ENV_JSON_FILE_MIN:
                raise ValueError(too_big(cmd, self._env, env.values())) from exc
        # The environment as a whole is over the system's limit (ARG_MAX): move the item's
        # JSON to its file and try once more.
        env.to_file()
        try:
            return self._launch(cmd, env)
        except OSError as again:
            if again.errno == errno.E2BIG:
                raise ValueError(too_big(cmd, self._env, env.values())) from again
            raise

    def _launch(self, cmd: str, env: ItemEnv) -> spawn.Child:
        try:
            return self._launcher.start(cmd, env.values())
        except OSError as exc:
            room = NoRoomToStart.of(exc)
            if room is not None:
                raise room from exc
            raise

    def _run(self, item: Item, cmd: str, env: ItemEnv) -> ProcessOutput:
        """:meth:`run` once the command line and the item's variables are ready."""
        run = (item.seq, item.attempt)
        with self._lock:
            self._starting.add(run)
        try:
            child = self._start(cmd, env)
        except BaseException:
            with self._lock:
                self._starting.discard(run)
                self._doomed.discard(run)
            raise
        pid = child.pid
        with self._lock:
            self._starting.discard(run)
            self._running[item.seq] = pid
            if self._doomed and (item.seq, item.attempt) in self._doomed:
                self._doomed.discard((item.seq, item.attempt))
                self._killed.add(item.seq)
                _killpg(pid)
        logs: dict[int, LogFile] | None = None
        if self.log_limit:
            limit, batch_dir, seq, attempt = self.log_limit, item.batch_dir, item.seq, item.attempt
            logs = {
                child.stdout: LogFile(batch_dir, seq, attempt, "out", limit),
                child.stderr: LogFile(batch_dir, seq, attempt, "err", limit),
            }
        stderr = child.stderr
        try:
            try:
                out, err, timed_out = self._collect(child, logs)
            finally:
                with self._lock:
                    self._running.pop(item.seq, None)
                    killed = item.seq in self._killed
                    self._killed.discard(item.seq)
                code = child.reap()  # _collect killed the group, while its id was still ours
            if code < 0 and child.direct and not killed and not timed_out:
                # Started without dash (see .direct): report the signal as dash does.
                from .spawn_glibc import libc_spawner

                spawner = libc_spawner()
                note = direct.signal_note(-code, child.core, spawner.strsignal(-code) if spawner else None)
                if note:
                    err.add(note)
                    if logs is not None:
                        logs[stderr].add(note)
                code = 128 - code
        finally:
            if logs is not None:
                for log in logs.values():
                    log.close()
        if killed:
            raise CommandKilled(signal.SIGKILL, decode_tail(err))
        if timed_out:
            raise ItemTimeout(self.timeout or 0.0, decode_tail(err))
        if code < 0:
            raise CommandKilled(-code, decode_tail(err))
        if code > 0:
            raise CommandFailed(code, decode_tail(err), retry_after_of_output(out.last(4096), err.last(4096)))
        return parse_stdout(out, self.max_result_bytes)

    def _collect(self, child: spawn.Child, logs: dict[int, LogFile] | None) -> tuple[StdoutTail, Tail, bool]:
        """Read both pipes until the shell has exited and they are drained; returns with the shell
        exited (unreaped where the platform allows) and its group killed. Each piece of output
        goes to its log at once (so it can be followed; the caller closes them); only the tails
        are kept in memory."""
        out = StdoutTail(STDOUT_KEEP, self.max_result_bytes)
        err = Tail(STDERR_TAIL)
        tails: dict[int, Tail] = {child.stdout: out, child.stderr: err}
        end = None if self.timeout is None else time.monotonic() + self.timeout
        timed_out = group_killed = False
        watch: wait.ExitWatch | None = None
        try:
            watch = wait.watch(child)
            while not (watch.exited and not tails):
                if end is None:
                    wait_ms = -1
                else:
                    left = end - time.monotonic()
                    if left <= 0:
                        if group_killed:
                            break  # draining took too long: something outside the group holds a pipe
                        timed_out = group_killed = True
                        _killpg(child.pid)
                        end = time.monotonic() + _DRAIN_GRACE
                        continue
                    # poll() takes an int of milliseconds (24.8 days at most): wake at least
                    # hourly, the loop looks at the time again anyway.
                    wait_ms = min(math.ceil(left * 1000), 3_600_000)
                for fd in watch.wait(wait_ms):
                    data = os.read(fd, _READ)
                    if data:
                        tails[fd].add(data)
                        if logs is not None:
                            logs[fd].add(data)
                    else:
                        watch.unregister(fd)
                        del tails[fd]
                if watch.exited and not group_killed:
                    # The shell is done: what it left running in the background goes too.
                    group_killed = True
                    _killpg(child.pid)
                    if tails:
                        end = time.monotonic() + _DRAIN_GRACE
        finally:
            if not group_killed:
                # Whatever cut the wait short (an error, an interrupt): the group goes before
                # the shell is reaped, once, here (not again after the usual kill above).
                _killpg(child.pid)
            if watch is not None:
                watch.close()
        return out, err, timed_out

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        """Kill the process group running item ``seq``; its :meth:`run` then raises
        ``CommandKilled(SIGKILL)``. A shell being started (it may already run the command while
        its start returns) dies as soon as it has started. False if that item is not running
        here, unless ``attempt`` is given: the executor knows that attempt has begun, and its
        shell dies as it starts."""
        with self._lock:
            pid = self._running.get(seq)
            if pid is None:
                starting = {run for run in self._starting if run[0] == seq}
                if attempt is not None:
                    starting.add((seq, attempt))
                self._doomed |= starting
                return bool(starting)
            self._killed.add(seq)
            _killpg(pid)
        return True

    def kill_all(self) -> int:
        """Kill every running item's process group, and every shell being started (it dies as
        soon as it has started); returns how many."""
        with self._lock:
            for seq, pid in self._running.items():
                self._killed.add(seq)
                _killpg(pid)
            self._doomed |= self._starting
            return len(self._running) + len(self._starting)
