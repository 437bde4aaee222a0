"""The engine never imports textual; the headless CLI path does not either; the TUI reads the
item store only through its read-only queries (no SQL, no store internals)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def test_engine_sources_never_import_textual_or_the_tui() -> None:
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("textual", "rich") or "tui" in name.split("."):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == []


def test_importing_the_engine_and_the_headless_cli_loads_no_textual() -> None:
    code = (
        "import sys\n"
        "import batchtui.engine, batchtui.engine.runner, batchtui.engine.preflight, batchtui.engine.control\n"
        "import batchtui.tui.cli\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


TUI = ENGINE.parent / "tui"
#: The one store module the views may import: the read-only item queries.
STORE_FOR_VIEWS = "batchtui.engine.store.queries"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, at any depth (function-level ones too);
    ``from batchtui.engine.store import queries`` counts as that submodule."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # tui/ and engine/ are batchtui.tui and batchtui.engine: ``..engine`` is batchtui.engine
            module = f"batchtui.{node.module}" if node.level and node.module.startswith("engine") else node.module
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def test_the_tui_reads_the_store_only_through_its_queries_and_runs_no_sql() -> None:
    offenders = []
    for path in sorted(TUI.rglob("*.py")):
        for line, name in _imports(path):
            where = f"{path.relative_to(TUI)}:{line} imports {name}"
            store = name.startswith("batchtui.engine.store") and not name.startswith(STORE_FOR_VIEWS)
            if store or name.split(".")[0] == "sqlite3":
                offenders.append(where)
    assert offenders == []


def test_the_import_check_sees_nested_relative_and_from_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from batchtui.engine.store.queries import ItemFilter\n"
        "def f():\n"
        "    from batchtui.engine import store\n"
        "    import sqlite3 as s\n"
        "    from ...engine.store.items import ItemStore\n"
    )
    assert {name for _, name in _imports(src)} == {
        "batchtui.engine.store.queries.ItemFilter",
        "batchtui.engine.store",
        "sqlite3",
        "batchtui.engine.store.items.ItemStore",
    }
    assert (ENGINE / "store" / "queries.py") in set(ENGINE.rglob("*.py"))  # the textual check sees the package
