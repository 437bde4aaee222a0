"""``$PAGER`` run on the app's terminal: the app suspended, the pager given files, the app back.

Apart from the item detail (its one user) because it is the app's terminal that is handed over,
not anything of an item: what may go wrong is said as a sentence, never raised.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

from textual.app import App, SuspendNotSupported

__all__ = ["run_pager"]


def run_pager(app: App[object], paths: list[str]) -> str | None:
    """Suspend ``app``, run ``$PAGER`` (``less`` when unset) on ``paths``, come back; None when it
    ran, else why not. No file, no pager: one given none reads the terminal's keys (cat, more)."""
    if not paths:
        return "nothing to page"
    pager = os.environ.get("PAGER", "").strip() or "less"
    try:
        argv = shlex.split(pager)
    except ValueError as exc:
        return f"$PAGER cannot be read: {exc}"
    if not argv or shutil.which(argv[0]) is None:
        return f"pager not found: {argv[0] if argv else repr(pager)} (set $PAGER)"
    try:
        with app.suspend():
            subprocess.run([*argv, *paths], check=False)
    except SuspendNotSupported:
        return "this terminal cannot hand the screen to a pager"
    except OSError as exc:
        return f"the pager could not run: {exc}"
    return None
