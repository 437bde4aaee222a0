"""The engine holds no dead code (issue 16, point 4): a function, method or class that nothing
calls misleads its reader (``ResultsLog.truncate_to`` said recover used it; nothing did)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where a name may be used: the engine itself, the TUI and CLI, the tests, the benchmarks.
USERS = ("engine", "tui", "tests", "bench")
# Called by a framework, not by name: pydantic validators and serializers, dunder methods.
FRAMEWORK = re.compile(r"validator|serializer")


def _sources() -> dict[Path, str]:
    me = Path(__file__).resolve()
    return {p: p.read_text(encoding="utf-8") for d in USERS for p in (ROOT / d).rglob("*.py") if p.resolve() != me}


def test_every_function_and_class_of_the_engine_is_used_somewhere() -> None:
    """A name that occurs nowhere but in its own ``def`` is dead. A name shared with a live
    definition (``describe``, ``idle``) escapes this check: those are pinned below."""
    sources = _sources()
    words: dict[str, int] = {}
    for text in sources.values():
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
            words[word] = words.get(word, 0) + 1
    dead = []
    for path, text in sources.items():
        if path.relative_to(ROOT).parts[0] != "engine":
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("__") or any(FRAMEWORK.search(ast.unparse(d)) for d in node.decorator_list):
                continue
            if words.get(node.name, 0) <= 1:
                dead.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert dead == [], "\n".join(dead)


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [
        ("policy", None, "describe"),
        ("policy", "HaltCheck", "reason"),
        ("config", "BatchConfig", "in_flight_window"),
        ("monitor", "MemoryMonitor", "total_mb"),
        ("runner", None, "load_manifest"),
        ("committer", "Committer", "idle"),
        ("files", "ResultsLog", "truncate_to"),
        ("preflight", "Preflight", "failures"),
        ("staging", "Staging", "move"),
        ("dask_executor", None, "make_dask_executor"),
    ],
)
def test_the_dead_code_named_in_issue_16_is_gone(module: str, owner: str | None, name: str) -> None:
    """Names the check above cannot see (another definition shares them)."""
    import importlib

    mod = importlib.import_module(f"batchtui.engine.{module}")
    holder = getattr(mod, owner) if owner else mod
    fields = getattr(holder, "__dataclass_fields__", {})
    assert not hasattr(holder, name) and name not in fields
