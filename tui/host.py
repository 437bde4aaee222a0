"""What the screens need from the app, as a small typed protocol.

The screens never look the app's attributes up by name: :class:`~batchtui.tui.app.BatchtuiApp`
has these, and :func:`host` checks it once, so a screen mounted in another app fails with a
clear error instead of silently using defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from textual.dom import DOMNode
from textual.worker import Worker

if TYPE_CHECKING:
    from batchtui.engine.resume import ResumePlan

__all__ = ["Host", "host"]


@runtime_checkable
class Host(Protocol):
    """The app as the screens see it."""

    #: Watch the batch dir for changes (off in snapshot tests: the fixtures are read once).
    watch_files: bool
    #: Let a display error raise (tests) instead of logging it (an engine may run in this app).
    strict_display: bool
    #: The wall clock (frozen in tests).
    clock: Callable[[], float]
    #: An engine runs in this app's worker thread now (one at a time).
    engine_running: bool
    #: Keys that change a batch (pause, stop, retry, skip, resume, delete...) do nothing: the app
    #: only watches (``batchtui serve`` without --allow-control).
    read_only: bool
    #: The app runs for a browser (``batchtui serve``): no engine runs in it (a resume starts a
    #: background engine) and nothing runs on the server's terminal (no $PAGER).
    served: bool

    def open_batch(self, path: Path) -> None:
        """Show the dashboard of the batch at ``path``."""

    def open_browser(self) -> None:
        """Show the batch browser: back to the one this screen was opened from, else a new one
        of the app's batches (its output dir and the per-user registry)."""

    def resume_batch(self, path: Path, plan: ResumePlan | None = None) -> None:
        """Resume the batch at ``path`` with its engine in this app (``plan``: one already made,
        its lock held, e.g. by the resume dialog)."""

    def engine_may_start(self) -> None:
        """The dashboard of this app's engine has painted its first frame: the engine, held back
        so that the first paint does not take the GIL from its first seconds, may start."""

    def handle_worker_error(self, worker: Worker[Any]) -> None:
        """Say that ``worker`` (a thread worker of a screen) failed; the app goes on."""


def host(node: DOMNode) -> Host:
    """The app of ``node``, as a :class:`Host`."""
    app = node.app
    if not isinstance(app, Host):
        raise TypeError(f"{type(app).__name__} is not a batchtui host app (watch_files, clock, open_batch...)")
    return app
