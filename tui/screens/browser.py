"""The batch browser: every batch, newest first, made for choosing which one to open or resume.

Each row leads with what a person recognizes a batch by (its name, with its short id), then its
state with why it stopped, its progress and how long ago it last did something; the source, the
command, the engine and the counts follow as the width allows. Columns give way by priority as
the terminal narrows (:func:`.browser_columns.fit_columns`): the name never does. The preview pane
(:class:`~..widgets.batch_preview.BatchPreviewPane`) shows the selected batch's top error groups,
its runs and the exact command that resumes it: beside the table when the terminal is wide,
under it when narrow, hidden when short; ``p`` toggles it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from time import thread_time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.events import Resize
from textual.timer import Timer
from textual.widgets import DataTable, Static

from batchtui.engine.batchdir import engine_alive
from batchtui.engine.batches import BatchScope, as_scope
from batchtui.engine.fmt import clean, count
from batchtui.engine.listing import GONE, BatchLister
from batchtui.engine.models import Counts
from batchtui.engine.preview import BatchPreview, preview
from batchtui.engine.registry import forget
from batchtui.engine.summary import BatchSummary

from ..host import host
from ..keys import explained
from ..text import plain
from ..widgets.batch_preview import BatchPreviewPane
from ..widgets.batch_table import BatchTable
from ..widgets.footer import KeyFooter
from ..widgets.labels import set_text
from .base import WorkerScreen
from .browser_columns import short_id
from .modals import ConfirmScreen

#: From this width the preview stands beside the table; below it, under the table.
WIDE = 140
#: Below this height there is no room for a preview: the table alone.
TALL_ENOUGH = 20
#: Seconds between two readings of the batches (while the app watches files).
REFRESH_S = 2.0
#: The share of a core the readings may take: each takes longer with thousands of batches (a
#: registry fed by an hourly job), and the browser then reads less often. With what the app
#: takes at rest besides (about 1%), the browser stays under 5% of a core.
REFRESH_BUDGET = 0.04


def reload_in(busy_s: float) -> float:
    """Seconds to the next reading after one that took ``busy_s`` of CPU."""
    return max(REFRESH_S, busy_s / REFRESH_BUDGET)


class BrowserScreen(WorkerScreen):
    """All batches, newest first. This is where an operator picks which batch to resume."""

    DEFAULT_CSS = """
    BrowserScreen #browser-body { height: 1fr; layout: vertical; }
    BrowserScreen #browser-body.wide { layout: horizontal; }
    BrowserScreen #batches { height: 1fr; width: 1fr; }
    BrowserScreen #browser-body.narrow BatchPreviewPane { border-left: none; border-top: hkey $panel; }
    /* Under the table the rows are few: no blank line before a section (80x24 shows the
       resume command without scrolling). */
    BrowserScreen #browser-body.narrow .preview-section { margin-top: 0; }
    """

    STEERING: ClassVar[frozenset[str]] = frozenset({"resume", "delete"})
    BINDINGS: ClassVar[list[BindingType]] = [
        # Two labels for enter: the footer says what it will do for the batch under the cursor.
        # Before the table's own enter (priority), so that the footer shows it.
        Binding(
            "enter",
            "watch",
            "Watch",
            id="browser_watch",
            tooltip="Watch the engine that runs this batch",
            priority=True,
        ),
        Binding(
            "enter",
            "open",
            "Open",
            id="browser_open",
            tooltip="Open the batch's dashboard (u there resumes it, with its options)",
            priority=True,
        ),
        Binding(
            "r",
            "resume",
            "Resume here",
            id="browser_resume",
            tooltip="Resume the selected batch with its engine in this app",
            priority=True,  # served: its dialog has the focus for the keys typed right after r
        ),
        Binding("p", "toggle_preview", "Preview", id="browser_preview", tooltip="Show or hide the preview pane"),
        Binding("d", "delete", "Delete", id="browser_delete", tooltip="Delete the selected batch (asks)"),
        Binding("f5", "reload", "Refresh", id="browser_refresh", tooltip="Read the batches again"),
    ]
    BINDINGS = explained(BINDINGS, ("resume", "delete"))  # greyed: pressed, they say why

    def __init__(self, output_dir: Path | BatchScope) -> None:
        super().__init__()
        self.output_dir = output_dir
        #: Reads again only the batches whose files changed, or that an engine holds.
        self._lister = BatchLister(output_dir)
        self.rows: list[BatchSummary] = []
        #: The batches were read at least once (until then ``rows`` says nothing).
        self.loaded = False
        #: The operator's choice (p); the pane also hides on a short terminal.
        self.preview_wanted = True
        self._reload_timer: Timer | None = None
        #: Seconds from the last reading to the next (see :func:`reload_in`).
        self.reload_in = REFRESH_S
        self._preview_asked = 0  # requests for a preview; the one being read has its number
        self._preview_busy = False
        self._preview_reading: str | None = None  # the batch being read

    def compose(self) -> ComposeResult:
        yield Static(id="browser-title")
        with Container(id="browser-body"):
            yield BatchTable(id="batches")
            yield BatchPreviewPane(clock=host(self).clock, id="batch-preview")
        empty = Static(id="browser-empty")
        empty.display = False  # said once the batches are read, if there are none
        yield empty
        yield KeyFooter()  # ? and q first (WorkerScreen.FOOTER_FIRST), then what fits whole

    def on_mount(self) -> None:
        table = self.query_one("#batches", DataTable)
        self._title()
        self._layout()
        self.action_reload()  # and again after each reading (see _schedule)
        table.focus()

    def _title(self) -> None:
        """What is listed, in a line that fits 80 columns for a usual path (the registry's
        place is in the empty message and the help of `batchtui ls`)."""
        scope = as_scope(self.output_dir)
        gone = sum(r.state == GONE for r in self.rows)
        shown = len(self.rows) - gone
        count = f"{shown} batch" + ("" if shown == 1 else "es")
        if not self.loaded:  # not "0 batches" while thousands are being read
            count = "Reading the batches"
        where = f"in {scope.output_dir}" if scope.only else f"from every folder (new ones go to {scope.output_dir})"
        if gone and self.loaded:  # said before the folder, which a narrow screen cuts
            count += f" and {gone:,} gone (listed last)"
        set_text(self.query_one("#browser-title", Static), plain(f"{count} {where}" + ("" if self.loaded else "…")))

    def on_resize(self, _event: Resize) -> None:
        self._layout()

    def on_screen_resume(self) -> None:
        if self.is_mounted and self.rows:  # back from a dashboard: what changed meanwhile
            self.action_reload()

    # -- layout --------------------------------------------------------------------------------

    @property
    def preview_shown(self) -> bool:
        return self.preview_wanted and self.size.height >= TALL_ENOUGH

    def _layout(self) -> None:
        """Place the preview for the terminal's size, then fit the columns to the table's width."""
        width, height = self.size
        body = self.query_one("#browser-body", Container)
        pane = self.query_one(BatchPreviewPane)
        wide = width >= WIDE
        body.set_class(wide, "wide")
        body.set_class(not wide, "narrow")
        pane.display = self.preview_shown
        table_width = width
        if self.preview_shown and wide:
            pane_width = max(50, width // 4)
            pane.styles.width = pane_width
            pane.styles.height = "1fr"
            table_width = width - pane_width
        elif self.preview_shown:
            # The table takes the rows it needs (header and the rows), up to half; the preview
            # the rest: it has more to say than a short list of batches.
            room = height - 2  # the title and the footer
            table_rows = min(len(self.rows) + 1, max(6, room // 2))
            pane.styles.width = "1fr"
            pane.styles.height = max(8, room - table_rows - 1)
        self.query_one(BatchTable).show(self.rows, table_width)

    # -- rows ----------------------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="browser-load", name="reading the batches", exit_on_error=False)
    def _load(self) -> None:
        now = host(self).clock()
        started = thread_time()
        try:
            # Those of the output dir and of the per-user registry; a registered batch whose
            # folder was moved or deleted is a row too (state "gone"), to be forgotten with d.
            rows = self._lister.list(now=now)
        except BaseException:
            self.app.call_from_thread(self._schedule, 0.0)  # the next reading may do better
            raise
        self.app.call_from_thread(self._show, rows, thread_time() - started)

    def _schedule(self, busy_s: float) -> None:
        """Read the batches again once the last reading's share of a core is spent: one
        reading pending at a time, whatever started this one (the timer, f5, a deletion)."""
        if not host(self).watch_files:
            return
        if self._reload_timer is not None:
            self._reload_timer.stop()
        self.reload_in = reload_in(busy_s)
        self._reload_timer = self.set_timer(self.reload_in, self.action_reload)

    def _show(self, rows: list[BatchSummary], busy_s: float = 0.0) -> None:
        started, first = thread_time(), not self.loaded
        try:
            self._draw(rows)
        finally:
            # The first reading reads every batch (3,000: a second): the next ones, which read
            # only what changed, set the pace, and the second comes as soon as any would.
            self._schedule(0.0 if first else busy_s + thread_time() - started)

    def _draw(self, rows: list[BatchSummary]) -> None:
        # The gone ones (their folder moved or deleted: an `rm -rf batch_output` leaves one a
        # batch) after every other, which they would bury: hundreds pile up in a year.
        self.rows = [r for r in rows if r.state != GONE] + [r for r in rows if r.state == GONE]
        self.loaded = True
        self._title()
        empty = self.query_one("#browser-empty", Static)
        empty.display = not rows
        set_text(
            empty,
            plain(
                f"No batches in {as_scope(self.output_dir).describe()} yet. Start one with `batchtui run SOURCE --cmd ...` or"
                " `batchtui demo`."
            ),
        )
        self._layout()  # the rows, in columns that fit again (the engine column comes and goes)
        self.refresh_bindings()
        pane = self.query_one(BatchPreviewPane)
        row = self.selected
        if row is not None and pane.preview is not None and pane.preview.summary == row:
            pane.show(pane.preview)  # the same batch as read before: only its ages move on
        else:  # another batch, or one that changed (a running one: every time)
            self._load_preview()

    def cells(self, batch_id: str) -> dict[str, str]:
        """The cells of a batch's row as drawn: column key -> text (for tests and scripts)."""
        return self.query_one(BatchTable).cells(batch_id)

    @property
    def widths(self) -> dict[str, int]:
        """The columns shown and their widths, in order."""
        return self.query_one(BatchTable).widths

    # -- the preview ---------------------------------------------------------------------------

    def action_toggle_preview(self) -> None:
        self.preview_wanted = not self.preview_wanted
        if self.preview_wanted and self.size.height < TALL_ENOUGH:
            self.notify("the terminal is too short for the preview", severity="warning")
        self._layout()
        self._load_preview()

    def _load_preview(self) -> None:
        """Read the selected batch's preview in a thread: one read at a time, and when the
        cursor moved (or the rows were read again) meanwhile, one more for where it is now (a
        read is never cancelled halfway: keys held down read at most twice)."""
        pane = self.query_one(BatchPreviewPane)
        row = self.selected
        if row is None:
            pane.show(None)
            return
        if not self.preview_shown:
            return
        self._preview_asked += 1
        if not self._preview_busy:
            self._preview_busy = True
            self._preview_reading = row.batch_id
            self._read_preview(row, self._preview_asked)

    @work(thread=True, group="browser-preview", name="reading the batch", exit_on_error=False)
    def _read_preview(self, row: BatchSummary, asked: int) -> None:
        try:
            made = preview(row)
        except BaseException:
            self.app.call_from_thread(self._preview_done, None, asked)
            raise  # said by the app (handle_worker_error)
        self.app.call_from_thread(self._preview_done, made, asked)

    def _preview_done(self, made: BatchPreview | None, asked: int) -> None:
        self._preview_busy = False
        self._preview_reading = None
        if made is not None and made.summary.batch_id == self.selected_id:
            self.query_one(BatchPreviewPane).show(made)
        if asked < self._preview_asked:  # asked again meanwhile: read where the cursor is now
            self._preview_asked -= 1  # _load_preview counts this request again
            self._load_preview()

    # -- the selection and its actions ---------------------------------------------------------

    @property
    def selected(self) -> BatchSummary | None:
        return self.query_one(BatchTable).selected

    @property
    def selected_id(self) -> str | None:
        row = self.selected
        return row.batch_id if row else None

    def may(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        row = self.selected if self.is_mounted else None
        if action == "resume":
            return True if row and row.resumable else None
        if action == "delete":
            return True if row and not row.engine else None
        if action == "watch":  # hidden, not greyed: enter then says Open
            return bool(row and row.engine)
        if action == "open":
            return bool(row and not row.engine and not row.error)
        return True

    def unavailable(self, action: str) -> str | None:
        """Why a key does nothing for the selected batch (the palette shows it greyed with this)."""
        refused = self.refusal(action)
        if refused is not None:
            return refused
        row = self.selected if self.is_mounted else None
        if action in ("watch", "open", "resume", "delete"):
            if row is None:
                return "no batch selected"
            if row.error and action != "delete":
                return clean(f"it cannot be read: {row.error}")
            if action == "watch" and row.engine is None:
                return "no engine runs this batch (enter opens its dashboard)"
            if action in ("open", "resume", "delete") and row.engine is not None:
                return f"an engine (pid {row.engine.pid}) runs this batch" + (
                    " (enter watches it)" if action == "open" else ""
                )
            if action == "resume" and not row.resumable:
                return "the batch is finished: nothing to resume"
        return super().unavailable(action)

    @on(DataTable.RowHighlighted, "#batches")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()
        # The table is rebuilt (and highlights its row again) on every read of the batches:
        # _show has decided about the preview then; here only a move to another batch reads.
        pane = self.query_one(BatchPreviewPane)
        row = self.selected
        shown = pane.preview.summary.batch_id if pane.preview is not None else None
        if row is None or row.batch_id not in (shown, self._preview_reading):
            self._load_preview()

    @on(DataTable.RowSelected, "#batches")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_watch(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        """Watch the batch when an engine runs it, else open its dashboard (where ``u`` resumes
        it): both are its dashboard, which tells a live engine from a batch at rest."""
        row = self.selected
        if row is None:
            return
        if row.error:  # damaged, or its folder is gone
            self.notify(clean(f"{row.batch_id} cannot be opened: {row.error}"), severity="error")
            return
        host(self).open_batch(Path(row.path))

    def action_resume(self) -> None:
        row = self.selected
        if row is None or not row.resumable:
            self.notify("this batch has nothing to resume or an engine runs it", severity="warning")
            return
        if host(self).served:  # no engine in a browser tab's app: the dialog starts a background one
            from .resume_dialog import ResumeDialog

            self.app.push_screen(ResumeDialog(Path(row.path)), lambda _started: self.action_reload())
            return
        host(self).resume_batch(Path(row.path))

    def action_delete(self) -> None:
        row = self.selected
        if row is None or row.engine:
            return
        path = Path(row.path)
        if row.state == GONE:
            self._forget(row)
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if engine_alive(path) is not None:
                self.notify("an engine started on it meanwhile; not deleted", severity="error")
                return
            if path.is_symlink():  # its batch lives elsewhere: never deleted through a link
                self.notify(f"{row.batch_id} is a symbolic link; not deleted", severity="error")
                return
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                self.notify(clean(f"could not delete all of {path}"), severity="error")
            else:
                forget(_spellings(path))  # not listed as gone from now on
                self.notify(f"deleted {row.batch_id}")
            self.action_reload()

        c: Counts = row.totals
        self.app.push_screen(
            ConfirmScreen(
                clean(
                    f"Delete batch {row.name} ({short_id(row.batch_id)})?"
                    if row.name
                    else f"Delete batch {row.batch_id}?",
                    70,
                ),
                f"{count(c.total, 'item', grouped=True)}, {c.complete:,} complete. Its results and logs go too; this cannot be undone.",
            ),
            confirmed,
        )

    def _forget(self, row: BatchSummary) -> None:
        """A registered batch whose folder is gone: d forgets it (as ``batchtui cleanup`` does)."""
        gone = sum(r.state == GONE for r in self.rows)

        def confirmed(yes: bool | None) -> None:
            if yes:
                forget(_spellings(Path(row.path)))
                self.notify(f"forgot {row.batch_id}")
                self.action_reload()

        self.app.push_screen(
            ConfirmScreen(
                f"Forget batch {row.batch_id}?",
                clean(f"Its folder {row.path} is gone (moved or deleted): it leaves the list of batches.")
                + (f" `batchtui cleanup` forgets all {gone:,} gone batches at once." if gone > 1 else ""),
            ),
            confirmed,
        )


def _spellings(path: Path) -> set[str]:
    """The ways the registry may have recorded ``path`` (as given when the batch was made)."""
    return {str(path), os.path.abspath(path), os.path.realpath(path)}
