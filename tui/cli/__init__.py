"""The ``batchtui`` command line (DESIGN section 8 is its contract): one module per family of verbs.

- group.py: the lazy group (a verb's module is imported only when it runs) and the error line;
- running.py: run, demo, check; resuming.py: resume; steering.py: pause, unpause, stop, skip,
  retry, workers; inspecting.py: ls, show, errors; exporting.py: export; maintenance.py:
  recover, cleanup; watching.py: watch and the TUI's launch;
- options.py: the shared options; output.py, progress.py, summary.py: what is printed.

The headless paths never import textual, so a server without a terminal pays nothing for it.
``batchtui`` (the console script) and ``python -m batchtui.tui.cli`` both call :func:`main`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .group import main

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    """``main`` is imported when asked for: the console script imports this package before its
    own code runs, and a Ctrl-C during click's import was Python's traceback there, not the
    CLI's "interrupted" (tui/cli/entry.py imports the group where it can catch it)."""
    if name == "main":
        from .group import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
