"""The ``batchtui`` group: its verbs, loaded on demand, and the one place errors become exit codes.

Start-up is part of every run's cost (a batch of a few items, a script calling ``batchtui`` in
a loop): :class:`Main` is click's lazy group (click's docs, "lazily loading subcommands"). It
imports a verb's module only when that verb runs (or its --help is asked), and ``batchtui
--help`` lists the verbs from :data:`VERBS` without importing any: so ``--help`` and
``--version`` load no engine module, and ``ls`` never the runner, the store or the executors.
tests/test_startup.py checks both, and that the list :data:`VERBS` gives is the one each
command's own docstring would.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import os
import re
import signal
import sys
from collections.abc import Iterator
from typing import Any, Final

import click

from batchtui.engine.errors import EMPTY_MEANS_NONE, EXIT_INTERRUPTED, EXIT_USAGE, NO_THREAD, BatchtuiError
from batchtui.engine.interrupts import catch

from . import collector
from .output import fail, json_stdout

#: The exit code when the reader of the output went away (``batchtui export B | head``): a death
#: by SIGPIPE, as cat and every filter reports it under ``set -o pipefail``. 1 would read as
#: "some items failed".
EXIT_BROKEN_PIPE: Final = 128 + signal.SIGPIPE
#: A write to the output that can fail for want of room or of a working device (``> /dev/full``).
_OUTPUT_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})

CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: Each verb: the module under batchtui.tui.cli that defines it, the command's name there, and
#: the first paragraph of its docstring (what ``batchtui --help`` shows beside it).
VERBS: Final[dict[str, tuple[str, str, str]]] = {
    "add": (
        "adding",
        "add_cmd",
        "Add the items of SOURCES to BATCH (no engine may run it): the same key rules and duplicate "
        "counting as at its creation; a later `resume --rescan` reads these sources too.",
    ),
    "check": (
        "running",
        "check_cmd",
        "Preflight: the same arguments as `run` (or --batch ID for a resume); prints each check "
        "and PROCEED (exit 0) or FIX_ISSUES (exit 2).",
    ),
    "cleanup": (
        "maintenance",
        "cleanup_cmd",
        "Remove old finished batches (never one with a live engine): those `ls` lists, so the output dir's "
        "and every registered one; with --output-dir, that folder's only. Registered batches whose folder "
        "was moved or deleted (`gone` in `ls`) are forgotten by the registry.",
    ),
    "demo": (
        "running",
        "demo_cmd",
        "Run the built-in demo: a pretend paid API with latency, retries and a few permanent errors.",
    ),
    "errors": ("inspecting", "errors_cmd", "The error groups of BATCH [default: the latest], biggest first."),
    "export": (
        "exporting",
        "export_cmd",
        "Stream the items of BATCH (all columns) as JSONL or CSV, or as GNU parallel's job log.",
    ),
    "logs": (
        "logs",
        "logs_cmd",
        "Print the output of item SEQ of BATCH (its stdout, or stderr with --err: a shell command's, "
        "or what a Python callable printed) of its latest attempt or of --attempt N; -f follows it "
        "until the item has finished.",
    ),
    "ls": (
        "inspecting",
        "ls_cmd",
        "List every batch, newest first: those in the output dir and every batch made elsewhere (they "
        "are registered under $XDG_STATE_HOME/batchtui); with --output-dir, that folder only. A registered "
        "batch whose folder was moved or deleted is `gone`: counted in a last line, listed with --all "
        "(`cleanup` forgets them).",
    ),
    "pause": ("steering", "pause_cmd", "Pause BATCH: no new items start; in-flight items finish."),
    "prioritize": (
        "steering",
        "prioritize_cmd",
        "Run items of BATCH first: they go to the front of the queue (failed ones retried).",
    ),
    "recover": (
        "maintenance",
        "recover_cmd",
        "Rebuild the items.db of BATCH when it is damaged or missing: items from the source, results "
        "from results.jsonl; the damaged file is kept as items.db.corrupt-<time>. Then `batchtui resume`.",
    ),
    "resume": (
        "resuming",
        "resume_cmd",
        "Resume BATCH (a path, an id, a name, or a unique part of an id) [default: the newest "
        "unfinished batch that no engine runs now in the output dir, or when it has none among the "
        "registered batches (made in any folder); it says which, where and why].",
    ),
    "retry": ("steering", "retry_cmd", "Put failed items of BATCH back to pending (their attempt history is kept)."),
    "run": ("running", "run_cmd", "Create a batch from SOURCES and run it."),
    "serve": (
        "serving",
        "serve_cmd",
        "Serve the dashboard of BATCH (or the browser of every batch when none is given) over HTTP, for a "
        "browser: the same app as the terminal's, read-only unless --allow-control. Every request needs the "
        "token in the URL printed at start; /status.json?token=... gives the batch's summary as JSON. Needs "
        "the extra: pip install 'batchtui[serve]'.",
    ),
    "show": ("inspecting", "show_cmd", "Summary, error breakdown and settings of BATCH [default: the latest]."),
    "skip": ("steering", "skip_cmd", "Skip items of BATCH: SEQ... or a selection (an in-flight one is killed)."),
    "stop": ("steering", "stop_cmd", "Stop BATCH gracefully (like SIGTERM): resumable later."),
    "unpause": ("steering", "unpause_cmd", "Let a paused BATCH go on."),
    "wait": (
        "waiting",
        "wait_cmd",
        "Wait until BATCH [default: the latest] ends and exit with its exit code.",
    ),
    "watch": (
        "watching",
        "watch_cmd",
        "Attach the dashboard to BATCH (a path, an id, a name, or a unique part of an id) [default: "
        "the latest batch of the output dir, or when it has none the latest registered one]: a running "
        "engine (here or in another process) or a finished batch. Its keys steer the engine through "
        "control.jsonl.",
    ),
    "workers": ("steering", "workers_cmd", "Grow or shrink the worker pool of a running BATCH to N."),
}


class Main(click.Group):
    """The lazy group of the verbs in :data:`VERBS`; turns batchtui's errors into one clear line
    and the error's exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] == "run":  # before the verb's module (and the engine) is imported
            from .warmup import start_ahead

            start_ahead(args[1:])
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        module, name, _ = VERBS[cmd_name]
        command = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        assert isinstance(command, click.Command), f"{module}.{name} is not a click command"
        return json_only(refuse_empty(negative_numbers(command)))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verbs and their short help from :data:`VERBS`, as click lays them out (the
        default imports every verb's module to read its docstring)."""
        limit = formatter.width - 6 - max(len(name) for name in VERBS)
        # A bare Command cut to ``limit`` as click cuts each command's docstring.
        rows = [
            (name, click.Command(name, help=VERBS[name][2]).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            # SIGTERM and SIGHUP end a verb as a Ctrl-C does (DESIGN: 130 for the three), so what
            # it cleans up on the way out is cleaned (an `export --out` left its temporary file
            # and exited 143). The engine and the dashboard put their own handlers in place.
            with interrupted_by(signal.SIGTERM, signal.SIGHUP):
                return super().invoke(ctx)
        except BatchtuiError as exc:
            fail(exc.describe(), exc.exit_code)
        except BrokenPipeError:
            _drop_stdout()
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:  # a Ctrl-C no verb handled (one while it starts, say)
            click.echo("interrupted", err=True)  # not click's "Aborted!" and exit 1 (some failed)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except RuntimeError as exc:
            # threading's "can't start new thread": the system's limit on processes (which
            # threads count against) is reached. Nothing of a batch is lost: say so plainly.
            if "can't start new thread" not in str(exc):
                raise
            fail(f"cannot start a thread: {NO_THREAD}", EXIT_USAGE)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """click's, with a Ctrl-C while the arguments are read said as one (exit 130): click's
        main makes any KeyboardInterrupt outside :meth:`invoke` "Aborted!" and exit 1, which
        says "some items failed"."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError, ValueError):  # a hung-up terminal
                click.echo("interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's main, and the one failure no verb can report well: its output could not be
        written (a full disk, ``> /dev/full``). One line on stderr, exit 2, no traceback."""
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            # A write to an open stream names no file; anything else is no output error.
            if exc.errno not in _OUTPUT_ERRNOS or exc.filename is not None:
                raise
            _drop_stdout()
            fail(f"cannot write the output: {exc.strerror}")


def json_only(command: click.Command) -> click.Command:
    """``command`` with its ``--json`` (when it has one) keeping stdout for the JSON alone: the
    verb runs inside :func:`~.output.json_stdout`, so what user code, a library or a child
    process writes to descriptor 1 meanwhile goes to stderr."""
    inner = command.callback
    if inner is None or getattr(command, "_json_only", False) or not any(p.name == "as_json" for p in command.params):
        return command

    @functools.wraps(inner)
    def callback(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("as_json"):
            return inner(*args, **kwargs)
        with json_stdout():
            return inner(*args, **kwargs)

    command.callback = callback
    command._json_only = True  # type: ignore[attr-defined]  # once, however often it is asked
    return command


_NEGATIVE: Final = re.compile(r"-[0-9]+(\.[0-9]+)?\Z")


def negative_numbers(command: click.Command) -> click.Command:
    """``command`` reading a negative number given where a value goes as that value, not as an
    option: ``workers B -1`` said "No such option '-1'", not that N must be 1 to 4096."""
    if getattr(command, "_negatives", False):
        return command
    parse = command.parse_args

    def parse_args(ctx: click.Context, args: list[str]) -> list[str]:
        return parse(ctx, numbers_as_values(command, args))

    command.parse_args = parse_args  # type: ignore[method-assign]
    command._negatives = True  # type: ignore[attr-defined]  # once, however often it is asked
    return command


def numbers_as_values(command: click.Command, args: list[str]) -> list[str]:
    """``args`` with each negative number that is no option's value and no option's name moved
    after a ``--`` at their end, where click reads it as a positional value (the last of them:
    N of ``workers``, the seqs of ``skip``). Left as typed when they hold a ``--`` already."""
    if "--" in args:
        return args
    options = [p for p in command.params if isinstance(p, click.Option)]
    names = {name for p in options for name in (*p.opts, *p.secondary_opts)}
    with_value = {name for p in options if not p.is_flag and not p.count for name in p.opts}
    kept: list[str] = []
    moved: list[str] = []
    for i, token in enumerate(args):
        if _NEGATIVE.match(token) and token not in names and not (i and args[i - 1] in with_value):
            moved.append(token)
        else:
            kept.append(token)
    return [*kept, "--", *moved] if moved else args


def refuse_empty(command: click.Command) -> click.Command:
    """``command`` with every text option and its BATCH argument refusing an empty value.

    An empty value is most often an unset shell variable (``--output-dir "$OUT"``, ``skip "$B"
    3``), and read as "not given" it widens what the command does: the latest batch instead of
    the one meant, every failed item for ``--type ''``, the current folder for ``--output-dir
    ''``, every interface for ``serve --host ''``. Options in :data:`EMPTY_MEANS_NONE` are the
    exception: there an empty value is the way to say "none".
    """
    for param in command.params:
        if getattr(param, "_empty_refused", False) or param.name in EMPTY_MEANS_NONE:
            continue
        if not isinstance(param.type, click.types.StringParamType | click.Path):
            continue
        if isinstance(param, click.Option) and param.is_flag:
            continue
        if isinstance(param, click.Argument) and param.name != "batch":
            continue  # a source or a seq says itself what is wrong with an empty one
        param.callback = _empty_refused(param.callback)
        param._empty_refused = True  # type: ignore[attr-defined]  # once, however often it is asked
    return command


def _empty_refused(previous: Any) -> Any:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if _has_empty(value):
            what = "a batch id, path or name" if isinstance(param, click.Argument) else "a value"
            raise click.BadParameter(f"is empty (an unset shell variable?): give {what}, or leave it out")
        return previous(ctx, param, value) if previous is not None else value

    return check


def _has_empty(value: Any) -> bool:
    """Whether ``value`` is or holds (repeated options, several values each) an empty text."""
    return value == "" or (isinstance(value, tuple) and any(_has_empty(v) for v in value))


def _drop_stdout() -> None:
    """What is still buffered for stdout goes nowhere: Python's flush at exit would fail again
    and print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no stdout at all
        pass


@click.group(cls=Main, context_settings=CONTEXT, invoke_without_command=True)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False),
    help="Where batches live [./batch_output]; given, only that folder's batches [also every registered one].",
)
@click.option("--theme", help="TUI theme (dark, light, high-contrast, nord, gruvbox-light, or one of yours).")
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
    3 halted by a policy, 130 interrupted (resumable); `wait --timeout` running out: 124.
    """
    # Every invocation passes here, after the verb's module is imported and before it runs (or
    # before the batch browser starts, when no verb is given): the start is over.
    collector.resume()
    ctx.ensure_object(dict)
    ctx.obj["output_dir"] = output_dir
    ctx.obj["theme"] = theme
    ctx.obj["color_system"] = color_system
    if ctx.invoked_subcommand is None:
        if terminal():
            from .options import scope_of
            from .watching import launch_tui

            launch_tui(ctx, output_dir=scope_of(ctx, output_dir))
        ls = main.get_command(ctx, "ls")
        assert ls is not None
        ctx.invoke(ls, output_dir=output_dir, as_json=False)


def terminal() -> bool:
    """Whether a TUI can run: stdin and stdout are a terminal (not a pipe, not CI), and this
    process is not a background job of it (:func:`in_background`)."""
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not in_background()


def in_background() -> bool:
    """Whether this process is a background job of its terminal (`batchtui run ... &` in an
    interactive shell): its process group is not the terminal's foreground group. A TUI there
    is stopped by the kernel at its first touch of the terminal (SIGTTOU): the run sat stopped,
    its batch locked, until `fg`. Such a run goes headless instead (:func:`dashboard_here`)."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp()
    except (OSError, ValueError):  # not this process's controlling terminal, or stdin closed
        return False


def dashboard_here(batch_id: str) -> bool:
    """Whether `run` or `resume` shows the dashboard (:func:`terminal`); a run started as a
    background job says once that it runs headless, and how to watch it."""
    if terminal():
        return True
    if in_background():
        click.echo(
            f"note: started in the background: progress lines instead of the dashboard"
            f" (`batchtui watch {batch_id}` shows it)",
            err=True,
        )
    return False


refuse_empty(main)


@contextlib.contextmanager
def interrupted_by(*signals: signal.Signals) -> Iterator[None]:
    """``signals`` end what runs inside as a Ctrl-C does (KeyboardInterrupt), not by their default
    death: what it was doing is undone or cleaned on the way out (a half-made batch removed, a
    temporary file deleted) and the exit is 130, as DESIGN gives for the three."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        before = catch(signals, interrupt)  # one ignored when batchtui started stays ignored
    except ValueError:  # not the main thread (the CLI called from a thread of another program)
        before = {}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


__all__ = [
    "CONTEXT",
    "EMPTY_MEANS_NONE",
    "VERBS",
    "Main",
    "dashboard_here",
    "in_background",
    "main",
    "refuse_empty",
    "terminal",
]
