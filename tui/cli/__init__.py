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

from .group import main

__all__ = ["main"]
