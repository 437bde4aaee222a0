"""The ``batchtui`` command line (DESIGN section 8 is its contract).

The headless paths never import textual, so a server without a terminal pays nothing for it.

Start-up is part of every run's cost (a batch of a few items, a script calling ``batchtui``
in a loop), so this module imports only click at load time; each command imports the engine
modules it needs when it runs: ``--help`` loads no engine module, ``ls`` and ``show`` never the
runner or the executors. tests/test_layering.py keeps it so.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from batchtui.engine.errors import EXIT_USAGE
from batchtui.engine.fmt import clean, fmt_duration

if TYPE_CHECKING:
    from batchtui.engine.batchdir import BatchDir, BatchLock
    from batchtui.engine.config import BatchConfig
    from batchtui.engine.models import BatchState, ControlOp, Counts, LiveProgress, Manifest
    from batchtui.engine.runner import BatchRunner, RunResult

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- shared helpers ----------------------------------------------------------------------------


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # A message may quote a name or value from a file (a key, a path, a setting): its control
    # characters are shown escaped, line by line.
    click.echo("error: " + "\n".join(clean(line) for line in message.split("\n")), err=True)
    raise SystemExit(code)


def progress_line(live: LiveProgress) -> str:
    """The headless progress line of the contract, from live_progress (the one source)."""
    from batchtui.engine.models import BatchState

    c = live.counts
    rss = live.memory.rss_mb + live.memory.children_rss_mb
    line = (
        f"Progress: {c.finished}/{live.total} ({c.complete} ok, {c.failed} failed, {c.skipped} skipped)"
        f" | {live.rate_per_s:.1f}/s | elapsed {fmt_duration(live.elapsed_s)} | ETA {fmt_duration(live.eta_s)}"
        f" | RSS {rss:.0f} MB"
    )
    if live.state not in (BatchState.RUNNING, BatchState.FINISHED):
        line += f" | {live.state.value}"
    return line


class ProgressPrinter:
    """Prints a progress line every ``interval`` seconds (and on state changes)."""

    def __init__(self, interval: float, stream: TextIO | None = None) -> None:
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._state: BatchState | None = None
        self._pending_newline = False

    def __call__(self, live: LiveProgress) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and live.state == self._state:
            return
        self._last = now
        self._state = live.state
        line = progress_line(live)
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self._pending_newline = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._pending_newline:
            self.stream.write("\n")
            self.stream.flush()
            self._pending_newline = False


def print_summary(
    batch: BatchDir,
    manifest: Manifest,
    counts: Counts,
    live: LiveProgress | None,
    report: dict[str, Any] | None = None,
    *,
    state: str | None = None,
) -> None:
    """The end-of-run summary (and `show`'s); ``state``: the state as shown, when it is not the
    manifest's (an interrupted batch, a live engine's)."""
    from batchtui.engine.batchdir import resume_command
    from batchtui.engine.models import BatchState

    done = counts.complete + counts.failed
    success = 100.0 * counts.complete / done if done else 100.0
    bar = "=" * 64
    lines = [
        bar,
        f"BATCH SUMMARY  {batch.batch_id}  ({state or manifest.state.value})",
        bar,
        f"  Name:      {_plain(manifest.name)}",
        f"  Total:     {counts.total}",
        f"  Complete:  {counts.complete}",
        f"  Failed:    {counts.failed}",
        f"  Skipped:   {counts.skipped}",
    ]
    if counts.pending or counts.processing:
        lines.append(f"  Pending:   {counts.pending + counts.processing}")
    lines.append(f"  Success:   {success:.1f}%")
    if manifest.duplicates_dropped:
        lines.append(f"  Duplicates dropped: {manifest.duplicates_dropped}")
    if manifest.unreadable.count:
        lines.append(f"  Unreadable: {_plain(manifest.unreadable.summary())}")
    if report:
        rate = report.get("items_per_s", 0)
        lines.append(f"  Duration:  {fmt_duration(report.get('duration_s'))}   {rate:.1f} items/s")
        if report.get("cost_spent"):
            lines.append(f"  Cost:      {report['cost_spent']:.4f}")
    if manifest.halt_reason:
        lines.append(f"  Halted:    {_plain(manifest.halt_reason)}")
    groups = (live.error_groups if live else []) or []
    if groups:
        lines.append("  Errors:")
        for g in groups[:8]:
            lines.append(f"    {g.count:>6}  {_plain(g.error_type)} [{g.category}]  {_plain(g.example_message)[:70]}")
    lines.append(f"  Results:   {batch.results}")
    lines.append(f"  Manifest:  {batch.manifest}")
    if manifest.state != BatchState.FINISHED or counts.pending:
        lines.append(f"  Resume:    {resume_command(batch)}")
    if counts.failed:
        lines.append(f"  Retry:     batchtui resume {batch.batch_id} --output-dir {batch.path.parent} --retry-failed")
    lines.append(bar)
    click.echo("\n".join(lines))


def _plain(text: str | None) -> str:
    """Item-derived text for a terminal: control characters shown escaped, never interpreted."""
    return clean(text) if text else ""


_told_config: set[Path] = set()


def note_config_file(path: Path, explicit: bool) -> None:
    """Say on stderr which config file a command read (once a process): a batchtui.toml that
    came with a downloaded folder is never read unnoticed."""
    if path not in _told_config:
        _told_config.add(path)
        click.echo(f"config: {_plain(str(path))}" + ("" if explicit else " (found in the current folder)"), err=True)


def output_dir_of(ctx: click.Context, flag: str | None) -> Path:
    from batchtui.engine.config import load_config

    value = flag or (ctx.obj or {}).get("output_dir")
    # Only the output dir is taken: settings that run code are left out, not refused, here.
    config = load_config({"output_dir": value} if value else {}, on_file=note_config_file, implicit_code="drop")
    return Path(config.output_dir)


# -- options -------------------------------------------------------------------------------------


class Number(click.ParamType):
    """A float option checked as it is parsed by the one validator, engine/config.py's
    ``check_number``: finite and within the bounds of ``field`` (`--timeout inf` or `1e10` is a
    usage error here, not an OverflowError in every item after its command started)."""

    name = "float"

    def __init__(self, field: str) -> None:
        self.field = field

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from batchtui.engine.config import check_number

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        try:
            return check_number(self.field, number)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: The largest seq (models.MAX_SEQ: SQLite's integers are 64-bit); here, so the CLI's import
#: loads no engine model.
MAX_SEQ = (1 << 63) - 1
SEQ = click.IntRange(0, MAX_SEQ)


OPERATIONAL_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--workers", "-j", type=click.IntRange(1, 4096), help="Items run at once [default: CPU count, 2+]."),
    click.option(
        "--executor",
        type=click.Choice(["thread", "process", "dask"]),
        help="Where items run [default: thread for --cmd, process for --call].",
    ),
    click.option(
        "--scheduler", help="Dask scheduler address tcp://HOST:PORT (with --executor dask) [a local cluster]."
    ),
    click.option("--max-attempts", type=click.IntRange(1, 100), help="Attempts per item for transient errors [3]."),
    click.option("--timeout", type=Number("timeout"), help="Seconds an item may run (at most 30 days)."),
    click.option("--grace", type=Number("grace"), help="Seconds in-flight items get on stop [10] (at most 30 days)."),
    click.option("--backoff", type=Number("backoff"), help="First retry delay in seconds [1] (at most 30 days)."),
    click.option(
        "--backoff-max", type=Number("backoff_max"), help="Longest retry delay in seconds [60] (at most 30 days)."
    ),
    click.option("--max-failure-rate", type=Number("max_failure_rate"), help="Halt when failed/finished passes this."),
    click.option("--min-items", type=click.IntRange(min=1), help="Items finished before the failure rate counts [20]."),
    click.option(
        "--max-cost", type=Number("max_cost"), help="Halt before the summed `cost` passes this (at most 1e15)."
    ),
    click.option("--rate", help="At most this many items a second: N, N/s, N/m or N/h (at most 1e6/s)."),
    click.option(
        "--memory-limit-mb",
        type=Number("memory_limit_mb"),
        help="Pause dispatch while engine+children RSS is over this.",
    ),
    click.option("--window", type=click.IntRange(min=1), help="Items in flight at most [4 x workers x chunk]."),
    click.option("--fsync/--no-fsync", default=None, help="fsync results and the store at each group commit [on]."),
    click.option("--on-finish", help="Shell command run at the end with report.json on stdin."),
    click.option(
        "--progress-interval",
        type=Number("progress_interval"),
        help="Seconds between headless lines [2] (at most 30 days).",
    ),
    click.option(
        "--max-result-bytes",
        help="An item whose result is more JSON than this fails (ResultTooLarge): 512K, 16M, 1G [16M].",
    ),
]

BATCH_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--name", help="A name for the batch [the source]."),
    click.option("--retry-exit-codes", help="Comma list of exit codes to retry (75 always is)."),
    click.option("--fatal-exit-codes", help="Comma list of exit codes that halt the batch."),
    click.option("--transient-errors", help="Comma list of exception names to retry (besides Timeout/Connection)."),
    click.option(
        "--chunk-size",
        help="Items per call for chunked callables: N or auto. The function gets a list of items and "
        'returns a list of results in their order, or a dict {seq: result} (key 7 or "7"): a key '
        "that is no seq of the chunk fails the chunk (ChunkResultMismatch), a seq left out fails "
        "that item (MissingResult).",
    ),
]

COMMON_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live [./batch_output]."),
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Settings file [./batchtui.toml if present; on-finish and scheduler only from a file named here].",
    ),
    click.option("--headless", is_flag=True, help="No TUI: plain progress lines (the default without a terminal)."),
    click.option("--detach", is_flag=True, help="Run the engine in the background (output in engine.log) and return."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout."),
    click.option("--theme", help="TUI theme name."),
]


def apply(options: list[Callable[[Callable[..., Any]], Callable[..., Any]]]) -> Callable[[Callable[..., Any]], Any]:
    def deco(func: Callable[..., Any]) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return deco


def collect_flags(kwargs: dict[str, Any], ctx: click.Context) -> dict[str, Any]:
    from batchtui.engine.config import BatchConfig

    names = set(BatchConfig.model_fields)
    flags = {k: v for k, v in kwargs.items() if k in names and v is not None}
    if "output_dir" not in flags and (ctx.obj or {}).get("output_dir"):
        flags["output_dir"] = ctx.obj["output_dir"]
    return flags


# -- the group -------------------------------------------------------------------------------------


class Main(click.Group):
    """Turns user errors into one clear line and exit 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # The engine's error classes are looked up among the loaded modules only: an error
            # of a module that was never imported cannot have been raised (and importing the
            # store here, for a `batchtui ls`, would cost more than the command).
            if isinstance(exc, _loaded("errors", "UserError")):
                fail(str(exc), exc.exit_code)  # type: ignore[attr-defined]
            if isinstance(exc, _loaded("store", "StoreError")):
                fail(f"{exc}\n  the item store cannot be read; `batchtui show` still reads the manifest")
            if isinstance(exc, _loaded("files", "DamagedFile")):
                fail(f"{exc.path} is damaged ({exc.reason}) and has no good backup")  # type: ignore[attr-defined]
            if isinstance(exc, BrokenPipeError):
                sys.stderr.close()
                raise SystemExit(1) from None
            raise


