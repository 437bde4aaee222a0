"""Preflight checks (``batchtui check``).

Preflight answers "will this batch start and run?" before anything is spent: the output dir,
the source, the processor (the callable imports and takes an item; the command's program
exists; the template's fields exist in the source), the config, and for a resume the store.
``run`` and ``resume`` run the same checks and refuse with FIX_ISSUES.

The dry run (``--dry-run``, engine/dryrun.py) goes further: it reads every item.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from .config import BatchConfig
from .dask_leave import check_left_cluster, cluster_left
from .errors import UserError
from .fmt import clean, count, shell_line
from .processors import ProcessorSpec, accepts_one_argument, load_callable
from .shell.direct import DASH_BUILTINS, DASH_KEYWORDS
from .shell.programs import scan_programs
from .shell.template import CommandTemplate
from .sources import SourceEntry, SourceSpec, fields_of, iter_items, piped_records

Level = Literal["ok", "warn", "fail"]
MIN_FREE_MB: Final = 100

#: Words that are not programs to look for on PATH: dash's builtins and keywords, and bash's
#: (a /bin/sh that lacks one says so when it runs; never refused here).
SHELL_WORDS: Final = (
    DASH_BUILTINS
    | DASH_KEYWORDS
    | frozenset(
        [
            "!",
            "[[",
            "function",
            "let",
            "{",
            "(",
            "time",
            "builtin",
            "caller",
            "declare",
            "dirs",
            "disown",
            "enable",
            "mapfile",
            "popd",
            "pushd",
            "readarray",
            "shopt",
            "source",
            "typeset",
        ]
    )
)


class Check(NamedTuple):
    """One preflight check's outcome."""

    name: str
    level: Level
    message: str
    fix: str = ""


@dataclass
class Preflight:
    """All checks; ``proceed`` is False when any failed."""

    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, level: Level, message: str, fix: str = "") -> None:
        self.checks.append(Check(name, level, message, fix))

    @property
    def proceed(self) -> bool:
        return all(c.level != "fail" for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PROCEED" if self.proceed else "FIX_ISSUES"

    def as_dict(self) -> dict[str, object]:
        return {
            "recommendation": self.verdict,
            "checks": [{"name": c.name, "level": c.level, "message": c.message, "fix": c.fix} for c in self.checks],
        }


def check_output_dir(pf: Preflight, output_dir: Path, need_mb: float = MIN_FREE_MB) -> None:
    target = output_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    if not os.access(target, os.W_OK | os.X_OK):
        pf.add("output dir", "fail", f"{output_dir} is not writable", "pick another --output-dir")
        return
    try:
        if output_dir.exists():
            with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".batchtui-check-"):
                pass
    except OSError as exc:
        pf.add("output dir", "fail", f"cannot write in {output_dir}: {exc.strerror}", "pick another --output-dir")
        return
    free_mb = shutil.disk_usage(target).free / 1048576
    if free_mb < need_mb:
        pf.add(
            "output dir",
            "fail",
            f"{output_dir}: only {free_mb:.0f} MB free (need {need_mb:.0f} MB)",
            "free some space or use another --output-dir",
        )
        return
    pf.add("output dir", "ok", f"{output_dir} writable, {free_mb / 1024:.1f} GB free")


def check_source(pf: Preflight, source: SourceSpec) -> None:
    streams = [e for e in source.entries if _read_once(e)]
    if streams:
        # Reading stdin or a pipe here would eat the items it reads: the enqueue reads it, once.
        what = "stdin" if all(e.kind == "stdin" for e in streams) else "a pipe or device"
        pf.add("source", "ok", f"{len(source.entries)} source(s); {what} is read when the batch is made")
        return
    try:
        first = next(iter(_peek(source)), None)
    except UserError as exc:
        pf.add("source", "fail", str(exc))
        return
    if first is None:
        pf.add("source", "warn", "the source has no items", "check the path and --glob")
    else:
        pf.add("source", "ok", f"{count(len(source.entries), 'source')} readable, first item {first!r}"[:160])


