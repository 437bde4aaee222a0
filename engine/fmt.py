"""Plain formatting the engine's messages and every view share (no imports: start-up stays light)."""

from __future__ import annotations


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