def _loaded(module: str, name: str) -> tuple[type[Exception], ...]:
    """``batchtui.engine.<module>.<name>`` if that module is loaded (for isinstance), else ()."""
    mod = sys.modules.get(f"batchtui.engine.{module}")
    cls = getattr(mod, name, None) if mod is not None else None
    return (cls,) if isinstance(cls, type) and issubclass(cls, Exception) else ()


@click.group(cls=Main, context_settings=CONTEXT, invoke_without_command=True)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live [./batch_output].")
@click.option("--theme", help="TUI theme (dark, light, high-contrast, or one of yours).")
@click.option(
    "--color-system",
    type=click.Choice(["auto", "standard", "256", "truecolor", "none"]),
    help="Colours the terminal can show (e.g. 256 over SSH).",
)
@click.version_option(package_name="batchtui")
@click.pass_context
def main(ctx: click.Context, output_dir: str | None, theme: str | None, color_system: str | None) -> None:
    """Run work items through a command or a Python function, durably, and watch it live.

    \b
    batchtui run DIR --glob '*.pdf' --cmd 'pdftotext {path} {out}/text.txt'
    batchtui run urls.txt --call fetch.py:fetch --workers 8 --rate 5/s
    batchtui resume                 resume the latest unfinished batch
    batchtui ls / show / export     look at batches and their results

    Exit codes: 0 all complete, 1 some failed or skipped, 2 usage or config error,
    3 halted by a policy, 130 interrupted (resumable).
    """
    ctx.ensure_object(dict)
    ctx.obj["output_dir"] = output_dir
    ctx.obj["theme"] = theme
    ctx.obj["color_system"] = color_system
    if ctx.invoked_subcommand is None:
        if terminal():
            launch_tui(ctx, output_dir=output_dir_of(ctx, output_dir))
        ctx.invoke(ls_cmd, output_dir=output_dir, as_json=False)


