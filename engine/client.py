"""The control client: the one way a view (the CLI, a screen of the TUI) steers a batch.

If an engine holds the batch, responding or not, the command is appended to control.jsonl and
the engine's acknowledgement is awaited in live_progress.json; an engine that is frozen applies
it when it wakes. If no engine holds it, a command that changes items (skip, retry) is applied
to the store directly under the batch lock, with the same store operation the engine uses; the
other commands (pause, stop, set_workers...) need an engine, and say so.

:func:`send` answers with one of three values, which every view renders in its own way:

- :class:`Sent`: appended, and the caller asked not to wait (``wait=None``);
- :class:`Applied`: the engine acknowledged it, or the store was changed offline;
- :class:`NotAcknowledged`: appended, but no acknowledgement came in time (the command stays
  queued; :meth:`NotAcknowledged.describe` says what becomes of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .batchdir import BatchDir, BatchLocked, now_iso, resume_command
from .control import (
    ACK_TIMEOUT_S,
    NOT_APPLIED,
    OFFLINE_LOCK_WAIT_S,
    append_command,
    apply_offline,
    new_command,
    unacked_message,
    wait_for_ack,
)
from .errors import UserError
from .fmt import count
from .liveness import EngineStatus, engine_status
from .models import BatchState, ControlCommand, ControlOp

if TYPE_CHECKING:
    from .store.queries import Selection

__all__ = [
    "ACK_TIMEOUT_S",
    "Applied",
    "NoEngine",
    "NotAcknowledged",
    "Sent",
    "offline_change",
    "send",
]

#: How long one poll for the acknowledgement waits before checking ``cancelled``.
_SLICE_S = 0.2


class NoEngine(UserError):
    """A command that needs a running engine (pause, stop, workers...) and none holds the batch.

    The command itself was valid, so its exit code is 1, not the usage error's 2."""

    exit_code = 1


def _queued_json(batch_id: str, cmd: ControlCommand, status: EngineStatus, acked: bool | None) -> dict[str, Any]:
    """A command appended to control.jsonl and not (or not yet) acknowledged, as --json says it."""
    return {"batch_id": batch_id, "id": cmd.id, "op": cmd.op, "engine": status.held, "acknowledged": acked}


@dataclass(frozen=True, slots=True)
class Sent:
    """Appended to control.jsonl; the caller did not wait for the acknowledgement."""

    batch_id: str
    cmd: ControlCommand
    status: EngineStatus

    def as_json(self) -> dict[str, Any]:
        return _queued_json(self.batch_id, self.cmd, self.status, None)  # None: not waited for (--wait 0)


@dataclass(frozen=True, slots=True)
class Applied:
    """Done: acknowledged by the engine (``engine``), or applied to the store offline."""

    batch_id: str
    cmd: ControlCommand
    message: str
    engine: bool
    state: str | None = None  # the engine's state after it (engine only)

    @property
    def took_effect(self) -> bool:
        """False when the engine answered that the command did not apply (it was queued for
        an engine that ended before reading it)."""
        return not self.message.startswith(NOT_APPLIED)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "batch_id": self.batch_id,
            "id": self.cmd.id,
            "op": self.cmd.op,
            "engine": self.engine,
            "result": self.message,
        }
        if self.state is not None:
            out["state"] = self.state
        return out


@dataclass(frozen=True, slots=True)
class NotAcknowledged:
    """Appended, but the engine did not acknowledge it within ``waited`` seconds."""

    batch: BatchDir
    cmd: ControlCommand
    status: EngineStatus  # asked again after the wait: the engine may have gone meanwhile
    waited: float

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    def describe(self, what: str | None = None, *, brief: bool = False) -> str:
        """What happened and what becomes of the queued command (``what`` names it)."""
        return unacked_message(self.batch, what or self.cmd.op, self.cmd.op, self.waited, self.status, brief=brief)

    def as_json(self) -> dict[str, Any]:
        return {
            **_queued_json(self.batch_id, self.cmd, self.status, False),
            "queued_in": str(self.batch.control),
            "liveness": self.status.liveness.value,
            "silent_s": None if self.status.silent_s is None else round(self.status.silent_s, 1),
        }


