"""The dashboard's resume dialog: what may change on resume, the equivalent command, the plan.

The dialog is the CLI's ``batchtui resume`` with a form in front of it, and takes no decision of
its own:

- the fields become the command line shown (``batchtui resume ID --workers 4 ...``), and that
  command line is parsed by the CLI's own ``resume`` command (tui/cli/resuming.py), so a value
  the CLI refuses is refused here with the CLI's words, and the flags it yields are the CLI's;
- what will run is engine/resume.py's :class:`ResumePlan` (``to_run``); confirming plans the
  resume again with those flags (the config is validated there, the lock taken for a run in this
  app), runs the preflight, requeues the failed items when asked, and for the background starts
  the same detached engine as ``--detach`` (tui/launch.py).

It dismisses with a :class:`ResumeStarted`: the plan for the app to run (its lock held), or the
pid of the background engine; None when cancelled. Nothing changes before the confirm succeeds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import click
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.errors import BatchtuiError
from batchtui.engine.fmt import clean, count, shell_line
from batchtui.engine.models import ACTIVE_STATES, BatchState, Counts
from batchtui.engine.resume import ResumePlan, plan_resume
from batchtui.engine.summary import reads_stdin

from ..host import host
from ..keys import label_buttons
from ..text import plain

__all__ = ["FIELDS", "ResumeDialog", "ResumeStarted", "cli_flags", "resumable"]


#: The knobs the dialog offers: (setting, the CLI's flag, label). All of them are operational
#: (engine/config.py OPERATIONAL): what a resume may change.
class _Box(Checkbox, inherit_bindings=False):
    """A checkbox that space ticks; enter is the dialog's (Resume), as its button says. Ticked
    or not is told by its mark, not only by its colour (``▐X▌`` and ``▐ ▌``)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("space", "toggle_button", "Toggle", show=False)]

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "X" if self.value else " "
        return super()._button


class _Option(RadioButton):
    """A radio button whose mark says whether it is chosen (``▐●▌`` and ``▐ ▌``), not only its colour."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "●" if self.value else " "
        return super()._button


class _Choice(RadioSet, inherit_bindings=False):
    """A radio set whose enter is the dialog's (Resume); space and the arrows choose."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down,right", "next_button", "Next option", show=False),
        Binding("space", "toggle_button", "Toggle", show=False),
        Binding("up,left", "previous_button", "Previous option", show=False),
    ]


FIELDS: Final = (
    ("workers", "--workers", "Workers"),
    ("max_failure_rate", "--max-failure-rate", "Failure-rate limit"),
    ("min_items", "--min-items", "Min items"),
    ("timeout", "--timeout", "Timeout (s)"),
)


def resumable(state: BatchState | None, counts: Counts, engine_held: bool, rescannable: bool = False) -> bool:
    """Whether a resume may have anything to do: no engine holds the batch, and it is not
    finished, or it is finished with items pending or failed (a retry of failed items runs
    them), or its sources can be read again (``rescannable``: a rescan may find new items, as
    ``batchtui resume --rescan`` does)."""
    if engine_held:
        return False
    return state != BatchState.FINISHED or rescannable or bool(counts.pending or counts.processing or counts.failed)


def rescannable(source: dict[str, Any] | None, added: list[dict[str, Any]]) -> bool:
    """Whether a batch's sources (a manifest's ``source`` and ``added_sources``) can be read
    again: stdin cannot."""
    return source is not None and not reads_stdin(source, *added)


def cli_flags(argv: list[str]) -> dict[str, Any]:
    """The settings ``batchtui resume ARGV`` would run with, parsed by the CLI's own command
    (so the same checks, and the same message: click.UsageError, its ``format_message()``)."""
    from ..cli.options import collect_flags  # the CLI's modules, only when the dialog is used
    from ..cli.resuming import resume_cmd

    ctx = resume_cmd.make_context("resume", list(argv))
    return {k: v for k, v in collect_flags(dict(ctx.params), ctx).items() if k != "output_dir"}


