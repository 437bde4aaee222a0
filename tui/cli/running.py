"""Starting work: `run` (a new batch from sources), `demo`, and `check` (the preflight of either).

A new batch is created (sources read, items enqueued) and then run: in the TUI on a terminal,
with headless progress lines otherwise, or by a background engine (``--detach``).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

import click

from batchtui.engine.batchdir import BatchDir, BatchLock
from batchtui.engine.batches import resolve_batch
from batchtui.engine.config import BatchConfig, load_config
from batchtui.engine.enqueue import create_batch
from batchtui.engine.errors import EXIT_INTERRUPTED, EXIT_USAGE
from batchtui.engine.fmt import count
from batchtui.engine.preflight import fields_wanted, preflight_new, preflight_resume
from batchtui.engine.processors import ProcessorSpec, demo_spec, python_spec, shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import SourceEntry, SourceSpec, build_spec, expect_fields

from .group import CONTEXT, dashboard_here, terminal
from .options import (
    BATCH_OPTIONS,
    COMMON_OPTIONS,
    DRY_RUN_OPTIONS,
    OPERATIONAL_OPTIONS,
    SOURCE_OPTIONS,
    Int,
    apply,
    collect_flags,
    note_config_file,
    note_unused_theme,
    scope_of,
)
from .output import echo_json, fail, gate, note_one_item_list, plain, print_preflight
from .progress import EnqueueNote
from .summary import run_headless, start_detached


@click.command("run", context_settings=CONTEXT)
@apply(SOURCE_OPTIONS)
@apply(DRY_RUN_OPTIONS)
@apply(BATCH_OPTIONS)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def run_cmd(ctx: click.Context, /, **kwargs: Any) -> None:
    """Create a batch from SOURCES and run it.

    SOURCES: directories (walked recursively), files, line files (.txt: one item a line,
    e.g. URLs), CSV or JSONL files, or - for lines on stdin. Duplicates are dropped.

    \b
    Template placeholders (every value is shell-quoted):
      {} main value   {path} {name} {stem} {suffix} {parent}   {seq} {key}
      {out} a per-item folder in the batch dir   {field} a CSV/JSONL field
    """
    detach, headless, as_json = kwargs.pop("detach"), kwargs.pop("headless"), kwargs.pop("as_json")
    dry, max_size, extensions = kwargs.pop("dry_run"), kwargs.pop("max_size_mb"), kwargs.pop("extensions")
    show = kwargs.pop("show_commands")
    if not dry:
        # Given without --dry-run they would change nothing: say so, before a batch is made.
        given = [name for name in ("max_size_mb", "extensions", "show_commands") if _given(ctx, name)]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise click.UsageError(f"{flags} only {'applies' if len(given) == 1 else 'apply'} with --dry-run")
    note_unused_theme(ctx, headless=headless, as_json=as_json, detach=detach)
    config, spec, processor = _prepare(ctx, kwargs)
    pf = preflight_new(config, spec, processor)
    if dry:
        # A dry run says what `run` would do: its preflight's failures too (a program not on
        # PATH was "0 problems" here and refused by run), then the commands, exit 2 if refused.
        if not pf.proceed:
            print_preflight(pf, False, stream_err=True)
        batch_dir = str(Path(config.output_dir).resolve() / "<batch_id>")
        _dry_run(spec, processor, max_size, extensions, as_json, show=show, batch_dir=batch_dir, refused=not pf.proceed)
    gate(pf)
    _create_and_run(config, spec, processor, headless=headless, as_json=as_json, detach=detach)


@click.command("check", context_settings=CONTEXT)
@click.argument("sources", nargs=-1)
@click.option("--batch", "batch_arg", help="Check a batch for resuming instead (an id or a path).")
@apply(SOURCE_OPTIONS[1:])
@apply(BATCH_OPTIONS)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def check_cmd(ctx: click.Context, /, batch_arg: str | None, **kwargs: Any) -> None:
    """Preflight: the same arguments as `run` (or --batch ID for a resume); prints each check
    and PROCEED (exit 0) or FIX_ISSUES (exit 2)."""
    as_json = kwargs.pop("as_json")
    for k in ("detach", "headless"):
        kwargs.pop(k, None)
    if batch_arg:
        from batchtui.engine.resume import resume_config

        _only_what_a_resume_takes(ctx)
        bdir = resolve_batch(batch_arg, scope_of(ctx, kwargs.get("output_dir")))
        manifest = bdir.read_manifest()
        # The config the resume would run with: the stored one and the operational flags given
        # here (they were parsed, then ignored: `check --batch B --max-failure-rate 0.9` checked
        # the stored 0.5).
        flags = {k: v for k, v in collect_flags(kwargs, ctx).items() if k != "output_dir"}
        _stored, config = resume_config(
            bdir, manifest, flags, config_file=kwargs.get("config_file"), on_file=note_config_file
        )
        pf = preflight_resume(
            config,
            bdir.path,
            SourceSpec.model_validate(manifest.source),
            ProcessorSpec.model_validate(manifest.processor),
            last=manifest.config,
        )
        _check_halts_before_start(pf, bdir, manifest, config)
    else:
        if not kwargs.get("sources"):
            fail("give SOURCES and --cmd/--call as for `run`, or --batch BATCH")
        config, spec, processor = _prepare(ctx, kwargs)
        pf = preflight_new(config, spec, processor)
    print_preflight(pf, as_json)
    raise SystemExit(0 if pf.proceed else EXIT_USAGE)


#: What `check --batch` takes besides the operational settings: it checks a resume.
_CHECK_BATCH_TAKES: Final = frozenset({"batch_arg", "output_dir", "config_file", "as_json", "headless", "detach"})


def _only_what_a_resume_takes(ctx: click.Context) -> None:
    """`check --batch` checks a resume: SOURCES, a command, or a setting a resume cannot change
    are refused as resume refuses them (they were taken and ignored: `check --batch B --cmd X`
    checked the stored command and said PROCEED)."""
    from batchtui.engine.config import OPERATIONAL

    given = [
        p
        for p in ctx.command.params
        if p.name is not None
        and p.name not in OPERATIONAL
        and p.name not in _CHECK_BATCH_TAKES
        # Given, with a value: click 8.1 says an empty nargs=-1 argument came from the command line.
        and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE
        and ctx.params.get(p.name) not in (None, ())
    ]
    if any(p.name == "sources" for p in given):
        fail("check --batch checks a resume of that batch, which reads no SOURCES (`batchtui add` adds them)")
    if given:
        names = ", ".join(p.opts[0] if isinstance(p, click.Option) else p.name or "" for p in given)
        fail(f"check --batch checks a resume, which cannot change {names} (only operational settings may change)")


def _check_halts_before_start(pf: Any, bdir: BatchDir, manifest: Any, config: BatchConfig) -> None:
    """A resume that would halt before anything starts (its failure rate over the limit, its
    spend at the cap) is said as a warning, with the way on."""
    from batchtui.engine.errors import BatchtuiError
    from batchtui.engine.resume import costs_so_far, halts_before_start

    try:
        cost = costs_so_far(bdir, config)
    except (BatchtuiError, OSError):
        return  # the store check above says why
    halts = halts_before_start(config, manifest.totals, cost)
    if halts:
        reason, way = halts
        pf.add("policy", "warn", f"a resume with these settings halts before anything starts ({reason})", way)


#: What the demo runs with unless a flag, BATCHTUI_* or batchtui.toml says otherwise.
DEMO_DEFAULTS: Final = {"workers": 8, "executor": "thread", "backoff": 0.2}


@click.command("demo", context_settings=CONTEXT)
@click.option(
    "--items",
    "-n",
    type=Int(1, 10_000_000),
    default=None,
    help="How many demo items [default: about a minute's worth on a terminal, else 200].",
)
@apply(OPERATIONAL_OPTIONS)
@apply(COMMON_OPTIONS)
@click.pass_context
def demo_cmd(
    ctx: click.Context, /, items: int | None, config_file: str | None, headless: bool, as_json: bool, **kwargs: Any
) -> None:
    """Run the built-in demo: a pretend paid API with latency, retries and a few permanent errors."""
    detach = bool(kwargs.pop("detach", False))
    note_unused_theme(ctx, headless=headless, as_json=as_json, detach=detach)
    flags = collect_flags(kwargs, ctx)
    config = load_config(flags, config_file=config_file, on_file=note_config_file)
    # The demo's own defaults sit where every default does, below batchtui.toml and BATCHTUI_*:
    # given as flags, they beat BATCHTUI_WORKERS and the file's workers.
    unset = {k: v for k, v in DEMO_DEFAULTS.items() if k not in config.model_fields_set}
    if unset:
        config = load_config({**unset, **flags}, config_file=config_file, on_file=note_config_file)
    from batchtui.engine.demo import demo_items  # only the demo verb needs it

    if items is None:  # on a terminal long enough to explore the dashboard; headless short (CI)
        items = demo_items(config.workers, on_terminal=not (headless or as_json or detach) and terminal())
    if "name" not in flags:
        config = config.model_copy(update={"name": f"demo ({items} items)"})
    spec = SourceSpec(entries=(SourceEntry(kind="stdin", path="-"),))
    lines = io.StringIO("".join(f"https://api.example.com/v1/documents/{i:07d}\n" for i in range(items)))
    _create_and_run(config, spec, demo_spec(), headless=headless, as_json=as_json, detach=detach, stdin=lines)


# The shared options' help states run's defaults; the demo's own are these (each command has
# its own Option objects, so this changes demo's --help only).
for _param in demo_cmd.params:
    if _param.name in DEMO_DEFAULTS and isinstance(_param, click.Option) and _param.help:
        _param.help = re.sub(r"\[[^]]*\]", f"[default: {DEMO_DEFAULTS[_param.name]}]", _param.help, count=1)


def _given(ctx: click.Context, name: str) -> bool:
    """The user gave option ``name`` (on the command line or in the environment), rather than
    leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