Outcome = Sent | Applied | NotAcknowledged


def command_selection(cmd: ControlCommand) -> Selection | None:
    """The items ``cmd`` applies to as a :class:`Selection`: its ``select`` (checked: it may
    come from anywhere), else its old ``seqs``/``filter`` fields; None for
    ops that take no items. A retry with neither is every failed item (its old meaning); a skip
    or prioritize with neither is nothing."""
    from .store.queries import ItemFilter, Selection

    if cmd.select is not None:
        return Selection.from_json(cmd.select)
    if cmd.op not in ("retry", "skip", "prioritize"):
        return None
    error_type = (cmd.filter or {}).get("error_type")
    status = "failed" if cmd.op == "retry" else None
    if cmd.seqs is None and not error_type:
        return Selection.of(ItemFilter(status=status)) if cmd.op == "retry" else Selection()
    return Selection.of(
        ItemFilter(status=status, error_type=error_type, seqs=None if cmd.seqs is None else frozenset(cmd.seqs))
    )


def _count(changed: dict[str, int]) -> int:
    return sum(changed.values())


def describe_retry(changed: dict[str, int], invalid: Mapping[str, int] | None = None) -> str:
    """The answer of a retry: how many failed items went back to pending (and skipped ones),
    and those of the selection it left failed, by error type (``invalid``: see
    :func:`invalid_note`)."""
    text = f"{count(changed.get('failed', 0), 'failed item')} back to pending"
    if changed.get("skipped"):
        text += f", and {count(changed['skipped'], 'skipped one')}"
    return text + invalid_note(invalid)


def describe_prioritize(retried: dict[str, int], moved: int, invalid: Mapping[str, int] | None = None) -> str:
    """The answer of a prioritize: how many items moved to the front (and were retried first)."""
    text = f"{count(moved, 'item')} moved to the front"
    if retried:
        text += f" ({_count(retried)} failed back to pending first)"
    return text + invalid_note(invalid)


#: Why an item of each of store.selection.UNRETRIABLE_TYPES (but the invalid source records,
#: said on their own) fails again on any retry.
_CANNOT_SUCCEED: Final = {
    "MissingField": "a field the command names is missing from the record",
    "NulByte": "a value the command takes holds a NUL byte, which exec cannot pass",
    "CommandTooLong": "the command is longer than one exec argument may be",
}


def invalid_note(invalid: Mapping[str, int] | None) -> str:
    """What a retry says of the items it left failed, by error type ('' when none): the invalid
    source records, and those no retry can make succeed (store.selection.UNRETRIABLE_TYPES)."""
    notes = []
    for error_type, n in sorted((invalid or {}).items()):
        if not n:
            continue
        if error_type == "InvalidRecord":
            notes.append(
                f"{count(n, 'invalid source record')} not retried: no processor can take such a line"
                " (fix the source, then `resume --rescan` runs the corrected lines)"
            )
        else:
            reason = _CANNOT_SUCCEED.get(error_type, f"they failed with {error_type}")
            notes.append(
                f"{count(n, 'item')} can't succeed on retry: {reason}; left failed"
                f" (a skip settles them: `--type {error_type}` selects them)"
            )
    return "".join(f"; {note}" for note in notes)


