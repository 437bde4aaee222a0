"""Item detail: what a debugger of one item needs. How it ran (the command as rendered, or the
callable; the folder; the variables batchtui added; the exit code or signal), its data, every
attempt with its start, duration, error and log paths, the error (a command's stderr, a
callable's own traceback), the result and the output's tails.

Keys: ``f`` follows the output live (:class:`~..widgets.output_follow.OutputFollow`), ``v``
switches the stream shown, ``o`` opens the log (``O`` the whole detail) in ``$PAGER``, ``c``
copies the key, path, log, command or error (OSC 52, so it works over SSH), ``y`` the item as
JSON. ``ctrl+c`` copies the text selected with the mouse, else opens the copy menu: in this
screen it means copy, never quit (Textual's "press ctrl+q to quit" nag would only be noise).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.client import ACK_TIMEOUT_S, Applied, NotAcknowledged, send
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.fmt import clean, clean_block
from batchtui.engine.logs import AttemptLog, Stream, attempt_logs, log_tail
from batchtui.engine.models import ControlOp
from batchtui.engine.processors import ProcessorSpec
from batchtui.engine.shell.describe import RunDescription, describe_run
from batchtui.engine.store.queries import AttemptRow, ItemQueries, ItemRow, StoreError

from ..flight import Flight, item_flight
from ..host import host
from ..pager import run_pager
from ..text import plain, plain_block
from ..widgets.footer import KeyFooter
from ..widgets.output_follow import OutputFollow
from ..widgets.status import ProgressLine
from .base import WorkerScreen
from .copy_menu import CopyChoice, CopyMenu
from .detail_text import ending, error_text, escaped_copies, flight_cells, log_of, pretty, steer_question, title
from .modals import ConfirmScreen


class ItemDetailScreen(WorkerScreen):
    """One item, in full. Item content is shown as plain text, never markup."""

    STEERING: ClassVar[frozenset[str]] = frozenset({"retry", "skip"})
    LOCAL_ONLY: ClassVar[frozenset[str]] = frozenset({"pager", "pager_detail"})
    #: The footer's order: what fits is shown (widgets/footer.py), everything is in ? and ^p.
    FOOTER_FIRST: ClassVar[tuple[str, ...]] = (
        "help",
        "quit",
        "detail_back",
        "detail_retry",
        "detail_skip",
        "detail_follow",
        "detail_pager",
        "detail_copy",
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back", id="detail_back", tooltip="Back to the dashboard"),
        Binding("r", "retry", "Retry", id="detail_retry", tooltip="Retry this item (if it failed)"),
        Binding("s", "skip", "Skip", id="detail_skip", tooltip="Skip this item"),
        Binding("f", "follow", "Follow", id="detail_follow", tooltip="Follow the output live (f again: stop)"),
        Binding("v", "stream", "Stream", id="detail_stream", tooltip="Show both streams, stdout or stderr"),
        Binding("o", "pager", "Pager", id="detail_pager", tooltip="Open the log in $PAGER (the detail if none)"),
        Binding("O", "pager_detail", "All→pager", id="detail_pager_all", tooltip="The whole detail in $PAGER"),
        # Priority (as the app takes the key in): the menu is open for the letter typed after it.
        Binding(
            "c", "copy", "Copy", id="detail_copy", priority=True, tooltip="Copy the key, path, log, command or error"
        ),
        Binding("y", "copy_json", "JSON", id="detail_json", tooltip="Copy the item as JSON"),
        Binding(
            "ctrl+c",
            "copy_selection",
            "Copy",
            id="detail_ctrl_c",
            show=False,
            priority=True,
            tooltip="Copy the selection, else a menu",
        ),
        Binding("f5", "reload", "Reload", id="detail_reload", tooltip="Read the item again"),
    ]

    def __init__(self, batch: Path, seq: int, status_from: DOMNode | None = None) -> None:
        """``status_from``: the batch's dashboard, whose status line this screen shows too."""
        super().__init__()
        self.status_from = status_from
        self.bdir = BatchDir(batch)
        self.seq = seq
        self.row: ItemRow | None = None
        self.attempt_rows: list[AttemptRow] = []
        self.logs: list[AttemptLog] = []
        self.spec: ProcessorSpec | None = None
        self.ran: RunDescription | None = None
        #: What the item does now while in flight (live_progress.json): running or queued.
        self.flight: Flight | None = None
        #: An engine holds the batch (as last read with the in-flight list).
        self.engine_held = False

    def compose(self) -> ComposeResult:
        if self.status_from is not None:
            yield ProgressLine(id="detail-progress")
        with VerticalScroll(id="detail"):
            yield Static(id="detail-title")
            # What went wrong first: on a small terminal the error is on screen at once.
            yield Static("Error", classes="section")
            yield Static(id="detail-error", classes="block")
            yield Static("Ran", classes="section")
            yield Static(id="detail-run", classes="block")
            yield Static("Attempts", classes="section")
            yield DataTable(id="attempts", cursor_type="row")
            yield Static("Data", classes="section")
            yield Static(id="detail-data", classes="block")
            yield Static("Result", classes="section")
            yield Static(id="detail-result", classes="block")
            yield Static("stdout (tail)", classes="section")
            yield Static(id="detail-stdout", classes="block")
            yield Static("stderr (tail)", classes="section")
            yield Static(id="detail-stderr", classes="block")
        yield OutputFollow(id="follow")
        yield KeyFooter()  # ? and q first (FOOTER_FIRST), then what fits whole

    def on_mount(self) -> None:
        table = self.query_one("#attempts", DataTable)
        for label in ("Try", "Status", "Started", "Duration", "Error", "logs/"):
            table.add_column(label, key=label)
        try:
            self.spec = ProcessorSpec.model_validate(self.bdir.read_manifest().processor)
        except (BatchtuiError, OSError, ValueError):
            self.spec = None  # a damaged manifest: the rest of the detail is still worth showing
        self.action_reload()
        self.set_interval(1.0, self._tick)
        if self.status_from is not None:
            self.query_one(ProgressLine).follow(self.status_from)

    def action_reload(self) -> None:
        try:
            with ItemQueries(self.bdir.items_db) as store:
                detail = store.item(self.seq)
        except StoreError as exc:
            self.query_one("#detail-title", Static).update(plain(f"cannot read the store: {exc}"))
            return
        self.row, self.attempt_rows = (None, []) if detail is None else (detail.row, detail.attempts)
        row = self.row
        self.flight = self._read_flight() if row is not None and row.status in ("pending", "processing") else None
        self.logs = attempt_logs(self.bdir.path, self.seq, upto=row.attempts) if row is not None else []
        self.ran = None
        if row is not None and self.spec is not None:
            self.ran = describe_run(
                self.spec,
                seq=row.seq,
                key=row.key,
                data=row.data,
                kind=row.kind,
                # attempts counts the finished ones: a pending or running item is on the next
                attempt=self.flight.attempt
                if self.flight is not None
                else row.attempts + 1
                if row.status in ("pending", "processing")
                else max(row.attempts, 1),
                batch_dir=str(self.bdir.path),
            )
        self._show_row()

    def _show_row(self) -> None:
        row = self.row
        if row is None:
            self.query_one("#detail-title", Static).update(plain(f"item {self.seq} not found"))
            return
        self.query_one("#detail-title", Static).update(title(row, self.flight, host(self).clock()))
        self.query_one("#detail-run", Static).update(plain_block(self._run_text(row)))
        self.query_one("#detail-data", Static).update(plain_block(pretty(row.data)))
        table = self.query_one("#attempts", DataTable)
        table.clear()
        logs = {log.attempt: log for log in self.logs}
        for a in self.attempt_rows:
            err = f"{a.error.error_type} [{a.error.category}]: {a.error.message}" if a.error else ""
            table.add_row(
                Text(str(a.attempt)),
                Text(a.status),
                Text(a.started_at or ""),
                Text(f"{a.duration_s:.3f}s" if a.duration_s is not None else ""),
                plain(err, limit=200),
                plain(self._log_names(logs.get(a.attempt)).replace("logs/", "")),  # the header says logs/
            )
        if self.flight is not None:  # the try under way (the store has a row for ended ones only)
            cells = flight_cells(self.flight, host(self).clock())
            log = "" if self.flight.queued else self._log_names(logs.get(self.flight.attempt)).replace("logs/", "")
            table.add_row(*map(Text, cells), Text(""), plain(log), key="now")
        self.query_one("#detail-error", Static).update(
            plain_block(error_text(row, self.ran is not None and self.ran.kind == "shell"))
        )
        self.query_one("#detail-result", Static).update(
            plain_block(pretty(row.result) if row.status == "complete" else "(not complete)")
        )
        latest = self.logs[-1] if self.logs else None
        running = self.flight is not None and not self.flight.queued
        current = self.flight.attempt if self.flight is not None and running else row.attempts
        streams: tuple[tuple[Stream, str], ...] = (("out", "#detail-stdout"), ("err", "#detail-stderr"))
        for stream, wid in streams:
            path = latest.path(stream) if latest is not None else None
            text = log_tail(path) if path is not None else None
            shown = text if text is not None else "(no output)"
            if text is not None and latest is not None and latest.attempt != current:
                shown = f"(attempt {latest.attempt}: the later ones printed nothing)\n{text}"
            self.query_one(wid, Static).update(plain_block(shown))

    def _read_flight(self) -> Flight | None:
        """What the item does now, if an engine runs it (live_progress.json's in-flight list)."""
        flight, self.engine_held = item_flight(self.bdir, self.seq, host(self).clock())
        return flight

    def _tick(self) -> None:
        """Once a second. While the item is in flight: its running time, and the detail read
        again once it started, ended or went back (what the engine wrote says so). Else, read
        again once an engine has it in flight or the store says it changed: a pending item shown
        while it ran stayed "pending" under a status line that said the batch had finished."""
        if self.row is None:
            return
        flight = self._read_flight() if self.row.status in ("pending", "processing") else None
        if self.flight is None:
            if flight is not None or self._stored_changed():
                self.action_reload()
            return
        if flight != self.flight:
            self.action_reload()
        elif not flight.queued:
            now = host(self).clock()
            self.query_one("#detail-title", Static).update(title(self.row, flight, now))
            self.query_one("#attempts", DataTable).update_cell("now", "Duration", Text(flight_cells(flight, now)[3]))

    def _stored_changed(self) -> bool:
        """Whether the store's row of the item differs from the one shown (its status, tries, end)."""
        try:
            with ItemQueries(self.bdir.items_db) as store:
                row = store.row(self.seq)
        except StoreError:
            return False
        shown = self.row
        if row is None or shown is None:
            return False
        return (row.status, row.attempts, row.finished_at) != (shown.status, shown.attempts, shown.finished_at)

    # -- what the sections say ------------------------------------------------------------------

    def _log_names(self, log: AttemptLog | None) -> str:
        if log is None:
            return ""
        return "  ".join(os.path.relpath(p, self.bdir.path) for p in (log.out, log.err) if p is not None)

    def _run_text(self, row: ItemRow) -> str:
        """How the item ran, as the engine ran it, and how its command ended."""
        ran = self.ran
        if ran is None:
            return "(the batch's manifest cannot be read: how it ran is unknown)"
        lines = ran.as_text().splitlines()
        if ran.kind == "shell":
            lines.insert(1, f"ended: {ending(row, self.flight, self.engine_held)}")
        # A big item's JSON variable would fill the screen: its start says enough (y copies all).
        return "\n".join(line if len(line) <= 300 else line[:300] + "…" for line in "\n".join(lines).splitlines())

    def detail_text(self) -> str:
        """The whole detail as plain text (for the pager)."""
        row = self.row
        if row is None:
            return f"item {self.seq} not found"
        parts = [
            f"#{row.seq}  {row.key}  [{row.status.upper()}]  attempts {row.attempts}",
            "Ran\n" + self._run_text(row),
            "Data\n" + pretty(row.data),
            "Attempts\n"
            + "\n".join(
                f"{a.attempt}  {a.status}  {a.started_at or ''}  "
                + (f"{a.duration_s:.3f}s" if a.duration_s is not None else "")
                + (f"  {a.error.error_type} [{a.error.category}]: {a.error.message}" if a.error else "")
                + (f"  {self._log_names(log)}" if (log := log_of(self.logs, a.attempt)) else "")
                for a in self.attempt_rows
            ),
            "Error\n" + error_text(row, self.ran is not None and self.ran.kind == "shell"),
            "Result\n" + (pretty(row.result) if row.status == "complete" else "(not complete)"),
        ]
        for log in self.logs:
            for stream in ("out", "err"):
                path = log.path(stream)
                if path is not None:
                    parts.append(f"{os.path.relpath(path, self.bdir.path)}\n{log_tail(path, 1 << 20) or ''}")
        return clean_block("\n\n".join(parts))

    def action_back(self) -> None:
        self.app.pop_screen()  # the follower (a worker of this screen's widget) is cancelled with it

    def may(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stream":  # only while the output is shown (hidden otherwise: a crowded footer)
            return self.query_one(OutputFollow).has_class("-following")
        return True

    # -- follow ---------------------------------------------------------------------------------

    def action_follow(self) -> None:
        follow = self.query_one(OutputFollow)
        if follow.following:
            follow.hide()
            self.refresh_bindings()
            return
        if self.ran is not None and self.ran.kind not in ("shell", "python"):
            self.notify("only a shell command's output and a callable's prints are logged", severity="warning")
            return
        follow.start(self.bdir.path, self.seq)
        self.refresh_bindings()

    def action_stream(self) -> None:
        shown = self.query_one(OutputFollow).switch()
        self.notify({"both": "stdout and stderr (! marks stderr)", "out": "stdout only", "err": "stderr only"}[shown])

    def on_output_follow_ended(self, event: OutputFollow.Ended) -> None:
        self.notify(f"item {self.seq} ended ({event.status}): no more output" if event.status else "stopped following")
        self.action_reload()

    # -- pager ----------------------------------------------------------------------------------

    def action_pager(self) -> None:
        """The latest attempt's logs (stdout, then stderr; escaped copies) in $PAGER, else the detail."""
        latest = self.logs[-1] if self.logs else None
        paths = [str(p) for p in (latest.out, latest.err) if p is not None] if latest is not None else []
        if not paths:
            self.action_pager_detail()
            return
        with tempfile.TemporaryDirectory(prefix=f"batchtui-item-{self.seq}-") as folder:  # 0700
            copies = escaped_copies(paths, folder)
            if copies:
                self._page(copies)
                return
        # Gone since the detail was read (the folder deleted): a pager given no file would wait
        # on the terminal's keys (cat, more) or say "Missing filename" (less).
        self.notify(f"item {self.seq}'s logs cannot be read now: the detail instead", severity="warning")
        self.action_pager_detail()

    def action_pager_detail(self) -> None:
        fd, name = tempfile.mkstemp(prefix=f"batchtui-item-{self.seq}-", suffix=".txt")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(self.detail_text() + "\n")
            self._page([name])
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def _page(self, paths: list[str]) -> None:
        """The pager on ``paths`` (tui/pager.py); one that cannot run is a notification."""
        problem = run_pager(self.app, paths)
        if problem is not None:
            self.notify(problem, severity="error")
        self.refresh()

    # -- copy -----------------------------------------------------------------------------------

    def copy_choices(self) -> list[CopyChoice]:
        """What the copy menu offers for this item (only what it has)."""
        row = self.row
        if row is None:
            return []
        choices = [CopyChoice("k", "key", row.key)]
        if row.kind in ("dir", "files") and isinstance(row.data, str):
            choices.append(CopyChoice("p", "path", row.data))
        latest = self.logs[-1] if self.logs else None
        if latest is not None:
            choices.append(CopyChoice("l", "log", "\n".join(str(p) for p in (latest.out, latest.err) if p)))
        ran = self.ran
        if ran is not None and (ran.line or ran.call):
            # The command as shown: one line that pastes as what ran (control characters escaped).
            choices.append(CopyChoice("m", "command" if ran.line else "callable", ran.line or ran.call or ""))
        if row.error_type:
            error = f"{row.error_type} [{row.error_category}]: {row.error_message}"
            choices.append(CopyChoice("e", "error", f"{error}\n{row.error_detail}" if row.error_detail else error))
        return choices

    def action_copy(self) -> None:
        choices = self.copy_choices()
        if not choices:
            self.notify("nothing to copy", severity="warning")
            return

        def copied(choice: CopyChoice | None) -> None:
            if choice is not None:
                self._copy(choice.text, choice.name)

        self.app.push_screen(CopyMenu(choices), copied)

    def action_copy_json(self) -> None:
        if self.row is None:
            self.notify("nothing to copy", severity="warning")
            return
        self._copy(self.item_json(), "the item as JSON")

    def action_copy_selection(self) -> None:
        selected = self.get_selected_text()
        if selected:
            self._copy(selected, "the selection")
        else:
            self.action_copy()

    def _copy(self, text: str, what: str) -> None:
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {what} ({len(text):,} characters)", timeout=3)

    def item_json(self) -> str:
        """The item as JSON: its row, its attempts and how it ran."""
        assert self.row is not None
        obj: dict[str, Any] = self.row.as_dict()
        obj["attempt_rows"] = [
            {
                "attempt": a.attempt,
                "status": a.status,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "duration_s": a.duration_s,
                "error": None
                if a.error is None
                else {
                    "type": a.error.error_type,
                    "category": a.error.category,
                    "message": a.error.message,
                    "detail": a.error.detail,
                },
                "logs": [str(p) for p in (log.out, log.err) if p] if (log := log_of(self.logs, a.attempt)) else [],
            }
            for a in self.attempt_rows
        ]
        ran = self.ran
        if ran is not None:
            obj["ran"] = {
                "kind": ran.kind,
                "command": ran.command,
                "call": ran.call,
                "cwd": ran.cwd,
                "env": dict(ran.env),
            }
        return json.dumps(obj, indent=2, ensure_ascii=False, default=str)

    def action_retry(self) -> None:
        self._confirm("retry")

    def action_skip(self) -> None:
        self._confirm("skip")

    def _confirm(self, op: ControlOp) -> None:
        """Ask first, as the dashboard does for the same keys (one key here killed a running item)."""
        asked, clock = steer_question(op, self.row), host(self).clock
        if isinstance(asked, str) or self.row is None:
            self.notify(str(asked), severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._command(op, clock)

        self.app.push_screen(ConfirmScreen(*asked, samples=[(self.row.seq, self.row.key)], total=1), answered)

    @work(thread=True, group="detail", name="sending a command", exit_on_error=False)
    def _command(self, op: ControlOp, clock: Callable[[], float]) -> None:
        """Send ``op`` for this item through the control client and wait for its ack (in
        slices, so that quitting the app never waits for an engine that does not answer)."""
        worker = get_current_worker()
        what = f"{op} #{self.seq}"
        severity: SeverityLevel = "information"
        try:
            outcome = send(
                self.bdir, op, seqs=[self.seq], wait=ACK_TIMEOUT_S, cancelled=lambda: worker.is_cancelled, now=clock
            )
        except BatchtuiError as exc:  # no engine and the batch taken meanwhile, a damaged file
            message, severity = f"{op} failed: {exc}", "error"
        else:
            if worker.is_cancelled:
                return
            if isinstance(outcome, Applied):  # answered; a warning if it did nothing (see took_effect)
                message, severity = f"{what}: {outcome.message}", "information" if outcome.took_effect else "warning"
            elif isinstance(outcome, NotAcknowledged):  # the engine may have gone, or be frozen
                message, severity = outcome.describe(what, brief=True), "warning"
            else:  # Sent: not asked for (a wait was given)
                message = f"sent {what}"
        self.app.call_from_thread(
            self.notify, clean(message), severity=severity, timeout=6 if severity == "warning" else 3
        )
        self.app.call_from_thread(self.set_timer, 0.6, self.action_reload)
