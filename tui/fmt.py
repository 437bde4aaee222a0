"""Plain formatting shared by the CLI and the TUI, rich-free so the headless path stays light."""

from __future__ import annotations

from typing import Final

_REPLACEMENTS: Final = {"\t": "    "}


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


def clean(text: object, limit: int | None = None) -> str:
    """A single-line-safe string: control characters shown as escapes (``\\x1b``, ``\\n``)."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)