def offline_change(cmd: ControlCommand, resume: str = "batchtui resume BATCH") -> Callable[[Any], str] | None:
    """What ``cmd`` does to the store of a batch no engine runs (None: it needs an engine);
    ``resume``: the command that runs the items it puts back (the batch's own, named: a bare
    ``batchtui resume`` takes the newest unfinished batch, which may be another).

    Raises ValueError when the command's selection is not valid."""
    if cmd.op not in ("skip", "retry", "prioritize"):
        return None
    sel = command_selection(cmd)
    assert sel is not None
    if cmd.op == "skip":

        def skip(store: Any) -> str:
            return f"{_count(store.skip_selected(sel, at=now_iso()))} skipped"

        return skip
    if cmd.op == "prioritize":

        def prioritize(store: Any) -> str:
            retried, moved = store.prioritize(sel)
            return f"{describe_prioritize(retried, moved, store.unretriable_types(sel))}; run them with `{resume}`"

        return prioritize

    def retry(store: Any) -> str:
        return f"{describe_retry(store.retry_selected(sel), store.unretriable_types(sel))}; run them with `{resume}`"

    return retry


def send(
    batch: BatchDir,
    op: ControlOp,
    *,
    seqs: Sequence[int] | None = None,
    filter: dict[str, Any] | None = None,
    value: Any = None,
    select: Selection | None = None,
    wait: float | None = ACK_TIMEOUT_S,
    cancelled: Callable[[], bool] | None = None,
    now: Callable[[], float] | None = None,
) -> Outcome:
    """Send one command to ``batch`` (see the module docstring).

    ``wait`` is how long to wait for the engine's acknowledgement (None: do not wait).
    ``cancelled`` is polled while waiting (a TUI worker being cancelled): when it turns true the
    wait ends early with :class:`NotAcknowledged`. ``now`` is the wall clock used to judge the
    engine's liveness (a frozen clock in tests). ``select`` is the items of a retry, skip or
    prioritize (:class:`~.store.queries.Selection`; the older ``seqs``/``filter`` still work).
    Raises :class:`NoEngine` for an engine-only
    command when no engine holds the batch, and whatever :func:`.control.apply_offline` raises
    (BatchLocked when an engine took the batch meanwhile), and NewerFormat or DamagedFile
    from reading the manifest.
    """
    # A batch of a newer batchtui (or with no readable manifest) is refused before anything is
    # sent or changed, whoever holds it.
    manifest = batch.read_manifest()
    cmd = new_command(op, seqs=seqs, filter=filter, value=value, select=None if select is None else select.to_json())
    at = None if now is None else float(now())
    status = engine_status(batch, now=at)
    if not status.held:
        change = offline_change(cmd, resume_command(batch))
        if change is None and manifest.state is BatchState.FINISHED:  # a resume would do nothing
            verb = {"resume": "unpause", "set_workers": "workers"}.get(op, op)  # the CLI's name for it
            raise NoEngine(f"batch {batch.batch_id} is finished: no engine runs it (`{verb}` steers a running engine)")
        if change is None:
            raise NoEngine(f"no engine is running batch {batch.batch_id}; start it with `{resume_command(batch)}`")
        # The lock may be held by a command that is about to become an engine (a resume still
        # planning), or becomes one while we wait for it: look again until the wait is over.
        deadline = time.monotonic() + max(wait or 0.0, OFFLINE_LOCK_WAIT_S)
        while True:
            try:
                return Applied(batch.batch_id, cmd, apply_offline(batch, change, lock_wait=_SLICE_S), False)
            except BatchLocked:
                if time.monotonic() >= deadline:
                    raise
            status = engine_status(batch, now=None if now is None else float(now()))
            if status.held:
                break
    if status.holder is not None:  # the engine it is for: see ControlCommand.to
        cmd = cmd.model_copy(update={"to": status.holder.token()})
    append_command(batch, cmd)
    if wait is None:
        return Sent(batch.batch_id, cmd, status)
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        live = wait_for_ack(batch, cmd.id, max(0.0, min(_SLICE_S, left)))
        if live is not None:
            return Applied(batch.batch_id, cmd, live.control_results.get(cmd.id, "done"), True, live.state.value)
        if time.monotonic() >= deadline or (cancelled is not None and cancelled()):
            break
    status = engine_status(batch, now=None if now is None else float(now()))
    return NotAcknowledged(batch, cmd, status, wait)
