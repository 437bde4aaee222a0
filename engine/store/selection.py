"""Which items: :class:`ItemFilter` (a view: every field narrows) and :class:`Selection` (the
items a bulk action applies to: views, marked ranges, unmarked ranges), as plain values, and
their one SQL condition (:func:`selection_condition`).

That condition is the one definition of a selection: the views count, sample and mark with it
(engine/store/queries.py), and the engine applies retry, skip and prioritize with it, while it
runs and offline alike (:class:`~.items.ItemStore`), so what a dry run or a confirmation counts
is what changes. Nothing here holds a seq per item: a selection of 300k items is one filter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..errors import RESERVED_TYPES
from ..fmt import unclean
from ..models import MAX_SEQ
from .schema import STATUSES

__all__ = [
    "ACTION_STATUSES",
    "EVERYTHING",
    "RETRIABLE",
    "ItemFilter",
    "Range",
    "Selection",
    "merge_ranges",
    "selection_condition",
    "where",
]


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Which items a view shows or an action applies to: every field given narrows (AND).

    ``status`` is one of :data:`STATUSES`; ``error_type`` matches exactly; ``error_group`` is
    a group's id (8 hex digits, :func:`~batchtui.engine.grouping.group_id`); ``text`` is a
    case-insensitive substring of the key or the error as the items table shows it
    (``TYPE: message``), ``match`` of the error message only (``%`` and ``_`` are plain
    characters in both); ``key_glob`` is a glob on the key (``*``, ``?``, ``[...]``,
    case-sensitive); ``seqs`` keeps only those items (an empty set: none); ``seq_ranges`` only
    the seqs of those inclusive ranges (kept sorted and merged). An empty string means "not
    given". ``ItemFilter()`` is every item.
    """

    status: str | None = None
    error_type: str | None = None
    error_group: str | None = None
    text: str | None = None
    seqs: frozenset[int] | None = None
    match: str | None = None
    key_glob: str | None = None
    seq_ranges: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("status", "error_type", "error_group", "text", "match", "key_glob"):
            value = getattr(self, name)
            if value == "":
                object.__setattr__(self, name, None)
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text, not {type(value).__name__}")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r} (one of {', '.join(STATUSES)})")
        if self.error_group is not None and not _GROUP_ID.fullmatch(self.error_group):
            raise ValueError(f"error group {self.error_group!r} is not a group id (8 hex digits)")
        if self.seqs is not None:  # a set or list given: frozen, so the filter stays hashable
            object.__setattr__(self, "seqs", frozenset(self.seqs))
        if self.seq_ranges is not None:
            object.__setattr__(self, "seq_ranges", merge_ranges(self.seq_ranges))

    @property
    def is_everything(self) -> bool:
        """True when the filter narrows nothing."""
        return self == EVERYTHING

    def replace(self, **changes: Any) -> ItemFilter:
        """A copy with ``changes`` (None clears a field)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The fields given, as JSON values (``seqs`` a sorted list, ``seq_ranges`` pairs)."""
        out: dict[str, Any] = {}
        for name in _FILTER_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "seqs":
                value = sorted(value)
            elif name == "seq_ranges":
                value = [list(r) for r in value]
            out[name] = value
        return out

    @classmethod
    def from_json(cls, obj: Any) -> ItemFilter:
        """The filter :meth:`to_json` gave; ValueError saying what is wrong with anything else."""
        if not isinstance(obj, dict):
            raise ValueError(f"a filter must be an object, not {type(obj).__name__}")
        unknown = sorted(set(obj) - set(_FILTER_FIELDS))
        if unknown:
            raise ValueError(f"unknown filter field(s): {', '.join(map(str, unknown))}")
        fields = dict(obj)
        if fields.get("seqs") is not None:
            seqs = fields["seqs"]
            if not isinstance(seqs, list):
                raise ValueError("filter seqs must be a list of item numbers")
            fields["seqs"] = frozenset(_seq(s) for s in seqs)
        if fields.get("seq_ranges") is not None:
            fields["seq_ranges"] = _ranges_from_json(fields["seq_ranges"], "seq_ranges")
        return cls(**fields)


