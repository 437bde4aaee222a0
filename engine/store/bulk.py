"""The store's bulk statements: one statement applied to many rows, in two or three forms.

``executemany`` binds each row in Python and steps it in C, letting go of the GIL and taking
it back for every row: next to busy Python threads (the workers) each row then waits for its
turn at the GIL, up to 5 ms. Where SQLite can (3.38+: ``UPDATE ... FROM``, ``->>``), the rows
go in as one JSON array to one statement over ``json_each``: a single step in C for the whole
group, without the GIL.

Each statement is written out by hand in each of its forms (:class:`Bulk`); the forms name
where the JSON array and the shared values come from (``{blob}``, ``{p1}``...), so the same
text runs bound to parameters and as the body of the committer's trigger. tests/test_store.py
runs every form on the same rows and checks they leave the same store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, Final, NamedTuple

import orjson


def json_bulk_supported() -> bool:
    """SQLite 3.38+: UPDATE ... FROM, the JSON functions and the ->> operator."""
    if sqlite3.sqlite_version_info < (3, 38, 0):
        return False
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT j.value ->> 0 FROM json_each('[[1]]') AS j").fetchall()
    except sqlite3.Error:
        return False
    return True


JSON_BULK: Final = json_bulk_supported()
_SEQ: Final = itemgetter(-1)


@dataclass(frozen=True, slots=True)
class Bulk:
    """One statement applied to many rows, in its hand-written forms.

    ``sql`` is the ``executemany`` form: ``INSERT ... VALUES (?, ...)``, or ``UPDATE items SET
    ... WHERE seq=?`` with the seq last; an UPDATE keeps the last row of a seq given twice, as
    executemany would. Rows are its parameter tuples (JSON scalars: None, int, float, str).

    ``json_form`` is the same statement over one JSON array of the rows (``json_each({blob})``,
    element ``i`` of a row is parameter ``i``), None where there is none (executemany only).

    ``shared`` (UPDATE only) names the parameters most rows share with many others (the same
    attempt, the same finish time of a chunk), and ``grouped_form`` is the statement with those
    bound once per group (``{p1}``, ``{p2}``... in the order of ``shared``) and an array of the
    rest: element 0 the seq, then the unshared parameters in their order. SQLite before 3.45
    parses an element's JSON again at every ``->>``, so fewer and shorter fields per element
    halve the statement's time.
    """

    sql: str
    json_form: str | None = None
    grouped_form: str | None = None
    shared: tuple[int, ...] = ()
    json_sql: str | None = field(init=False, default=None)
    """:attr:`json_form` bound to parameters: the array is ``?1``."""
    grouped_sql: str | None = field(init=False, default=None)
    """:attr:`grouped_form` bound to parameters: the array is ``?1``, the shared values ``?2``..."""

    def __post_init__(self) -> None:
        if bool(self.shared) != (self.grouped_form is not None):
            raise ValueError("shared parameters and a grouped form go together")
        if self.grouped_form is not None and (self.json_form is None or not self.sql.startswith("UPDATE")):
            raise ValueError("a grouped form is for UPDATE statements that have a JSON form")
        if self.json_form is not None:
            object.__setattr__(self, "json_sql", self.json_form.format(blob="?1"))
        if self.grouped_form is not None:
            slots = {f"p{k}": f"?{k + 1}" for k in range(1, len(self.shared) + 1)}
            object.__setattr__(self, "grouped_sql", self.grouped_form.format(blob="?1", **slots))

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.json_sql is None or not JSON_BULK:
            conn.executemany(self.sql, rows)
            return
        for step in self.plan(rows):
            if step.blob is None:
                conn.executemany(self.sql, step.rows)
            else:
                sql = self.grouped_sql if step.grouped else self.json_sql
                assert sql is not None
                conn.execute(sql, (step.blob, *step.values))

    def plan(self, rows: Sequence[tuple[Any, ...]]) -> list[BulkStep]:
        """The statements that carry out ``rows`` (needs :attr:`json_sql` and JSON_BULK)."""
        if self.sql.startswith("UPDATE"):
            # The last row of a seq given twice, in the place of its first (as a dict keeps it).
            rows = list(dict(zip(map(_SEQ, rows), rows, strict=True)).values())
        if self.grouped_sql is not None and len(rows) > 1:
            # Rows come in runs that share their values (a chunk's completions): groupby and
            # itemgetter walk them in C, and Python's loop turns once per run, not per row.
            shared = self.shared
            key = itemgetter(*shared) if len(shared) > 1 else lambda row: (row[shared[0]],)
            rest = [i for i in range(len(rows[0]) - 1) if i not in shared]
            elem = itemgetter(-1, *rest) if rest else lambda row: (row[-1],)
            groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
            for values, run in groupby(rows, key):
                group = groups.get(values)
                if group is None:
                    groups[values] = list(map(elem, run))
                else:
                    group.extend(map(elem, run))
            if len(groups) * 8 <= len(rows):  # else the full rows in one statement
                steps: list[BulkStep] = []
                for values, elems in groups.items():
                    blob = json_array(elems)
                    fallback = [self._row(values, e) for e in elems] if blob is None else ()
                    steps.append(BulkStep(True, blob, values, fallback))
                return steps
        return [BulkStep(False, json_array(rows), (), rows)]

    def trigger_body(self, grouped: bool) -> str:
        """The statement as a trigger's, on an inserted row: NEW.blob for the JSON array, NEW.p1,
        NEW.p2... for the shared values (see :class:`~batchtui.engine.committer.OneStatement`)."""
        form = self.grouped_form if grouped else self.json_form
        if form is None:
            raise ValueError(f"no {'grouped' if grouped else 'JSON'} form: {self.sql}")
        return form.format(blob="NEW.blob", **{f"p{k}": f"NEW.p{k}" for k in range(1, len(self.shared) + 1)})

    def _row(self, values: tuple[Any, ...], elem: tuple[Any, ...]) -> tuple[Any, ...]:
        """The executemany parameters of a grouped element: shared values back in their places."""
        n = len(values) + len(elem) - 1
        row: list[Any] = [None] * n
        for i, v in zip(self.shared, values, strict=True):
            row[i] = v
        for i, v in zip((i for i in range(n) if i not in self.shared), elem[1:], strict=True):
            row[i] = v
        return (*row, elem[0])


class BulkStep(NamedTuple):
    """One statement of a :class:`Bulk`: its JSON array (None when the rows cannot go as JSON:
    then ``rows`` go to executemany), the shared values it binds, and whether it is grouped."""

    grouped: bool
    blob: bytes | None
    values: tuple[Any, ...]
    rows: Sequence[tuple[Any, ...]]


def json_array(elems: Sequence[tuple[Any, ...]] | Sequence[Any]) -> bytes | None:
    """``elems`` as one JSON array; None when they cannot go as JSON."""
    try:
        blob = orjson.dumps(elems)
    except TypeError:  # not a JSON scalar somewhere (or a lone surrogate): bind each row
        return None
    # SQLite's JSON functions cut a string at an escaped NUL: bind those rows as they are.
    if b"\\u0000" in blob:
        return None
    return blob


# -- the run's group commits (kinds of rows staged by the runner, see staging.STATEMENTS) ------

PROCESSING: Final = Bulk(
    "UPDATE items SET status='processing', started_at=? WHERE seq=?",
    "UPDATE items SET status='processing', started_at=j.value ->> 0"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 1",
)

#: A completion; a chunk's completions share the attempt, the finish time, the cost (None) and
#: the start time.
COMPLETE: Final = Bulk(
    "UPDATE items SET status='complete', attempts=?, finished_at=?, duration_s=?, cost=?, result=?,"
    " error_type=NULL, error_category=NULL, error_message=NULL, error_detail=NULL, error_group=NULL,"
    " started_at=? WHERE seq=?",
    "UPDATE items SET status='complete', attempts=j.value ->> 0, finished_at=j.value ->> 1,"
    " duration_s=j.value ->> 2, cost=j.value ->> 3, result=j.value ->> 4,"
    " error_type=NULL, error_category=NULL, error_message=NULL, error_detail=NULL, error_group=NULL,"
    " started_at=j.value ->> 5 FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 6",
    "UPDATE items SET status='complete', attempts={p1}, finished_at={p2},"
    " duration_s=j.value ->> 1, cost={p3}, result=j.value ->> 2,"
    " error_type=NULL, error_category=NULL, error_message=NULL, error_detail=NULL, error_group=NULL,"
    " started_at={p4} FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
    shared=(0, 1, 3, 5),
)

#: A failure for good; a commit's failures mostly share the attempt, the error's type, category
#: and group: those go once per group, and each element holds the rest (SQLite before 3.45
#: parses the element again for every field, the error's text with it).
FAILED: Final = Bulk(
    "UPDATE items SET status='failed', attempts=?, error_type=?, error_category=?, error_message=?,"
    " error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    "UPDATE items SET status='failed', attempts=j.value ->> 0, error_type=j.value ->> 1,"
    " error_category=j.value ->> 2, error_message=j.value ->> 3, error_detail=j.value ->> 4,"
    " error_group=j.value ->> 5, finished_at=j.value ->> 6, duration_s=j.value ->> 7, started_at=j.value ->> 8"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 9",
    "UPDATE items SET status='failed', attempts={p1}, error_type={p2}, error_category={p3},"
    " error_message=j.value ->> 1, error_detail=j.value ->> 2, error_group={p4}, finished_at=j.value ->> 3,"
    " duration_s=j.value ->> 4, started_at=j.value ->> 5 FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
    shared=(0, 1, 2, 5),
)

#: Waiting out a backoff: 'processing' in the store, so a re-scan never dispatches it twice.
RETRYING: Final = Bulk(
    "UPDATE items SET status='processing', attempts=?, error_type=?, error_category=?,"
    " error_message=?, error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    "UPDATE items SET status='processing', attempts=j.value ->> 0, error_type=j.value ->> 1,"
    " error_category=j.value ->> 2, error_message=j.value ->> 3, error_detail=j.value ->> 4,"
    " error_group=j.value ->> 5, finished_at=j.value ->> 6, duration_s=j.value ->> 7, started_at=j.value ->> 8"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 9",
    "UPDATE items SET status='processing', attempts={p1}, error_type={p2}, error_category={p3},"
    " error_message=j.value ->> 1, error_detail=j.value ->> 2, error_group={p4}, finished_at=j.value ->> 3,"
    " duration_s=j.value ->> 4, started_at=j.value ->> 5 FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
    shared=(0, 1, 2, 5),
)

PENDING_WITH_ERROR: Final = Bulk(
    "UPDATE items SET status='pending', attempts=?, error_type=?, error_category=?,"
    " error_message=?, error_detail=?, error_group=?, finished_at=?, duration_s=?, started_at=? WHERE seq=?",
    "UPDATE items SET status='pending', attempts=j.value ->> 0, error_type=j.value ->> 1,"
    " error_category=j.value ->> 2, error_message=j.value ->> 3, error_detail=j.value ->> 4,"
    " error_group=j.value ->> 5, finished_at=j.value ->> 6, duration_s=j.value ->> 7, started_at=j.value ->> 8"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 9",
)

REQUEUE: Final = Bulk(
    "UPDATE items SET status='pending' WHERE seq=?",
    "UPDATE items SET status='pending' FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 0",
)

SKIP: Final = Bulk(
    "UPDATE items SET status='skipped', error_message=?, finished_at=? WHERE seq=?",
    "UPDATE items SET status='skipped', error_message=j.value ->> 0, finished_at=j.value ->> 1"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 2",
)

#: An item skipped while it ran, once its run has ended: when that run began and how long it
#: ran (its row had no duration beside an attempt row that had one). Its try is not counted in
#: ``attempts``, as for a stop: the operator's kill is no failure of the item's, and a later
#: retry keeps its whole --max-attempts.
SKIPPED_RAN: Final = Bulk(
    "UPDATE items SET started_at=?, duration_s=? WHERE seq=? AND status='skipped'",
    "UPDATE items SET started_at=j.value ->> 0, duration_s=j.value ->> 1"
    " FROM json_each({blob}) AS j WHERE items.seq = j.value ->> 2 AND items.status = 'skipped'",
)

ATTEMPT: Final = Bulk(
    "INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s,"
    " error_type, error_category, error_message, error_detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
    "INSERT OR REPLACE INTO attempts(seq, attempt, status, started_at, finished_at, duration_s,"
    " error_type, error_category, error_message, error_detail)"
    " SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5,"
    " j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9 FROM json_each({blob}) AS j",
)

# -- enqueue ----------------------------------------------------------------------------------

#: Pending items: key, data (JSON text), kind; the other columns take their defaults.
INSERT_PENDING: Final = Bulk(
    "INSERT OR IGNORE INTO items(key, data, kind) VALUES (?, ?, ?)",
    "INSERT OR IGNORE INTO items(key, data, kind)"
    " SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2 FROM json_each({blob}) AS j",
)

#: Records that could not be read: 'failed' from the start, with their error.
INSERT_INVALID: Final = Bulk(
    "INSERT OR IGNORE INTO items(key, data, kind, status, error_type, error_category, error_message,"
    " error_detail, error_group, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT OR IGNORE INTO items(key, data, kind, status, error_type, error_category, error_message,"
    " error_detail, error_group, finished_at)"
    " SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5,"
    " j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9 FROM json_each({blob}) AS j",
)

#: Every statement above by name (the equivalence test runs each).
STATEMENTS: Final = {
    "processing": PROCESSING,
    "complete": COMPLETE,
    "failed": FAILED,
    "retrying": RETRYING,
    "pending_with_error": PENDING_WITH_ERROR,
    "requeue": REQUEUE,
    "skip": SKIP,
    "attempt": ATTEMPT,
    "insert_pending": INSERT_PENDING,
    "insert_invalid": INSERT_INVALID,
}
