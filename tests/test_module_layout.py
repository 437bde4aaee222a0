"""Modules a newcomer can find (issue 16, points 2 and 4): the engine's and the TUI's modules stay
small, or say why they are one piece, and the code's comments say why, not how a benchmark went."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A module longer than this says in its docstring why it is "one piece".
MAX_LINES = 500

# The history of a measurement: "2.31 -> 2.00 s", "interleaved A/B medians", "12 ms against
# 130 ms". Such figures belong in a commit message or the README's Performance section.
BENCH_HISTORY = re.compile(
    r"\d(?:\.\d+)?\s*(?:s|ms|us|µs)?\s*(?:->|→)\s*\d(?:\.\d+)?\s*(?:s|ms|us|µs)\b"
    r"|\bA/B\b|\b(?:measured|runs?|rounds?) interleaved\b|\binterleaved (?:runs?|rounds?|with)\b"
    r"|\d\s*(?:s|ms|us|µs) against \d"
)


def _modules(*folders: str) -> list[Path]:
    return sorted(p for d in folders for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_long_module_says_why_it_is_one_piece() -> None:
    """The engine's and the TUI's: a newcomer finds a screen's or a widget's parts by name."""
    long = []
    for path in _modules("engine", "tui"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "one piece" not in doc:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert long == [], "split these, or say in the docstring why each is one piece"


def test_no_benchmark_history_in_comments_or_docstrings() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _modules("engine", "tui")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BENCH_HISTORY.search(line)
    ]
    assert found == [], "\n".join(found)
