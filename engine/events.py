"""Events of a run and the commands that hear of them (``--on-event``, ``--on-finish``).

Four kinds: ``halt`` (a policy stopped the batch: its reason), ``stall`` (nothing finished for
much longer than usual while items run, as engine/eta.py decides for every view: how long), ``new-group`` (the first failure of an error
group: its id, type, message, count and a sample key) and ``finish`` (the run ended: its state
and report). ``--on-event KINDS CMD`` runs ``/bin/sh -c CMD`` with the event as one JSON object
on stdin (item text is in the JSON as data, never in the command line); ``--on-finish CMD`` is
the ``finish`` case and keeps getting report.json itself on stdin.

Hooks never slow or stop the run: the runner only queues an event (:meth:`BatchEvents.emit`);
one thread of this module runs the hooks in order, each killed with its process group after
``--hook-timeout`` seconds. A failure is a warning in live_progress.json and the log, never an
error of the batch. The end of a run waits for the queued hooks and the ``finish`` ones (each
bounded), as ``--on-finish`` always did, while the engine still holds the batch (so ``wait``
returns once they are done). Each hook run is one line of ``events.jsonl`` in the batch dir.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, get_args

from pydantic import ConfigDict, field_validator

from .basemodel import Model
from .batchdir import now_iso
from .files import FILE_MODE
from .fmt import decode_output
from .grouping import group_id

if TYPE_CHECKING:
    import logging
    import queue
    import subprocess

# Every command loads this module with the settings (EventHook, parse_hooks): what runs the hooks
# (subprocess, tempfile, signal, queue, logging, the reaper's clean_env) is imported by the
# functions that run them, so a `skip` or an `ls` does not load it.

EventKind = Literal["halt", "stall", "new-group", "finish"]
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
EVENTS_LOG: Final = "events.jsonl"
#: Events waiting for the hook thread at most; more are dropped (and said once): a batch with
#: thousands of distinct errors must not queue thousands of hook runs.
MAX_QUEUED: Final = 100
#: How long a hook killed for its timeout gets between SIGTERM and SIGKILL.
KILL_GRACE_S: Final = 2.0
#: The last lines of a failed hook's output a warning quotes (one).
_TAIL_BYTES: Final = 4096


class EventHook(Model):
    """One ``--on-event KINDS CMD``: the kinds it hears of and the shell command it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: tuple[EventKind, ...]
    command: str

    @field_validator("events", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            bad = [v for v in value if v not in EVENT_KINDS]
            if bad:
                raise ValueError(f"unknown event {bad[0]!r}: the events are {', '.join(EVENT_KINDS)}")
            if not value:
                raise ValueError(f"no event named: give one or more of {', '.join(EVENT_KINDS)}")
            return tuple(dict.fromkeys(value))  # each once, in the order given
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the command is empty")
        if "\x00" in value:
            raise ValueError("the command contains a NUL byte")
        return value


def parse_hooks(value: Any) -> Any:
    """``--on-event`` as given by a flag (pairs ``(KINDS, CMD)``), batchtui.toml (a list of
    ``"KINDS CMD"`` strings or ``{events, command}`` tables) or BATCHTUI_ON_EVENT (one
    ``"KINDS CMD"``) into what :class:`EventHook` validates; anything else is left as it is for
    pydantic to refuse."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value
    out: list[Any] = []
    for entry in value:
        if isinstance(entry, str):
            kinds, _, command = entry.strip().partition(" ")
            if not command.strip():
                raise ValueError(f"{entry!r} is not 'EVENTS COMMAND' (e.g. 'halt,finish notify-send done')")
            out.append({"events": kinds, "command": command.strip()})
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            out.append({"events": entry[0], "command": entry[1]})
        else:
            out.append(entry)
    return tuple(out)


class StallWatch:
    """Turns the engine's stall figure (engine/eta.py's ``stalled_s``, what every view shows
    as "stalled 90 s") into one event per stall: :meth:`check` is True the first time a stall
    is seen, and again only after the run moved on (the figure went back to None)."""

    def __init__(self) -> None:
        self._told = False

    def check(self, stalled_s: float | None) -> bool:
        if stalled_s is None:
            self._told = False
            return False
        if self._told:
            return False
        self._told = True
        return True


class _Run(NamedTuple):
    """One hook run: the hook's label (for messages), its command, and what it gets."""

    label: str
    command: str
    kind: str
    stdin: bytes


