"""Starting a background engine for a batch (``--detach``, and the TUI's hand-off on SIGHUP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from batchtui.engine.batchdir import BatchDir
from batchtui.engine.errors import UserError


def detach_engine(batch: BatchDir, *, action: str, overrides: dict[str, Any] | None = None, wait: float = 15.0) -> int:
    """Start the engine for ``batch`` as a background process in its own session.

    Output goes to engine.log in the batch dir. Returns the engine's pid once it holds the
    batch lock; raises UserError with the log's tail if it died first.
    """
    log_fd = os.open(batch.engine_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    args = [sys.executable, "-m", "batchtui.tui.cli", "resume", str(batch.path), "--headless"]
    args += ["--engine-action", action]
    if overrides:
        args += ["--overrides-json", json.dumps(overrides)]
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True, close_fds=True
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        alive = batch.alive()
        if alive is not None and alive.pid == proc.pid:
            return proc.pid
        code = proc.poll()
        if code is not None:
            tail = batch.engine_log.read_text(errors="replace").strip().splitlines()[-5:]
            if code in (0, 1):
                return proc.pid  # it already finished (a tiny batch)
            raise UserError(f"the background engine exited with {code}:\n  " + "\n  ".join(tail))
        time.sleep(0.02)
    return proc.pid