EVERYTHING: Final = ItemFilter()
#: The statuses of the items each bulk action changes (ItemStore.retry_selected, skip_selected,
#: prioritize): what its confirmation counts and samples.
ACTION_STATUSES: Final[dict[str, tuple[str, ...]]] = {
    "retry": ("failed", "skipped"),
    "skip": ("pending", "processing", "failed"),
    "prioritize": ("pending", "failed"),
}
#: The error types of items no retry can make succeed: an invalid source record (its data is only
#: the bad line kept for the views, {"_raw": ..., "_line": n}; put back, it went to the processor
#: as if it were the record, and a command that took it "completed" it), and the shell
#: processor's own refusals of an item it cannot put in its command: a field the template names
#: that the record lacks (MissingField), a value holding a NUL byte exec cannot pass (NulByte),
#: a command longer than one exec argument may be (CommandTooLong).
#: The item and the command are the batch's for good: another attempt fails the same way at
#: once, before any processor runs. They stay failed (skip settles them; a corrected source
#: line with a new key comes in through ``resume --rescan``).
UNRETRIABLE_TYPES: Final = tuple(sorted(RESERVED_TYPES))  # errors.classify keeps a user's class apart
#: The condition an item must meet to go back to pending (retry, prioritize, resume
#: --retry-failed): none of :data:`UNRETRIABLE_TYPES`.
RETRIABLE: Final = f"coalesce(error_type, '') NOT IN ({', '.join(repr(t) for t in UNRETRIABLE_TYPES)})"
_FILTER_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ItemFilter))
_GROUP_ID: Final = re.compile(r"[0-9a-f]{8}")
#: Up to this many ranges go into a query as ``seq BETWEEN`` terms; more as one JSON array.
_INLINE_RANGES: Final = 16

Range = tuple[int, int]


def merge_ranges(ranges: Iterable[Sequence[int]]) -> tuple[Range, ...]:
    """Inclusive seq ranges sorted and merged (overlapping or adjacent ones become one)."""
    spans = []
    for r in ranges:
        a, b = (int(r[0]), int(r[1])) if len(r) == 2 else (-1, -1)
        if not 0 <= a <= b <= MAX_SEQ:
            raise ValueError(f"bad seq range {list(r)!r} (two item numbers, the first not above the second)")
        spans.append((a, b))
    spans.sort()
    out: list[Range] = []
    for a, b in spans:
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def _subtract(ranges: tuple[Range, ...], a: int, b: int) -> tuple[Range, ...]:
    """``ranges`` without the seqs ``a..b``."""
    out: list[Range] = []
    for lo, hi in ranges:
        if hi < a or lo > b:
            out.append((lo, hi))
            continue
        if lo < a:
            out.append((lo, a - 1))
        if hi > b:
            out.append((b + 1, hi))
    return tuple(out)


