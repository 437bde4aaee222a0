"""TUI tests: deterministic time zone, fixture batches, helpers to run Pilot tests without plugins."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    # No user themes or keymaps from the machine running the tests.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # Box and block characters whatever the locale of the machine running the tests
    # (test_ascii.py turns the ASCII mode on through LANG=C).
    monkeypatch.setenv("BATCHTUI_ASCII", "0")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async Pilot test body (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
