"""Start-up stays cheap: which modules each CLI path loads (no timing, so it holds on any machine).

Every `batchtui` call pays for what it imports before it does anything; a 1-item run or a
`batchtui ls` in a script loop is mostly that. These tests fail when an eager import creeps
back in: the CLI package loads only click and a few engine basics and no verb's module (its
group is lazy), `--help` and `--version` load no engine module, `ls` never the runner, the
store, the executors, psutil or another verb's module, and no headless path loads textual.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchtui.engine import inotify
from batchtui.tui.cli import group

from .conftest import cli_env

#: Loaded by neither ``import batchtui.tui.cli`` nor ``batchtui ls``: the engine's and the TUI's
#: heavy dependencies, and the modules of the verbs that are not `ls` (the lazy group loads a
#: verb's module only when that verb runs).
HEAVY_ALWAYS = (
    "psutil",
    "multiprocessing",
    "sqlite3",
    "watchfiles",
    "textual",
    "rich",
    "dask",
    "batchtui.tui.cli.running",
    "batchtui.tui.cli.resuming",
    "batchtui.tui.cli.steering",
    "batchtui.tui.cli.maintenance",
    "batchtui.tui.cli.watching",
)
#: Never loaded by ``import batchtui.tui.cli`` (nor by ``--help``).
HEAVY_FOR_IMPORT = (
    *HEAVY_ALWAYS,
    "pydantic",
    "distributed",
    "importlib.metadata",
    "secrets",  # and hashlib's OpenSSL with it: only a file written exactly (export -o) needs it
    "dataclasses",  # each dataclass compiles its methods at import: none on the CLI's own path
    "batchtui.engine.runner",
    "batchtui.engine.store",
    "batchtui.engine.executors",
    "batchtui.engine.models",
    "batchtui.engine.config",
    "batchtui.tui.launch",
    "batchtui.tui.cli.inspecting",
    "batchtui.tui.cli.options",
    "batchtui.tui.cli.summary",
    "batchtui.tui.cli.progress",
)
#: Never loaded by ``batchtui ls`` (which does need pydantic and the batch files' models).
HEAVY_FOR_LS = (
    *HEAVY_ALWAYS,
    "batchtui.engine.runner",
    "batchtui.engine.store",
    "batchtui.engine.executors",
    "batchtui.engine.enqueue",
    "batchtui.engine.sources",
    "batchtui.engine.shell",
    "batchtui.engine.processors",
    "batchtui.engine.recover",
    "batchtui.engine.resume",
)


class Loaded(set[str]):
    """The modules a fresh interpreter had loaded at exit, and for each top-level package, the
    stack that first imported it (so a failure says who brought a heavy module in)."""

    importers: dict[str, str]


#: Installed first in the fresh interpreter: records the stack of each top-level import.
_HOOK = """
import atexit, json, sys, traceback
_importers = {}
class _Who:
    def find_spec(self, name, path, target=None):
        top = name.partition('.')[0]
        if top not in _importers and top not in sys.modules:
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith('<frozen')]
            _importers[top] = ''.join(traceback.format_list(frames[-10:]))
        return None
sys.meta_path.insert(0, _Who())
def _report():
    print('\\nMODULES=' + json.dumps(sorted(sys.modules)), file=sys.__stderr__)
    print('\\nIMPORTERS=' + json.dumps(_importers), file=sys.__stderr__)
atexit.register(_report)
"""


def _loaded_after(code: str, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Loaded:
    """The modules loaded once ``code`` ran in a fresh interpreter (printed as JSON at exit)."""
    proc = subprocess.run(
        [sys.executable, "-c", f"{_HOOK}\n{code}\n"],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=env, check=False,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    modules = next((x for x in lines if x.startswith("MODULES=")), None)
    importers = next((x for x in lines if x.startswith("IMPORTERS=")), None)
    assert modules is not None and importers is not None, proc.stderr
    loaded = Loaded(json.loads(modules.removeprefix("MODULES=")))
    loaded.importers = json.loads(importers.removeprefix("IMPORTERS="))
    return loaded


def _assert_absent(modules: set[str], names: tuple[str, ...]) -> None:
    found = _present(modules, names)
    assert not found, "loaded, and should not be:\n" + "\n".join(found)


def _present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` (or their submodules) loaded; each with the stack that imported its
    package when that is known."""
    found = sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))
    importers: dict[str, str] = getattr(modules, "importers", {})
    return [f"{m} imported at:\n{importers[m]}" if m in importers else m for m in found]