def terminal() -> bool:
    """Whether a TUI can run: stdin and stdout are a terminal (not a pipe, not CI)."""
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def launch_tui(
    ctx: click.Context, *, output_dir: Path, batch: Path | None = None, runner: Any = None, theme: str | None = None
) -> NoReturn:
    """Run the Textual app and exit with its return code."""
    obj = ctx.find_root().obj or {}
    color_system = obj.get("color_system")
    if color_system:
        from batchtui.tui.themes import apply_color_system

        apply_color_system(color_system)  # before textual is imported
    from batchtui.tui.app import BatchtuiApp

    app = BatchtuiApp(output_dir=output_dir, batch=batch, runner=runner, theme=theme or obj.get("theme"))
    interrupted = False
    try:
        code = app.run()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        app.stop_engine_after_exit(interrupted=interrupted)
    code = _after_tui(app, code)
    if app.engine_running:
        # The engine's thread is stuck in an item that cannot be stopped (a --call function on
        # the thread executor): its batch went to a background engine, which waits for this
        # process to let go of the lock. The interpreter would wait for that thread: leave.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # The app leaves a large graph of objects (widgets, styles, caches). The interpreter's last
    # garbage collection of it took ~0.3 s between the terminal coming back and the shell
    # prompt (q -> prompt 0.55 s, now 0.27 s). Nothing of ours in it needs finalizing: the
    # engine has stopped and closed its files, and logging flushes its handlers at exit. So it
    # is frozen out of that collection, unless a user's callable ran in this process: its
    # objects may need that collection to finalize (a buffered file in a cycle, say).
    if runner is None or not _user_code_ran_here(runner):
        gc.freeze()
    raise SystemExit(code or 0)


def _after_tui(app: Any, code: int | None) -> int:
    """Once the TUI is gone, by whatever path: who runs its batch now (pid and the watch
    command), or the batch's summary; and the exit code. With the terminal gone this goes
    to /dev/null (hangup.py): the hand-off's lines are in engine.log."""
    from batchtui.engine.batchdir import BatchDir
    from batchtui.engine.errors import UserError

    handoff = app.handoff
    if app.engine_error is not None:
        click.echo(f"error: the engine stopped with an error: {clean(str(app.engine_error))}", err=True)
        code = code or (EXIT_USAGE if isinstance(app.engine_error, UserError) else 1)
    elif handoff is not None and handoff.pid is not None:
        code = 0  # the batch goes on: not interrupted
    elif handoff is not None and handoff.error:
        code = EXIT_USAGE
    elif app.runner is not None and app.engine_result is not None and not code:
        code = app.engine_result.exit_code
    path = app.runner.batch.path if app.runner is not None else app.initial_batch
    if path is None:
        return code or 0
    bdir = BatchDir(path)
    if handoff is not None and handoff.error:
        click.echo(f"error: batch {bdir.batch_id} was not handed over: {clean(handoff.error)}", err=True)
    try:
        _tell_who_runs(bdir, handoff)
    except (OSError, ValueError) as exc:  # a damaged batch: the exit must not fail on it
        click.echo(f"batch {bdir.batch_id}: {clean(str(exc))}", err=True)
    return code or 0


def _tell_who_runs(bdir: BatchDir, handoff: Any) -> None:
    import psutil

    from batchtui.engine.runner import RunResult, exit_code_for
    from batchtui.engine.store import ItemStore

    where = f"--output-dir {bdir.path.parent}"
    holder = bdir.alive()
    if holder is None and handoff is not None and handoff.pid is not None:
        try:  # the hand-off engine may still wait for the lock; then it is the one to watch
            waiting = psutil.Process(handoff.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            waiting = False
        if waiting:
            click.echo(f"batch {bdir.batch_id}: a background engine (pid {handoff.pid}) is taking it over")
            click.echo(f"  watch:  batchtui watch {bdir.batch_id} {where}")
            click.echo(f"  log:    {bdir.engine_log}")
            return
    if holder is not None:
        handed = handoff is not None and handoff.pid == holder.pid
        what = "handed to a background engine" if handed else "run by"
        click.echo(f"batch {bdir.batch_id}: {what} pid {holder.pid} on {holder.host}")
        click.echo(f"  watch:  batchtui watch {bdir.batch_id} {where}")
        click.echo(f"  stop:   batchtui stop {bdir.batch_id} {where}")
        click.echo(f"  log:    {bdir.engine_log}")
        return
    manifest = bdir.read_manifest()
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        counts = store.counts()
    finally:
        store.close()
    result = RunResult(bdir, manifest.state, counts, manifest.halt_reason, exit_code_for(manifest.state, counts))
    _finish_output(result, as_json=False)


def _user_code_ran_here(runner: Any) -> bool:
    """Whether the engine ran a ``--call`` callable in this process (the thread executor)."""
    return bool(runner.spec.kind == "python" and runner.config.resolved_executor("python") == "thread")


# -- run / demo / resume -------------------------------------------------------------------------


def _run_headless(runner: BatchRunner, as_json: bool) -> RunResult:
    printer = ProgressPrinter(runner.config.progress_interval)
    runner.on_progress = printer
    try:
        result = runner.run()
    finally:
        printer.close()
    _finish_output(result, as_json)
    return result


def _finish_output(result: RunResult, as_json: bool) -> None:
    from batchtui.engine.batchdir import resume_command
    from batchtui.engine.models import BatchState

    batch = result.batch
    # The engine's own word on how it ended (the manifest on disk may be stale when the disk
    # filled up at the end).
    manifest = batch.read_manifest().model_copy(update={"state": result.state, "halt_reason": result.halt_reason})
    live = batch.read_live()
    report = _read_json(batch.report)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch_id": batch.batch_id,
                    "batch_dir": str(batch.path),
                    "state": result.state.value,
                    "halt_reason": result.halt_reason,
                    "exit_code": result.exit_code,
                    "totals": result.counts.model_dump(),
                    "duplicates_dropped": manifest.duplicates_dropped,
                    "unreadable": manifest.unreadable.model_dump(),
                    "report": report,
                    "resume_command": None if result.state == BatchState.FINISHED else resume_command(batch),
                },
                indent=2,
            )
        )
    else:
        print_summary(batch, manifest, result.counts, live, report)


def _has_results(bdir: BatchDir) -> bool:
    try:
        return bdir.results.stat().st_size > 0
    except FileNotFoundError:
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _enqueue_note(n: int) -> None:
    click.echo(f"  enqueued {n:,} items...", err=True)


SOURCE_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.argument("sources", nargs=-1, required=True),
    click.option("--cmd", "command", help="Shell command template, e.g. 'wc -l < {path}' (values are shell-quoted)."),
    click.option("--call", help="Python callable: module:function or path/to/file.py:function."),
    click.option("--glob", help="For directories: only files matching, e.g. '*.py' or 'sub/*.csv'."),
    click.option("--follow-symlinks", is_flag=True, help="Follow symlinks when walking directories."),
    click.option(
        "--as",
        "as_kind",
        type=click.Choice(["auto", "files", "lines", "csv", "jsonl"]),
        default="auto",
        show_default=True,
        help="How to read file sources.",
    ),
    click.option("--encoding", default="utf-8", show_default=True, help="Encoding of line, CSV and JSONL sources."),
    click.option("--key-field", help="CSV/JSONL field that identifies a record (duplicates dropped on it)."),
    click.option("--delimiter", help="CSV delimiter [sniffed]."),
]