def _seq(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValueError(f"bad item number {value!r}")
    return value


def _ranges_from_json(value: Any, what: str) -> tuple[Range, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of [first, last] pairs")
    pairs = []
    for r in value:
        if not isinstance(r, list) or len(r) != 2:
            raise ValueError(f"{what}: {r!r} is not a [first, last] pair")
        pairs.append((_seq(r[0]), _seq(r[1])))
    return merge_ranges(pairs)


@dataclass(frozen=True, slots=True)
class Selection:
    """The items a bulk action (retry, skip, prioritize) applies to, without a set of seqs.

    The union of ``views`` (filters: the dashboard's ``a`` adds the current view; a CLI
    selection is one view) minus ``excluded`` (seqs unmarked after an ``a``), and ``ranges``
    (seqs marked one by one or as a range). Ranges are sorted, merged and inclusive, so marking
    every item of a 300k-item view costs one filter, and marking a run of rows one range. The
    methods return a new Selection; :func:`selection_condition` turns it into the one SQL that
    counts it, samples it, draws its marks and applies it, in the engine and offline alike.
    """

    views: tuple[ItemFilter, ...] = ()
    ranges: tuple[Range, ...] = ()
    excluded: tuple[Range, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "ranges", merge_ranges(self.ranges))
        object.__setattr__(self, "excluded", merge_ranges(self.excluded) if self.views else ())

    @classmethod
    def of(cls, f: ItemFilter) -> Selection:
        """The items of one filter (a CLI selection)."""
        return cls(views=(f,))

    @classmethod
    def of_seqs(cls, seqs: Iterable[int]) -> Selection:
        """Exactly the items ``seqs`` (a view pinned to the items it held: runs of seqs become
        ranges), whatever becomes of them later."""
        return cls(ranges=merge_ranges((s, s) for s in seqs))

    @property
    def is_empty(self) -> bool:
        """Nothing marked (no view, no range): whatever the store holds, no item is selected."""
        return not self.views and not self.ranges

    def mark(self, seq: int) -> Selection:
        return self.mark_range(seq, seq)

    def unmark(self, seq: int) -> Selection:
        ranges = _subtract(self.ranges, seq, seq)
        excluded = merge_ranges((*self.excluded, (seq, seq))) if self.views else ()
        return Selection(self.views, ranges, excluded)

    def toggle(self, seq: int, marked: bool) -> Selection:
        """Flip item ``seq``: ``marked`` says whether it is selected now (``selected_among``)."""
        return self.unmark(seq) if marked else self.mark(seq)

    def mark_range(self, a: int, b: int) -> Selection:
        """Mark the seqs ``a..b`` (either order), also any unmarked after an ``a``."""
        lo, hi = min(a, b), max(a, b)
        return Selection(self.views, merge_ranges((*self.ranges, (lo, hi))), _subtract(self.excluded, lo, hi))

    def add_seqs(self, seqs: Iterable[int]) -> Selection:
        """Mark the items ``seqs`` (a view pinned to the items it holds now), also any of them
        unmarked after an ``a``."""
        ranges = merge_ranges((s, s) for s in seqs)
        excluded = self.excluded
        for lo, hi in ranges:
            excluded = _subtract(excluded, lo, hi)
        return Selection(self.views, merge_ranges((*self.ranges, *ranges)), excluded)

    def add_view(self, f: ItemFilter) -> Selection:
        """Mark every item of ``f`` (the ``a`` key): by query, nothing loaded. Every exclusion
        is dropped: "every item of the view" includes those unmarked before (which of them are
        in ``f`` is the store's to say, so the exclusions of other views go too)."""
        views = self.views if f in self.views else (*self.views, f)
        return Selection(views, self.ranges, ())

    def to_json(self) -> dict[str, Any]:
        """The selection as JSON (ControlCommand.select); :meth:`from_json` reads it back."""
        out: dict[str, Any] = {"views": [v.to_json() for v in self.views], "ranges": [list(r) for r in self.ranges]}
        if self.excluded:
            out["excluded"] = [list(r) for r in self.excluded]
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Selection:
        """A selection from JSON (it comes from control.jsonl: anything may be in it); ValueError
        with a clear message on anything that is not one."""
        if not isinstance(obj, dict):
            raise ValueError(f"a selection must be an object, not {type(obj).__name__}")
        unknown = sorted(set(obj) - {"views", "ranges", "excluded"})
        if unknown:
            raise ValueError(f"unknown selection field(s): {', '.join(map(str, unknown))}")
        views = obj.get("views", [])
        if not isinstance(views, list):
            raise ValueError("selection views must be a list of filters")
        return cls(
            tuple(ItemFilter.from_json(v) for v in views),
            _ranges_from_json(obj.get("ranges", []), "ranges"),
            _ranges_from_json(obj.get("excluded", []), "excluded"),
        )


def _seq_in_ranges(ranges: tuple[Range, ...], column: str = "seq") -> tuple[str, list[Any]]:
    """A condition: ``column`` in one of ``ranges`` (few: BETWEEN terms the index answers;
    many: one JSON array, each range an index range scan)."""
    if not ranges:
        return "0", []
    if len(ranges) <= _INLINE_RANGES:
        return "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in ranges) + ")", [v for r in ranges for v in r]
    sql = (
        f"{column} IN (SELECT i.seq FROM json_each(?) AS r CROSS JOIN items AS i"
        " WHERE i.seq BETWEEN json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]'))"
    )
    return sql, [orjson.dumps(ranges).decode()]


def _clauses(f: ItemFilter) -> tuple[list[str], list[Any]]:
    """The filter's conditions (ANDed) and their parameters."""
    clauses: list[str] = []
    args: list[Any] = []
    if f.status:
        # A literal (from the fixed set, never user text) lets SQLite use the partial index of
        # failed items without visiting rows; a bound parameter would not, and every refresh of
        # a large batch's view would pay for the rows visited.
        if f.status not in STATUSES:
            raise ValueError(f"unknown status {f.status!r}")
        clauses.append(f"status = '{f.status}'")
    if f.error_type:
        clauses.append("error_type = ?")
        args.append(f.error_type)
    if f.error_group:
        # The id is a hash of (type, normalized message): SQLite computes it (a function of the
        # connection, cached per pair) only for rows that have an error.
        clauses.append("error_type IS NOT NULL AND batchtui_group_id(error_type, error_group) = ?")
        args.append(f.error_group)
    if f.text:
        # The error as the items table shows it ("exit 3: boom 7"): a filter typed from the
        # screen ("exit 3") found nothing when only the message was searched.
        shown = "(error_type || ': ' || COALESCE(error_message, ''))"
        alternatives = []
        for pattern in _patterns(f.text):
            alternatives.append(f"key LIKE ? ESCAPE '\\' OR {shown} LIKE ? ESCAPE '\\'")
            args += [pattern, pattern]
        clauses.append("(" + " OR ".join(alternatives) + ")")
    if f.match:
        patterns = _patterns(f.match)
        clauses.append("(" + " OR ".join(["error_message LIKE ? ESCAPE '\\'"] * len(patterns)) + ")")
        args += patterns
    if f.key_glob:
        clauses.append("key GLOB ?")
        args.append(f.key_glob)
    if f.seqs is not None:
        # One JSON array, whatever the number of seqs (SQLite caps a statement's parameters).
        clauses.append("seq IN (SELECT value FROM json_each(?))")
        args.append(orjson.dumps(sorted(f.seqs)).decode())
    if f.seq_ranges is not None:
        sql, more = _seq_in_ranges(f.seq_ranges)
        clauses.append(sql)
        args += more
    return clauses, args


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _patterns(text: str) -> list[str]:
    """LIKE patterns for a text typed by a user: as typed, and, when it holds escapes as every
    view shows a control character (``\\x1b[31m``, copied from the screen), with them read back
    (:func:`~..fmt.unclean`): the message holds the ESC itself."""
    raw = unclean(text)
    return [_like(text)] if raw == text else [_like(text), _like(raw)]


def where(f: ItemFilter) -> tuple[str, list[Any]]:
    """The filter as a WHERE clause ('' for none) and its parameters."""
    clauses, args = _clauses(f)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def selection_condition(sel: Selection) -> tuple[str, list[Any]]:
    """The selection as one SQL condition on ``items`` and its parameters: the one definition
    of which items a selection holds (views, reading and the engine's changes all use it)."""
    views: list[str] = []
    args: list[Any] = []
    for v in sel.views:
        clauses, more = _clauses(v)
        views.append("(" + " AND ".join(clauses) + ")" if clauses else "1")
        args += more
    parts: list[str] = []
    if views:
        part = views[0] if len(views) == 1 else "(" + " OR ".join(views) + ")"
        if sel.excluded:
            sql, more = _seq_in_ranges(sel.excluded)
            part = f"({part} AND NOT {sql})"
            args += more
        parts.append(part)
    if sel.ranges:
        sql, more = _seq_in_ranges(sel.ranges)
        parts.append(sql)
        args += more
    if not parts:
        return "0", []
    return (parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"), args