def _dumps(obj: Any) -> bytes:
    # json, not orjson: a key from a file name that is not UTF-8 holds lone surrogates, which
    # orjson refuses; ensure_ascii writes them as \\udcXX escapes (still one JSON object).
    return (json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode()


def run_hook(
    command: str, stdin: bytes, *, env: Mapping[str, str], cwd: str | None, timeout: float
) -> tuple[int | None, str]:
    """Run ``/bin/sh -c command`` in its own process group with ``stdin``; (exit code, "") or
    (None, why) when it could not start or ran past ``timeout`` (then its group is killed:
    SIGTERM, SIGKILL after :data:`KILL_GRACE_S`). The exit code of a failure comes with the
    last line of its output. stdin and the output go through files: a hook that reads nothing
    or leaves a child holding its output never blocks this thread."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out:
        inp.write(stdin)
        inp.seek(0)
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=inp,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd if cwd and os.path.isdir(cwd) else None,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            return None, f"could not start: {exc.strerror or exc}"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, f"killed after {timeout:g} s (--hook-timeout)"
        if code == 0:
            return 0, ""
        out.seek(max(0, out.seek(0, os.SEEK_END) - _TAIL_BYTES))
        tail = decode_output(out.read()).strip().splitlines()[-1:] or [""]
        return code, tail[0]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class BatchEvents:
    """The events of one run and its hooks (see the module docstring).

    Its methods are called on the runner's thread; the hooks run on a thread of their own,
    whose warnings the runner takes with :meth:`observe`."""

    def __init__(
        self,
        batch_dir: Path,
        batch_id: str,
        name: str,
        *,
        on_event: Iterable[EventHook],
        on_finish: str | None,
        hook_timeout: float,
        cwd: str | None,
    ) -> None:
        import logging
        import queue

        self.batch_dir = batch_dir
        self.batch_id = batch_id
        self.name = name
        self.hooks = tuple(on_event)
        self.on_finish = on_finish
        self.hook_timeout = hook_timeout
        self.cwd = cwd
        self._log: logging.Logger = logging.getLogger("batchtui.engine")
        self._notes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wanted = {kind for hook in self.hooks for kind in hook.events}
        if on_finish:
            self._wanted.add("finish")
        self._queue: queue.Queue[_Run | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._groups: dict[str, int] = {}
        self._halted = False
        self._stall = StallWatch()

    @property
    def active(self) -> bool:
        """Whether any hook is set (else no event is even looked for)."""
        return bool(self._wanted)

    def wants(self, kind: str) -> bool:
        """Whether a hook hears of ``kind`` (the runner skips the work of events no one hears)."""
        return kind in self._wanted

    # -- what the runner reports -----------------------------------------------------------

    def seed_groups(self, ids: Iterable[str]) -> None:
        """Error groups the batch had before this run: not new."""
        for gid in ids:
            self._groups.setdefault(gid, 0)

    def failed(self, seq: int, key: str, error_type: str, category: str, message: str, normalized: str) -> None:
        """An item failed for good: a ``new-group`` event when its group is new to the batch
        (``normalized``: its message as the store groups it, grouping.normalize_message)."""
        if "new-group" not in self._wanted:
            return
        gid = group_id(error_type, normalized)
        count = self._groups.get(gid)
        self._groups[gid] = (count or 0) + 1
        if count is not None:
            return
        group = {
            "id": gid,
            "type": error_type,
            "category": category,
            "message": normalized,
            "count": 1,
            "sample_key": key,
            "sample_seq": seq,
            "sample_message": message,
        }
        self.emit("new-group", group=group)

    def halted(self, reason: str) -> None:
        """The batch halts (once a run)."""
        if not self._halted:
            self._halted = True
            self.emit("halt", reason=reason)

    def observe(self, stalled_s: float | None, running: int) -> list[str]:
        """Called each time live progress is taken, with the engine's stall figure: a ``stall``
        event when a stall begins (how long nothing has finished, how many items run). Returns
        the warnings of the hooks that failed since the last call (for live_progress.json)."""
        if "stall" in self._wanted and self._stall.check(stalled_s) and stalled_s is not None:
            self.emit("stall", stalled_s=round(stalled_s, 1), running=running)
        notes = []
        while not self._notes.empty():
            notes.append(self._notes.get_nowait())
        return notes

    def _warn(self, text: str) -> None:
        """A hook's failure: logged now, shown by the next :meth:`observe` (any thread)."""
        self._log.warning("%s", text)
        self._notes.put(text)

    def emit(self, kind: str, **fields: Any) -> None:
        """Queue ``kind`` for the hooks that hear of it; never blocks, never raises."""
        if kind not in self._wanted:
            return
        event = {
            "kind": kind,
            "batch_id": self.batch_id,
            "batch_dir": str(self.batch_dir),
            "name": self.name,
            "time": now_iso(),
            **fields,
        }
        stdin = _dumps(event)
        for hook in self.hooks:
            if kind in hook.events:
                self._put(_Run(f"--on-event {','.join(hook.events)}", hook.command, kind, stdin))

    def _put(self, run: _Run) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self._dropped += 1
            if self._dropped == 1:
                self._warn(f"more than {MAX_QUEUED} events wait for their hooks: later ones are dropped")
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="batchtui-events", daemon=True)
            self._thread.start()
        self._queue.put(run)

    def finish(self, state: str, report: Mapping[str, Any]) -> None:
        """The run ended in ``state``: the ``finish`` hooks (``--on-event`` ones get the event with
        the report in it, ``--on-finish`` report.json itself), after every event queued before,
        and wait for them (each bounded by the hook timeout)."""
        if "finish" in self._wanted:
            self.emit("finish", state=state, report=dict(report))
            if self.on_finish:
                self._put(_Run("--on-finish", self.on_finish, "finish", _dumps(dict(report))))
        self.close()

    def close(self) -> None:
        """Let the queued hooks run, then end the hook thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    # -- the hook thread -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            try:
                self._run(run)
            except Exception as exc:  # a hook is the user's: nothing of it may end the thread
                self._warn(f"{run.label} failed: {exc}")

    def _run(self, run: _Run) -> None:
        from .reaper import clean_env

        env = {
            **clean_env(),  # what a hook leaves running is the user's, not killed with the run
            "BATCHTUI_BATCH_DIR": str(self.batch_dir),
            "BATCHTUI_EVENT": run.kind,
        }
        if run.kind == "finish":
            state = json.loads(run.stdin).get("state", "")
            env["BATCHTUI_STATE"] = str(state)
        began = time.monotonic()
        code, why = run_hook(run.command, run.stdin, env=env, cwd=self.cwd, timeout=self.hook_timeout)
        took = round(time.monotonic() - began, 3)
        if code == 0:
            outcome = "exit 0"
            self._log.info("%s: %s hook ran (%.3f s)", run.kind, run.label, took)
        else:
            outcome = f"exit {code}" if code is not None else why
            if code is None:
                message = f"{run.label} {why}"
            else:
                message = f"{run.label} exited {code}" + (f": {why}" if why else "")
            self._warn(message)
        line = {"time": now_iso(), "kind": run.kind, "hook": run.label, "command": run.command}
        self._log_line({**line, "outcome": outcome, "duration_s": took})

    def _log_line(self, line: dict[str, Any]) -> None:
        path = self.batch_dir / EVENTS_LOG
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            self._log.warning("cannot write %s: %s", path, exc.strerror)
            return
        try:
            os.write(fd, _dumps(line))
        except OSError as exc:
            self._log.warning("cannot write %s: %s", path, exc.strerror)
        finally:
            os.close(fd)


__all__ = [
    "EVENTS_LOG",
    "EVENT_KINDS",
    "BatchEvents",
    "EventHook",
    "EventKind",
    "StallWatch",
    "parse_hooks",
    "run_hook",
]
