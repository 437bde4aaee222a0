"""``batchtui recover``: rebuild the item store of a batch whose items.db is damaged or missing.

The two other records of a batch are enough to rebuild it: the source (read again, in the same
order, through the same enqueue as a new batch, so every item gets its key and, for an unchanged
source, its old seq) and results.jsonl (one line per completed item, written before the store
ever recorded the completion). Every item with a result line is marked complete with that
result; every other item is pending, so the next ``batchtui resume`` runs it.

What the damaged file can still give is salvaged, page by page, where SQLite can read it: failed
and skipped states (so a skipped item is not run again behind the operator's back), and complete
items whose result line is missing (their line is appended, so results.jsonl again holds one
line per completed item). Items are matched by key, never by seq, so a source that changed since
cannot attach a result to the wrong item.

The damaged file is never deleted: it is kept as ``items.db.corrupt-<timestamp>`` (with its
``-wal`` file). The new store is built under a temporary name and renamed into place, so a crash
during a recovery leaves the batch as it was, and running ``recover`` again is always safe.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import orjson

from .batchdir import BatchDir, BatchLock, now_iso
from .batchsafe import STORE_FILES
from .errors import UserError
from .files import DamagedFile, ResultsLog, fsync_dir, iter_jsonl, read_model, write_model
from .fmt import cut_percent, shell_line
from .grouping import normalize_message
from .models import BatchState, Counts, LiveCounts, LiveProgress, Report, ResultLine
from .resultscheck import check_line, encode_line, rebuild
from .store import ItemStore
from .store.connection import sqlite_uri
from .store.health import store_is_healthy

SALVAGE_CHUNK: Final = 500
_UPDATE_BATCH: Final = 5000


@dataclass(frozen=True)
class RecoverResult:
    """What a recovery did."""

    batch_id: str
    items: int
    complete_from_results: int
    salvaged_failed: int
    salvaged_skipped: int
    salvaged_complete: int
    unreadable_rows: int
    moved: int
    orphans: int
    duplicate_lines: int
    invalid_lines: int
    damaged_kept_as: str | None
    counts: Counts

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts.model_dump()
        return data

    def describe(self) -> str:
        """Plain text for the terminal."""
        c = self.counts
        lines = [
            f"batch {self.batch_id}: items.db rebuilt from the source and results.jsonl",
            f"  items:     {self.items} ({c.complete} complete, {c.failed} failed, {c.skipped} skipped,"
            f" {c.pending} to run)",
            f"  from results.jsonl: {self.complete_from_results} complete",
        ]
        salvaged = self.salvaged_failed + self.salvaged_skipped + self.salvaged_complete
        if self.damaged_kept_as is not None:
            lines.append(
                f"  from the damaged store: {salvaged} states kept ({self.salvaged_failed} failed,"
                f" {self.salvaged_skipped} skipped, {self.salvaged_complete} complete without a result line)"
                + (f"; {self.unreadable_rows} rows unreadable" if self.unreadable_rows else "")
            )
            lines.append(f"  damaged store kept as {self.damaged_kept_as}")
        if self.moved:
            lines.append(f"  {self.moved} results matched to items at another position (the source changed)")
        if self.orphans:
            lines.append(f"  {self.orphans} results for items no longer in the source: kept as complete items")
        if self.duplicate_lines:
            lines.append(f"  {self.duplicate_lines} repeated result lines ignored (the first one counts)")
        if self.invalid_lines:
            lines.append(f"  {self.invalid_lines} invalid result lines ignored (not a result line the engine writes)")
        if self.duplicate_lines or self.invalid_lines:
            lines.append("  results.jsonl rewritten: one line per complete item")
        if c.pending:
            lines.append(f"  next: {shell_line('batchtui', 'resume', self.batch_id)}")
        return "\n".join(lines)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def recover_batch(
    batch: BatchDir, *, force: bool = False, salvage: bool = True, stdin: TextIO | None = None
) -> RecoverResult:
    """Rebuild ``batch``'s items.db from its source and results.jsonl (see the module doc).

    Refuses (UserError) while an engine runs the batch, when the store is healthy (unless
    ``force``), when the manifest is unreadable, and when the source cannot be read again.
    """
    from .enqueue import enqueue_source, source_unreadable
    from .growing import enqueue_added
    from .sources import SourceSpec  # here: `batchtui show` checks the store without the sources

    # The store's files are what recover replaces: a link or a folder in their place is set
    # aside with the rest (never opened, never followed), not a reason to refuse.
    lock = BatchLock(batch.lock, engine=False, set_aside=STORE_FILES)
    lock.acquire(wait=0.5)
    try:
        try:
            manifest = batch.read_manifest()
        except FileNotFoundError:
            raise UserError(f"{batch.manifest} is missing: recover needs the batch's manifest") from None
        source = SourceSpec.model_validate(manifest.source)
        db = batch.items_db
        present = _is_regular(db)  # a store that can be read (and salvaged)
        if present and not force and store_is_healthy(db):
            raise UserError(
                f"{db} is healthy: nothing to recover (`{shell_line('batchtui', 'recover', batch.batch_id, '--force')}` rebuilds it anyway)"
            )
        if any(e.kind == "stdin" for e in source.entries) and stdin is None:
            raise UserError(
                f"batch {batch.batch_id} read its items from stdin, which cannot be read again: recover needs"
                " the source (start a new batch from the same input instead)"
            )

        fresh = batch.path / ".items.db.recovering"
        _remove_db_files(fresh)
        durable = bool(manifest.config.get("fsync", True))
        store = ItemStore.create(fresh, durable=durable)
        try:
            with store.transaction():
                store.set_meta("results_offset", 0)
                store.set_meta("commit_seq", 0)
            try:
                dropped = enqueue_source(store, source, stdin=stdin)
                if manifest.added_sources:  # and those `batchtui add` gave, in their order
                    dropped = enqueue_added(store, manifest)
            except UserError as exc:
                raise UserError(f"cannot read the batch's source again to rebuild its items: {exc}") from None
            stats = _Stats()
            _apply_results(store, batch.results, stats)
            if present and salvage:
                _salvage(store, db, batch.results, stats)
            with store.transaction():
                store.set_meta("results_offset", batch.results.stat().st_size if batch.results.exists() else 0)
                store.set_meta("recovered_at", now_iso())
            if (stats.invalid or stats.duplicates) and batch.results.exists():
                # What was not taken is cut: one valid line per complete item again, written
                # from the new store (a staged file renamed into place: see resultscheck).
                with ResultsLog(batch.results) as log:
                    rebuild(store, log)
            counts = store.counts()
            unreadable = source_unreadable(store)
        except BaseException:
            store.close()
            _remove_db_files(fresh)
            raise
        store.close()

        kept: Path | None = None
        if any(os.path.lexists(f"{db}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")):
            stamp = time.strftime("%Y%m%d_%H%M%S")
            kept = db.with_name(f"{db.name}.corrupt-{stamp}")
            n = 1
            while kept.exists():  # never replace an earlier kept copy
                n += 1
                kept = db.with_name(f"{db.name}.corrupt-{stamp}-{n}")
            moved: list[tuple[Path, str]] = []
            try:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    src = Path(f"{db}{suffix}")
                    if os.path.lexists(src):  # a link moves as a link: its target is left alone
                        os.replace(src, f"{kept}{suffix}")
                        moved.append((src, f"{kept}{suffix}"))
            except OSError as exc:  # an immutable items.db, say: put back what moved, change nothing
                for src, dst in reversed(moved):
                    os.replace(dst, src)
                _remove_db_files(fresh)
                raise UserError(f"cannot replace {db} ({exc.strerror}): the batch was left as it was") from None
        os.replace(fresh, db)
        fsync_dir(batch.path)

        state = BatchState.FINISHED if not (counts.pending or counts.processing) else BatchState.STOPPED
        manifest = manifest.model_copy(
            update={
                "totals": counts,
                "state": state,
                "halt_reason": None,
                "duplicates_dropped": dropped,
                "unreadable": unreadable,
            }
        )
        write_model(batch.manifest, manifest, durable=durable, backup=True)
        note = f"{now_iso()} items.db rebuilt by `batchtui recover`" + (
            f"; the damaged one is kept as {Path(moved[0][1]).name}" if kept else ""
        )
        _write_live(batch, state, counts, note)
        _update_report(batch, counts, durable)
        return RecoverResult(
            batch_id=batch.batch_id,
            items=counts.total,
            complete_from_results=stats.complete,
            salvaged_failed=stats.failed,
            salvaged_skipped=stats.skipped,
            salvaged_complete=stats.salvaged_complete,
            unreadable_rows=stats.unreadable,
            moved=stats.moved,
            orphans=stats.orphans,
            duplicate_lines=stats.duplicates,
            invalid_lines=stats.invalid,
            damaged_kept_as=moved[0][1] if kept else None,  # items.db's, or its WAL's when it was gone
            counts=counts,
        )
    finally:
        lock.release()


@dataclass
class _Stats:
    complete: int = 0
    failed: int = 0
    skipped: int = 0
    salvaged_complete: int = 0
    unreadable: int = 0
    moved: int = 0
    orphans: int = 0
    duplicates: int = 0
    invalid: int = 0


def _remove_db_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _result_lines(results: Path, stats: _Stats | None = None) -> Iterator[tuple[str, ResultLine]]:
    """(key, line) of every whole result line that is a valid :class:`ResultLine` (the others
    are counted as invalid), the first line of each key only."""
    seen: set[str] = set()
    for _end, _obj, raw in iter_jsonl(results):
        line = check_line(raw)
        if not isinstance(line, ResultLine):
            if stats is not None:
                stats.invalid += 1
            continue
        key = line.key
        if key in seen:
            if stats is not None:
                stats.duplicates += 1
            continue
        seen.add(key)
        yield key, line


def _apply_results(store: ItemStore, results: Path, stats: _Stats) -> None:
    """Mark every item with a line in results.jsonl complete (matched by key; first line wins).

    Items finished once but no longer in the source are added (nothing finished is lost). When
    the source changed since the run, items are renumbered so that every completed item keeps the
    seq its result line names, as far as the seqs stay dense (0..n-1, as views rely on)."""
    if not results.exists():
        return
    ResultsLog(results).close()  # opening cuts a torn last line
    conn = store.conn
    wanted: dict[str, int] = {}
    first = conn.execute("SELECT kind FROM items ORDER BY seq LIMIT 1").fetchone()
    kind = first[0] if first else "line"
    with store.transaction():
        for key, line in _result_lines(results, stats):
            wanted[key] = line.seq
            if conn.execute("SELECT 1 FROM items WHERE key=?", (key,)).fetchone() is None:
                data = {"_key": key} if kind == "record" else key
                conn.execute(
                    "INSERT INTO items(key, data, kind, status) VALUES (?, ?, ?, 'pending')",
                    (key, orjson.dumps(data).decode(), kind),
                )
                stats.orphans += 1
        _renumber(store, wanted)

    pending: list[tuple[Any, ...]] = []

    def flush() -> None:
        with store.transaction():
            conn.executemany(
                "UPDATE items SET status='complete', attempts=?, finished_at=?, duration_s=?, cost=?, result=?"
                " WHERE key=?",
                [row[1:] for row in pending],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO attempts(seq, attempt, status, finished_at, duration_s)"
                " SELECT seq, ?, 'complete', ?, ? FROM items WHERE key=?",
                [(row[1], row[2], row[3], row[6]) for row in pending],
            )
        pending.clear()

    for key, line in _result_lines(results):
        result = orjson.dumps(line.result, option=orjson.OPT_NON_STR_KEYS).decode()
        pending.append((key, line.attempts, line.finished_at, line.duration_s, line.cost, result, key))
        stats.complete += 1
        if len(pending) >= _UPDATE_BATCH:
            flush()
    if pending:
        flush()
    for key, seq in conn.execute("SELECT key, seq FROM items WHERE status='complete'"):
        if key in wanted and wanted[key] != seq:
            stats.moved += 1


def _renumber(store: ItemStore, wanted: dict[str, int]) -> None:
    """Give items with a result line the seq that line names, where that keeps seqs dense; the
    other items fill the free seqs in their source order. A no-op for an unchanged source."""
    conn = store.conn
    rows = conn.execute("SELECT seq, key FROM items ORDER BY seq").fetchall()
    total = len(rows)
    used: set[int] = set()
    fixed: dict[int, int] = {}
    for seq, key in rows:
        w = wanted.get(key)
        if w is not None and 0 <= w < total and w not in used:
            fixed[seq] = w
            used.add(w)
    if all(old == new for old, new in fixed.items()):
        return
    free = (s for s in range(total) if s not in used)
    mapping = [(fixed[seq] if seq in fixed else next(free), seq) for seq, _key in rows]
    conn.execute("UPDATE items SET seq = -1 - seq")
    conn.executemany("UPDATE items SET seq = ? WHERE seq = -1 - ?", mapping)


_SALVAGE_COLUMNS: Final = (
    "key, status, attempts, error_type, error_category, error_message, error_detail, error_group,"
    " started_at, finished_at, duration_s, cost, result"
)


def _damaged_rows(path: Path, stats: _Stats) -> Iterator[tuple[Any, ...]]:
    """Rows of the damaged store that SQLite can still read, chunk by chunk, row by row where a
    chunk fails. Opened read-only: the damaged file itself is never written."""
    # Without a -wal file there is nothing to replay: immutable=1 then reads the file without
    # creating -wal/-shm files next to it. With one, its committed pages are wanted too.
    flags = ("mode=ro",) if Path(f"{path}-wal").exists() else ("mode=ro", "immutable=1")
    try:
        conn = sqlite3.connect(sqlite_uri(path, *flags), uri=True)
    except sqlite3.Error:
        return
    try:
        try:
            top = conn.execute("SELECT MAX(seq) FROM items").fetchone()[0]
        except sqlite3.Error:
            top = None
        if top is None:
            return
        for start in range(0, int(top) + 1, SALVAGE_CHUNK):
            end = start + SALVAGE_CHUNK - 1
            sql = f"SELECT {_SALVAGE_COLUMNS} FROM items WHERE seq BETWEEN ? AND ?"
            try:
                rows = conn.execute(sql, (start, end)).fetchall()
            except sqlite3.Error:
                rows = []
                for seq in range(start, end + 1):
                    try:
                        rows += conn.execute(sql, (seq, seq)).fetchall()
                    except sqlite3.Error:
                        stats.unreadable += 1
            yield from rows
    finally:
        conn.close()


def _salvage(store: ItemStore, damaged: Path, results: Path, stats: _Stats) -> None:
    """Carry readable failed/skipped states, and completions missing from results.jsonl, over
    from the damaged store (matched by key, only onto items still pending)."""
    conn = store.conn
    log: ResultsLog | None = None
    try:
        with store.transaction():
            for row in _damaged_rows(damaged, stats):
                key, status = row[0], row[1]
                if status not in ("failed", "skipped", "complete") or not isinstance(key, str):
                    continue
                found = conn.execute("SELECT seq, status FROM items WHERE key=?", (key,)).fetchone()
                if found is None or found[1] != "pending":
                    continue
                seq = int(found[0])
                if status == "complete":
                    try:
                        if row[12] is not None:
                            orjson.loads(row[12])
                    except orjson.JSONDecodeError:
                        continue  # a result we cannot read back: run the item again
                    if log is None:
                        log = ResultsLog(results)
                    log.append(
                        encode_line(seq, key, row[12], row[2] or 1, row[10] or 0.0, row[9] or now_iso(), row[11])
                    )
                    conn.execute(
                        "UPDATE items SET status='complete', attempts=?, started_at=?, finished_at=?, duration_s=?,"
                        " cost=?, result=? WHERE seq=?",
                        (row[2] or 1, row[8], row[9], row[10], row[11], row[12], seq),
                    )
                    stats.salvaged_complete += 1
                    continue
                group = None if row[7] is None else normalize_message(row[5] or "", key)  # today's rules
                conn.execute(
                    "UPDATE items SET status=?, attempts=?, error_type=?, error_category=?, error_message=?,"
                    " error_detail=?, error_group=?, started_at=?, finished_at=?, duration_s=? WHERE seq=?",
                    (status, *row[2:7], group, *row[8:11], seq),
                )
                stats.failed += status == "failed"
                stats.skipped += status == "skipped"
            if log is not None:
                log.sync()  # the lines are durable before the store says complete
    finally:
        if log is not None:
            log.close()


def _write_live(batch: BatchDir, state: BatchState, counts: Counts, note: str) -> None:
    live = batch.read_live()
    warnings = [*(live.warnings if live else []), note][-10:]
    fresh = LiveProgress(
        batch_id=batch.batch_id,
        state=state,
        updated_at=now_iso(),
        commit_seq=0,
        total=counts.total,
        counts=LiveCounts(**counts.model_dump()),
        percent=cut_percent(counts.percent, 2),
        eta_s=None,
        warnings=warnings,
    )
    write_model(batch.live_progress, fresh, durable=False)


def _update_report(batch: BatchDir, counts: Counts, durable: bool) -> None:
    """An old report.json gets the rebuilt totals, so every file agrees with the store."""
    try:
        report = read_model(batch.report, Report, use_backup=False)
    except (FileNotFoundError, DamagedFile):
        return
    done = counts.complete + counts.failed
    report = report.model_copy(
        update={"totals": counts, "success_rate": round(counts.complete / done, 6) if done else 1.0}
    )
    write_model(batch.report, report, durable=durable)


__all__ = ["RecoverResult", "recover_batch", "store_is_healthy"]  # `show` asks the last here
