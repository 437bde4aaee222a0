"""The glibc spawner: ``posix_spawn`` called through ctypes, which releases the GIL for the call.

``os.posix_spawn`` holds the GIL until the child has exec'd (glibc's vfork-style clone keeps the
caller waiting), so the engine's other threads stall for every start; Popen releases it, and so
does this. The child gets what Popen gives it: a new session, SIGPIPE/SIGXFSZ at their defaults,
``/dev/null`` (read-write) as stdin, the two pipes as stdout and stderr, every other
descriptor closed (``addclosefrom_np``, glibc 2.34, as Popen's close_fds), and the command's
folder entered in the child (``addchdir_np``, glibc 2.29, as Popen's cwd): whichever folder this
process is in, a resume from another folder included, commands start the same way.

Signals: what an exec does after Popen's fork (a handled signal at its default, an ignored one
still ignored), SIGPIPE and SIGXFSZ at their defaults (Popen's restore_signals). glibc's child
gets there by asking the disposition of each of the 64 signals and setting every one not
ignored to its default: two system calls a signal, about 120 before each exec, while the
starting thread waits. Told which signals to set to their defaults (``POSIX_SPAWN_SETSIGDEF``:
every one not ignored here, and glibc's own 32 and 33, which it would set to "ignored"), it
sets them without asking, one call each. The set is made from this process's dispositions when
a launcher is made (:func:`ignored_here`): a signal ignored here after that would reach its
commands at its default (the engine ignores none: only its pool and dask workers and its
watchdog do, in their own processes).

Where that cannot give the same result, a command is started by Popen instead: a NUL byte in a
value (Popen raises its ValueError), one of descriptors 0-2 closed here (the pipes would take
its number), or a start that failed while entering a folder (a folder removed since: Popen's
error names it, posix_spawn's would name the shell).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Mapping
from typing import Final

from ..errors import NoRoomToStart
from . import direct
from .spawn import Child, PopenLauncher

__all__ = [
    "ACTIONS_KEPT",
    "DIRECT",
    "SIGNALS_AT_DEFAULT",
    "GlibcLauncher",
    "LibcSpawn",
    "ignored_here",
    "libc_spawner",
    "signals_to_default",
]

#: Signals Python ignores that a command must get at their defaults (as Popen's restore_signals).
SIGNALS_AT_DEFAULT: Final = ("SIGPIPE", "SIGXFSZ")
# glibc's posix_spawn attribute flags (spawn.h); os exposes only the file-action constants.
_SPAWN_SETSIGDEF: Final = 0x04
_SPAWN_SETSID: Final = 0x80
# Room for glibc's opaque posix_spawnattr_t (336 bytes on x86-64), posix_spawn_file_actions_t (80)
# and sigset_t (128): generous on every architecture.
_ATTR_SIZE: Final = 1024
_ACTIONS_SIZE: Final = 512
_SIGSET_SIZE: Final = 512
ACTIONS_KEPT: Final = 1024  # (stdout, stderr) descriptor pairs whose file actions are kept


class LibcSpawn:
    """glibc's posix_spawn with the attributes and file actions a command needs."""

    __slots__ = (
        "_attr",
        "_attrs",
        "_cache",
        "_chdir",
        "_closefrom",
        "_destroy",
        "_dup2",
        "_init",
        "_open",
        "_setflags",
        "_setsigdefault",
        "_sigaddset",
        "_sigemptyset",
        "_spawn",
        "_spawnattr_init",
        "_strsignal",
    )

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        ptr, cint = ctypes.c_void_p, ctypes.c_int
        self._spawn = libc.posix_spawn
        self._spawn.argtypes = [ctypes.POINTER(cint), ctypes.c_char_p, ptr, ptr, ptr, ptr]
        self._init = libc.posix_spawn_file_actions_init
        self._init.argtypes = [ptr]
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._destroy.argtypes = [ptr]
        self._open = libc.posix_spawn_file_actions_addopen
        self._open.argtypes = [ptr, cint, ctypes.c_char_p, cint, ctypes.c_uint]
        self._dup2 = libc.posix_spawn_file_actions_adddup2
        self._dup2.argtypes = [ptr, cint, cint]
        self._closefrom = libc.posix_spawn_file_actions_addclosefrom_np
        self._closefrom.argtypes = [ptr, cint]
        self._chdir = libc.posix_spawn_file_actions_addchdir_np
        self._chdir.argtypes = [ptr, ctypes.c_char_p]
        funcs = (self._spawn, self._init, self._destroy, self._open, self._dup2, self._closefrom, self._chdir)
        for func in funcs:
            func.restype = cint
        self._strsignal = libc.strsignal
        self._strsignal.argtypes = [cint]
        self._strsignal.restype = ctypes.c_char_p
        self._cache: dict[tuple[int, int, bytes | None], ctypes.Array[ctypes.c_char]] = {}
        self._spawnattr_init = libc.posix_spawnattr_init
        self._sigemptyset, self._sigaddset = libc.sigemptyset, libc.sigaddset
        self._setsigdefault, self._setflags = libc.posix_spawnattr_setsigdefault, libc.posix_spawnattr_setflags
        # Attributes, by the signals ignored here: each made once, then only read (by any
        # thread at once). Those of this process's signals now are made at once, so that a
        # libc that refuses them is known before any command starts.
        self._attrs: dict[frozenset[int], ctypes.Array[ctypes.c_char]] = {}
        self._attr = self.attributes(ignored_here())

    def attributes(self, ignored: frozenset[int]) -> ctypes.Array[ctypes.c_char]:
        """The spawn attributes for a process that ignores the signals ``ignored``: a new
        session, and every other signal (SIGPIPE and SIGXFSZ always) set to its default."""
        attr = self._attrs.get(ignored)
        if attr is not None:
            return attr
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        sigset = ctypes.create_string_buffer(_SIGSET_SIZE)
        if self._spawnattr_init(attr) or self._sigemptyset(sigset):
            raise OSError("posix_spawnattr_init or sigemptyset failed")
        words = (ctypes.c_ulong * (_SIGSET_SIZE // ctypes.sizeof(ctypes.c_ulong))).from_buffer(sigset)
        bits = 8 * ctypes.sizeof(ctypes.c_ulong)
        valid = signal.valid_signals()
        for sig in sorted(signals_to_default(ignored)):
            if sig not in valid:
                # glibc's own signals (32 and 33), which sigaddset refuses: their bits set as
                # glibc's sigset_t lays them out (__sigword, __sigmask).
                words[(sig - 1) // bits] |= 1 << ((sig - 1) % bits)
            elif self._sigaddset(sigset, sig):
                raise OSError(f"sigaddset({sig}) failed")
        if self._setsigdefault(attr, sigset) or self._setflags(attr, ctypes.c_short(_SPAWN_SETSIGDEF | _SPAWN_SETSID)):
            raise OSError("posix_spawnattr_setsigdefault or setflags failed")
        return self._attrs.setdefault(ignored, attr)  # another thread's copy, if it was first

    def _actions(self, out_w: int, err_w: int, cwd: bytes | None) -> tuple[ctypes.Array[ctypes.c_char], bool]:
        """File actions entering ``cwd`` (None: staying in this process's folder) and giving the
        child /dev/null, ``out_w`` and ``err_w`` as 0-2 and nothing else, and whether they are
        kept. They depend on the two numbers and the folder only, so each is built once and kept
        (then only read, by any thread); the pipes' numbers repeat."""
        key = (out_w, err_w, cwd)
        actions = self._cache.get(key)
        if actions is not None:
            return actions, True
        actions = self._build(out_w, err_w, cwd)
        if len(self._cache) >= ACTIONS_KEPT:
            return actions, False  # that many pairs: the caller frees these after use
        # Another thread may have built the same pair meanwhile: keep one, free the other.
        kept = self._cache.setdefault(key, actions)
        if kept is not actions:
            self._destroy(actions)
        return kept, True

    def _build(
        self, out_w: int, err_w: int, cwd: bytes | None, redirects: tuple[tuple[int, str, int], ...] = ()
    ) -> ctypes.Array[ctypes.c_char]:
        """New file actions, in the order the child takes them: enter ``cwd``, /dev/null as 0,
        ``out_w`` and ``err_w`` as 1 and 2, ``redirects`` (opened in ``cwd``), every other
        descriptor closed. The caller destroys them; OSError (none left) if a step fails."""
        actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
        code = self._init(actions)
        if code:
            raise OSError(code, os.strerror(code))
        code = (
            (self._chdir(actions, cwd) if cwd is not None else 0)
            or self._open(actions, 0, b"/dev/null", os.O_RDWR, 0)  # subprocess.DEVNULL's mode
            or self._dup2(actions, out_w, 1)
            or self._dup2(actions, err_w, 2)
        )
        for fd, target, flags in redirects:
            code = code or self._open(actions, fd, os.fsencode(target), flags, 0o666)
        code = code or self._closefrom(actions, 3)
        if code:
            self._destroy(actions)
            raise OSError(code, os.strerror(code))
        return actions

    def _start(
        self,
        path: bytes,
        actions: ctypes.Array[ctypes.c_char],
        attr: ctypes.Array[ctypes.c_char] | None,
        argv: ctypes.Array[ctypes.c_char_p],
        envp: ctypes.Array[ctypes.c_char_p],
    ) -> int:
        """posix_spawn itself: the pid, or OSError naming ``path`` as Popen does."""
        pid = ctypes.c_int()
        code = self._spawn(ctypes.byref(pid), path, actions, self._attr if attr is None else attr, argv, envp)
        if code:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return pid.value

    def strsignal(self, sig: int) -> bytes | None:
        """libc's description of signal ``sig`` (what dash prints)."""
        text: bytes | None = self._strsignal(sig)
        return text

    def spawn_redirected(
        self,
        path: bytes,
        argv: ctypes.Array[ctypes.c_char_p],
        envp: ctypes.Array[ctypes.c_char_p],
        out_w: int,
        err_w: int,
        redirects: tuple[tuple[int, str, int], ...],
        attr: ctypes.Array[ctypes.c_char] | None = None,
        cwd: bytes | None = None,
    ) -> int:
        """:meth:`spawn`, then ``redirects`` (``(fd, path, flags)``, opened 0666 under the umask
        in this order, as dash opens them: a relative path in ``cwd``) in the child; OSError if
        any step fails."""
        if not redirects:
            return self.spawn(path, argv, envp, out_w, err_w, attr, cwd)
        actions = self._build(out_w, err_w, cwd, redirects)
        try:
            return self._start(path, actions, attr, argv, envp)
        finally:
            self._destroy(actions)

    def spawn(
        self,
        path: bytes,
        argv: ctypes.Array[ctypes.c_char_p],
        envp: ctypes.Array[ctypes.c_char_p],
        out_w: int,
        err_w: int,
        attr: ctypes.Array[ctypes.c_char] | None = None,
        cwd: bytes | None = None,
    ) -> int:
        """Start ``path`` with ``argv`` and ``envp`` (NULL-terminated), ``out_w`` and ``err_w``
        (both above 2) as its stdout and stderr, in the folder ``cwd`` (None: this process's);
        its pid, or OSError as Popen raises it. ``attr``: from :meth:`attributes` (default: for
        the signals ignored when this spawner was made)."""
        actions, kept = self._actions(out_w, err_w, cwd)
        try:
            return self._start(path, actions, attr, argv, envp)
        finally:
            if not kept:
                self._destroy(actions)


def ignored_here() -> frozenset[int]:
    """The signals this process ignores (``SIG_IGN``), as Python knows them: what it found when
    it started (nohup's SIGHUP, the SIGINT of a shell's ``&``) and what Python code set since."""
    ignored = set()
    for sig in signal.valid_signals():
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                ignored.add(int(sig))
        except ValueError:  # a signal Python cannot name here
            continue
    return frozenset(ignored)


def signals_to_default(ignored: frozenset[int]) -> frozenset[int]:
    """The signals a command starts with at their defaults when this process ignores
    ``ignored``: every one not ignored (its handler here would not survive the exec anyway),
    SIGPIPE and SIGXFSZ, which Python ignores for itself and Popen restores, and glibc's own
    (32 and 33, outside :func:`signal.valid_signals`): glibc handles them in every process, so
    after Popen's fork and exec they are at their defaults; left out, glibc's posix_spawn sets
    them to "ignored" in its child, and a command got them ignored."""
    always = {int(sig) for name in SIGNALS_AT_DEFAULT if (sig := getattr(signal, name, None)) is not None}
    valid = {int(sig) for sig in signal.valid_signals()}
    internal = set(range(1, signal.NSIG)) - valid
    return frozenset(valid - ignored | always | internal)


_libc_spawn: LibcSpawn | None = None
_libc_spawn_tried = False


def libc_spawner() -> LibcSpawn | None:
    """The process-wide :class:`LibcSpawn`, or None where this is not glibc >= 2.34."""
    global _libc_spawn, _libc_spawn_tried
    if not _libc_spawn_tried:
        spawner = None
        try:
            libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        except (AttributeError, ValueError, OSError):  # musl, macOS: no such name
            libc = ""
        if libc.startswith("glibc "):  # the flag values above are glibc's
            try:
                spawner = LibcSpawn()
            except (OSError, AttributeError):  # no library or symbol (glibc < 2.34)
                spawner = None
        _libc_spawn = spawner
        _libc_spawn_tried = True
    return _libc_spawn


#: Whether commands dash would only start are started without it (:mod:`.direct`); tests turn
#: it off to compare both ways.
DIRECT = True


def _layout(env: Mapping[bytes, bytes], item_names: tuple[bytes, ...]) -> tuple[list[bytes | None], tuple[int, ...]]:
    """``env`` as posix_spawn takes it, in the order of the dict Popen gets (an item variable
    already inherited keeps its place, the others follow in order), and the item variables' slots."""
    entries: list[bytes | None] = []
    for key, value in env.items():
        entries.append(None if key in item_names else key + b"=" + value)
    keys = list(env)
    slots = []
    for key in item_names:
        if key in env:
            slots.append(keys.index(key))
        else:
            slots.append(len(entries))
            entries.append(None)
    return entries, tuple(slots)


class GlibcLauncher:
    """Starts one processor's commands with :class:`LibcSpawn`, exactly as its
    :class:`PopenLauncher` would; that launcher starts those only Popen can start.

    The environment is laid out once as posix_spawn takes it (:func:`_layout`); per item only
    the item variables' slots are refilled, in arrays kept per thread. Where the shell is dash,
    a command line that is one external command is started without it (:mod:`.direct`).
    """

    __slots__ = (
        "_attr",
        "_cwd",
        "_direct_cwd",
        "_direct_entries",
        "_direct_slots",
        "_entries",
        "_last_plan",
        "_local",
        "_path",
        "_shell",
        "_slots",
        "_spawner",
        "popen",
    )

    def __init__(self, spawner: LibcSpawn, popen: PopenLauncher) -> None:
        self._spawner = spawner
        self.popen = popen
        #: The spawn attributes for this process's signals as they are now (see the module).
        self._attr = spawner.attributes(ignored_here())
        #: The folder commands run in, entered by each child (None: this process's, as it is then).
        self._cwd = None if popen.cwd is None else os.fsencode(popen.cwd)
        self._shell = os.fsencode(popen.shell)
        self._entries, self._slots = _layout(popen.env, popen.item_names)
        self._local = threading.local()  # per worker thread: its argv and envp arrays, reused
        self._direct_cwd: str | None = None
        self._direct_entries: list[bytes | None] = []
        self._direct_slots: tuple[int, ...] = ()
        self._path: bytes | None = None
        #: The last command line parsed and its plan: a template without placeholders renders
        #: the same line for every item, parsed once (one tuple: threads share it safely).
        self._last_plan: tuple[str, direct.Plan | None] = ("", None)
        env = dict(popen.env)
        if DIRECT and direct.is_dash(popen.shell) and direct.usable_env(env):
            try:
                cwd = popen.cwd or os.getcwd()
                dash_env = direct.dash_env(env, cwd)
            except OSError:
                return
            self._direct_entries, self._direct_slots = _layout(dash_env, popen.item_names)
            self._path = dash_env.get(b"PATH")
            self._direct_cwd = cwd

    def start(self, cmd: str, item_values: tuple[bytes, ...]) -> Child:
        return self._spawn(cmd, item_values) or self.popen.start(cmd, item_values)

    def _spawn(self, cmd: str, item_values: tuple[bytes, ...]) -> Child | None:
        """Start the shell with posix_spawn exactly as Popen would; None where only Popen can."""
        command = os.fsencode(cmd)
        if b"\0" in command or any(b"\0" in value for value in item_values):
            return None  # Popen raises its ValueError
        if self._direct_cwd is not None:
            child = self._spawn_direct(cmd, item_values)
            if child is not None:
                return child
        local = self._local
        try:
            argv, envp = local.arrays
        except AttributeError:
            argv = (ctypes.c_char_p * 4)(self._shell, b"-c", None, None)
            envp = (ctypes.c_char_p * (len(self._entries) + 1))(*self._entries, None)
            local.arrays = argv, envp
        argv[2] = command
        for index, key, value in zip(self._slots, self.popen.item_names, item_values, strict=True):
            envp[index] = key + b"=" + value
        fds = _pipes()
        if fds is None:
            return None
        out_r, out_w, err_r, err_w = fds
        try:
            pid = self._spawner.spawn(self._shell, argv, envp, out_w, err_w, self._attr, self._cwd)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            if self._cwd is not None and NoRoomToStart.of(exc) is None and not _enterable(self._cwd):
                return None  # the folder is what failed: Popen's error names it, as it always did
            raise
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        return Child(pid, out_r, err_r)

    def _spawn_direct(self, cmd: str, item_values: tuple[bytes, ...]) -> Child | None:
        """Start the one program ``cmd`` runs as dash would start it; None where dash must run
        (any failure of the spawn included: nothing ran, and dash then does what it does)."""
        last_cmd, plan = self._last_plan
        if cmd != last_cmd:
            plan = direct.parse(cmd)
            self._last_plan = (cmd, plan)
        if plan is None:
            return None
        path = direct.find(plan.argv[0], self._path, self._direct_cwd)
        if path is None:
            return None
        if self._cwd is None:  # commands run in this process's folder, wherever it is now
            try:
                if os.getcwd() != self._direct_cwd:
                    return None  # PWD was worked out for that folder
            except OSError:
                return None
        argv = (ctypes.c_char_p * (len(plan.argv) + 1))(*[os.fsencode(word) for word in plan.argv], None)
        local = self._local
        try:
            envp = local.direct_envp
        except AttributeError:
            envp = (ctypes.c_char_p * (len(self._direct_entries) + 1))(*self._direct_entries, None)
            local.direct_envp = envp
        for index, key, value in zip(self._direct_slots, self.popen.item_names, item_values, strict=True):
            envp[index] = key + b"=" + value
        fds = _pipes()
        if fds is None:
            return None
        out_r, out_w, err_r, err_w = fds
        try:
            pid = self._spawner.spawn_redirected(path, argv, envp, out_w, err_w, plan.redirects, self._attr, self._cwd)
        except OSError:
            for fd in fds:
                os.close(fd)
            return None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        return Child(pid, out_r, err_r, direct=True)

    def strsignal(self, sig: int) -> bytes | None:
        """libc's description of signal ``sig``."""
        return self._spawner.strsignal(sig)


def _enterable(folder: bytes) -> bool:
    """Whether a child could enter ``folder`` (asked only after a start failed: a failed
    ``chdir`` and a failed exec give the same errors)."""
    return os.path.isdir(folder) and os.access(folder, os.X_OK)


def _pipes() -> tuple[int, int, int, int] | None:
    """Two pipes (stdout's read and write ends, then stderr's), or None where one of
    descriptors 0-2 is closed here (the dup2s could clash: Popen sorts that out)."""
    out_r, out_w = os.pipe()
    try:
        err_r, err_w = os.pipe()
    except BaseException:
        os.close(out_r)
        os.close(out_w)
        raise
    fds = (out_r, out_w, err_r, err_w)
    if min(fds) <= 2:
        for fd in fds:
            os.close(fd)
        return None
    return fds
