"""What an attempt writes in the batch directory (``logs/``, ``out/<seq>``, ``tmp/``) and the
item's environment variables.

Every file and folder is opened through descriptors of its folders, never following a symbolic
link: a link there halts the batch (:class:`Fatal`) instead of sending a log outside it.

``BATCHTUI_ITEM_JSON`` holds ``{"seq","key","data","attempt"}`` as JSON; ``BATCHTUI_SEQ``,
``BATCHTUI_ATTEMPT`` and ``BATCHTUI_BATCH_DIR`` the rest. An environment variable holds at most
128 KiB on Linux (MAX_ARG_STRLEN): a larger JSON goes to ``tmp/<seq>.<attempt>.json`` (0600),
removed after the attempt, whose path is in ``BATCHTUI_ITEM_JSON_FILE``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Mapping
from typing import Final

import orjson

from ..errors import Fatal
from ..logs import Stream, log_name
from .item import Item
from .template import ARG_STRLEN

__all__ = [
    "ENV_JSON_FILE_MIN",
    "ENV_JSON_MAX",
    "ITEM_VARS",
    "BatchFolder",
    "ItemEnv",
    "LogFile",
    "create_file",
    "create_log",
    "make_out_dir",
    "too_big",
    "write_all",
]

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | os.O_CLOEXEC

#: The variables each item adds to the environment, in the order they are set.
ITEM_VARS: Final = (
    b"BATCHTUI_ITEM_JSON",
    b"BATCHTUI_SEQ",
    b"BATCHTUI_ATTEMPT",
    b"BATCHTUI_BATCH_DIR",
    b"BATCHTUI_ITEM_JSON_FILE",
)
#: The longest item JSON passed in BATCHTUI_ITEM_JSON; a longer one goes to a file.
ENV_JSON_MAX: Final = ARG_STRLEN - len(b"BATCHTUI_ITEM_JSON=") - 1
#: When exec finds the environment too big as a whole, an item JSON at least this long is moved
#: to its file and the start tried again (a shorter one would not make the difference).
ENV_JSON_FILE_MIN: Final = 4096


def _unsafe(batch_dir: str, what: str) -> Fatal:
    # Fatal: every later item would meet the same link, so the batch halts (resumable once the
    # link is gone; until then the engine refuses to start on it).
    return Fatal(
        f"{what} in batch {os.path.basename(batch_dir)} is a symbolic link (or not a folder): refusing to "
        "write item files through it; remove it, then resume the batch"
    )


class BatchFolder:
    """``with BatchFolder(batch_dir, "logs") as fd``: a descriptor of that folder of the batch
    directory, made (mode 0700, whatever the umask) when missing and ``create``, else None when
    missing. Neither the batch directory nor the folder is followed when it is a symbolic link:
    :class:`Fatal` instead."""

    __slots__ = ("batch_dir", "create", "fds", "name")

    def __init__(self, batch_dir: str, name: str, *, create: bool = True) -> None:
        self.batch_dir, self.name, self.create = batch_dir, name, create
        self.fds: list[int] = []

    def __enter__(self) -> int | None:
        try:
            self.fds.append(os.open(self.batch_dir, _DIR_FLAGS))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _unsafe(self.batch_dir, "the batch directory") from None
            raise
        try:
            fd = _open_folder(self.fds[0], self.name, self.create, self.batch_dir)
        except BaseException:
            self.__exit__()
            raise
        if fd is not None:
            self.fds.append(fd)
        return fd

    def __exit__(self, *exc: object) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _open_folder(parent: int, name: str, create: bool, batch_dir: str) -> int | None:
    """A descriptor of the folder ``name`` in the folder ``parent`` (made 0700 when missing and
    ``create``; None when missing and not), never through a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(batch_dir, f"{name}/") from None
        raise
    made = True
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        made = False  # another worker made it meanwhile
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(batch_dir, f"{name}/") from None
        raise
    if made:
        os.fchmod(fd, 0o700)  # mkdir's mode passes through the umask
    return fd