def _read_once(entry: SourceEntry) -> bool:
    """Whether reading ``entry`` takes its items away (stdin, a FIFO, ``/dev/fd/N``, a device):
    what the preflight read of a named pipe was lost to the batch (200 items of 202)."""
    if entry.kind == "stdin":
        return True
    try:
        mode = os.stat(entry.path).st_mode
    except OSError:
        return False  # the read below says why
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _peek(source: SourceSpec) -> Iterator[str]:
    for item in iter_items(source):
        yield item.key
        return


def check_processor(pf: Preflight, processor: ProcessorSpec, source: SourceSpec | None) -> None:
    if processor.kind == "shell":
        _check_command(pf, processor, source)
    elif processor.kind == "python":
        _check_callable(pf, processor)
    else:
        pf.add("processor", "ok", "built-in demo processor")


def _check_command(pf: Preflight, processor: ProcessorSpec, source: SourceSpec | None) -> None:
    assert processor.command is not None
    try:
        template = CommandTemplate(processor.command)
    except UserError as exc:
        pf.add("command", "fail", str(exc))
        return
    scan = scan_programs(processor.command)
    missing: list[str] = []
    found: list[str] = []
    for program in dict.fromkeys(scan.programs):  # each once, in order
        if program in SHELL_WORDS or program in scan.functions:
            continue
        if "/" in program:
            path = Path(processor.cwd, program) if not os.path.isabs(program) else Path(program)
            if path.is_file() and os.access(path, os.X_OK):
                found.append(program)
            else:
                pf.add("command", "fail", f"{program} is not an executable file", "fix the path in --cmd")
                missing.append(program)
        elif shutil.which(program):
            found.append(program)
        else:
            pf.add("command", "fail", f"{program!r} is not on PATH", f"install {program} or give its full path")
            missing.append(program)
    if scan.uncertain:
        pf.add(
            "command",
            "warn",
            f"not checked: {'; '.join(dict.fromkeys(scan.uncertain))}",
            "make sure it exists where the batch runs",
        )
    if not missing:
        what = ", ".join(found) if found else "shell words only"
        pf.add("command", "ok", f"programs found: {what}"[:160] if found else f"runs {what}")
    if source is not None:
        check_template_fields(pf, template, source)


def fields_wanted(processor: ProcessorSpec, limit_by: str | None, source: SourceSpec) -> dict[str, str]:
    """The record fields a run takes from its CSV/JSONL records, each with what names it:
    what :func:`.sources.expect_fields` has a piped entry checked as it arrives."""
    wanted: dict[str, str] = {}
    if limit_by:
        from .limits import limit_fields  # only for a run that sets --limit-by

        wanted.update(dict.fromkeys(limit_fields(limit_by, (e.kind for e in source.entries)), "--limit-by"))
    if processor.kind == "shell" and processor.command:
        wanted.update(dict.fromkeys(CommandTemplate(processor.command).fields, "the template"))
    return wanted


def check_template_fields(pf: Preflight, template: CommandTemplate, source: SourceSpec) -> None:
    """The record fields the template names are in the source (CSV/JSONL headers or first
    records); nothing to check when it names none."""
    needed = template.fields
    if not needed:
        return
    available = fields_of(source)
    if available is None:
        pf.add(
            "template fields",
            "fail",
            f"the template uses {', '.join(sorted(needed))} but the source has no fields (not CSV/JSONL)",
            "use {} or {path}, or a CSV/JSONL source",
        )
        return
    missing = sorted(needed - available)
    piped = piped_records(source)
    if missing and piped:
        pipes = ", ".join(clean(os.path.basename(p)) for p in piped)
        pf.add(
            "template fields",
            "warn",
            f"{', '.join(missing)} not checked yet: {pipes} {'is a pipe' if len(piped) == 1 else 'are pipes'},"
            " whose header (first record) is checked as it arrives, before anything runs",
        )
    elif missing:
        pf.add(
            "template fields",
            "fail",
            f"the template uses {', '.join(missing)}, which the source lacks"
            f" (it has: {', '.join(sorted(available)) or 'nothing'})",
            "fix the placeholder names or the source",
        )
    else:
        pf.add("template fields", "ok", f"{', '.join(sorted(needed))} present in the source")


