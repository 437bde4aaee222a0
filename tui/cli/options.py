"""The options the verbs share, and what they resolve to (settings, the output dir).

Each list is applied with :func:`apply`, so `run`, `resume`, `check` and `demo` take the same
flags with the same checks. Numbers are checked as they are parsed by engine/config.py's one
validator (:class:`Number`), so a bad value is a usage error before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from batchtui.engine.adaptive import split_timeout
from batchtui.engine.batches import BatchScope
from batchtui.engine.config import BatchConfig, check_number, load_config
from batchtui.engine.numbers import ascii_number, to_float

from .output import plain

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

if TYPE_CHECKING:
    # Recent click types ParamType by the value it makes and the input it takes; the lower bound's
    # (8.1) is not subscriptable at run time, so the parameters exist for mypy only.
    FloatParamType = click.ParamType[float, Any]
    TimeoutParamType = click.ParamType[float | str, Any]
else:
    FloatParamType = TimeoutParamType = click.ParamType


class Number(FloatParamType):
    """A float option checked as it is parsed by the one validator, engine/config.py's
    ``check_number``: finite and within the bounds of ``field`` (`--timeout inf` or `1e10` is a
    usage error here, not an OverflowError in every item after its command started)."""

    name = "float"

    def __init__(self, field: str) -> None:
        self.field = field

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = to_float(value) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number (digits 0-9)", param, ctx)
        try:
            return check_number(self.field, number, typed=value if isinstance(value, str) else None)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Int(click.IntRange):
    """A whole-number option or argument in a range, written with the digits 0-9 (click's own
    int() took '٣' for 3: engine/numbers.py)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                ascii_number(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return super().convert(value, param, ctx)


class TimeoutValue(TimeoutParamType):
    """``--timeout``: seconds (checked as :class:`Number` checks them), or an adaptive limit
    ``P%[,min=D][,max=D][,after=N]`` (engine/adaptive.py), passed on as text for the config."""

    name = "timeout"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if isinstance(value, (int, float)):
            return Number("timeout").convert(value, param, ctx)
        try:
            seconds, rule = split_timeout(str(value))
            if rule is None:
                assert seconds is not None
                return check_number("timeout", seconds, typed=str(value))
            if seconds is not None:
                try:
                    check_number("timeout", seconds)
                except ValueError as exc:
                    raise ValueError(f"max={exc}") from None
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip()


#: The largest seq (models.MAX_SEQ: SQLite's integers are 64-bit).
MAX_SEQ: Final = (1 << 63) - 1
SEQ: Final = Int(0, MAX_SEQ)


OPERATIONAL_OPTIONS: list[Decorator] = [
    click.option("--workers", "-j", type=Int(1, 4096), help="Items run at once [default: CPU count, 2+]."),
    click.option(
        "--executor",
        type=click.Choice(["thread", "process", "dask"]),
        help="Where items run [default: thread for --cmd, process for --call].",
    ),
    click.option(
        "--scheduler", help="Dask scheduler address tcp://HOST:PORT (with --executor dask) [a local cluster]."
    ),
    click.option("--max-attempts", type=Int(1, 100), help="Attempts per item for transient errors [3]."),
    click.option(
        "--timeout",
        type=TimeoutValue(),
        help="Seconds an item may run (at most 30 days); or P% of the median success: 300%[,min=1s]"
        "[,max=60s][,after=10] (from the 10th success on, never under min, never over max).",
    ),
    click.option("--grace", type=Number("grace"), help="Seconds in-flight items get on stop [10] (at most 30 days)."),
    click.option("--backoff", type=Number("backoff"), help="First retry delay in seconds [1] (at most 30 days)."),
    click.option(
        "--backoff-max", type=Number("backoff_max"), help="Longest retry delay in seconds [60] (at most 30 days)."
    ),
    click.option(
        "--max-failure-rate",
        type=Number("max_failure_rate"),
        help="Halt once failed/finished is over this (a rate equal to it goes on).",
    ),
    click.option("--min-items", type=Int(min=1), help="Checked from the N-th finished item on [20]."),
    click.option(
        "--max-cost", type=Number("max_cost"), help="Halt before the summed `cost` passes this (at most 1e15)."
    ),
    click.option("--rate", help="At most this many items a second: N, N/s, N/m or N/h (at most 1e6/s)."),
    click.option(
        "--limit-by",
        nargs=2,
        metavar="TEMPLATE RATE[,CONCURRENCY]",
        help="A rate and an in-flight cap per key, e.g. --limit-by '{host}' 5/s,4 ({host}: a URL line's host; "
        "other placeholders as --cmd's). A retry-after (429) slows its key down.",
    ),
    click.option(
        "--memory-limit-mb",
        type=Number("memory_limit_mb"),
        help="Pause dispatch while engine+children RSS is over this.",
    ),
    click.option("--window", type=Int(min=1), help="Items in flight at most [4 x workers x chunk]."),
    click.option("--fsync/--no-fsync", default=None, help="fsync results and the store at each group commit [on]."),
    click.option("--on-finish", help="Shell command run at the end with report.json on stdin."),
    click.option(
        "--on-event",
        nargs=2,
        multiple=True,
        metavar="EVENTS CMD",
        callback=lambda ctx, param, value: tuple(value) or None,  # not given: the config's hooks stay
        help="Run CMD with each event of EVENTS (a comma list of halt, stall, new-group, finish) as "
        "JSON on stdin; repeatable. Logged in events.jsonl, never fatal.",
    ),
    click.option(
        "--hook-timeout",
        type=Number("hook_timeout"),
        help="Seconds an --on-event or --on-finish command may run before it is killed [60] (at most 3600).",
    ),
    click.option(
        "--progress-interval",
        type=Number("progress_interval"),
        help="Seconds between headless lines [2] (at most 30 days).",
    ),
    click.option(
        "--max-result-bytes",
        help="An item whose result is more JSON than this fails (ResultTooLarge): e.g. 512K or 64M [16M]; at most 512M.",
    ),
]

BATCH_OPTIONS: list[Decorator] = [
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
    click.option(
        "--log-limit",
        type=Int(0, 1 << 40),
        help="Bytes of each attempt's stdout and stderr kept in logs/ (the last ones) [1048576: 1 MiB].",
    ),
]

COMMON_OPTIONS: list[Decorator] = [
    click.option(
        "--output-dir",
        "-o",
        type=click.Path(file_okay=False),
        help="Where new batches go [./batch_output]; resume: only the batches there [also every registered one].",
    ),
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Settings file [./batchtui.toml if present; on-finish, on-event and scheduler only from a file named here].",
    ),
    click.option("--headless", is_flag=True, help="No TUI: plain progress lines (the default without a terminal)."),
    click.option("--detach", is_flag=True, help="Run the engine in the background (output in engine.log) and return."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout."),
    click.option("--theme", help="TUI theme name."),
]

SOURCE_OPTIONS: list[Decorator] = [
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
    click.option("--encoding", help="Encoding of line, CSV and JSONL sources [utf-8]."),
    click.option("--key-field", help="CSV/JSONL field that identifies a record (duplicates dropped on it)."),
    click.option("--delimiter", help="CSV delimiter [sniffed]."),
]

DRY_RUN_OPTIONS: list[Decorator] = [
    click.option("--dry-run", is_flag=True, help="Validate every item without processing it; no batch is made."),
    click.option("--max-size-mb", type=Number("max_size_mb"), help="Dry run: flag files bigger than this."),
    click.option("--extensions", help="Dry run: flag files whose suffix is not in this comma list (.pdf,.png)."),
    click.option(
        "--show-commands",
        type=Int(0, 10_000),
        default=5,
        show_default=True,
        help="Dry run: print what the first N items would run (the command line, values quoted, or the call).",
    ),
]

WAIT_OPTION: Final = click.option(
    "--wait",
    type=Number("wait"),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the engine's acknowledgement (at most 30 days; 0: queue it and return).",
)
DIR_OPTION: Final = click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False),
    help="Only the batches in this folder [the output dir, then every registered batch].",
)
JSON_OPTION: Final = click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")


