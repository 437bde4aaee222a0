"""The shell-template processor (``--cmd``) and the item objects every processor receives.

Every value substituted into a template is passed through :func:`shlex.quote`, so item content
(file names, lines, CSV fields) can never inject shell code. The command runs with
``/bin/sh -c`` in a new session (its own process group): a timeout, a skip or a stop kills the
whole tree, and no background child outlives its item.

Logs: the last ``log_limit`` bytes of stdout and stderr go to ``logs/<seq>.out`` / ``.err``,
only when the stream is non-empty (thousands of empty files would cost more than the runs).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import CommandFailed, CommandKilled, ItemTimeout, UserError

BUILTINS: Final = frozenset({"", "path", "name", "stem", "suffix", "parent", "seq", "key", "out"})
_FIELD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
STDERR_TAIL: Final = 8192


@dataclass(frozen=True, slots=True)
class Item:
    """What a processor receives for one attempt at one item."""

    seq: int
    key: str
    data: Any
    attempt: int
    batch_dir: str
    kind: str = "line"

    @property
    def value(self) -> str:
        """The item's main value: a path, a line, or a record as compact JSON."""
        if isinstance(self.data, str):
            return self.data
        return orjson.dumps(self.data).decode()


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    """A processor's result for one item; ``cost`` counts toward ``--max-cost``."""

    result: Any
    cost: float | None = None


class CommandTemplate:
    """A parsed ``--cmd`` template. ``{{`` and ``}}`` are literal braces."""

    def __init__(self, template: str) -> None:
        if not template.strip():
            raise UserError("the command template is empty")
        self.template = template
        self.parts: list[tuple[bool, str]] = []  # (is_placeholder, text or name)
        i, n = 0, len(template)
        buf: list[str] = []
        while i < n:
            ch = template[i]
            if ch == "{":
                if template.startswith("{{", i):
                    buf.append("{")
                    i += 2
                    continue
                end = template.find("}", i)
                if end < 0:
                    raise UserError(f"unbalanced '{{' at position {i} in the command template {template!r}")
                name = template[i + 1 : end].strip()
                if name not in BUILTINS and not _FIELD.fullmatch(name):
                    raise UserError(f"bad placeholder {{{name}}} in the command template (use a field name)")
                if buf:
                    self.parts.append((False, "".join(buf)))
                    buf = []
                self.parts.append((True, name))
                i = end + 1
            elif ch == "}":
                if template.startswith("}}", i):
                    buf.append("}")
                    i += 2
                    continue
                raise UserError(f"unbalanced '}}' at position {i} in the command template {template!r}")
            else:
                buf.append(ch)
                i += 1
        if buf:
            self.parts.append((False, "".join(buf)))

    @property
    def fields(self) -> frozenset[str]:
        """Record fields the template uses (placeholders that are not built-ins)."""
        return frozenset(name for is_ph, name in self.parts if is_ph and name not in BUILTINS)

    @property
    def uses_out(self) -> bool:
        return any(is_ph and name == "out" for is_ph, name in self.parts)

    def render(self, item: Item, out_dir: str | None) -> str:
        pieces: list[str] = []
        for is_ph, text in self.parts:
            pieces.append(_quote(self._value(item, text, out_dir)) if is_ph else text)
        return "".join(pieces)

    @staticmethod
    def _value(item: Item, name: str, out_dir: str | None) -> Any:
        main = item.value
        if name == "":
            return main
        if name == "seq":
            return item.seq
        if name == "key":
            return item.key
        if name == "out":
            return out_dir or ""
        if name in ("path", "name", "stem", "suffix", "parent"):
            path = main if isinstance(item.data, str) else str(main)
            base = os.path.basename(path.rstrip("/")) or path
            if name == "path":
                return path
            if name == "name":
                return base
            if name == "parent":
                return os.path.dirname(path)
            stem, dot, suffix = base.rpartition(".")
            if not dot or not stem:
                stem, suffix = base, ""
            else:
                suffix = "." + suffix
            return stem if name == "stem" else suffix
        if isinstance(item.data, dict):
            if name not in item.data:
                raise KeyError(f"item has no field {name!r}")
            return item.data[name]
        raise KeyError(f"item has no field {name!r} (only CSV/JSONL records have fields)")


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if "\x00" in text:
        raise ValueError("the item contains a NUL byte, which no command line can carry")
    # Quoting makes any value one literal word. A value starting with "-" is still only
    # quoted: templates should put `--` or `./` before it; data is never altered silently.
    return shlex.quote(text)


