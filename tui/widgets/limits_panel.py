"""The dashboard's ``--limit-by`` panel: the busiest keys of live_progress.json's ``limits``, with
each key's rate now (lowered after a retry-after, AIMD), its items in flight and waiting for it,
and the retry-afters that held it ("Holds"). Shown only while the batch has such limits."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import DataTable, Static

from batchtui.engine.limits import key_limit_cells
from batchtui.engine.models import LiveProgress, Manifest

from ..text import cut_middle, plain

__all__ = ["LimitsPanel"]

_COLUMNS = ("key", "rate", "run", "wait", "backoffs")


class LimitsPanel(Vertical):
    """The per-key limits (see the module docstring); hidden when the batch has none."""

    live: var[LiveProgress | None] = var(None)
    manifest: var[Manifest | None] = var(None)  # the --limit-by setting, for the title

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[tuple[str, ...]] = []
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static("Limits", classes="box-title", id="limits-title")
        yield DataTable(id="limits", cursor_type="none")

    def on_mount(self) -> None:
        table = self.query_one("#limits", DataTable)
        for key, label in zip(_COLUMNS, ("Key", "Rate", "Run", "Wait", "Holds"), strict=True):
            table.add_column(label, key=key)
        self._ready = True
        self.display = False
        self._refresh()

    def watch_live(self) -> None:
        self._refresh()

    def watch_manifest(self) -> None:
        self._refresh()

    def on_resize(self) -> None:
        # The keys are cut to the width: shown (it was hidden, 0 wide) or resized, cut again.
        self._rows = [("\0", *row[1:]) for row in self._rows]  # the same count: the keys updated in place
        self._refresh()

    def _refresh(self) -> None:
        if not self._ready:
            return
        setting = (self.manifest.config.get("limit_by") if self.manifest is not None else None) or None
        live = self.live
        self.display = bool(setting) or bool(live is not None and live.limits)
        if not self.display:
            return
        if setting:
            self.query_one("#limits-title", Static).update(plain(f"Limits by {setting}"))
        width = max(8, (self.size.width or 40) - 28)  # what the other columns leave the key
        rows: list[tuple[str, ...]] = [
            (cut_middle(plain(cells[0], limit=200).plain, width), *cells[1:])
            for cells in (key_limit_cells(k) for k in (live.limits if live is not None else []))
        ]
        if rows == self._rows:
            return
        # At most a few rows: updated in place where the row count is the same (the rates move
        # at every write), else drawn again.
        table = self.query_one("#limits", DataTable)
        if len(rows) != len(self._rows):
            table.clear()
            for i, row in enumerate(rows):
                table.add_row(*(Text(cell) for cell in row), key=f"k{i}")
        else:
            for i, (before, after) in enumerate(zip(self._rows, rows, strict=True)):
                for column, old, new in zip(_COLUMNS, before, after, strict=True):
                    if old != new:
                        table.update_cell(f"k{i}", column, Text(new), update_width=True)
        self._rows = rows
