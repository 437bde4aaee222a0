"""Plain formatting shared by the CLI and the TUI, rich-free so the headless path stays light."""

from __future__ import annotations

from typing import Final

from batchtui.engine.fmt import fmt_duration

__all__ = ["clean", "fmt_duration"]

_REPLACEMENTS: Final = {"\t": "    "}


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