def create_file(folder: int, name: str) -> int:
    """``name`` in ``folder`` opened for reading and writing, emptied, mode 0600; a symbolic
    link (or a fifo, a device...) there is replaced by the file, never followed or opened."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | os.O_CLOEXEC
    try:
        # O_NONBLOCK: opening a fifo planted there must not wait for a reader.
        fd = os.open(name, flags | _NONBLOCK, 0o600, dir_fd=folder)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    os.unlink(name, dir_fd=folder)
    return os.open(name, flags | os.O_EXCL, 0o600, dir_fd=folder)


#: What the log of an attempt cut off (a crash, a stop) is kept as when that attempt runs again
#: under its number: ``logs/<seq>.<attempt>.<stream>.interrupted`` (``.interrupted.2``, ...).
INTERRUPTED: Final = ".interrupted"


def create_log(folder: int, name: str) -> int:
    """The log ``name`` in ``folder``, created anew (mode 0600). A log already there is that of
    the same attempt cut off before it was counted (an engine killed, a stop): the attempt runs
    again under its number, and its first run's output is kept beside it as ``name.interrupted``
    (DESIGN: every attempt's log kept), not emptied. Costs nothing more on the usual path: one
    exclusive open where an emptying one was."""
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    except FileExistsError:
        pass
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_size:
            n = 1
            while True:
                aside = name + INTERRUPTED + ("" if n == 1 else f".{n}")
                try:
                    os.stat(aside, dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    break
                n += 1
            os.rename(name, aside, src_dir_fd=folder, dst_dir_fd=folder)
    return create_file(folder, name)  # an empty file, a link or a fifo there: replaced


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LogFile:
    """One stream of one attempt logged as the output comes: ``logs/<seq>.<attempt>.<stream>``
    (mode 0600), created on the first byte (a silent command costs nothing here), kept to its
    last ``limit`` bytes: when it reaches ``2 * limit`` those replace it (written to a new file
    renamed over it, so a follower sees a new inode and never a file shrinking under it), and
    once more at :meth:`close` when it holds more than ``limit``. See :mod:`batchtui.engine.logs`.

    An attempt run again after a crash or a stop (same number) keeps the files of its cut-off
    run as ``<name>.interrupted`` (:func:`create_log`)."""

    __slots__ = ("batch_dir", "fd", "folder", "limit", "name", "size")

    def __init__(self, batch_dir: str, seq: int, attempt: int, stream: Stream, limit: int) -> None:
        self.batch_dir, self.limit = batch_dir, limit
        self.name = log_name(seq, attempt, stream)
        self.fd: int | None = None
        self.folder: int | None = None  # a descriptor of logs/ once the file exists
        self.size = 0

    def add(self, data: bytes) -> None:
        if self.fd is None:
            with BatchFolder(self.batch_dir, "logs") as logs:
                assert logs is not None
                self.folder = os.dup(logs)
            self.fd = create_log(self.folder, self.name)
        if len(data) >= self.limit and self.size + len(data) >= 2 * self.limit:
            self._cut(data[-self.limit :])  # the file would end as these bytes alone: skip the write
            return
        write_all(self.fd, data)
        self.size += len(data)
        if self.size >= 2 * self.limit:
            self._cut()

    def _cut(self, keep: bytes | None = None) -> None:
        """Replace the file by ``keep`` (default: its own last ``limit`` bytes)."""
        assert self.fd is not None and self.folder is not None
        if keep is None:
            keep = os.pread(self.fd, self.limit, self.size - self.limit)
        cut = f".{self.name}.cut"
        fd = create_file(self.folder, cut)
        try:
            write_all(fd, keep)
            os.rename(cut, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(cut, dir_fd=self.folder)
            raise
        os.close(self.fd)
        self.fd, self.size = fd, len(keep)

    def close(self) -> None:
        """The attempt is over: the file is cut to its last ``limit`` bytes, then closed."""
        if self.fd is None:
            return
        try:
            if self.size > self.limit:
                self._cut()
        finally:
            os.close(self.fd)
            self.fd = None
            if self.folder is not None:
                os.close(self.folder)
                self.folder = None


def make_out_dir(item: Item) -> None:
    """``{out}``: ``out/<seq>`` in the batch directory, made 0700 without following a link."""
    with BatchFolder(item.batch_dir, "out") as out:
        assert out is not None
        fd = _open_folder(out, str(item.seq), True, item.batch_dir)
        if fd is not None:
            os.close(fd)


class ItemEnv:
    """The item's variables for one attempt. Its JSON goes in ``BATCHTUI_ITEM_JSON`` or, when too
    big for one variable (:data:`ENV_JSON_MAX`), in ``tmp/<seq>.<attempt>.json`` (0600) of the
    batch directory, named by ``BATCHTUI_ITEM_JSON_FILE`` (and BATCHTUI_ITEM_JSON is empty);
    :meth:`remove` deletes that file after the attempt."""

    __slots__ = ("item", "json", "name", "path", "tmp")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.json = _item_json(item)
        self.path: str | None = None
        self.tmp: int | None = None  # a descriptor of tmp/ while the file exists
        self.name = f"{item.seq}.{item.attempt}.json"

    def values(self) -> tuple[bytes, ...]:
        """The values of :data:`ITEM_VARS`, in order."""
        item = self.item
        in_file = self.path is not None
        return (
            b"" if in_file else self.json,
            str(item.seq).encode(),
            str(item.attempt).encode(),
            os.fsencode(item.batch_dir),
            os.fsencode(self.path) if self.path is not None else b"",
        )

    def to_file(self) -> None:
        if self.path is not None:
            return
        item = self.item
        with BatchFolder(item.batch_dir, "tmp") as tmp:
            assert tmp is not None
            self.tmp = os.dup(tmp)
        prefix = f"{item.seq}."
        # Files of this item's earlier attempts outlive only an engine killed with -9: go now.
        for entry in os.scandir(self.tmp):
            if entry.name.startswith(prefix) and entry.name.endswith(".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=self.tmp)
        fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.tmp)
        try:
            write_all(fd, self.json)
        finally:
            os.close(fd)
        self.path = os.path.join(item.batch_dir, "tmp", self.name)

    def remove(self) -> None:
        if self.tmp is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.tmp)
        os.close(self.tmp)
        self.tmp = None


def _item_json(item: Item) -> bytes:
    """``{"seq","key","data","attempt"}`` as JSON. A file name that is not UTF-8 (Python's
    surrogate-escaped str, as os.fsdecode gives it) cannot be UTF-8 JSON text: its bytes that
    do not decode become ``\\udcXX`` escapes then (as items.db holds it); ``{path}`` in the
    template passes the exact bytes."""
    obj = {"seq": item.seq, "key": item.key, "data": item.data, "attempt": item.attempt}
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: lone surrogates
        import json

        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def too_big(cmd: str, env: Mapping[bytes, bytes], item_vars: tuple[bytes, ...]) -> str:
    """Why exec said E2BIG when the command line was not too long: one variable too long, or
    all of them with the command line over the total (ARG_MAX)."""
    entries = {**env, **dict(zip(ITEM_VARS, item_vars, strict=True))}
    name, value = max(entries.items(), key=lambda kv: len(kv[0]) + len(kv[1]))
    if len(name) + len(value) + 2 > ARG_STRLEN:
        return (
            f"the environment variable {os.fsdecode(name)} is {len(name) + len(value) + 1:,} bytes, over the "
            f"{ARG_STRLEN:,} bytes one variable may have: make it shorter"
        )
    env_bytes = sum(len(k) + len(v) + 2 for k, v in entries.items())
    try:
        arg_max = f" (ARG_MAX is {os.sysconf('SC_ARG_MAX'):,} bytes)"
    except (ValueError, OSError):
        arg_max = ""
    return (
        f"the command line ({len(os.fsencode(cmd)):,} bytes) and the environment ({env_bytes:,} bytes) "
        f"together are over the system's limit for starting a command{arg_max}: shrink the environment"
    )