def test_importing_the_cli_loads_only_click_and_the_engine_basics() -> None:
    modules = _loaded_after("import batchtui.tui.cli")
    _assert_absent(modules, HEAVY_FOR_IMPORT)


def test_help_loads_no_engine_module() -> None:
    modules = _loaded_after(
        "from batchtui.tui.cli import main\ntry:\n    main(['--help'], prog_name='batchtui')\nexcept SystemExit:\n    pass"
    )
    _assert_absent(modules, HEAVY_FOR_IMPORT)


def test_version_loads_no_engine_module() -> None:
    modules = _loaded_after(
        "from batchtui.tui.cli import main\ntry:\n    main(['--version'], prog_name='batchtui')\nexcept SystemExit:\n    pass"
    )
    assert "importlib.metadata" in modules  # it did read the version
    _assert_absent(modules, tuple(m for m in HEAVY_FOR_IMPORT if m != "importlib.metadata"))


def test_a_verb_loads_its_own_module_only() -> None:
    modules = _loaded_after(
        "from batchtui.tui.cli import main\ntry:\n    main(['pause', '--help'], prog_name='batchtui')\nexcept SystemExit:\n    pass"
    )
    assert "batchtui.tui.cli.steering" in modules
    others = ("running", "resuming", "inspecting", "maintenance", "watching")
    _assert_absent(modules, tuple(f"batchtui.tui.cli.{m}" for m in others))
    _assert_absent(modules, ("batchtui.engine.runner", "textual", "psutil"))


def test_the_verbs_help_lists_what_each_verbs_docstring_says() -> None:
    """``batchtui --help`` reads the verbs' short help from group.VERBS (no verb module is
    imported): it must read exactly as click's own listing from each command's docstring."""
    lazy = CliRunner().invoke(group.main, ["--help"], prog_name="batchtui")
    assert lazy.exit_code == 0, lazy.output
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(group.Main, "format_commands", click.Group.format_commands)
        eager = CliRunner().invoke(group.main, ["--help"], prog_name="batchtui")
    assert "Commands:" in lazy.output and "  workers  " in lazy.output
    assert lazy.output == eager.output
    for name in group.VERBS:
        command = group.main.get_command(click.Context(group.main), name)
        assert command is not None and command.name == name, name
        assert (command.help or "").split("\n\n")[0].split() == group.VERBS[name][2].split(), name