DRY_RUN_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--dry-run", is_flag=True, help="Validate every item without processing it; no batch is made."),
    click.option("--max-size-mb", type=Number("max_size_mb"), help="Dry run: flag files bigger than this."),
    click.option("--extensions", help="Dry run: flag files whose suffix is not in this comma list (.pdf,.png)."),
]


def _prepare(ctx: click.Context, kwargs: dict[str, Any]) -> tuple[BatchConfig, Any, Any]:
    """Config, source spec and processor spec from run/check arguments (one validation)."""
    from batchtui.engine.config import load_config
    from batchtui.engine.processors import python_spec, shell_spec
    from batchtui.engine.sources import build_spec

    command, call = kwargs.pop("command", None), kwargs.pop("call", None)
    if bool(command) == bool(call):
        fail("give exactly one of --cmd TEMPLATE or --call MODULE:FUNCTION")
    source_args = {
        k: kwargs.pop(k) for k in ("as_kind", "glob", "follow_symlinks", "encoding", "key_field", "delimiter")
    }
    sources = list(kwargs.pop("sources"))
    config = load_config(collect_flags(kwargs, ctx), config_file=kwargs.get("config_file"), on_file=note_config_file)
    spec = build_spec(sources, **source_args)
    # Never walk our own output: a source dir that contains the output dir would feed the
    # batch its own files.
    spec = spec.model_copy(update={"exclude": (str(Path(config.output_dir).resolve()),)})
    processor = shell_spec(command) if command else python_spec(call or "", chunked=config.chunk_size is not None)
    return config, spec, processor


def _print_preflight(pf: Any, as_json: bool, *, stream_err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(pf.as_dict(), indent=2))
        return
    marks = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}
    for c in pf.checks:
        click.echo(f"{marks[c.level]} {c.name}: {_plain(c.message)}", err=stream_err)
        if c.fix and c.level != "ok":
            click.echo(f"       fix: {_plain(c.fix)}", err=stream_err)
    click.echo(pf.verdict, err=stream_err)


def _gate(pf: Any) -> None:
    """run/resume refuse to start when preflight fails."""
    if not pf.proceed:
        _print_preflight(pf, False, stream_err=True)
        raise SystemExit(EXIT_USAGE)
    for c in pf.checks:
        if c.level == "warn":
            click.echo(f"warning: {c.name}: {_plain(c.message)}", err=True)


@main.command("run", context_settings=CONTEXT)
@apply(SOURCE_OPTIONS)
@apply(DRY_RUN_OPTIONS)
@apply(BATCH_OPTIONS)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def run_cmd(ctx: click.Context, **kwargs: Any) -> None:
    """Create a batch from SOURCES and run it.

    SOURCES: directories (walked recursively), files, line files (.txt: one item a line,
    e.g. URLs), CSV or JSONL files, or - for lines on stdin. Duplicates are dropped.

    \b
    Template placeholders (every value is shell-quoted):
      {} main value   {path} {name} {stem} {suffix} {parent}   {seq} {key}
      {out} a per-item folder in the batch dir   {field} a CSV/JSONL field
    """
    from batchtui.engine.preflight import preflight_new

    detach, headless, as_json = kwargs.pop("detach"), kwargs.pop("headless"), kwargs.pop("as_json")
    dry, max_size, extensions = kwargs.pop("dry_run"), kwargs.pop("max_size_mb"), kwargs.pop("extensions")
    config, spec, processor = _prepare(ctx, kwargs)
    if dry:
        _dry_run(spec, processor, max_size, extensions, as_json)
    _gate(preflight_new(config, spec, processor))
    _create_and_run(config, spec, processor, headless=headless, as_json=as_json, detach=detach)


