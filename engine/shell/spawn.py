"""Starting an item's shell: one backend per platform, chosen once (at the first shell processor).

- ``glibc`` (:mod:`.spawn_glibc`): glibc's ``posix_spawn`` through ctypes, which releases the
  GIL (``os.posix_spawn`` keeps it until the child has exec'd), at a fraction of
  :class:`subprocess.Popen`'s cost in this process: that matters when thousands of short
  commands share two cores with the engine. Needs glibc >= 2.34 (``addclosefrom_np``).
- ``popen``: :class:`subprocess.Popen`, everywhere else (macOS, musl, the BSDs), and per command
  where the glibc spawner cannot give the same result (see :mod:`.spawn_glibc`).

Either way the child gets a new session (its own process group), ``/dev/null`` as stdin, two
pipes as stdout and stderr, no other descriptor, and SIGPIPE/SIGXFSZ at their defaults.

``BATCHTUI_SPAWNER`` picks the backend: ``auto`` (or unset) the fastest this system has,
``popen`` Popen everywhere (how the portable path is tested on Linux: the suite runs once that
way), ``glibc`` the glibc spawner or an error where it is missing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from ..errors import UserError

__all__ = ["BACKENDS", "Child", "Launcher", "PopenLauncher", "backend", "launcher"]

#: The backends BATCHTUI_SPAWNER may name ("auto" picks the first this system has).
BACKENDS: Final = ("glibc", "popen")
SPAWNER_ENV: Final = "BATCHTUI_SPAWNER"


@dataclass(slots=True)
class Child:
    """A started shell: its pid (= its process group id), the read ends of its stdout and
    stderr, and the Popen object when Popen started it (which then owns those descriptors)."""

    pid: int
    stdout: int
    stderr: int
    popen: subprocess.Popen[bytes] | None = None
    returncode: int | None = None  # once reaped
    #: Started without the shell (:mod:`.direct`): a death by signal is reported as dash would.
    direct: bool = False
    core: bool = False  # once reaped: it died dumping core

    def poll(self) -> int | None:
        """Reap the shell if it has exited (its return code), else None. Only for systems where
        an exit cannot be seen without reaping: the pid is free again once it returns a code."""
        if self.returncode is None:
            if self.popen is not None:
                self.returncode = self.popen.poll()
            else:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    self.returncode = 0  # reaped elsewhere: Popen reports 0 then too
                else:
                    if pid:
                        self.returncode = self._exit_code(status)
        return self.returncode

    def _exit_code(self, status: int) -> int:
        """The return code of a wait status (noting a core dump)."""
        self.core = os.WIFSIGNALED(status) and os.WCOREDUMP(status)
        return os.waitstatus_to_exitcode(status)

    def reap(self) -> int:
        """Wait for the shell and close its pipes; its return code as Popen gives it (``-N`` for
        death by signal N). Call it once the group is killed: until then the pid stays ours."""
        if self.popen is not None:
            code = self.popen.wait() if self.returncode is None else self.returncode
            assert self.popen.stdout is not None and self.popen.stderr is not None
            self.popen.stdout.close()
            self.popen.stderr.close()
            return code
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere: Popen.wait reports 0 then too
            else:
                self.returncode = self._exit_code(status)
        os.close(self.stdout)
        os.close(self.stderr)
        return self.returncode


class Launcher(Protocol):
    """Starts one processor's commands (its shell, environment and folder are fixed)."""

    def start(self, cmd: str, item_values: tuple[bytes, ...]) -> Child:
        """Start ``<shell> -c cmd`` with the item's variables (the values of the names the
        launcher was made with, in order) added to the environment."""
        ...


class PopenLauncher:
    """Starts commands with :class:`subprocess.Popen`."""

    __slots__ = ("cwd", "env", "item_names", "shell")

    def __init__(self, shell: str, env: Mapping[bytes, bytes], item_names: tuple[bytes, ...], cwd: str | None) -> None:
        self.shell, self.env, self.item_names, self.cwd = shell, env, item_names, cwd

    def start(self, cmd: str, item_values: tuple[bytes, ...]) -> Child:
        env = dict(self.env)
        env.update(zip(self.item_names, item_values, strict=True))
        proc = subprocess.Popen(
            [self.shell, "-c", cmd],
            bufsize=0,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            cwd=self.cwd,
        )
        assert proc.stdout is not None and proc.stderr is not None
        return Child(proc.pid, proc.stdout.fileno(), proc.stderr.fileno(), proc)


_backend: str | None = None


def backend() -> str:
    """The spawning backend of this process, chosen on the first call: ``glibc`` or ``popen``."""
    global _backend
    if _backend is None:
        _backend = _choose()
    return _backend


def _choose() -> str:
    wanted = os.environ.get(SPAWNER_ENV, "").strip().lower() or "auto"
    if wanted not in ("auto", *BACKENDS):
        raise UserError(f"{SPAWNER_ENV}={wanted!r} is not a spawner: use auto, glibc or popen")
    if wanted == "popen":
        return "popen"
    try:
        from .spawn_glibc import libc_spawner
    except ImportError:  # a Python without ctypes
        found = False
    else:
        found = libc_spawner() is not None
    if found:
        return "glibc"
    if wanted == "glibc":
        raise UserError(f"{SPAWNER_ENV}=glibc, but this system has no glibc >= 2.34 posix_spawn: unset it or use popen")
    return "popen"


def launcher(shell: str, env: Mapping[bytes, bytes], item_names: tuple[bytes, ...], cwd: str | None) -> Launcher:
    """The launcher of one processor, on this process's backend. The glibc spawner needs the
    shell's path (Popen looks a bare name up in the command's PATH) and an environment Popen
    would take (else Popen runs, and raises what it raises)."""
    popen = PopenLauncher(shell, env, item_names, cwd)
    if backend() != "glibc" or os.sep not in shell:
        return popen
    if any(b"=" in key or b"\0" in key or b"\0" in value for key, value in env.items()):
        return popen
    from .spawn_glibc import GlibcLauncher, libc_spawner

    spawner = libc_spawner()
    assert spawner is not None  # backend() said glibc
    return GlibcLauncher(spawner, popen)