def test_ls_never_loads_the_runner_the_store_or_psutil(tmp_path: Path) -> None:
    out = tmp_path / "out"
    one = tmp_path / "one.txt"
    one.write_text("a\n")
    run = subprocess.run(
        [sys.executable, "-m", "batchtui.tui.cli", "run", str(one), "--cmd", "true", "--headless", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(out),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    code = (
        "from batchtui.tui.cli import main\n"
        f"try:\n    main(['ls', '-o', {str(out)!r}], prog_name='batchtui')\nexcept SystemExit as e:\n    assert not e.code\n"
    )
    modules = _loaded_after(code, cwd=tmp_path, env=cli_env(out))
    assert "batchtui.engine.batchdir" in modules  # it did list the batch
    _assert_absent(modules, HEAVY_FOR_LS)


#: Loaded by no verb that steers or reads a batch: what runs the hooks (engine/events.py imports
#: it where it runs one), logging (imported where a warning is logged), the engine itself.
HEAVY_FOR_A_VERB = (
    "psutil",
    "multiprocessing",
    "watchfiles",
    "textual",
    "rich",
    "dask",
    "logging",
    "subprocess",
    "batchtui.engine.reaper",
    "batchtui.engine.runner",
    "batchtui.engine.enqueue",
    "batchtui.engine.sources",
)
#: Loaded by no verb that only reads items.db (the store's package loads its modules on first
#: use): the engine's read-write handle, its bulk statements and enqueue.
STORE_WRITER = ("batchtui.engine.store.items", "batchtui.engine.store.bulk", "batchtui.engine.store.enqueue")


@pytest.fixture(scope="module")
def failed_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An output dir with one finished batch whose two items failed (so `skip` has work)."""
    tmp = tmp_path_factory.mktemp("verbs")
    out = tmp / "out"
    two = tmp / "two.txt"
    two.write_text("a\nb\n")
    args = ["run", str(two), "--cmd", "false", "--max-attempts", "1", "--headless", "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "batchtui.tui.cli", *args],
        capture_output=True, text=True, timeout=120, env=cli_env(out), cwd=tmp, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # both failed
    (batch,) = [p.name for p in out.iterdir() if p.is_dir()]
    return out, batch


@pytest.mark.parametrize(
    ("verb", "args", "code", "writes"),
    [
        ("skip", ["1"], 0, True),  # no engine runs it: applied to items.db offline
        ("pause", [], 1, False),  # no engine to pause: exit 1
        ("export", [], 0, False),
        ("logs", ["0"], 0, False),
        ("show", [], 0, True),  # checks the store's health with the read-write handle (read-only)
        ("ls", [], 0, False),
    ],
)
def test_a_verb_loads_no_hook_runner_logging_or_engine(
    failed_batch: tuple[Path, str], verb: str, args: list[str], code: int, writes: bool
) -> None:
    out, batch = failed_batch
    argv = [verb] if verb == "ls" else [verb, batch, *args]
    run = (
        "from batchtui.tui.cli import main\n"
        f"try:\n    main([*{argv!r}, '-o', {str(out)!r}], prog_name='batchtui')\n"
        f"except SystemExit as e:\n    assert (e.code or 0) == {code}, e.code\n"
    )
    modules = _loaded_after(run, cwd=out.parent, env=cli_env(out))
    assert "batchtui.engine.batchdir" in modules  # it did find the batch
    _assert_absent(modules, HEAVY_FOR_A_VERB if writes else (*HEAVY_FOR_A_VERB, *STORE_WRITER))


def test_the_engine_package_loads_its_names_on_first_use() -> None:
    modules = _loaded_after(
        "import batchtui.engine as e\n"
        "import sys\n"
        # Only the loader of the names (engine/lazy.py: importlib and sys).
        "assert [m for m in sys.modules if m.startswith('batchtui.engine.')] == ['batchtui.engine.lazy'], sys.modules\n"
        "from batchtui.engine import BatchConfig, BatchRunner, Fatal, Item, create_batch\n"
        "assert BatchRunner.__module__ == 'batchtui.engine.runner'\n"
        "assert sorted(e.__all__) == sorted(e._SOURCES)\n"
        "for name in e.__all__:\n"
        "    getattr(e, name)\n"
        "from batchtui.engine import store\n"
        "assert store.__name__ == 'batchtui.engine.store'\n"
        "try:\n"
        "    e.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    assert "batchtui.engine.runner" in modules


def test_importing_the_runner_loads_no_psutil_until_a_run() -> None:
    modules = _loaded_after("import batchtui.engine.runner")
    _assert_absent(modules, ("psutil", "textual", "watchfiles", "dask"))


def test_the_cli_exit_code_and_resume_command_match_the_runner(tmp_path: Path) -> None:
    from batchtui.engine import batchdir, errors, report, runner

    assert errors.EXIT_USAGE == runner.EXIT_USAGE == 2
    bdir = batchdir.BatchDir(tmp_path / "20260101_000000_0123abcd")
    assert batchdir.resume_command(bdir) == report.resume_command(bdir)  # report.json's


#: Never loaded by a process-pool worker (engine/poolworker.py): its imports are the wait for the
#: run's first result, and a worker runs items, it reads no settings.
HEAVY_FOR_POOL_WORKER = (
    "pydantic",
    "pydantic_core",
    "batchtui.engine.config",
    "batchtui.engine.models",
    "batchtui.engine.processors",
    "batchtui.engine.executors",
    "batchtui.engine.pool",
    "batchtui.engine.shell.processor",  # a Python callable's worker runs no shell command
    "batchtui.engine.shell.template",
)


def test_a_pool_worker_loads_no_settings_model(tmp_path: Path) -> None:
    """A real run on the process executor: each item returns the modules its worker process has
    loaded by then (the worker's entry module, the callable's file, the items run)."""
    calls = tmp_path / "calls.py"
    calls.write_text("import sys\n\ndef modules(item):\n    return sorted(sys.modules)\n")
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    out = tmp_path / "out"
    args = ["run", str(items), "--call", f"{calls}:modules", "--executor", "process", "--workers", "1", "--headless"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchtui.tui.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=cli_env(out), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (batch,) = [p for p in out.iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (batch / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        modules = set(row["result"])
        assert "batchtui.engine.poolworker" in modules  # the worker ran, and ran this entry
        _assert_absent(modules, HEAVY_FOR_POOL_WORKER)


#: Never loaded by a `run` that runs shell items headless: what only another path needs (the
#: demo, --dry-run, the TUI, dask, the process pool, a batchtui.toml, --limit-by, a command's
#: answer to its sender).
HEAVY_FOR_RUN = (
    "tomllib",
    "batchtui.engine.limits",
    "batchtui.engine.client",
    "textual",
    "rich",
    "dask",
    "distributed",
    "multiprocessing",
    "batchtui.engine.demo",
    "batchtui.engine.dryrun",
    "batchtui.engine.pool",
    "batchtui.engine.poolworker",
    "batchtui.tui.app",
    "batchtui.tui.app_engine",
    "batchtui.tui.cli.watching",
)


def _headless_run(tmp_path: Path, cmd: str) -> Loaded:
    out = tmp_path / "out"
    one = tmp_path / "one.txt"
    one.write_text("a\nb\n")
    code = (
        "from batchtui.tui.cli import main\n"
        f"try:\n    main(['run', {str(one)!r}, '--cmd', {cmd!r}, '--headless', '-o', {str(out)!r}], prog_name='batchtui')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
    )
    modules = _loaded_after(code, cwd=tmp_path, env=cli_env(out))
    assert "batchtui.engine.runner" in modules  # it did run the batch
    assert len([p for p in out.iterdir() if p.is_dir()]) == 1
    return modules


def _watchfiles_brought(modules: Loaded) -> tuple[str, ...]:
    """What a run that outlasted the control watcher's delay (engine/control.py) may load for
    it: watchfiles imports multiprocessing (for its run_process) in its package's __init__.
    Allowed only if watchfiles is what first imported multiprocessing."""
    if "watchfiles" not in modules:
        return ()
    assert "/watchfiles/" in modules.importers.get("multiprocessing", "/watchfiles/"), modules.importers[
        "multiprocessing"
    ]
    return ("multiprocessing",)


def test_a_headless_shell_run_loads_only_what_it_runs(tmp_path: Path) -> None:
    modules = _headless_run(tmp_path, "true")
    # On a loaded machine the run may outlast the watcher's delay (CI did, once).
    allowed = _watchfiles_brought(modules)
    _assert_absent(modules, tuple(m for m in HEAVY_FOR_RUN if m not in allowed))


def test_a_run_that_outlasts_the_control_watchers_delay_loads_only_its_watcher(tmp_path: Path) -> None:
    modules = _headless_run(tmp_path, "sleep 0.8")  # longer than the watcher's 0.5 s delay
    if inotify.available():
        # Linux: control.jsonl watched through inotify (ctypes), neither watchfiles nor anyio.
        assert "batchtui.engine.inotify" in modules and "watchfiles" not in modules
        _assert_absent(modules, HEAVY_FOR_RUN)
        return
    assert "watchfiles" in modules  # it did watch control.jsonl
    assert _watchfiles_brought(modules) == ("multiprocessing",)
    _assert_absent(modules, tuple(m for m in HEAVY_FOR_RUN if m != "multiprocessing"))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps and wchan (Linux)")
def test_the_watchdog_starts_as_a_bare_interpreter() -> None:
    """Every run starts a watchdog (engine/reaper.py) next to its engine's own start: it runs
    without ``site`` (-S) and maps no psutil until the engine's end makes it sweep (the sweep
    itself is tests/test_orphans.py's)."""
    import psutil

    from batchtui.engine import reaper as reaper_module

    reaper = reaper_module.Reaper()
    reaper.start()
    try:
        assert reaper.watchdog is not None
        pid = reaper.watchdog.pid
        deadline = time.monotonic() + 10
        while "pipe_read" not in Path(f"/proc/{pid}/wchan").read_text():  # until it waits for the engine
            assert time.monotonic() < deadline and reaper.watchdog.poll() is None
            time.sleep(0.005)
        cmdline = psutil.Process(pid).cmdline()
        maps = Path(f"/proc/{pid}/maps").read_text()
    finally:
        reaper.close(wait=10)
    assert "-S" in cmdline[1 : cmdline.index(reaper_module._SCRIPT)]
    assert "psutil" not in maps
    assert reaper.watchdog.returncode == 0


def test_the_watchdog_finds_the_engines_psutil_without_site() -> None:
    """The folder the engine gives the watchdog is where an interpreter without ``site``
    imports this very psutil from (appended to sys.path, as site would)."""
    import psutil

    from batchtui.engine.reaper import _psutil_home

    home = _psutil_home()
    code = f"import sys\nsys.path.append({home!r})\nimport psutil\nprint(psutil.__file__)"
    proc = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == Path(psutil.__file__).resolve()
