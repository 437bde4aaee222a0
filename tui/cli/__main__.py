"""``python -m batchtui.tui.cli``: the same as the ``batchtui`` console script."""

from __future__ import annotations

from .entry import run

run()