def _prepare(ctx: click.Context, kwargs: dict[str, Any]) -> tuple[BatchConfig, SourceSpec, ProcessorSpec]:
    """Config, source spec and processor spec from run/check arguments (one validation)."""
    command, call = kwargs.pop("command", None), kwargs.pop("call", None)
    if bool(command) == bool(call):
        fail("give exactly one of --cmd TEMPLATE or --call MODULE:FUNCTION")
    source_args = {
        k: kwargs.pop(k) for k in ("as_kind", "glob", "follow_symlinks", "encoding", "key_field", "delimiter")
    }
    sources = list(kwargs.pop("sources"))
    config = load_config(collect_flags(kwargs, ctx), config_file=kwargs.get("config_file"), on_file=note_config_file)
    spec = build_spec(sources, **source_args)
    note_one_item_list(spec, source_args["as_kind"])
    if config.limit_by:  # limits' module only for a run that sets --limit-by
        from batchtui.engine.limits import check_limit_source
        from batchtui.engine.sources.records import fields_of, piped_records

        # A piped CSV/JSONL has its fields checked as it arrives (expect_fields below).
        known = None if piped_records(spec) else fields_of(spec)
        check_limit_source(config.limit_by, [entry.kind for entry in spec.entries], known)
    # Never walk our own output: a source dir that contains the output dir would feed the
    # batch its own files.
    spec = spec.model_copy(update={"exclude": (str(Path(config.output_dir).resolve()),)})
    processor = shell_spec(command) if command else python_spec(call or "", chunked=config.chunk_size is not None)
    return config, expect_fields(spec, fields_wanted(processor, config.limit_by, spec)), processor