class _Tail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, STDERR_TAIL)
        self.chunks: list[bytes] = []
        self.size = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self.total += len(data)
        if self.size > self.limit * 2:
            joined = b"".join(self.chunks)[-self.limit :]
            self.chunks = [joined]
            self.size = len(joined)

    def value(self, limit: int | None = None) -> bytes:
        joined = b"".join(self.chunks)
        return joined[-(limit if limit is not None else self.limit) :] if joined else b""


class ShellProcessor:
    """Runs ``/bin/sh -c <rendered template>`` for each item."""

    def __init__(
        self,
        template: str,
        *,
        shell: str = "/bin/sh",
        timeout: float | None = None,
        log_limit: int = 1 << 20,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.template = CommandTemplate(template)
        self.shell = shell
        self.timeout = timeout
        self.log_limit = log_limit
        self.cwd = cwd if cwd and os.path.isdir(cwd) else None
        self.base_env = dict(os.environ)
        if env:
            self.base_env.update(env)
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        self._lock = threading.Lock()
        self._logs_ready = False

    def _env(self, item: Item) -> dict[str, str]:
        env = dict(self.base_env)
        env["BATCHTUI_ITEM_JSON"] = orjson.dumps(
            {"seq": item.seq, "key": item.key, "data": item.data, "attempt": item.attempt}
        ).decode()
        env["BATCHTUI_SEQ"] = str(item.seq)
        env["BATCHTUI_ATTEMPT"] = str(item.attempt)
        env["BATCHTUI_BATCH_DIR"] = item.batch_dir
        return env

    def run(self, item: Item) -> ProcessOutput:
        out_dir = None
        if self.template.uses_out:
            out_dir = os.path.join(item.batch_dir, "out", str(item.seq))
            os.makedirs(out_dir, mode=0o700, exist_ok=True)
        cmd = self.template.render(item, out_dir)
        proc = subprocess.Popen(
            [self.shell, "-c", cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=self._env(item),
            cwd=self.cwd,
        )
        with self._lock:
            self._running[item.seq] = proc
        try:
            out, err, timed_out = self._collect(proc)
        finally:
            with self._lock:
                self._running.pop(item.seq, None)
                killed_by_us = item.seq in self._killed
                self._killed.discard(item.seq)
            # The item is over: nothing it started may linger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._write_logs(item, out, err)
        err_tail = err.value(STDERR_TAIL).decode(errors="replace")
        if timed_out:
            raise ItemTimeout(self.timeout or 0, err_tail)
        code = proc.returncode
        if code < 0 or killed_by_us:
            raise CommandKilled(-code if code < 0 else signal.SIGKILL, err_tail)
        if code != 0:
            raise CommandFailed(code, err_tail)
        return _parse_stdout(out.value(65536))

    def _collect(self, proc: subprocess.Popen[bytes]) -> tuple[_Tail, _Tail, bool]:
        """Read both pipes to EOF keeping only their tails; kill the group on timeout."""
        out, err = _Tail(self.log_limit), _Tail(self.log_limit)
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + self.timeout if self.timeout else None
        timed_out = False
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = sel.select(wait)
                if not events and deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                for key, _mask in events:
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.add(data)
                    else:
                        sel.unregister(key.fileobj)
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
        return out, err, timed_out

    def _write_logs(self, item: Item, out: _Tail, err: _Tail) -> None:
        if not out.total and not err.total:
            return
        logs = os.path.join(item.batch_dir, "logs")
        if not self._logs_ready:
            os.makedirs(logs, mode=0o700, exist_ok=True)
            self._logs_ready = True
        for suffix, tail in ((".out", out), (".err", err)):
            path = os.path.join(logs, f"{item.seq}{suffix}")
            if not tail.total:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a stale log of an earlier attempt
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, tail.value(self.log_limit))
            finally:
                os.close(fd)

    def kill(self, seq: int) -> bool:
        with self._lock:
            proc = self._running.get(seq)
            if proc is None:
                return False
            self._killed.add(seq)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return True

    def kill_all(self) -> int:
        with self._lock:
            seqs = list(self._running)
        return sum(1 for seq in seqs if self.kill(seq))


def _parse_stdout(data: bytes) -> ProcessOutput:
    """A JSON object on the last non-blank stdout line is the result; else the output's tail."""
    text = data.decode(errors="replace").rstrip()
    if not text:
        return ProcessOutput(None)
    last = text.rsplit("\n", 1)[-1].strip()
    if last.startswith("{"):
        try:
            obj = orjson.loads(last)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            raw = obj.get("cost")
            cost = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
            return ProcessOutput(obj, cost)
    return ProcessOutput({"stdout": text[-200:]})
