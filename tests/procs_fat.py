"""A ``--call`` module that holds 160 MB from its import on: an engine that loads it uses more
than ``--memory-limit-mb 128`` before any item runs (tests/test_memory_alone.py)."""

from __future__ import annotations

from typing import Any

BALLAST = b"x" * (160 << 20)  # written, so resident


def noop(item: Any) -> None:
    return None