def _dry_run(
    spec: SourceSpec,
    processor: ProcessorSpec,
    max_size: float | None,
    extensions: str | None,
    as_json: bool,
    *,
    show: int = 0,
    batch_dir: str = "",
    refused: bool = False,
) -> NoReturn:
    from batchtui.engine.dryrun import dry_run  # a run that runs never loads it

    exts = tuple(e.strip() for e in (extensions or "").split(",") if e.strip())
    report = dry_run(spec, processor, max_size_mb=max_size, extensions=exts, show=show, batch_dir=batch_dir)
    if as_json:
        echo_json(
            {
                "items": report.items,
                "duplicates_dropped": report.duplicates,
                "problem_count": report.problem_count,
                "problems": [{"origin": p.origin, "key": p.key, "problem": p.problem} for p in report.problems],
                "left_out": report.unreadable.left_out,
                "preflight": "fail" if refused else "ok",
                "runs": [
                    {"seq": r.seq, "key": r.key, **({"argv": list(r.argv)} if r.argv else {"call": r.call})}
                    for r in report.runs
                ],
            }
        )
    else:
        if report.runs:
            where = f" (in {processor.cwd})" if processor.kind == "shell" else ""
            click.echo(f"the first {count(len(report.runs), 'item')} would run{plain(where)}:")
            for r in report.runs:
                # The command line /bin/sh -c gets, every value quoted as it will be (control
                # characters in it shown escaped, never sent to the terminal).
                click.echo(f"  [{r.seq}] {plain(r.argv[2] if r.argv else r.call)}")
        for p in report.problems:
            click.echo(f"{plain(p.origin)}: {plain(p.problem)}")
        if report.problem_count > len(report.problems):
            click.echo(f"... and {report.problem_count - len(report.problems)} more")
        if report.unreadable.left_out:
            click.echo(f"note: {plain(report.unreadable.left_out_summary())}")
        click.echo(
            f"dry run: {count(report.items, 'item')}, {count(report.duplicates, 'duplicate')} dropped, "
            f"{count(report.problem_count, 'problem')}; nothing was run"
            + ("; run would refuse to start (preflight FAIL above)" if refused else "")
        )
    raise SystemExit(EXIT_USAGE if refused else 1 if report.problem_count else 0)