def apply(options: list[Decorator]) -> Callable[[Callable[..., Any]], Any]:
    """Apply a list of options to a command, in the list's order on its --help."""

    def deco(func: Callable[..., Any]) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return deco


def collect_flags(kwargs: dict[str, Any], ctx: click.Context) -> dict[str, Any]:
    """The settings the user gave as flags (None: not given), with the group's --output-dir."""
    names = set(BatchConfig.model_fields)
    flags = {k: v for k, v in kwargs.items() if k in names and v is not None}
    if "output_dir" not in flags and (ctx.obj or {}).get("output_dir"):
        flags["output_dir"] = ctx.obj["output_dir"]
    return flags


_told_config: set[Path] = set()


def note_config_file(path: Path, explicit: bool) -> None:
    """Say on stderr which config file a command read (once a process): a batchtui.toml that
    came with a downloaded folder is never read unnoticed."""
    if path not in _told_config:
        _told_config.add(path)
        click.echo(f"config: {plain(str(path))}" + ("" if explicit else " (found in the current folder)"), err=True)


def note_unused_theme(ctx: click.Context, *, headless: bool, as_json: bool, detach: bool) -> None:
    """``--theme`` styles the dashboard: given on the command line to a run that shows none, say
    so rather than take it silently (from the environment or a config file it is a standing
    preference, not a request for this run)."""
    if (
        not (headless or as_json or detach)
        or ctx.get_parameter_source("theme") != click.core.ParameterSource.COMMANDLINE
    ):
        return
    how = "--detach" if detach else "--json" if as_json else "--headless"
    click.echo(f"note: --theme styles the dashboard, which a {how} run does not show: it is not used", err=True)


