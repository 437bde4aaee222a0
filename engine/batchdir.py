"""The batch directory: its paths, its id, its lock (finding batches: engine/batches.py)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson

from .batchsafe import UnsafeBatchDir, check_batch_dir
from .errors import UserError
from .files import DIR_MODE, FILE_MODE, NOFOLLOW, DamagedFile, read_model, read_small_file
from .fmt import shell_line
from .models import LiveProgress, LockInfo, Manifest, NewerFormat

BATCH_ID_RE: Final = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{8}$")
HOST: Final = socket.gethostname()


def now_iso() -> str:
    """The one timestamp format of every batch file: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_at(epoch: float) -> str:
    """A wall-clock time (``time.time()``) in :func:`now_iso`'s form."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def new_batch_id() -> str:
    # os.urandom is what secrets.token_hex reads; the secrets module (hashlib, hmac, random)
    # costs more to import than every other `batchtui ls` needs.
    return time.strftime("%Y%m%d_%H%M%S") + "_" + os.urandom(4).hex()


class BatchLocked(UserError):
    """Another live engine holds the batch."""

    def __init__(self, path: Path, info: LockInfo | None) -> None:
        self.info = info
        who = f"pid {info.pid} on {info.host} (since {info.started_at})" if info else "another process"
        super().__init__(
            f"batch {path.name} is being run by {who}; watch it with `{shell_line('batchtui', 'watch', path.name)}`"
        )


class BatchReadOnly(UserError):
    """The batch's folder cannot be written by this process (a read-only file system, no
    permission): nothing that changes the batch can run there; the views still read it."""

    def __init__(self, path: Path, exc: OSError) -> None:
        why = "is on a read-only file system" if exc.errno == errno.EROFS else f"cannot be written ({exc.strerror})"
        super().__init__(
            f"batch {path.name} cannot be changed here: its folder {path} {why}; "
            "`show`, `export`, `errors` and `logs` still read it"
        )


class BatchLock:
    """``fcntl.flock`` on ``<batch>/lock``, held from engine start to exit.

    flock is released by the kernel when the holder dies (even by SIGKILL), so a dead
    engine's lock is taken over without fuss; the pid/host inside are for messages only.
    """

    def __init__(
        self, path: Path, *, engine: bool = True, hands_over: bool = False, set_aside: Collection[str] = ()
    ) -> None:
        self.path = path
        self.set_aside = set_aside  # see check_batch_dir
        self.engine = engine  # written into the lock file: False for a brief offline change
        self.hands_over = hands_over  # written too: a --detach that hands the batch on (LockInfo)
        self._fd: int | None = None
        self._dir_fd: int | None = None
        self.info: LockInfo | None = None
        self._releasing = threading.Lock()  # a release may come from two threads (takeover.py)

    def acquire(self, *, wait: float = 1.0, on_wait: Callable[[LockInfo | None], None] | None = None) -> LockInfo:
        """Take the lock, trying for up to ``wait`` seconds; BatchLocked (naming the holder) if not.

        Taking a lock this object already holds returns at once: a command can take the batch
        before it reads it and hand the held lock to the runner, which takes it again to run.
        ``on_wait`` is called once with the holder's info when the first try fails (a hand-off
        engine logs that it waits for the engine it takes over from).
        """
        if self._fd is not None and self.info is not None:
            return self.info
        # Whoever takes the lock writes the batch: never through a link planted in it.
        check_batch_dir(self.path.parent, set_aside=self.set_aside)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeBatchDir(self.path.parent, "lock is a symbolic link") from None
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise BatchReadOnly(self.path.parent, exc) from None
            raise
        # The folder is locked too: a lock file deleted by hand (a "stale lock" cleared while the
        # engine runs) must not let a second engine in beside the first.
        try:
            dir_fd: int | None = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            dir_fd = None
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if dir_fd is not None:
                    try:
                        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        raise
                break
            except BlockingIOError:
                # A viewer's brief shared probe can hold it for microseconds: retry a little.
                if time.monotonic() >= deadline:
                    os.close(fd)
                    if dir_fd is not None:
                        os.close(dir_fd)
                    raise BatchLocked(self.path.parent, read_lock_info(self.path)) from None
                if on_wait is not None and not told:
                    told = True
                    on_wait(read_lock_info(self.path))
                time.sleep(0.05)
        return self._own(fd, dir_fd)

    def _own(self, fd: int, dir_fd: int | None, info: LockInfo | None = None) -> LockInfo:
        """Keep the locked descriptors and write this process (or ``info``) into the lock file."""
        if info is None:
            info = LockInfo(
                pid=os.getpid(), host=HOST, started_at=now_iso(), engine=self.engine, hands_over=self.hands_over
            )
        _write_info(fd, info)
        self._fd = fd
        self._dir_fd = dir_fd
        self.info = info
        return info

    def touch(self) -> None:
        """Set the lock file's modification time to now, its content untouched: the sign of life
        of an engine that waits on its source (engine/liveness.py). No-op when not held."""
        if self._fd is not None:
            now = time.time()  # this host's clock, as the lock's started_at (not a file server's)
            with contextlib.suppress(OSError):
                os.utime(self._fd, (now, now))

    def descriptors(self) -> tuple[int, int | None]:
        """The locked descriptors (the lock file's, the folder's), for a child that holds the
        lock on (:meth:`hand_over`, :meth:`adopt`)."""
        if self._fd is None:
            raise RuntimeError("the lock is not held")
        return self._fd, self._dir_fd

    def hand_over(self, to: int | None = None) -> None:
        """Close this process's descriptors without unlocking: a child started with copies of
        them (:meth:`descriptors`) holds the lock on, with no moment when the batch is free.

        ``to``: that child's pid, written into the lock file first (:func:`handed_info`), so
        that while it starts a refusal names it, not this process (which may be gone), and the
        views see it alive. It writes the same when it adopts, whichever of the two comes first.

        flock belongs to the open file, which parent and child share: an unlock here would free
        the batch under the child, so only the descriptors are closed. When no child holds them
        any more (it died before it took them), the kernel frees the lock as for any holder."""
        if to is not None and self._fd is not None and self.info is not None:
            with contextlib.suppress(OSError):
                _write_info(self._fd, handed_info(self.info, to))
        for fd in (self._fd, self._dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._dir_fd = None
        self.info = None

    def adopt(self, fd: int, dir_fd: int | None) -> LockInfo | None:
        """Take the lock through descriptors a parent handed over (:meth:`hand_over`), and write
        this process into the lock file. None (then :meth:`acquire` as usual) when they are not
        this batch's lock file and folder, which are left alone, or when they are but their lock
        was let go of and taken by another since, which are closed."""
        if min(fd, 3 if dir_fd is None else dir_fd) < 3 or not _same_file(fd, self.path, directory=False):
            return None
        if dir_fd is not None and not _same_file(dir_fd, self.path.parent, directory=True):
            return None
        try:
            # The same open file: a parent's lock is ours, and LOCK_NB fails if it was let go
            # of and someone else took it since.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if dir_fd is not None:
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for each in (fd, dir_fd):
                if each is not None:
                    os.set_inheritable(each, False)  # never into an item's process
        except OSError:
            for each in (fd, dir_fd):
                if each is not None:
                    with contextlib.suppress(OSError):
                        os.close(each)
            return None
        # What the parent wrote: itself (it has not handed over yet) or already this process.
        parent = _info_at(fd)
        if parent is None:
            return self._own(fd, dir_fd)
        handed = parent.handed_from is not None and parent.pid == os.getpid() and parent.host == HOST
        mine = parent if handed else handed_info(parent, os.getpid())
        return self._own(fd, dir_fd, mine)

    def release(self) -> None:
        with self._releasing:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
                # Unlock before closing: the run's watchdog holds a copy of this descriptor while
                # it sweeps, and a close alone would leave the batch locked until that copy is gone.
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
                self.info = None
            if self._dir_fd is not None:
                os.close(self._dir_fd)  # and with it the folder's lock
                self._dir_fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int | None:
        """The locked descriptor (the run's reaper holds it too until the run's processes are gone)."""
        return self._fd


def handed_info(holder: LockInfo, pid: int) -> LockInfo:
    """The lock's info for the engine ``pid`` that ``holder`` hands the batch to: the time the
    batch was taken (commands sent since are the engine's) and ``holder`` as ``handed_from``.
    The parent and the child both write it, in either order: the same bytes."""
    return LockInfo(pid=pid, host=HOST, started_at=holder.started_at, engine=True, handed_from=holder.token())


def _write_info(fd: int, info: LockInfo) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, orjson.dumps(info.model_dump()) + b"\n", 0)


def _info_at(fd: int) -> LockInfo | None:
    try:
        raw = os.pread(fd, 64 * 1024, 0)
        return LockInfo.model_validate(orjson.loads(raw)) if raw.strip() else None
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path, *, directory: bool) -> bool:
    """``fd`` is the file (or folder) ``path`` names now, not through a link."""
    try:
        st, there = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(st.st_mode) and kind(there.st_mode) and (st.st_dev, st.st_ino) == (there.st_dev, there.st_ino)


def read_lock_info(path: Path) -> LockInfo | None:
    try:
        raw = read_small_file(path, limit=64 * 1024)
        return LockInfo.model_validate(orjson.loads(raw)) if raw.strip() else None
    except (OSError, ValueError, DamagedFile):
        return None


def engine_alive(batch_path: Path) -> LockInfo | None:
    """The lock holder's info if a live engine holds the batch, else None (never blocks)."""
    lock = batch_path / "lock"
    try:
        fd = os.open(lock, os.O_RDONLY | NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # a fifo: no wait
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # no engine locks anything but the file it made
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_lock_info(lock) or LockInfo(pid=0, host="?", started_at="")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class BatchDir:
    """Paths of one batch directory (DESIGN section 2)."""

    path: Path

    @property
    def batch_id(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def items_db(self) -> Path:
        return self.path / "items.db"

    @property
    def results(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def live_progress(self) -> Path:
        return self.path / "live_progress.json"

    @property
    def control(self) -> Path:
        return self.path / "control.jsonl"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def engine_log(self) -> Path:
        return self.path / "engine.log"

    @classmethod
    def create(cls, output_dir: Path, made: list[Path] | None = None) -> BatchDir:
        """A new batch folder in ``output_dir``. ``made`` gets its path as soon as it exists, so
        that a caller interrupted (a Ctrl-C) before this returns knows what to remove; one
        interrupted before that is removed here."""
        make_private_dirs(output_dir)
        for _ in range(10):
            path = output_dir / new_batch_id()
            try:
                path.mkdir(mode=DIR_MODE)
                if made is not None:
                    made.append(path)
            except FileExistsError:
                continue
            except OSError:
                raise
            except BaseException:  # a Ctrl-C as the folder was made: none is left behind
                if made is None or path not in made:
                    with contextlib.suppress(OSError):
                        path.rmdir()
                raise
            os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
            return cls(path)
        raise RuntimeError(f"could not create a new batch directory in {output_dir}")

    def read_manifest(self, on_backup: Callable[[str], None] | None = None) -> Manifest:
        """The manifest (or its .bak, with a warning); NewerFormat naming it when a newer
        batchtui wrote it, DamagedFile when neither copy parses."""
        try:
            return read_model(self.manifest, Manifest, on_backup=on_backup)
        except NewerFormat as exc:
            raise exc.at(self.manifest) from None

    def read_live(self) -> LiveProgress | None:
        try:
            return read_model(self.live_progress, LiveProgress, use_backup=False)
        except (FileNotFoundError, DamagedFile):
            return None

    def alive(self) -> LockInfo | None:
        return engine_alive(self.path)


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every folder it creates gets mode 0700 whatever the umask (mkdir's mode
    passes through it: under umask 000 a plain ``mkdir -p`` makes them 0777). Folders that exist
    are left as they are."""
    missing: list[Path] = []
    at = path
    while not os.path.lexists(at) and at.parent != at:
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
            os.chmod(folder, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        except OSError as exc:
            raise UserError(f"cannot create the output directory {folder}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise UserError(f"cannot use {path} as the output directory: it is not a directory")


#: What the engine writes in a batch directory: regular files, and the folders below.
def resume_command(batch: BatchDir, *, retry_failed: bool = False) -> str:
    """The command line that resumes ``batch`` (shown in summaries, errors and the browser);
    ``retry_failed``: the one that first puts its failed items back to pending."""
    words = ["batchtui", "resume", batch.batch_id, "--output-dir", batch.path.parent]
    return shell_line(*words, *(["--retry-failed"] if retry_failed else []))


def has_manifest(path: Path) -> bool:
    """Whether ``path`` holds a manifest, or at least its backup (a lost manifest.json is read
    from manifest.json.bak, so such a batch is still found and resumable)."""
    return (path / "manifest.json").exists() or (path / "manifest.json.bak").exists()


def is_batch_dir(path: Path) -> bool:
    return path.is_dir() and BATCH_ID_RE.match(path.name) is not None and has_manifest(path)