def _create_and_run(
    config: BatchConfig,
    spec: SourceSpec,
    processor: ProcessorSpec,
    *,
    headless: bool,
    as_json: bool,
    detach: bool = False,
    stdin: TextIO | None = None,
) -> NoReturn:
    held: list[BatchLock] = []
    note = EnqueueNote()
    try:  # a Ctrl-C, SIGTERM or SIGHUP (the CLI's group makes them one: tui/cli/group.py)
        try:
            batch: BatchDir = create_batch(
                config,
                spec,
                processor,
                stdin=stdin if stdin is not None else sys.stdin,
                on_enqueue=note,
                keep_lock=held.append,  # the engine below (or the --detach one) holds it on
                detach=detach,
            )
        finally:
            note.close()  # the note's line ended before anything else is said
    except KeyboardInterrupt:  # create_batch removed what it had made
        with contextlib.suppress(OSError):  # a hung-up terminal
            click.echo("interrupted while reading the sources: no batch was made", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    manifest = batch.read_manifest()
    t = manifest.totals
    dup = (
        f", {count(manifest.duplicates_dropped, 'duplicate', grouped=True)} dropped"
        if manifest.duplicates_dropped
        else ""
    )
    bad = manifest.unreadable.count
    unread = f", {count(bad, 'unreadable path')} left out" if bad else ""
    items = count(t.total, "item", grouped=True)
    click.echo(f"batch {batch.batch_id}: {items}{dup}{unread} -> {plain(str(batch.path))}", err=True)
    if bad:
        click.echo(f"warning: {plain(manifest.unreadable.summary())}", err=True)
    if manifest.unreadable.left_out:
        click.echo(f"note: {plain(manifest.unreadable.left_out_summary())}", err=True)
    if detach:
        start_detached(batch, action="run", as_json=as_json, lock=held[0])
        raise SystemExit(0)
    reads_stdin = stdin is None and any(e.kind == "stdin" for e in spec.entries)
    if not headless and not as_json and not reads_stdin and dashboard_here(batch.batch_id):
        from .watching import launch_tui  # the dashboard's path only: a headless run never loads it

        runner = BatchRunner(batch, config=config, action="run")
        runner.lock = held[0]
        here = click.get_current_context()
        # The run's own --theme, else the group's flag before the settings' (theme_of).
        flag = config.theme if _given(here, "theme") else None
        launch_tui(here, output_dir=batch.path.parent, runner=runner, theme=flag, config=config)
    runner = BatchRunner(batch, config=config, action="run", handle_signals=True)
    runner.lock = held[0]
    result = run_headless(runner, as_json)
    raise SystemExit(result.exit_code)


__all__ = ["check_cmd", "demo_cmd", "run_cmd"]