def theme_of(ctx: click.Context, flag: str | None, config: BatchConfig | None = None) -> str:
    """The dashboard's theme: the verb's --theme, the group's (``batchtui --theme T watch``), then
    the settings' layers (``config``, when the verb has read them, else BATCHTUI_THEME and
    batchtui.toml). Only the flags were read once: ``theme = "light"`` in batchtui.toml was
    validated, stored in the manifest, and ignored by ``watch``, ``resume`` and the browser."""
    value = flag or (ctx.find_root().obj or {}).get("theme")
    if value:
        return str(value)
    if config is None:
        config = load_config({}, on_file=note_config_file, implicit_code="drop")
    return config.theme


def output_dir_of(ctx: click.Context, flag: str | None) -> Path:
    """Where batches live: the verb's --output-dir, the group's, then the settings' layers."""
    value = flag or (ctx.obj or {}).get("output_dir")
    # Only the output dir is taken: settings that run code are left out, not refused, here.
    config = load_config({"output_dir": value} if value else {}, on_file=note_config_file, implicit_code="drop")
    return Path(config.output_dir)


def scope_of(ctx: click.Context, flag: str | None) -> BatchScope:
    """Where a verb looks for batches: with ``--output-dir`` (the verb's or the group's) that
    folder alone; otherwise the configured output dir first, then every registered batch
    (engine/registry.py), wherever it was made."""
    given = bool(flag or (ctx.obj or {}).get("output_dir"))
    return BatchScope(output_dir_of(ctx, flag), only=given)


__all__ = [
    "BATCH_OPTIONS",
    "COMMON_OPTIONS",
    "DIR_OPTION",
    "DRY_RUN_OPTIONS",
    "JSON_OPTION",
    "OPERATIONAL_OPTIONS",
    "SEQ",
    "SOURCE_OPTIONS",
    "WAIT_OPTION",
    "Decorator",
    "Number",
    "apply",
    "collect_flags",
    "note_config_file",
    "note_unused_theme",
    "output_dir_of",
    "scope_of",
]