def _dry_run(spec: Any, processor: Any, max_size: float | None, extensions: str | None, as_json: bool) -> NoReturn:
    from batchtui.engine.preflight import dry_run

    exts = tuple(e.strip() for e in (extensions or "").split(",") if e.strip())
    report = dry_run(spec, processor, max_size_mb=max_size, extensions=exts)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "items": report.items,
                    "duplicates_dropped": report.duplicates,
                    "problem_count": report.problem_count,
                    "problems": [{"origin": p.origin, "key": p.key, "problem": p.problem} for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        for p in report.problems:
            click.echo(f"{_plain(p.origin)}: {_plain(p.problem)}")
        if report.problem_count > len(report.problems):
            click.echo(f"... and {report.problem_count - len(report.problems)} more")
        click.echo(
            f"dry run: {report.items} items, {report.duplicates} duplicates dropped, "
            f"{report.problem_count} problems; nothing was run"
        )
    raise SystemExit(1 if report.problem_count else 0)


@main.command("check", context_settings=CONTEXT)
@click.argument("sources", nargs=-1)
@click.option("--batch", "batch_arg", help="Check a batch for resuming instead (an id or a path).")
@apply(SOURCE_OPTIONS[1:])
@apply(BATCH_OPTIONS)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def check_cmd(ctx: click.Context, batch_arg: str | None, **kwargs: Any) -> None:
    """Preflight: the same arguments as `run` (or --batch ID for a resume); prints each check
    and PROCEED (exit 0) or FIX_ISSUES (exit 2)."""
    from batchtui.engine.batchdir import resolve_batch
    from batchtui.engine.config import stored_config
    from batchtui.engine.preflight import preflight_new, preflight_resume
    from batchtui.engine.processors import ProcessorSpec
    from batchtui.engine.sources import SourceSpec

    as_json = kwargs.pop("as_json")
    for k in ("detach", "headless"):
        kwargs.pop(k, None)
    if batch_arg:
        bdir = resolve_batch(batch_arg, output_dir_of(ctx, kwargs.get("output_dir")))
        manifest = bdir.read_manifest()
        config = stored_config(manifest.config, bdir.manifest)
        pf = preflight_resume(
            config,
            bdir.path,
            SourceSpec.model_validate(manifest.source),
            ProcessorSpec.model_validate(manifest.processor),
        )
    else:
        if not kwargs.get("sources"):
            fail("give SOURCES and --cmd/--call as for `run`, or --batch BATCH")
        config, spec, processor = _prepare(ctx, kwargs)
        pf = preflight_new(config, spec, processor)
    _print_preflight(pf, as_json)
    raise SystemExit(0 if pf.proceed else EXIT_USAGE)


def _announce_detached(batch: BatchDir, pid: int, as_json: bool) -> None:
    where = f"--output-dir {batch.path.parent}"
    if as_json:
        info = {"batch_id": batch.batch_id, "batch_dir": str(batch.path), "pid": pid, "detached": True}
        click.echo(json.dumps({**info, "engine_log": str(batch.engine_log)}))
        return
    click.echo(f"batch {batch.batch_id}: engine running in the background (pid {pid})")
    click.echo(f"  watch:  batchtui watch {batch.batch_id} {where}")
    click.echo(f"  status: batchtui show {batch.batch_id} {where}")
    click.echo(f"  stop:   batchtui stop {batch.batch_id} {where}")
    click.echo(f"  log:    {batch.engine_log}")


def _create_and_run(
    config: BatchConfig,
    spec: Any,
    processor: Any,
    *,
    headless: bool,
    as_json: bool,
    detach: bool = False,
    stdin: TextIO | None = None,
) -> NoReturn:
    from batchtui.engine.enqueue import create_batch
    from batchtui.engine.runner import BatchRunner

    batch = create_batch(
        config, spec, processor, stdin=stdin if stdin is not None else sys.stdin, on_enqueue=_enqueue_note
    )
    manifest = batch.read_manifest()
    t = manifest.totals
    dup = f", {manifest.duplicates_dropped} duplicates dropped" if manifest.duplicates_dropped else ""
    bad = manifest.unreadable.count
    unread = f", {bad} unreadable path{'s' if bad != 1 else ''} left out" if bad else ""
    click.echo(f"batch {batch.batch_id}: {t.total} items{dup}{unread} -> {batch.path}", err=True)
    if bad:
        click.echo(f"warning: {_plain(manifest.unreadable.summary())}", err=True)
    if detach:
        from .launch import detach_engine

        _announce_detached(batch, detach_engine(batch, action="run"), as_json)
        raise SystemExit(0)
    reads_stdin = stdin is None and any(e.kind == "stdin" for e in spec.entries)
    if not headless and not as_json and terminal() and not reads_stdin:
        runner = BatchRunner(batch, config=config, action="run")
        launch_tui(click.get_current_context(), output_dir=batch.path.parent, runner=runner, theme=config.theme)
    runner = BatchRunner(batch, config=config, action="run", handle_signals=True)
    result = _run_headless(runner, as_json)
    raise SystemExit(result.exit_code)


@main.command("demo", context_settings=CONTEXT)
@click.option(
    "--items", "-n", type=click.IntRange(1, 10_000_000), default=200, show_default=True, help="How many demo items."
)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def demo_cmd(
    ctx: click.Context, items: int, config_file: str | None, headless: bool, as_json: bool, **kwargs: Any
) -> None:
    """Run the built-in demo: a pretend paid API with latency, retries and a few permanent errors."""
    import io

    from batchtui.engine.config import load_config
    from batchtui.engine.processors import demo_spec
    from batchtui.engine.sources import SourceEntry, SourceSpec

    detach = bool(kwargs.pop("detach", False))
    flags = collect_flags(kwargs, ctx)
    flags.setdefault("workers", 8)
    flags.setdefault("executor", "thread")
    flags.setdefault("backoff", 0.2)
    flags.setdefault("name", f"demo ({items} items)")
    config = load_config(flags, config_file=config_file, on_file=note_config_file)
    spec = SourceSpec(entries=(SourceEntry(kind="stdin", path="-"),))
    lines = io.StringIO("".join(f"https://api.example.com/v1/documents/{i:07d}\n" for i in range(items)))
    _create_and_run(config, spec, demo_spec(), headless=headless, as_json=as_json, detach=detach, stdin=lines)


@main.command("resume", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option("--retry-failed", is_flag=True, help="Put failed items back to pending first.")
@click.option("--engine-action", type=click.Choice(["run", "resume"]), default="resume", hidden=True)
@click.option("--overrides-json", hidden=True)
@click.option("--lock-wait", type=Number("lock_wait"), hidden=True)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def resume_cmd(
    ctx: click.Context,
    batch: str | None,
    retry_failed: bool,
    config_file: str | None,
    headless: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Resume BATCH (an id, a unique part of one, or a path) [default: the newest unfinished
    batch that no engine runs now; it says which and why].

    The stored config is used; operational options given here (workers, rate, timeout,
    thresholds...) override it and are recorded in the manifest's history.
    """
    from batchtui.engine.batchdir import BatchLock
    from batchtui.engine.config import OPERATIONAL, load_config, stored_config
    from batchtui.engine.models import BatchState
    from batchtui.engine.runner import BatchRunner, RunResult, exit_code_for
    from batchtui.engine.store import ItemStore

    detach = bool(kwargs.pop("detach", False))
    engine_action = str(kwargs.pop("engine_action", "resume"))
    overrides_json = kwargs.pop("overrides_json", None)
    lock_wait = kwargs.pop("lock_wait", None)
    out = output_dir_of(ctx, kwargs.get("output_dir"))
    # The engine's lock is taken before the batch is read and held until the engine ends (the
    # runner gets it), so a batch another engine runs fails here, before anything else, with
    # who runs it; not later as a toast in a TUI that shows it running. With --detach the
    # engine is another process: it takes the lock itself.
    bdir, lock = _resume_target(batch, out, hold=not detach, lock_wait=lock_wait)
    manifest = bdir.read_manifest()
    stored = stored_config(manifest.config, bdir.manifest)
    flags = {k: v for k, v in collect_flags(kwargs, ctx).items() if k != "output_dir"}
    if overrides_json:
        flags.update(json.loads(overrides_json))
    overrides_in = {k: v for k, v in flags.items() if k in OPERATIONAL}
    new = load_config(
        overrides_in,
        base=stored.model_dump(mode="json"),
        config_file=config_file,
        environ={},
        on_file=note_config_file,
    )
    # Only operational knobs may change on resume; the rest is the batch's identity.
    changed = {
        k: v
        for k, v in new.model_dump(mode="json").items()
        if k not in OPERATIONAL and stored.model_dump(mode="json").get(k) != v
    }
    if changed:
        fail(f"cannot change {', '.join(sorted(changed))} on resume (only operational settings may change)")
    from batchtui.engine.config import operational_overrides

    overrides = operational_overrides(stored, new)

    if not bdir.items_db.exists() and not _has_results(bdir) and manifest.state == BatchState.CREATED:
        # The engine died while creating the batch, before items.db existed: nothing ran, so
        # building the store from the source is exactly what the creation would have done.
        from batchtui.engine.recover import recover_batch

        click.echo(f"batch {bdir.batch_id} has no items.db yet (creation was cut short): building it", err=True)
        if lock is not None:
            lock.release()  # recover_batch takes the lock itself
        recover_batch(bdir)
        if lock is not None:
            lock = _hold_lock(bdir, lock_wait)
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        counts = store.counts()
    finally:
        store.close()
    if (
        manifest.state == BatchState.FINISHED
        and not (counts.pending or counts.processing)
        and not (retry_failed and counts.failed)
    ):
        click.echo(f"batch {bdir.batch_id} is finished; nothing to resume.", err=True)
        _finish_output(
            RunResult(bdir, manifest.state, counts, manifest.halt_reason, exit_code_for(manifest.state, counts)),
            as_json,
        )
        raise SystemExit(exit_code_for(manifest.state, counts))
    if retry_failed:
        retry_lock = lock if lock is not None else BatchLock(bdir.lock)
        retry_lock.acquire()
        try:
            rw = ItemStore.open(bdir.items_db, durable=new.fsync)
            try:
                n = len(rw.retry_failed())
            finally:
                rw.close()
        finally:
            if retry_lock is not lock:
                retry_lock.release()
        click.echo(f"requeued {n} failed items", err=True)
    from batchtui.engine.preflight import preflight_resume
    from batchtui.engine.processors import ProcessorSpec
    from batchtui.engine.sources import SourceSpec

    _gate(
        preflight_resume(
            new,
            bdir.path,
            SourceSpec.model_validate(manifest.source),
            ProcessorSpec.model_validate(manifest.processor),
            thorough=None,  # the full store check after a crash only
        )
    )
    if detach:
        from .launch import detach_engine

        pid = detach_engine(bdir, action="resume", overrides=overrides)
        _announce_detached(bdir, pid, as_json)
        raise SystemExit(0)
    click.echo(f"resuming batch {bdir.batch_id}: {counts.finished}/{counts.total} done", err=True)
    if not headless and not as_json and terminal():
        runner = BatchRunner(bdir, config=new, action=engine_action, overrides=overrides)
        assert lock is not None
        runner.lock = lock  # held since the start; the runner's own acquire() returns at once
        launch_tui(ctx, output_dir=bdir.path.parent, runner=runner, theme=kwargs.get("theme"))
    runner = BatchRunner(bdir, config=new, action=engine_action, overrides=overrides, handle_signals=True)
    runner.lock = lock
    result = _run_headless(runner, as_json)
    raise SystemExit(result.exit_code)


def _resume_target(
    arg: str | None, out: Path, *, hold: bool, lock_wait: float | None
) -> tuple[BatchDir, BatchLock | None]:
    """The batch `resume` runs and, when ``hold``, its lock (held).

    Without an arg it is the newest resumable batch that no engine runs, said on stderr with
    why. One that an engine took between the choice and the lock is passed over too.
    """
    from batchtui.engine.batchdir import BatchLocked, choose_resumable, resolve_batch

    if arg:
        bdir = resolve_batch(arg, out, unfinished=True)
        return bdir, (_hold_lock(bdir, lock_wait) if hold else None)
    tried: set[Path] = set()
    while True:
        choice = choose_resumable(out, exclude=frozenset(tried))
        lock = None
        if hold:
            try:
                lock = _hold_lock(choice.batch, None)
            except BatchLocked:
                tried.add(choice.batch.path)
                continue
        click.echo(f"resuming {choice.batch.batch_id} ({clean(choice.reason())})", err=True)
        return choice.batch, lock


def _hold_lock(bdir: BatchDir, wait: float | None) -> BatchLock:
    """Take ``bdir``'s engine lock. ``wait`` (the TUI's hand-off engine): how long to wait for
    the engine it takes over from to let go, said in engine.log (its stderr) as it goes."""
    from batchtui.engine.batchdir import BatchLock, BatchLocked, LockInfo, now_iso

    lock = BatchLock(bdir.lock)
    if not wait:
        lock.acquire()
        return lock
    t0 = time.monotonic()

    def waiting(holder: LockInfo | None) -> None:
        who = f"pid {holder.pid} on {holder.host}" if holder else "another process"
        click.echo(f"[{now_iso()}] waiting up to {wait:.0f} s for {who} to let go of batch {bdir.batch_id}", err=True)

    try:
        lock.acquire(wait=wait, on_wait=waiting)
    except BatchLocked as exc:
        fail(f"[{now_iso()}] {exc} (waited {wait:.0f} s to take the batch over)")
    if time.monotonic() - t0 > 0.5:
        click.echo(f"[{now_iso()}] took batch {bdir.batch_id} over after {time.monotonic() - t0:.1f} s", err=True)
    return lock


@main.command("watch", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.option("--theme", help="TUI theme.")
@click.pass_context
def watch_cmd(ctx: click.Context, batch: str | None, output_dir: str | None, theme: str | None) -> None:
    """Attach the dashboard to BATCH [default: the latest]: a running engine (here or in another
    process) or a finished batch. Its keys steer the engine through control.jsonl."""
    from batchtui.engine.batchdir import resolve_batch

    out = output_dir_of(ctx, output_dir)
    bdir = resolve_batch(batch, out)
    _refuse_newer(bdir)
    if not terminal():
        fail(f"watch needs a terminal; for a text summary use `batchtui show {bdir.batch_id}`")
    launch_tui(ctx, output_dir=out, batch=bdir.path, theme=theme)


def _refuse_newer(bdir: BatchDir) -> None:
    """NewerFormat (exit 2) when a newer batchtui made ``bdir``, for a command that does not
    otherwise need its manifest (a lost or damaged one is no matter to it)."""
    from batchtui.engine.files import DamagedFile
    from batchtui.engine.models import NewerFormat

    try:
        bdir.read_manifest()
    except NewerFormat:
        raise
    except (FileNotFoundError, DamagedFile):
        pass


# -- steering a batch ------------------------------------------------------------------------------


def _control(
    ctx: click.Context,
    batch: str | None,
    output_dir: str | None,
    op: ControlOp,
    wait: float,
    as_json: bool = False,
    **fields: Any,
) -> None:
    """Send one command to BATCH through the control client (engine/client.py) and print what
    came of it: acknowledged, applied offline, or queued without an acknowledgement (exit 1)."""
    from batchtui.engine.batchdir import resolve_batch
    from batchtui.engine.client import Applied, NotAcknowledged, send

    bdir = resolve_batch(batch, output_dir_of(ctx, output_dir))
    result = send(bdir, op, wait=wait, **fields)
    if isinstance(result, NotAcknowledged):
        # Exit 1 (not 2: the command was valid): it did not take effect, yet; it stays queued.
        if as_json:
            click.echo(json.dumps(result.as_json()))
        fail(result.describe(), 1)
    assert isinstance(result, Applied)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    elif result.engine:
        click.echo(f"{bdir.batch_id}: {op}: {result.message}")
    else:
        click.echo(f"{bdir.batch_id}: {op} (no engine running, store changed): {result.message}")


WAIT_OPTION = click.option(
    "--wait",
    type=Number("wait"),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the engine's acknowledgement (at most 30 days).",
)
DIR_OPTION = click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")


@main.command("pause", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def pause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Pause BATCH: no new items start; in-flight items finish."""
    _control(ctx, batch, output_dir, "pause", wait, as_json)


@main.command("unpause", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def unpause_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Let a paused BATCH go on."""
    _control(ctx, batch, output_dir, "resume", wait, as_json)


@main.command("stop", context_settings=CONTEXT)
@click.argument("batch", required=False)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def stop_cmd(ctx: click.Context, batch: str | None, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Stop BATCH gracefully (like SIGTERM): resumable later."""
    _control(ctx, batch, output_dir, "stop", wait, as_json)


@main.command("skip", context_settings=CONTEXT)
@click.argument("batch")
@click.argument("seqs", nargs=-1, type=SEQ, required=True)
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def skip_cmd(
    ctx: click.Context, batch: str, seqs: tuple[int, ...], wait: float, output_dir: str | None, as_json: bool
) -> None:
    """Skip items SEQS of BATCH (an in-flight one is killed)."""
    _control(ctx, batch, output_dir, "skip", wait, as_json, seqs=list(seqs))


@main.command("retry", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option("--type", "error_type", help="Only failed items with this error type (e.g. 'exit 4', TimeoutError).")
@click.option("--seq", "seqs", type=SEQ, multiple=True, help="Only these items (repeatable).")
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def retry_cmd(
    ctx: click.Context,
    batch: str | None,
    error_type: str | None,
    seqs: tuple[int, ...],
    wait: float,
    output_dir: str | None,
    as_json: bool,
) -> None:
    """Put failed items of BATCH back to pending (their attempt history is kept)."""
    seq_list = list(seqs) if seqs else None
    error_filter = {"error_type": error_type} if error_type else None
    _control(ctx, batch, output_dir, "retry", wait, as_json, seqs=seq_list, filter=error_filter)


@main.command("workers", context_settings=CONTEXT)
@click.argument("batch")
@click.argument("n", type=click.IntRange(1, 4096))
@WAIT_OPTION
@DIR_OPTION
@JSON_OPTION
@click.pass_context
def workers_cmd(ctx: click.Context, batch: str, n: int, wait: float, output_dir: str | None, as_json: bool) -> None:
    """Grow or shrink the worker pool of a running BATCH to N."""
    _control(ctx, batch, output_dir, "set_workers", wait, as_json, value=n)


# -- looking at batches ------------------------------------------------------------------------------


@main.command("ls", context_settings=CONTEXT)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list on stdout.")
@click.pass_context
def ls_cmd(ctx: click.Context, output_dir: str | None, as_json: bool) -> None:
    """List the batches in the output dir, newest first."""
    from batchtui.engine.batchdir import iter_batches
    from batchtui.engine.summary import DAMAGED, summarize

    out = output_dir_of(ctx, output_dir)
    rows = [summarize(b) for b in iter_batches(out)]
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no batches in {out}  (start one: batchtui run SOURCE --cmd '...', or batchtui demo)")
        return
    click.echo(f"{'BATCH':<25} {'STATE':<12} {'ENGINE':<10} {'DONE':>15} {'FAILED':>7} {'CREATED':<17} NAME")
    problems: list[str] = []
    for r in rows:
        if r.state == DAMAGED:
            click.echo(f"{r.batch_id:<25} {DAMAGED:<12} {'':<10} {'':>15} {'':>7} {'':<17} {_plain(r.error)}")
            continue
        t = r.totals
        engine = f"pid {r.engine.pid}" if r.engine else "-"
        state = r.state
        if r.engine and r.engine.problem:
            state = "unresponsive"  # a frozen, hung or dead engine: said in full below the table
            problems.append(f"{r.batch_id}: {r.engine.problem}")
        created = _local(r.created_at)
        progress = f"{t.finished}/{t.total}"
        click.echo(
            f"{r.batch_id:<25} {state:<12} {engine:<10} {progress:>15} {t.failed:>7}"
            f" {created:<17} {_plain(r.name)[:40]}"
        )
    for problem in problems:
        click.echo(f"NOT RESPONDING {problem}")


def _local(iso: str | None) -> str:
    from batchtui.engine.batchdir import parse_iso

    if not iso:
        return ""
    try:
        return datetime.fromtimestamp(parse_iso(iso)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


@main.command("show", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.option("--json", "as_json", is_flag=True, help="Everything as JSON on stdout.")
@click.pass_context
def show_cmd(ctx: click.Context, batch: str | None, output_dir: str | None, as_json: bool) -> None:
    """Summary, error breakdown and settings of BATCH [default: the latest]."""
    from batchtui.engine.batchdir import resolve_batch
    from batchtui.engine.store import ItemStore, StoreError

    out = output_dir_of(ctx, output_dir)
    bdir = resolve_batch(batch, out)
    manifest = bdir.read_manifest()
    live = bdir.read_live()
    report = _read_json(bdir.report)
    groups: list[dict[str, Any]] = []
    counts = manifest.totals
    from batchtui.engine.recover import store_is_healthy

    damaged = f"{bdir.items_db} is damaged or unreadable (the manifest says {manifest.state.value}, "
    damaged += f"{counts.finished}/{counts.total} done); rebuild it with `batchtui recover {bdir.batch_id}`"
    # A live engine would have failed on a damaged store; otherwise check it (SQLite quick_check,
    # for at most a second: `batchtui check` and `recover` check the whole file).
    if bdir.alive() is None and not store_is_healthy(bdir.items_db, budget_s=1.0):
        fail(damaged)
    try:
        store = ItemStore.open_readonly(bdir.items_db)
        try:
            counts = store.counts()
            groups = [g.model_dump() for g in store.error_groups(20)]
            by_category = store.errors_by("error_category")
        finally:
            store.close()
    except StoreError:
        fail(damaged)
    from batchtui.engine.summary import summarize

    summary = summarize(bdir)  # the state, engine and liveness ls and the browser show too
    engine_info = summary.engine
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch_id": bdir.batch_id,
                    "path": str(bdir.path),
                    "state": summary.state,
                    "summary": summary.model_dump(mode="json"),
                    "manifest": manifest.model_dump(mode="json"),
                    "counts": counts.model_dump(),
                    "live": live.model_dump(mode="json") if live else None,
                    "engine": engine_info.model_dump(mode="json") if engine_info else None,
                    "error_groups": groups,
                    "errors_by_category": by_category,
                    "report": report,
                },
                indent=2,
            )
        )
        return
    print_summary(bdir, manifest, counts, None, report, state=summary.state)
    click.echo(f"  Processor: {_plain(summary.command)}")
    engine = f"running, pid {engine_info.pid} on {engine_info.host}" if engine_info else "none"
    if engine_info and engine_info.badge:
        engine = f"{engine_info.badge}, pid {engine_info.pid} on {engine_info.host}"
    click.echo(f"  Created:   {_local(manifest.created_at)}   Engine: {engine}")
    if engine_info and engine_info.problem:
        click.echo(f"  Warning:   {engine_info.problem}")
    if summary.manifest_from_backup:
        click.echo(f"  Warning:   {bdir.manifest.name} is missing or damaged; this is its backup, manifest.json.bak")
    if live is not None and summary.counts_from == "live":
        # A frozen engine's figures are as old as its last write: not "now".
        click.echo(("  Last seen: " if summary.stale else "  Now:       ") + progress_line(live))
    if groups:
        click.echo("  Error breakdown (type, category, count, example):")
        for g in groups:
            click.echo(
                f"    {g['count']:>6}  {_plain(g['error_type'])}  [{g['category']}]  "
                f"#{g['example_seq']}: {_plain(g['example_message'])[:80]}"
            )
    if by_category:
        click.echo("  By category: " + ", ".join(f"{k} {v}" for k, v in by_category.items()))


@main.command("export", context_settings=CONTEXT)
@click.argument("batch", required=False)
@click.option(
    "--status",
    type=click.Choice(["pending", "processing", "complete", "failed", "skipped"]),
    help="Only items with this status.",
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--out", "-O", "out_file", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.pass_context
def export_cmd(
    ctx: click.Context, batch: str | None, status: str | None, fmt: str, out_file: str | None, output_dir: str | None
) -> None:
    """Stream the items of BATCH (all columns) as JSONL or CSV.

    To a file or a pipe the bytes are exact; to a terminal, control characters in keys, data
    and errors are shown escaped (JSONL as \\uXXXX, still JSON), never sent to the terminal.
    """
    from batchtui.engine.batchdir import resolve_batch
    from batchtui.engine.store import ItemStore

    out = output_dir_of(ctx, output_dir)
    bdir = resolve_batch(batch, out)
    _refuse_newer(bdir)
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        stream: TextIO = open(out_file, "w", newline="", encoding="utf-8") if out_file else sys.stdout  # noqa: SIM115
    except OSError as exc:
        store.close()
        fail(f"cannot write {_plain(out_file)}: {exc.strerror}")
    terminal_out = not out_file and stream.isatty()
    n = 0
    try:
        rows: Iterator[Any] = store.iter_rows(status=status)
        if fmt == "jsonl":
            for row in rows:
                stream.write(json.dumps(row.as_dict(), ensure_ascii=terminal_out) + "\n")
                n += 1
        else:
            import csv

            from batchtui.engine.store import ITEM_COLUMNS

            writer = csv.writer(stream)
            writer.writerow(ITEM_COLUMNS)
            for row in rows:
                d = row.as_dict()
                cells = [
                    json.dumps(d[c], ensure_ascii=False)
                    if c in ("data", "result") and d[c] is not None
                    else ("" if d[c] is None else d[c])
                    for c in ITEM_COLUMNS
                ]
                writer.writerow([clean(cell) for cell in cells] if terminal_out else cells)
                n += 1
    finally:
        store.close()
        if out_file:
            stream.close()
    if out_file:
        click.echo(f"exported {n} items to {out_file}", err=True)


@main.command("recover", context_settings=CONTEXT)
@click.argument("batch")
@click.option("--force", is_flag=True, help="Rebuild even when items.db looks healthy.")
@click.option("--no-salvage", is_flag=True, help="Take nothing from the damaged items.db (only the source + results).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.option("--json", "as_json", is_flag=True, help="What was rebuilt, as JSON on stdout.")
@click.pass_context
def recover_cmd(
    ctx: click.Context, batch: str, force: bool, no_salvage: bool, output_dir: str | None, as_json: bool
) -> None:
    """Rebuild the items.db of BATCH when it is damaged or missing: items from the source, results
    from results.jsonl; the damaged file is kept as items.db.corrupt-<time>. Then `batchtui resume`."""
    from batchtui.engine.batchdir import resolve_batch
    from batchtui.engine.recover import recover_batch

    bdir = resolve_batch(batch, output_dir_of(ctx, output_dir))
    result = recover_batch(bdir, force=force, salvage=not no_salvage)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.describe())


@main.command("cleanup", context_settings=CONTEXT)
@click.option(
    "--max-age-days",
    type=Number("max_age_days"),
    default=30,
    show_default=True,
    help="Remove batches whose last activity is older than this.",
)
@click.option("--include-unfinished", is_flag=True, help="Also remove resumable (unfinished) batches.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="Where batches live.")
@click.pass_context
def cleanup_cmd(
    ctx: click.Context, max_age_days: float, include_unfinished: bool, dry_run: bool, output_dir: str | None
) -> None:
    """Remove old finished batches (never one with a live engine)."""
    from batchtui.engine.batchdir import iter_batches, parse_iso
    from batchtui.engine.files import DamagedFile
    from batchtui.engine.models import BatchState, NewerFormat

    out = output_dir_of(ctx, output_dir)
    cutoff = time.time() - max_age_days * 86400
    removed = kept = failed = 0
    for bdir in iter_batches(out):
        if bdir.path.is_symlink():
            # Its batch lives elsewhere: never removed through a link (nor the link taken for it).
            click.echo(f"kept {bdir.batch_id}: a symbolic link to {_plain(os.readlink(bdir.path))}; not followed")
            kept += 1
            continue
        try:
            manifest = bdir.read_manifest()
            last = parse_iso(manifest.ended_at or manifest.started_at or manifest.created_at)
            finished = manifest.state == BatchState.FINISHED
        except NewerFormat:
            click.echo(f"kept {bdir.batch_id}: made by a newer batchtui")
            kept += 1
            continue
        except (FileNotFoundError, DamagedFile, ValueError):
            last = bdir.path.stat().st_mtime
            finished = False
        if last > cutoff or bdir.alive() is not None or (not finished and not include_unfinished):
            kept += 1
            continue
        age = (time.time() - last) / 86400
        click.echo(f"{'would remove' if dry_run else 'removing'} {bdir.batch_id} ({age:.0f} days old)")
        if not dry_run:
            try:
                shutil.rmtree(bdir.path)
            except OSError as exc:  # one batch that cannot go does not stop the others
                click.echo(f"error: cannot remove {bdir.batch_id}: {_plain(str(exc))}", err=True)
                failed += 1
                continue
        removed += 1
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {removed} batches, kept {kept}" + (f", {failed} could not be removed" if failed else ""), err=True
    )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="batchtui")


__all__ = ["main", "progress_line"]
