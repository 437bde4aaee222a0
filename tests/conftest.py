"""Shared fixtures and helpers: run the real CLI in a subprocess, read batch files, run a
processor on a thread, wait for a process to go."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

CLI = [sys.executable, "-m", "batchtui.tui.cli"]


#: BATCHTUI_* variables a test's subprocesses keep: not settings but how the whole suite runs
#: (BATCHTUI_SPAWNER=popen runs it on the portable spawning path).
SUITE_ENV = frozenset({"BATCHTUI_SPAWNER"})


def pytest_configure(config: pytest.Config) -> None:
    _share_compiled_modules(config)
    _signals_at_their_defaults()


def _signals_at_their_defaults() -> None:
    """The suite's processes start with SIGINT, SIGTERM and SIGHUP not ignored, however the
    suite was started: as a shell's background job (`pytest &`, CI scripts) SIGINT comes ignored,
    under nohup SIGHUP does, and batchtui keeps a signal ignored when it started so
    (tests/test_signals_ignored.py): every test that interrupts a `batchtui` it starts would then
    see it run on. A signal ignored here is set back (SIGINT to Python's own handler, the others
    to their default), and the children started from here inherit that."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


def _share_compiled_modules(config: pytest.Config) -> None:
    """Under pytest-xdist with PYTHONDONTWRITEBYTECODE set (as where the suite often runs),
    each worker would rewrite the asserts of every test module and compile it from source:
    ~5 s of CPU a worker, most of the time before the first test on 2 cores. The controller
    gives the workers (and every process they start) one bytecode cache in a temporary folder
    instead (PYTHONPYCACHEPREFIX: nothing is written to the source tree, which is what the
    variable asks) and fills it before they start, with two collect-only passes side by side
    over halves of the test files. A .pyc is used only while its source keeps its size and
    modification time, and pytest keys its rewritten ones by its own version."""
    if hasattr(config, "workerinput") or config.getoption("numprocesses", default=None) in (None, 0):
        return
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = Path(tempfile.mkdtemp(prefix="batchtui-tests-pyc-"))
    saved = os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)

    def restore() -> None:
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        os.environ["PYTHONDONTWRITEBYTECODE"] = saved
        shutil.rmtree(prefix, ignore_errors=True)

    config.add_cleanup(restore)
    files = sorted(_test_files(config), key=lambda p: -p.stat().st_size)
    halves: tuple[list[str], list[str]] = ([], [])
    sizes = [0, 0]
    for f in files:  # the bigger files first, each to the lighter half
        i = sizes.index(min(sizes))
        halves[i].append(str(f))
        sizes[i] += f.stat().st_size
    base = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=", "-p", "no:xdist"]
    base += ["-p", "no:cacheprovider"]
    procs = [
        subprocess.Popen(base + half, cwd=config.rootpath, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for half in halves
        if half
    ]
    for p in procs:  # a pass that fails (or hangs) only leaves its modules for the workers to compile
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _test_files(config: pytest.Config) -> set[Path]:
    """The test modules this run collects: those under the paths it was given (``tests``, one
    folder, one file or node id), not the whole suite when one file is asked for."""
    found: set[Path] = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        if path.is_dir():
            found.update(path.rglob("test_*.py"))
        elif path.suffix == ".py" and path.is_file():
            found.add(path)
    return found


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection leaves (every module, test function and parametrization: ~2*10^5
    objects) lives as long as the run: frozen out of the garbage collector's full collections,
    which otherwise go through all of it again some 30 times a worker (a quarter of the TUI
    tests' CPU; as the app does for its engine, tui/app.py)."""
    gc.collect()
    gc.freeze()
    if gc.unfreeze is _real_unfreeze:
        gc.unfreeze = _unfreeze


_real_unfreeze = gc.unfreeze
_thawed = False


def _unfreeze() -> None:
    """gc.unfreeze, noted: whether it ran is asked after every test, and gc.get_freeze_count
    walks every frozen object to answer (~2*10^5 of them, a few ms, 1,400 times a run)."""
    global _thawed
    _thawed = True
    _real_unfreeze()


@pytest.fixture(autouse=True)
def _long_lived_stay_frozen() -> None:
    """A test that unfroze them (an engine that ran in the app unfreezes what it froze, and
    with it everything frozen before) gets them frozen again for the next tests."""
    global _thawed
    if _thawed:
        _thawed = False
        gc.collect()
        gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def subprocess_bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With PYTHONDONTWRITEBYTECODE set (as where the suite often runs), every Python process a
    test starts (the CLI, engines, pool and dask workers; hundreds per run) compiles each batchtui
    module it imports from source, as nothing writes the .pyc files it could read. They share one
    bytecode cache instead, in this run's temporary folder (PYTHONPYCACHEPREFIX): nothing is
    written to the source tree, which is what the variable asks. This process keeps its settings
    (what it imports stays compiled from source). A .pyc is used only while its source keeps its
    size and modification time; the code that loads the user's --call files does not trust that
    (engine/callables.py)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        yield
        return
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one per run, shared by the workers
    prefix = root / "pycache"
    prefix.mkdir(exist_ok=True)
    saved = os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    try:
        yield
    finally:
        del os.environ["PYTHONPYCACHEPREFIX"]
        os.environ["PYTHONDONTWRITEBYTECODE"] = saved


@pytest.fixture(scope="session", autouse=True)
def session_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The per-user state dir of what runs before any test's own (:func:`private_state_dir`):
    the module and session fixtures that make a batch once for a module's tests. Session
    fixtures are set up first, so those batches are registered here, never in the real
    ~/.local/state (a module fixture's batches were, listed as gone by every `batchtui ls`)."""
    state = tmp_path_factory.mktemp("xdg_state_session")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(state))
        mp.delenv("BATCHTUI_STATE_DIR", raising=False)
        yield state / "batchtui"


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own per-user state dir (the batch registry, engine/registry.py), in
    this process and in every process it starts: XDG_STATE_HOME, which every env helper of the
    suite (cli_env, invoke_in_process, tests/reliability, tests/tui) passes on while it drops
    the BATCHTUI_* settings. No test writes to the real ~/.local/state."""
    state = tmp_path_factory.mktemp("xdg_state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("BATCHTUI_STATE_DIR", raising=False)
    return state / "batchtui"


def cli_env(out: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHTUI_") or k in SUITE_ENV}
    env["BATCHTUI_OUTPUT_DIR"] = str(out)
    env.update(extra or {})
    return env


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "batch_output"


@pytest.fixture
def run_cli(out_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``batchtui ARGS`` to completion; returns the CompletedProcess (text)."""

    def run(
        args: Sequence[str],
        *,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        input: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(out_dir, env),
            input=input,
            cwd=cwd or tmp_path,
            check=False,
        )

    return run


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """logging's last resort: the message to whatever ``sys.stderr`` is when a record comes."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def invoke_in_process(
    args: Sequence[str],
    *,
    out: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """``batchtui ARGS`` run in this process through click's CliRunner, answered as the console
    script would: the exit code, stdout and stderr (an uncaught exception is exit 1 with its
    traceback on stderr, as Python prints it, so "no Traceback" assertions keep their meaning).

    For tests that are about what the CLI says and does, not about processes (signals, detach,
    kill -9, the real console script): a subprocess costs a Python start-up and the imports,
    about 0.3 s of CPU each. The environment is the one :func:`cli_env` gives a subprocess."""
    from click.testing import CliRunner

    from batchtui.engine import files
    from batchtui.tui.cli import main, options

    # What a process says once (a manifest read from its backup, the config file it read), a
    # fresh process says again: each call here stands for a new process.
    files._warned.clear()
    options._told_config.clear()
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BATCHTUI_") and k not in SUITE_ENV}
    environ["BATCHTUI_OUTPUT_DIR"] = str(out)
    environ.update(env or {})
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2 mixes by default
    except TypeError:
        runner = CliRunner()  # click >= 8.2: stderr apart, the argument is gone
    # A subprocess prints the engine's warnings through logging's last resort (to stderr, the
    # message only); here pytest's own handlers would take them, so one stands in for it.
    last_resort = _StderrHandler(logging.WARNING)
    engine_log = logging.getLogger("batchtui")
    here = os.getcwd()
    os.chdir(cwd)
    engine_log.addHandler(last_resort)
    try:
        result = runner.invoke(main, list(args), input=input, env=environ, prog_name="batchtui")
    finally:
        engine_log.removeHandler(last_resort)
        os.chdir(here)
    stderr, code = result.stderr, result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
        code = 1
    return subprocess.CompletedProcess([*CLI, *args], code, result.stdout, stderr)


@pytest.fixture
def invoke_cli(out_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """As :func:`run_cli`, in this process (:func:`invoke_in_process`); ``timeout`` is accepted
    for the call sites' sake (pytest-timeout bounds the test)."""

    def invoke(
        args: Sequence[str],
        *,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        input: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        del timeout
        return invoke_in_process(args, out=out_dir, cwd=cwd or tmp_path, env=env, input=input)

    return invoke


def only_batch(out: Path) -> Path:
    batches = [p for p in out.iterdir() if p.is_dir()]
    assert len(batches) == 1, batches
    return batches[0]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "results.jsonl must end with a newline"
    return [orjson.loads(line) for line in data.splitlines()]


def read_json(path: Path) -> dict[str, object]:
    obj = orjson.loads(path.read_bytes())
    assert isinstance(obj, dict)
    return obj


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """A batch directory (0700) for items' ``batch_dir`` (the shell processor's tests)."""
    path = tmp_path / "batch"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A working directory for commands (test_dask has a ``work`` fixture of its own)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def run_in_thread(proc: Any, item: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``proc.run(item)`` on a thread of its own: the box gets its "out" or its "exc"."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = proc.run(item)
        except BaseException as exc:
            box["exc"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    return thread, box


def read_live(batch: Path) -> dict[str, object]:
    """live_progress.json of ``batch`` (retried briefly: it may be missing or being replaced)."""
    for _ in range(50):
        try:
            return orjson.loads((batch / "live_progress.json").read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            time.sleep(0.01)
    raise AssertionError("no live_progress.json")


@contextlib.contextmanager
def feeding(fifo: Path, text: str) -> Iterator[None]:
    """A writer of the named pipe ``fifo``, as a program piping into batchtui: it opens the pipe
    once, writes ``text`` and holds it open until the block ends, so its reader waits for more
    (a kill lands mid-read, not at a moment a sleep guessed). One opening only: a reader that
    opened it before the enqueue (the preflight did) would take the text away."""
    done = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "w") as f:
                f.write(text)
                f.flush()
                done.wait(120)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join(timeout=10)


def wait_until(pred: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``pred`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        time.sleep(0.02)


def assert_gone_soon(pid: int, within: float = 3.0) -> None:
    """Process ``pid`` exits (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} is still running")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 120 MB tmpfs to fill (a real full disk); skips unless root may mount one."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m,mode=0755", "tmpfs", str(mount)], check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def dask_client(threads_per_worker: int) -> Iterator[Any]:
    """A scheduler and two worker processes of ``threads_per_worker`` threads, and a client of
    them (not the default one): the cluster a module's dask tests share, closed after."""
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None)
    client = Client(local, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        local.close()


def waits_for_held_calls(runner: Any, thread: Any, release: Path) -> None:
    """A run whose given-up calls hold every worker thread (skipped, not timed out): it says so
    once and does not halt; once ``release`` lets the calls return, it goes on to its end."""
    said = lambda: runner.halt_reason or any("still hold worker threads" in w for w in runner.warnings)  # noqa: E731
    wait_until(said, 30, "the warning that given-up calls hold the threads")
    assert runner.halt_reason is None
    release.touch()
    thread.join(60)
    assert not thread.is_alive(), "the run stalled: no thread took the items left"


@pytest.fixture
def inotify_events(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every inotify event a watcher (engine/inotify.py) reads during the test, in order."""
    from batchtui.engine import inotify

    events: list[inotify.Event] = []
    real = inotify.Inotify.read

    def read(self: inotify.Inotify) -> list[inotify.Event]:
        got = real(self)
        events.extend(got)
        return got

    monkeypatch.setattr(inotify.Inotify, "read", read)
    return events
