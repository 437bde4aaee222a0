"""Processors for the benchmarks (``--call bench/procs.py:noop``)."""

from __future__ import annotations

from typing import Any


def noop(item: Any) -> None:
    return None
