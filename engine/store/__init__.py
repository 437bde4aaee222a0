"""``items.db``: the item store (SQLite in WAL mode), one concern a module.

- :mod:`.schema`: the tables, indexes and trigger, the schema version and its migrations;
- :mod:`.connection`: opening connections, SQLite's errors as :class:`StoreError`,
  :class:`StoreCorrupt` and :class:`~batchtui.engine.files.WriteFailed`;
- :mod:`.bulk`: the bulk statements of a group commit and of enqueue, each written out in its
  executemany and JSON-array forms;
- :mod:`.enqueue`: putting a batch's items in (input order, duplicates dropped, resumable);
- :mod:`.selection`: which items (:class:`ItemFilter`, :class:`Selection`) and their one SQL
  condition, for the views' reads and the engine's bulk changes alike;
- :mod:`.queries`: the read-only item queries, the only store API the views use;
- :mod:`.items`: :class:`ItemStore`, the engine's read-write handle.

Data flow: engine/enqueue.py reads the source -> :meth:`ItemStore.enqueue`; the runner stages
outcomes as rows of :mod:`.bulk` statements -> the committer runs them in one transaction;
views read with :class:`~.queries.ItemQueries` on their own connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .bulk import JSON_BULK, Bulk, BulkStep
    from .connection import StoreCorrupt, StoreError, StoreUnreachable, recover_hint
    from .enqueue import LineBlock, ScanOutcome
    from .items import ItemStore
    from .queries import AttemptRow, ItemDetail, ItemFilter, ItemQueries, ItemRow
    from .schema import ITEM_COLUMNS, SCHEMA_VERSION, STATUSES

#: Each name -> the module that defines it, loaded on first use (PEP 562): a view that imports
#: only :mod:`.queries` (``skip``, ``export``, ``logs``) loads neither the engine's read-write
#: handle nor its bulk statements and enqueue.
_SOURCES: dict[str, str] = {
    "JSON_BULK": "bulk",
    "Bulk": "bulk",
    "BulkStep": "bulk",
    "StoreCorrupt": "connection",
    "StoreError": "connection",
    "StoreUnreachable": "connection",
    "recover_hint": "connection",
    "LineBlock": "enqueue",
    "ScanOutcome": "enqueue",
    "ItemStore": "items",
    "AttemptRow": "queries",
    "ItemDetail": "queries",
    "ItemFilter": "queries",
    "ItemQueries": "queries",
    "ItemRow": "queries",
    "ITEM_COLUMNS": "schema",
    "SCHEMA_VERSION": "schema",
    "STATUSES": "schema",
}


__getattr__, __dir__ = lazy_names(__name__, _SOURCES)


__all__ = [
    "ITEM_COLUMNS",
    "JSON_BULK",
    "SCHEMA_VERSION",
    "STATUSES",
    "AttemptRow",
    "Bulk",
    "BulkStep",
    "ItemDetail",
    "ItemFilter",
    "ItemQueries",
    "ItemRow",
    "ItemStore",
    "LineBlock",
    "ScanOutcome",
    "StoreCorrupt",
    "StoreError",
    "StoreUnreachable",
    "recover_hint",
]
