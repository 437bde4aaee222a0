"""The browser's table of batches: one row a batch, the columns that fit its width.

The browser reads the batches again every few seconds (:class:`~batchtui.engine.listing.
BatchLister`), most often to find them as they were. Rebuilding the table each time took most
of an idle browser's CPU with a few hundred batches, so the table keeps what it drew: the same
batches in the same order under the same columns and colours get only the cells whose text
changed (most often an age); anything else rebuilds it. A batch the lister did not read again
is the very summary object drawn before: only its age can have moved on.

The cursor stays on its batch through a rebuild: batches are listed newest first, and one made
meanwhile (by another shell) must not move the selection to itself.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from batchtui.engine.summary import BatchSummary

from ..host import host
from ..screens.browser_columns import COLUMN_BY_KEY, COLUMNS, cell_text, cut_end, fit_columns
from .errors_panel import row_key_at_cursor

__all__ = ["BatchTable"]

#: Each batch's uncut text lengths by column (the widths the columns would like).
_Lengths = dict[str, int]


class BatchTable(DataTable[Text]):
    """A row a batch (key: its id), in the order :meth:`show` gets them. ``home`` and ``end``
    go to the first and the last batch, as in the items table (a DataTable scrolls sideways)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First", id="browser_first", show=False, tooltip="The first batch"),
        Binding("end", "scroll_bottom", "Last", id="browser_last", show=False, tooltip="The last batch"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.batches: list[BatchSummary] = []
        #: The columns shown and their widths, in order.
        self.widths: dict[str, int] = {}
        #: What the table shows: each row's summary and cells by batch id, in the table's
        #: order, and the theme's colours they were drawn in.
        self._drawn: dict[str, tuple[BatchSummary, tuple[Text, ...]]] = {}
        self._drawn_colours = ("", "")
        #: Each batch's uncut text lengths, with the summary they were measured on.
        self._measured: dict[str, tuple[BatchSummary, _Lengths]] = {}

    def show(self, batches: list[BatchSummary], width: int) -> None:
        """Show ``batches`` in ``width`` cells (the vertical scrollbar's two are kept free: the
        table never scrolls sideways)."""
        self.batches = batches
        widths = fit_columns(width - 2, self._natural())
        if widths != self.widths:
            self.widths = widths
            self._fill()
        else:
            self._update()

    @property
    def selected(self) -> BatchSummary | None:
        """The batch under the cursor."""
        row = self.cursor_row
        return self.batches[row] if self.batches and row is not None and 0 <= row < len(self.batches) else None

    def cells(self, batch_id: str) -> dict[str, str]:
        """The cells of a batch's row as drawn: column key -> text (for tests and scripts)."""
        return {key: str(self.get_cell(batch_id, key)) for key in self.widths}

    # -- widths --------------------------------------------------------------------------------

    def _natural(self) -> dict[str, int]:
        """The cells each column's widest text takes (its label included)."""
        now = host(self).clock()
        lengths = [self._lengths(b, now) for b in self.batches]
        if len(self._measured) > len(self.batches):  # batches deleted or forgotten since
            listed = {b.batch_id for b in self.batches}
            self._measured = {k: v for k, v in self._measured.items() if k in listed}
        natural = {}
        for col in COLUMNS:
            if col.key == "progress":  # a bar: as wide as it is given
                natural[col.key] = col.most
            elif col.key == "engine" and not any(b.engine for b in self.batches):
                natural[col.key] = 0
            else:
                natural[col.key] = max([len(col.label), *(row[col.key] for row in lengths)])
        return natural

    def _lengths(self, batch: BatchSummary, now: float) -> _Lengths:
        kept = self._measured.get(batch.batch_id)
        if kept is None or kept[0] is not batch:
            lengths = {
                c.key: cell_text(c.key, batch, 10_000, now, "", "").cell_len for c in COLUMNS if c.key != "progress"
            }
            self._measured[batch.batch_id] = (batch, lengths)
        else:
            lengths = kept[1]
        lengths["age"] = cell_text("age", batch, 10_000, now, "", "").cell_len
        return lengths

    # -- cells ---------------------------------------------------------------------------------

    def _colours(self) -> tuple[str, str]:
        colours = self.app.theme_variables  # the theme's, as .tcss would
        return colours.get("warning", "yellow"), colours.get("error", "red")

    def _cells(self, batch: BatchSummary, now: float, colours: tuple[str, str]) -> tuple[Text, ...]:
        return tuple(cell_text(key, batch, width, now, *colours) for key, width in self.widths.items())

    def _update(self) -> None:
        """The cells whose text changed, in place; a rebuild (:meth:`_fill`) when the batches,
        their order or the theme's colours changed."""
        colours = self._colours()
        ids = [b.batch_id for b in self.batches]
        if not self._drawn or ids != list(self._drawn) or colours != self._drawn_colours:
            self._fill()
            return
        now = host(self).clock()
        age = list(self.widths).index("age") if "age" in self.widths else None
        for b in self.batches:
            drawn_from, before = self._drawn[b.batch_id]
            if b is drawn_from:
                if age is None:
                    continue
                cells = (*before[:age], cell_text("age", b, self.widths["age"], now, *colours), *before[age + 1 :])
            else:
                cells = self._cells(b, now, colours)
            for key, new, old in zip(self.widths, cells, before, strict=True):
                if new != old:
                    self.update_cell(b.batch_id, key, new)
            self._drawn[b.batch_id] = (b, cells)

    def _fill(self) -> None:
        """Rebuild the table; the cursor stays on the batch it was on."""
        keep = row_key_at_cursor(self)  # as drawn, not as just listed
        self.clear(columns=True)
        for key, width in self.widths.items():
            self.add_column(cut_end(COLUMN_BY_KEY[key].label, width), width=width, key=key)
        now = host(self).clock()
        self._drawn_colours = colours = self._colours()
        self._drawn = {}
        for b in self.batches:
            cells = self._cells(b, now, colours)
            self._drawn[b.batch_id] = (b, cells)
            self.add_row(*cells, key=b.batch_id)
        if keep is not None:
            for index, b in enumerate(self.batches):
                if b.batch_id == keep:
                    self.move_cursor(row=index, animate=False)
                    break