@dataclass(frozen=True)
class ResumeStarted:
    """What the dialog started: ``plan`` for the app to run here (its lock held), or the
    background engine's ``pid``; ``requeued`` failed items were put back to pending first."""

    command: str
    requeued: int = 0
    plan: ResumePlan | None = None
    pid: int | None = None


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ResumeDialog(ModalScreen[ResumeStarted | None]):
    """Resume one batch: workers, failure-rate limit, timeout, retry failed, here or background."""

    DEFAULT_CSS = """
    ResumeDialog { align: center middle; background: $background 60%; }
    #resume-box {
        width: 78; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    #resume-state { color: $text-muted; }
    #resume-fields { grid-size: 2; grid-columns: 20 1fr; grid-rows: 1; height: auto; margin-top: 1; }
    #resume-fields Label { padding: 0 1 0 0; }
    #resume-options { height: auto; }
    #resume-options RadioSet { layout: horizontal; width: auto; }
    #resume-options RadioButton { margin-right: 2; }
    #resume-plan { margin-top: 1; }
    #resume-command { color: $accent; }
    #resume-error { color: $error; text-style: bold; }
    #resume-buttons { height: auto; margin-top: 1; align-horizontal: right; }
    #resume-buttons Button { margin-left: 2; }
    """

    #: Focused as the dialog is composed, before the plan is read: keys typed right after ``u``
    #: (a burst from the terminal) are the workers' value, not lost.
    AUTO_FOCUS: ClassVar[str | None] = "#field-workers"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="resume_cancel", tooltip="Close without resuming"),
        # Between the fields as in a form (the radio set keeps its own arrows).
        Binding("down", "app.focus_next", "Next", id="resume_next", show=False),
        Binding("up", "app.focus_previous", "Previous", id="resume_previous", show=False),
        # On a checkbox or a choice too (an input and the buttons take their own enter).
        Binding("enter", "confirm", "Resume", id="resume_confirm", show=False),
    ]

    def __init__(self, batch: Path) -> None:
        super().__init__()
        self.bdir = BatchDir(batch)
        #: The plan without the dialog's flags (what runs and the stored values); None until read.
        self.plan: ResumePlan | None = None
        self.starting = False
        #: Enter was pressed before the plan was read (typed ahead): confirmed once it is.
        self.confirm_asked = False
        #: What a rescan would find ("N new, M missing", or why it cannot), once read.
        self.rescan_note: str | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-box"):
            yield Static(Text(clean(f"Resume batch {self.bdir.batch_id}"), style="bold"), id="resume-title")
            yield Static(Text("reading the batch..."), id="resume-state")
            with Grid(id="resume-fields"):
                for name, _flag, label in FIELDS:
                    yield Label(label)
                    yield Input(id=f"field-{name}", compact=True, select_on_focus=False)
            with Vertical(id="resume-options"):
                yield _Box("Retry the failed items", id="retry-failed", compact=True)
                yield _Box("Read the sources again (rescan)", id="rescan", compact=True)
                # Served to a browser, the app is one tab's: an engine in it would end with the tab.
                served = host(self).served
                with _Choice(id="where", compact=True):
                    yield _Option("Run here, in this app", id="here", value=not served, disabled=served)
                    yield _Option("In the background (detached)", id="background", value=served)
            yield Static(id="resume-plan")
            yield Static(id="resume-command")
            yield Static(id="resume-error")
            with Horizontal(id="resume-buttons"):
                yield Button("Resume (enter)", id="resume", variant="success", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#resume", Button).disabled = True
        label_buttons(self, {"resume": ("resume_confirm", "Resume"), "cancel": ("resume_cancel", "Cancel")})
        self._read_plan()

    @work(thread=True, exclusive=True, group="resume-plan", name="planning the resume", exit_on_error=False)
    def _read_plan(self) -> None:
        # No lock: this only reads what a resume would start from (a run here takes it on confirm).
        try:
            plan = plan_resume(self.bdir.path.parent, self.bdir, hold=False)
        except BatchtuiError as exc:
            self.app.call_from_thread(self._say_error, str(exc))
            return
        self.app.call_from_thread(self._planned, plan)

    def _planned(self, plan: ResumePlan) -> None:
        self.plan = plan
        manifest, c = plan.manifest, plan.counts
        title = Text(clean(f"Resume batch {self.bdir.batch_id}"), style="bold")
        # The dialog opens only when no engine holds the batch: "running" is an engine that died.
        state_word = "interrupted" if manifest.state in ACTIVE_STATES else manifest.state.value
        title.append(f"  {state_word}", style="bold")
        self.query_one("#resume-title", Static).update(title)
        state = self.query_one("#resume-state", Static)
        state.update(plain(manifest.halt_reason or ""))
        state.display = bool(manifest.halt_reason)
        stored = plan.config.model_dump()
        rule = plan.config.adaptive_timeout
        if rule is not None:  # --timeout P%: shown as it is given
            stored["timeout"] = rule.text + (f",max={plan.config.timeout:g}s" if plan.config.timeout else "")
        for name, _flag, _label in FIELDS:
            self.query_one(f"#field-{name}", Input).placeholder = f"{_shown(stored.get(name))} (as stored)"
        retry = self.query_one("#retry-failed", Checkbox)
        retry.label = (
            f"Retry the {count(c.failed, 'failed item', grouped=True)}" if c.failed else "Retry failed items (none)"
        )
        retry.disabled = not c.failed
        # Finished with failed items and nothing else left: retrying them is the only resume.
        retry.value = bool(c.failed) and manifest.state == BatchState.FINISHED and not (c.pending or c.processing)
        # Finished with nothing failed or left: reading the sources again is the only resume.
        if manifest.state == BatchState.FINISHED and not (c.failed or c.pending or c.processing):
            self.query_one("#rescan", Checkbox).value = True
        self.query_one("#resume", Button).disabled = False
        self._update()
        if self.confirm_asked:
            self.action_confirm()

    # -- what the form says ------------------------------------------------------------------

    @property
    def background(self) -> bool:
        return self.query_one("#background", RadioButton).value

    @property
    def retry_failed(self) -> bool:
        return self.query_one("#retry-failed", Checkbox).value

    @property
    def rescan(self) -> bool:
        return self.query_one("#rescan", Checkbox).value

    @on(Checkbox.Changed, "#rescan")
    def _rescan_changed(self, event: Checkbox.Changed) -> None:
        if event.value and self.rescan_note is None:
            self.rescan_note = "reading the sources..."
            self._preview_rescan()

    @work(thread=True, exclusive=True, group="resume-rescan", name="previewing the rescan", exit_on_error=False)
    def _preview_rescan(self) -> None:
        from batchtui.engine.rescan_preview import preview_rescan  # only when asked: it loads the sources

        try:
            found = preview_rescan(self.bdir)
            note = f"{found.new:,} new, {found.missing:,} missing"
        except BatchtuiError as exc:
            note = str(exc)
        self.app.call_from_thread(self._rescan_previewed, note)

    def _rescan_previewed(self, note: str) -> None:
        self.rescan_note = note
        if not self.starting:
            self._update()

    def argv(self) -> list[str]:
        """The form as ``batchtui resume``'s arguments (only the fields filled in); with the
        output dir, as the CLI's own summaries say it, so it runs from any folder."""
        args = [self.bdir.batch_id, "--output-dir", str(self.bdir.path.parent)]
        for name, flag, _label in FIELDS:
            value = self.query_one(f"#field-{name}", Input).value.strip()
            if value:
                args += [flag, value]
        if self.retry_failed:
            args.append("--retry-failed")
        if self.rescan:
            args.append("--rescan")
        if self.background:
            args.append("--detach")
        return args

    def command(self) -> str:
        return shell_line("batchtui", "resume", *self.argv())

    def _update(self) -> str | None:
        """Show the command and the plan for the form as it is; the CLI's error for a value it
        refuses (returned too; None when the form is valid)."""
        self.query_one("#resume-command", Static).update(plain(f"$ {self.command()}"))
        error: str | None = None
        flags: dict[str, Any] = {}
        try:
            flags = cli_flags(self.argv())
        except click.UsageError as exc:
            error = exc.format_message()
        self._say_error(error)
        if self.plan is not None:
            plan = dataclasses.replace(self.plan, retry_failed=self.retry_failed)
            text = _describe(plan, self.rescan)
            rate: dict[str, Any] = {k: flags[k] for k in ("max_failure_rate", "min_items") if k in flags}
            halts = None if plan.nothing_to_do else plan.halts_at_once(plan.config.model_copy(update=rate))
            if halts:  # what the engine would do at once (BatchRunner.step): said before it is asked
                reason, way = halts
                text = (
                    f"Plan: nothing will run: with these settings the batch halts before anything starts ({reason})."
                    f" To run it: {way}."
                )
            if self.rescan and self.rescan_note:
                text += f" Rescan: {self.rescan_note}."
            self.query_one("#resume-plan", Static).update(plain(text))
        return error

    def _say_error(self, text: str | None) -> None:
        box = self.query_one("#resume-error", Static)
        box.update(Text(clean(text)) if text else "")
        box.display = bool(text)

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(RadioSet.Changed)
    def _changed(self) -> None:
        if self.plan is not None and not self.starting:
            self._update()

    # -- confirming --------------------------------------------------------------------------

    @on(Input.Submitted)
    @on(Button.Pressed, "#resume")
    def _confirm(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self.starting:
            self.dismiss(None)

    def action_confirm(self) -> None:
        if self.plan is None:
            self.confirm_asked = True  # "u8⏎" in one burst: enter came before the plan
            return
        if self.starting:
            return
        error = self._update()
        if error is not None:
            return
        if not self.background and host(self).served:
            self._say_error("served to a browser: resume this batch in the background")
            return
        if not self.background and host(self).engine_running:
            self._say_error("an engine already runs in this app: resume this batch in the background")
            return
        # The button stays enabled (``starting`` guards it): a disabled one would lose the focus,
        # and the enter after a refusal would land on Cancel.
        self.starting = True
        self.query_one("#resume-plan", Static).update(Text("starting..."))
        self._start(cli_flags(self.argv()), self.retry_failed, self.background, self.command(), self.rescan)

    @work(thread=True, exclusive=True, group="resume-start", name="resuming the batch", exit_on_error=False)
    def _start(
        self, flags: dict[str, Any], retry_failed: bool, background: bool, command: str, rescan: bool = False
    ) -> None:
        """What ``batchtui resume`` does with these flags, up to starting the engine (which the
        app does for a run here)."""
        from ..launch import detach_engine

        try:
            # The lock is held from now on: the app's engine gets it, or the background engine
            # inherits it (as with --detach), so no other engine takes the batch in between.
            plan = plan_resume(
                self.bdir.path.parent,
                self.bdir,
                flags=flags,
                retry_failed=retry_failed,
                rescan=rescan,
                lock_try=0.2,
            )
        except BatchtuiError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        try:
            if plan.nothing_to_do:
                raise _Refused(f"batch {plan.batch.batch_id} is finished; nothing to resume")
            preflight = plan.preflight()
            if not preflight.proceed:
                failed = [f"{c.name}: {c.message}" for c in preflight.checks if c.level == "fail"]
                raise _Refused("preflight: " + "; ".join(failed))
            plan = plan.rescanned()  # after the preflight: a refused resume adds nothing
            if plan.nothing_to_do:
                raise _Refused(f"batch {plan.batch.batch_id} is finished; the rescan found nothing new to run")
            requeued = plan.requeue_failed() if retry_failed else 0
            if background:
                pid = detach_engine(plan.batch, action="resume", overrides=plan.overrides, lock=plan.lock)
                started = ResumeStarted(command, requeued, pid=pid)
            else:
                started = ResumeStarted(command, requeued, plan=plan)
        except (BatchtuiError, _Refused) as exc:
            plan.release()
            self.app.call_from_thread(self._refused, str(exc))
            return
        except BaseException:
            plan.release()
            raise
        self.app.call_from_thread(self.dismiss, started)

    def _refused(self, message: str) -> None:
        self.starting = False
        self._update()
        self._say_error(message)


class _Refused(Exception):
    """The resume cannot start (nothing to do, a failed preflight); said in the dialog."""


def _describe(plan: ResumePlan, rescan: bool = False) -> str:
    """The plan in one line: how many items run, and which."""
    c = plan.counts
    if plan.nothing_to_do and rescan:
        return "The batch is finished: only what the rescan finds will run."
    if plan.nothing_to_do:
        tick = "retry to run its failed items" if c.failed else "rescan to read its sources again"
        return f"Nothing to run: the batch is finished (tick {tick})."
    parts = [f"{c.pending:,} pending"]
    if c.processing:
        parts.append(f"{c.processing:,} left running by a crash")
    if plan.retry_failed and c.failed:
        parts.append(f"{c.failed:,} failed, retried")
    text = f"Plan: {plan.to_run:,} of {count(c.total, 'item', grouped=True)} will run ({', '.join(parts)}); {c.complete:,} done"
    if c.failed and not plan.retry_failed:
        text += f", {c.failed:,} failed stay failed"
    if c.skipped:
        text += f", {c.skipped:,} skipped"
    return text + "."