def _check_callable(pf: Preflight, processor: ProcessorSpec) -> None:
    assert processor.call is not None
    try:
        # What the module prints as it is imported goes to stderr: stdout is the command's own
        # output (`run --json` writes its JSON there).
        with contextlib.redirect_stdout(sys.stderr):
            func = load_callable(processor.call, processor.cwd)
    except UserError as exc:
        pf.add("callable", "fail", str(exc), "fix the module or the --call spec")
        return
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        # Called as it is, it returns a coroutine and never runs: every item would fail with
        # "coroutine is not JSON serializable" (and a "never awaited" warning in its log).
        pf.add(
            "callable",
            "fail",
            f"{processor.call} is an async function: batchtui calls it without an event loop",
            "call it from a plain function: def run(item): return asyncio.run(f(item))",
        )
        return
    if not accepts_one_argument(func):
        pf.add(
            "callable",
            "fail",
            f"{processor.call} cannot be called with one argument (the item)",
            "give it the signature f(item)",
        )
        return
    pf.add("callable", "ok", f"{processor.call} imports and takes an item")


def check_config(pf: Preflight, config: BatchConfig, processor: ProcessorSpec) -> None:
    executor = config.resolved_executor(processor.kind)
    notes = [f"{config.workers} workers, {executor} executor, max {config.max_attempts} attempts"]
    if config.adaptive_timeout is not None:
        cap = f", at most {config.timeout:g}s" if config.timeout else ""
        notes.append(f"timeout {config.adaptive_timeout.percent:g}% of the median success{cap}")
    elif config.timeout:
        notes.append(f"timeout {config.timeout:g}s")
    if config.rate:
        notes.append(f"rate {config.rate:g}/s")
    if config.max_cost is not None:
        notes.append(f"max cost {config.max_cost:g}")
    pf.add("config", "ok", ", ".join(notes))
    if config.chunk_size is not None and processor.kind != "python":
        pf.add("config", "fail", "--chunk-size applies to --call processors only", "drop --chunk-size")
    if config.scheduler and executor != "dask":
        # Without --executor dask the items ran on local threads or processes: the scheduler a
        # user named (often from BATCHTUI_SCHEDULER or a config file) was accepted and ignored.
        pf.add(
            "config",
            "fail",
            f"--scheduler applies to the dask executor only; this batch would run on the {executor} executor",
            "add --executor dask, or drop --scheduler (BATCHTUI_SCHEDULER, scheduler in the config file)",
        )
    if executor == "dask":
        try:
            import importlib

            importlib.import_module("dask.distributed")
        except ImportError:
            pf.add("executor", "fail", "the dask executor needs the extra: pip install 'batchtui[dask]'")
        if config.scheduler:
            check_scheduler(pf, config.scheduler)


#: The comms a dask scheduler is reached by from another process (``inproc://`` is one process's).
SCHEDULER_SCHEMES: Final = ("tcp", "tls", "ws", "wss", "ucx")


def scheduler_unreachable(address: str, timeout: float = 3.0) -> tuple[str, str] | None:
    """Whether a dask scheduler answers at ``address``: None when it does (or cannot be told
    without a client: ws://, ucx://), else ("address", why) for an address that is not one, or
    ("reach", "HOST:PORT: why") for one that does not answer as a scheduler. Over tcp:// a
    scheduler speaks first: a port that takes the connection and says nothing (the dashboard's
    8787, any web server) is not one, and a dask client waits on it for ever (distributed#8071)."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return "address", f"{address!r} is not host:port"
    if address.partition("://")[0] not in SCHEDULER_SCHEMES and "://" in address:  # dask reads no TCP://
        return (
            "address",
            f"{address!r} is not a dask scheduler's address (tcp://HOST:PORT; or tls://, ws://, wss://, ucx://)",
        )
    if parts.scheme not in ("tcp", "tls"):
        return None
    if not host or port is None or parts.path or parts.query or parts.fragment:
        return "address", f"{address!r} is not host:port"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return "reach", f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    with sock:
        try:
            if parts.scheme == "tcp" and not sock.recv(1):
                return "reach", f"{host}:{port}: it closed the connection (no dask scheduler listens there)"
        except TimeoutError:
            return "reach", (
                f"{host}:{port}: it took the connection and sent nothing in {timeout:g}s, where a dask scheduler"
                " speaks at once (a hung scheduler, or another server: a dashboard's port, 8787?)"
            )
        except OSError as exc:
            return "reach", f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return None


def check_scheduler(pf: Preflight, address: str, timeout: float = 3.0) -> None:
    """The scheduler answers: a wrong address fails here in seconds, not after the client's 15 s."""
    problem = scheduler_unreachable(address, timeout)
    if problem is None:
        pf.add("scheduler", "ok", f"dask scheduler {address} answers")
    elif problem[0] == "address":
        pf.add("scheduler", "fail", f"--scheduler {problem[1]}", "e.g. tcp://10.0.0.5:8786")
    else:
        pf.add(
            "scheduler",
            "fail",
            f"cannot reach the dask scheduler at {problem[1]}",
            "start it (`dask scheduler`) or fix --scheduler",
        )


