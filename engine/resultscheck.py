"""results.jsonl's integrity: which lines past the committed offset are adopted, and how the
file is rewritten when it must change.

Adoption. The runner appends a completed item's line before the group commit that marks the
item complete, and that commit stores the byte offset the line ends at. Lines past the
committed offset are therefore completions a dead engine wrote and never committed, or lines
someone else added. Each one is checked before anything is taken from it: against
:class:`~.models.ResultLine` (strict: the types the runner writes), then against its item in
items.db (the seq names an item, the key is that item's key, the item is pending, the seq is
not repeated). A valid line is adopted (its item completes with its result, not redone); an
invalid one is counted by reason and cut from the file, so results.jsonl keeps one line per
completed item and never a second copy of a committed one.

Rewrites. Never in place: the new content is written to :data:`STAGED` and fsynced, then the
store commits the offset that goes with it (and the adopted items) in one transaction, then
the staged file is renamed over results.jsonl. A kill before the commit leaves the old file
and the old offset (the next start does the same work again); after the commit, the staged
file's size is the committed offset, and the next start (:func:`finish_staged`) renames it into
place before anything reads the file. So the file and the committed offset go together at
every instant.

Rebuild. The store holds every committed completion with its whole line (result, attempts,
duration, finish time, cost), so a results.jsonl that lost lines (cut by hand, deleted,
replaced while an engine ran) is written again from it: nothing committed is lost.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import ValidationError

from .batchdir import now_iso
from .files import FILE_MODE, NOFOLLOW, ResultsLog, fsync_dir, full_fsync, write_all, write_failed
from .fmt import count, decode_output
from .models import ResultLine
from .store import ItemStore

#: The next results.jsonl, written whole before the commit that goes with it (see the module doc).
STAGED: Final = ".results.jsonl.next"
_CHUNK: Final = 1 << 20
_LOOKUP: Final = 500
_SHOWN: Final = 120  # characters of a rejected line quoted in the warning

_ADOPT_SQL: Final = (
    "UPDATE items SET status='complete', attempts=?, finished_at=?, duration_s=?, cost=?, result=?,"
    " error_type=NULL, error_category=NULL, error_message=NULL, error_detail=NULL, error_group=NULL"
    " WHERE seq=? AND status IN ('pending', 'processing')"
)


def encode_line(
    seq: int, key: str, result_json: str | None, attempts: int, duration_s: float, finished_at: str, cost: float | None
) -> bytes:
    """One results.jsonl line (no newline) from stored values; ``result_json`` is the result
    as the store holds it (JSON text), embedded as it is. The keys are :class:`ResultLine`'s,
    in the order the runner writes them (engine/outcomes.py ``result_line``)."""
    line: dict[str, Any] = {
        "seq": seq,
        "key": key,
        "result": orjson.Fragment(result_json if result_json is not None else "null"),
        "attempts": attempts,
        "duration_s": round(duration_s, 6),  # as the runner writes it (the store keeps it whole)
        "finished_at": finished_at,
    }
    if cost is not None:
        line["cost"] = cost
    return orjson.dumps(line)


def check_line(raw: bytes) -> ResultLine | tuple[str, str]:
    """The line as a :class:`ResultLine`, or (reason, detail) why it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "not JSON", str(exc).splitlines()[0]
    if not isinstance(obj, dict):
        return "not a JSON object", f"a JSON {type(obj).__name__ if obj is not None else 'null'}"
    try:
        return ResultLine.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "line"
        reason = f"no {where}" if err["type"] == "missing" else f"bad {where}"
        return reason, f"{where}: {err['msg']}"


@dataclass
class Adoption:
    """What the start of a run did with results.jsonl past the committed offset."""

    adopted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    example: str = ""  # the first rejected line: where, why, how it starts
    rebuilt: int | None = None  # lines written when the file was rebuilt from items.db
    mismatch: str = ""  # why the file did not fit the committed offset

    def messages(self, after_crash: bool) -> list[str]:
        """The warnings to show. ``after_crash``: the last engine died (or halted on a write
        failure) before its final commit, the one way an engine leaves lines uncommitted."""
        out = []
        if self.rebuilt is not None:
            out.append(
                f"results.jsonl did not match items.db ({self.mismatch}): rebuilt it from items.db"
                f" ({self.rebuilt} lines, one per complete item); nothing committed is lost"
            )
        if self.adopted:
            if after_crash:
                out.append(f"adopted {self.adopted} results written just before the last crash (not redone)")
            else:
                out.append(
                    f"adopted {self.adopted} result lines added to results.jsonl after the last engine ended"
                    " (each matched its pending item; not redone)"
                )
        if self.rejected:
            n = sum(self.rejected.values())
            why = ", ".join(f"{k} {reason}" for reason, k in self.rejected.most_common())
            out.append(
                f"results.jsonl: {count(n, 'invalid line')} past the committed offset not adopted"
                f" and cut from the file ({why}); first: {self.example}"
            )
        return out


def finish_staged(path: Path, committed_offset: int) -> bool:
    """Finish or drop a rewrite a kill interrupted (see the module doc). True if the staged
    file became results.jsonl. Called under the batch lock, before the file is opened."""
    staged = path.with_name(STAGED)
    try:
        size = os.stat(staged, follow_symlinks=False).st_size
    except FileNotFoundError:
        return False
    if size == committed_offset and not staged.is_symlink():
        os.replace(staged, path)
        fsync_dir(path.parent)
        return True
    staged.unlink()
    return False


