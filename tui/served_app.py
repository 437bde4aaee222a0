"""The app process of one browser tab of ``batchtui serve`` (textual-serve starts it, with its
web driver in TEXTUAL_DRIVER): the dashboard of one batch, or the browser of every batch.

It never runs an engine (a resume starts a background one) and, unless ``--allow-control``,
refuses every key that changes a batch. Not a verb: ``batchtui serve`` builds its command line
(tui/serve.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from batchtui.engine.batches import BatchScope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchtui.tui.served_app", description=__doc__)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--only", action="store_true", help="that folder's batches alone")
    parser.add_argument("--batch", type=Path, help="the batch whose dashboard opens (else the browser)")
    parser.add_argument("--allow-control", action="store_true")
    parser.add_argument("--theme")
    parser.add_argument("--server-pid", type=int, help="end when this process (the server) is gone")
    args = parser.parse_args(argv)

    from .app import BatchtuiApp  # textual: only once the arguments are good

    app = BatchtuiApp(
        output_dir=BatchScope(args.output_dir, only=args.only),
        batch=args.batch,
        theme=args.theme,
        handle_hangup=False,  # no terminal: textual-serve ends the process when the tab closes
        ascii_only=False,  # the page's terminal (xterm.js) draws every glyph
        read_only=not args.allow_control,
        served=True,
    )
    if args.server_pid is not None:
        exit_with_server(app, args.server_pid)
    return app.run() or 0


#: How often the tab's app looks whether its server is still there.
SERVER_CHECK_S = 0.5
#: How long the app may take to end cleanly once its server is gone, before it just leaves.
EXIT_GRACE_S = 5.0


def exit_with_server(app: Any, pid: int) -> None:
    """End the app when the server that started it is gone (kill -9 included).

    The app's stdin and stdout are pipes from the server: once it is dead nothing reads what the
    app draws, and a batch that no longer changes draws nothing, so no write fails to tell it.
    The server's pid with its start time names it (a pid may be reused)."""
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None

    def alive() -> bool:
        try:
            return started is not None and psutil.Process(pid).create_time() == started
        except psutil.Error:
            return False

    def watch() -> None:
        while alive():
            time.sleep(SERVER_CHECK_S)
        try:
            app.call_from_thread(app.exit)
        except RuntimeError:  # the app is not running (yet, or any more)
            pass
        time.sleep(EXIT_GRACE_S)
        os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