def check_store(pf: Preflight, batch_path: Path, *, thorough: bool | None = True) -> None:
    """The batch's manifest and item store can be read.

    ``thorough`` runs SQLite's quick_check over the whole store (a full read: about 1 s for
    1M items). ``None`` decides from the manifest: thorough when the last engine never wrote
    its end (killed, a crash, a power loss), else only the store's header and schema are read,
    which an engine that stopped cleanly left consistent. ``batchtui check`` is always thorough.
    """
    from .batchdir import BatchDir
    from .files import DamagedFile
    from .models import BatchState
    from .store import ItemStore, StoreError
    from .store.connection import StoreBusy, busy

    bdir = BatchDir(batch_path)
    try:
        manifest = bdir.read_manifest()
    except (FileNotFoundError, DamagedFile) as exc:
        pf.add("manifest", "fail", f"{bdir.manifest}: {exc}", "restore manifest.json.bak")
        return
    if thorough is None:
        thorough = manifest.state in (BatchState.CREATED, BatchState.RUNNING, BatchState.PAUSED, BatchState.STOPPING)
    try:
        store = ItemStore.open_readonly(bdir.items_db)  # reads the schema version
        try:
            if thorough:
                counts = store.counts()
                store.conn.execute("PRAGMA quick_check").fetchone()
            else:
                counts = manifest.totals
                store.max_seq()  # down the items table's b-tree once
        finally:
            store.close()
    except (StoreError, Exception) as exc:
        locked = isinstance(exc, StoreBusy) or busy(exc)
        pf.add(
            "store",
            "fail",
            f"{bdir.items_db} is not readable: {exc}",
            StoreBusy.hint
            if locked
            else f"{shell_line('batchtui', 'recover', bdir.batch_id)} rebuilds it from results.jsonl and the source",
        )
        return
    pf.add(
        "store",
        "ok",
        f"{count(counts.total, 'item')}, {counts.finished} finished, {counts.pending + counts.processing} to do",
    )
    if bdir.results.exists() and not os.access(bdir.results, os.R_OK | os.W_OK):
        pf.add("results", "fail", f"{bdir.results} is not writable")


def preflight_new(config: BatchConfig, source: SourceSpec, processor: ProcessorSpec) -> Preflight:
    pf = Preflight()
    check_output_dir(pf, Path(config.output_dir).resolve())
    check_source(pf, source)
    check_processor(pf, processor, source)
    check_config(pf, config, processor)
    return pf


def preflight_resume(
    config: BatchConfig,
    batch_path: Path,
    source: SourceSpec,
    processor: ProcessorSpec,
    *,
    thorough: bool | None = True,
    last: Mapping[str, Any] | None = None,
) -> Preflight:
    """The checks before a resume; ``last``: the config the batch last ran with (the manifest's),
    for a resume that moves it off the dask cluster it ran on (:mod:`.dask_leave`)."""
    pf = Preflight()
    check_store(pf, batch_path, thorough=thorough)
    check_output_dir(pf, batch_path.parent, need_mb=10)
    check_processor(pf, processor, None)
    check_config(pf, config, processor)
    left = cluster_left(last, config) if last is not None else None
    if left is not None:
        pf.add("cluster", *check_left_cluster(left, batch_path, processor.kind))
    return pf
