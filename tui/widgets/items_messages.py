"""What the items table tells its screen: the cursor moved, an item was chosen, the marks changed.

The classes are ``ItemsTable.Highlighted``, ``ItemsTable.Selected`` and
``ItemsTable.MarksChanged`` (the table names them so), handled as ``on_items_table_highlighted``
and so on; :class:`CountReady` is the table's own, from its counting thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from batchtui.engine.store.queries import Selection

if TYPE_CHECKING:
    from .items_table import ItemsTable


class Highlighted(Message, namespace="items_table"):
    """The cursor moved: ``seq`` is the item now under it (None when the view is empty)."""

    def __init__(self, items_table: ItemsTable, seq: int | None) -> None:
        self.items_table = items_table
        self.seq = seq
        super().__init__()

    @property
    def control(self) -> ItemsTable:
        """The table that posted the message."""
        return self.items_table

    def can_replace(self, message: Message) -> bool:
        # Holding a key down queues many moves; only the newest matters.
        return isinstance(message, Highlighted) and message.items_table is self.items_table


class Selected(Message, namespace="items_table"):
    """Enter (or a click on the highlighted row) chose the item ``seq``."""

    def __init__(self, items_table: ItemsTable, seq: int) -> None:
        self.items_table = items_table
        self.seq = seq
        super().__init__()

    @property
    def control(self) -> ItemsTable:
        """The table that posted the message."""
        return self.items_table


class MarksChanged(Message, namespace="items_table"):
    """The marks changed, or how many items they hold (a marked view's items come and go)."""

    def __init__(self, items_table: ItemsTable, selection: Selection, count: int) -> None:
        self.items_table = items_table
        self.selection = selection
        self.count = count
        super().__init__()

    @property
    def control(self) -> ItemsTable:
        """The table that posted the message."""
        return self.items_table


class CountReady(Message, bubble=False):
    """A background recount finished (posted from the counting thread to the table)."""

    def __init__(
        self, generation: int, count: int | None, total: int | None, marked: int | None, elapsed: float
    ) -> None:
        self.generation = generation
        self.count = count
        self.total = total
        self.marked = marked
        self.elapsed = elapsed
        super().__init__()