def adopt_tail(store: ItemStore, log: ResultsLog, offset: int) -> Adoption:
    """Check the lines of ``log`` past the committed ``offset``, adopt the valid ones, cut the
    others (see the module doc). A file that does not fit the offset (shorter than it, or the
    offset not at a line's start) is rebuilt from the store instead."""
    out = Adoption()
    size = log.offset
    if size == offset:
        return out
    if size < offset or (offset > 0 and os.pread(log.fileno(), 1, offset - 1) != b"\n"):
        out.mismatch = (
            f"{size} bytes, shorter than the {offset} committed"
            if size < offset
            else f"the committed offset {offset} is not at a line's start"
        )
        out.rebuilt = rebuild(store, log)
        return out

    candidates: list[tuple[int, ResultLine, bytes]] = []
    for at, raw in _lines(log.fileno(), offset, size):
        checked = check_line(raw)
        if isinstance(checked, ResultLine):
            candidates.append((at, checked, raw))
        else:
            _reject(out, at, raw, *checked)
    items = _items(store, [line.seq for _at, line, _raw in candidates])
    kept: list[bytes] = []
    updates: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for at, line, raw in candidates:
        item = items.get(line.seq)
        if item is None:
            _reject(out, at, raw, "no such item", f"no item has seq {line.seq}")
        elif item[0] != line.key:
            _reject(out, at, raw, "key not its item's", f"item {line.seq}'s key is not {line.key!r}")
        elif line.seq in seen:
            _reject(out, at, raw, "repeated", f"a second line for item {line.seq}")
        elif item[1] == "complete":
            _reject(out, at, raw, "already complete", f"item {line.seq} is already complete (its line is kept)")
        elif item[1] not in ("pending", "processing"):
            _reject(out, at, raw, f"item {item[1]}", f"item {line.seq} is {item[1]}")
        else:
            seen.add(line.seq)
            kept.append(raw)
            result = orjson.dumps(line.result, option=orjson.OPT_NON_STR_KEYS).decode()
            updates.append((line.attempts, line.finished_at, line.duration_s, line.cost, result, line.seq))
    out.adopted = len(updates)
    if not out.rejected:
        with store.transaction() as conn:
            conn.executemany(_ADOPT_SQL, updates)
            store.set_meta("results_offset", size)
        return out

    def write(fd: int) -> None:
        _copy(log.fileno(), fd, offset)
        write_all(fd, b"".join(raw + b"\n" for raw in kept))

    _replace(store, log, write, updates)
    return out


def rebuild(store: ItemStore, log: ResultsLog) -> int:
    """Write results.jsonl again from the store: one line per complete item, in seq order.
    Returns the number of lines. The caller has committed everything it appended."""
    lines = 0

    def write(fd: int) -> None:
        nonlocal lines
        buf: list[bytes] = []
        for row in store.conn.execute(
            "SELECT seq, key, result, attempts, duration_s, finished_at, cost FROM items"
            " WHERE status='complete' ORDER BY seq"
        ):
            seq, key, result, attempts, duration_s, finished_at, cost = row
            buf.append(
                encode_line(seq, key, result, max(1, attempts or 1), duration_s or 0.0, finished_at or now_iso(), cost)
            )
            lines += 1
            if len(buf) >= 10_000:
                write_all(fd, b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            write_all(fd, b"\n".join(buf) + b"\n")

    _replace(store, log, write, [])
    return lines


# -- helpers -------------------------------------------------------------------------------------


def _reject(out: Adoption, at: int, raw: bytes, reason: str, detail: str) -> None:
    out.rejected[reason] += 1
    if not out.example:
        shown = decode_output(raw[:_SHOWN])
        out.example = f"at byte {at}: {detail}: {shown}{'...' if len(raw) > _SHOWN else ''}"


def _items(store: ItemStore, seqs: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(key, status) of the items among ``seqs`` (a seq past the last item is simply absent)."""
    top = store.max_seq()
    wanted = sorted({s for s in seqs if s <= top})
    out: dict[int, tuple[str, str]] = {}
    for i in range(0, len(wanted), _LOOKUP):
        part = wanted[i : i + _LOOKUP]
        marks = ",".join("?" * len(part))
        for seq, key, status in store.conn.execute(f"SELECT seq, key, status FROM items WHERE seq IN ({marks})", part):
            out[seq] = (key, status)
    return out


def _lines(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) of the whole lines in [start, end)."""
    pos, pending = start, b""
    line_start = start
    while pos < end:
        data = os.pread(fd, min(_CHUNK, end - pos), pos)
        if not data:
            break
        pos += len(data)
        pending += data
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line_start, line
            line_start += len(line) + 1


def _copy(src: int, dst: int, n: int) -> None:
    """The first ``n`` bytes of ``src`` to ``dst`` (in the kernel where it can)."""
    done = 0
    while done < n:
        try:
            copied = os.copy_file_range(src, dst, n - done, done, done) if hasattr(os, "copy_file_range") else 0
        except OSError:
            copied = 0
        if copied <= 0:
            data = os.pread(src, min(_CHUNK, n - done), done)
            if not data:
                raise OSError(f"results.jsonl ended before its committed offset {n}")
            os.lseek(dst, done, os.SEEK_SET)
            write_all(dst, data)
            copied = len(data)
        done += copied
    os.lseek(dst, done, os.SEEK_SET)


def _replace(store: ItemStore, log: ResultsLog, write: Any, updates: list[tuple[Any, ...]]) -> None:
    """Stage the new file (``write`` fills it), commit ``updates`` with its size as the
    results offset, rename it over results.jsonl, reopen ``log`` on it."""
    staged = log.path.with_name(STAGED)
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            write(fd)
            full_fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise write_failed(log.path, exc) from None
    try:
        with store.transaction() as conn:
            if updates:
                conn.executemany(_ADOPT_SQL, updates)
            store.set_meta("results_offset", size)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()  # not committed: the old file and offset stand
        raise
    os.replace(staged, log.path)
    fsync_dir(log.path.parent)
    log.reopen()
