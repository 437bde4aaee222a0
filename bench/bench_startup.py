"""Where a run's start-up goes: a 1-item `--cmd true` run, phase by phase and import by import.

    python -m bench.bench_startup [--reps 9]

Issue 22's `true` bench (bench_shell) is 3,000 items of about 0.5 ms each, so a fixed cost of a
quarter of a second is most of what separates batchtui from xargs there. This bench splits that
fixed cost, each round in fresh processes, interleaved:

  python -c pass            the interpreter (with site, as the console script starts)
  the stack's floor         python -c 'import click; from pydantic import BaseModel': what any
                            CLI on this stack pays before its own code runs
  batchtui, 1 item          batchtui run one.txt --cmd true --headless, end to end, with its
                            timeline read from the batch: launch -> the engine's run began
                            (report.json started_at) -> the item started (items.db started_at)
                            -> the process ended (millisecond stamps, the wall clock)
  xargs, 1 item             xargs -n1 true on the same file (the peer's fixed cost)

Then one more 1-item run under `python -X importtime`, its import time (self times) summed by
who pays it: the interpreter's own start (site and what it imports), click, pydantic (with
pydantic-core, annotated-types, typing-extensions), pydantic's plugin discovery (importlib.metadata
and what it imports, loaded when the first model is built, to look for entry points), psutil,
sqlite3, batchtui's own modules (their pydantic models and dataclasses are built as they are
imported, so that time is here). A standard-library module counts as its importer's: what
pydantic imports of it is pydantic's cost. importtime's own
overhead inflates every figure alike: read them as shares.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime

from bench.common import (
    BATCHTUI,
    check,
    cleanup,
    env_for,
    interleave,
    machine_line,
    median,
    only_batch,
    read_json,
    run_timed,
    table,
    workdir,
    write_lines,
)

#: Who pays for an import: the first rule that matches the module or one of its importers.
#: A module imported by pydantic's plugin loader counts as the plugin discovery's, whatever it is.
_SUBTREES = (("pydantic.plugin._loader", "pydantic's plugin discovery (importlib.metadata)"),)
_PACKAGES = (
    ("batchtui", "batchtui's modules (their models built)"),
    ("click", "click"),
    ("pydantic", "pydantic"),
    ("pydantic_core", "pydantic"),
    ("annotated_types", "pydantic"),
    ("typing_extensions", "pydantic"),
    ("typing_inspection", "pydantic"),
    ("psutil", "psutil"),
    ("sqlite3", "sqlite3"),
    ("_sqlite3", "sqlite3"),
    ("orjson", "orjson"),
)
_INTERPRETER = "the interpreter's start (site and before)"
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def import_shares(stderr: str) -> dict[str, float]:
    """Self import times (seconds) of one ``-X importtime`` run, summed by who pays them.

    importtime prints a module after the modules it imported, each indented two spaces deeper
    than its importer; so a module's importer is the next line with less indentation. Every line
    up to ``site`` (the interpreter's own start) is the interpreter's."""
    rows = [(int(m[1]) / 1e6, len(m[3]) // 2, m[4]) for m in map(_LINE.match, stderr.splitlines()) if m]
    site = next((i for i, (_, depth, name) in enumerate(rows) if depth == 0 and name == "site"), -1)
    shares: dict[str, float] = defaultdict(float)
    owners: list[tuple[int, str]] = []  # (depth, name) of the importers still open, innermost last
    # Read backwards: an importer comes after its imports, so walking up from the end meets it first.
    for i in range(len(rows) - 1, -1, -1):
        self_s, depth, name = rows[i]
        while owners and owners[-1][0] >= depth:
            owners.pop()
        chain = [name, *(n for _, n in reversed(owners))]
        owners.append((depth, name))
        shares[_INTERPRETER if i <= site else _owner(name, chain)] += self_s
    return dict(shares)


def _owner(name: str, chain: list[str]) -> str:
    """The subtree rule, else the package of the module or of its nearest importer that has one
    (a standard-library module counts as the package's that imported it first)."""
    for root, label in _SUBTREES:
        if root in chain:
            return label
    for module in chain:
        top = module.partition(".")[0]
        for package, label in _PACKAGES:
            if top == package:
                return label
    return "the standard library (by itself)"


def _stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main(argv: list[str] | None = None) -> list[tuple[str, ...]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=9, help="rounds; the median is reported [9]")
    args = ap.parse_args(argv)

    work = workdir("bt-startup-")
    try:
        one = write_lines(work / "one.txt", 1)
        pyenv = env_for(work / "py")
        timeline: dict[str, list[float]] = defaultdict(list)
        counter = [0]

        run_one = ["run", str(one), "--cmd", "true", "--headless"]

        def batchtui() -> float:
            counter[0] += 1
            out = work / f"out{counter[0]}"
            launched = time.time()
            cmd = [*BATCHTUI, *run_one]
            t = check(run_timed(cmd, env=env_for(out), cwd=work, rss_interval=None), "batchtui run")
            batch = only_batch(out)
            began = _stamp(read_json(batch / "report.json")["started_at"])
            with sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True) as conn:
                (started,) = conn.execute("SELECT started_at FROM items WHERE seq = 0").fetchone()
            timeline["the engine's run began"].append(began - launched)
            timeline["the item started"].append(_stamp(started) - launched)
            cleanup(out)
            return t.seconds

        def python(code: str) -> float:
            return check(run_timed([sys.executable, "-c", code], env=pyenv, rss_interval=None), "python").seconds

        def xargs() -> float:
            with one.open("rb") as fh:
                return check(
                    run_timed(["xargs", "-n1", "true"], stdin=fh, cwd=work, rss_interval=None), "xargs"
                ).seconds

        batchtui()  # warm-up: the page cache, the bytecode cache
        timeline.clear()
        times = interleave(
            args.reps,
            {
                "python -c pass": lambda: python("pass"),
                "floor": lambda: python("import click; from pydantic import BaseModel"),
                "batchtui": batchtui,
                "xargs": xargs,
            },
        )

        def row(label: str, values: list[float]) -> tuple[str, str, str]:
            return label, _ms(median(values)), _range(values)

        rows: list[tuple[str, ...]] = [
            ("measure", "median", "range"),
            row("python -c pass (the interpreter)", times["python -c pass"]),
            row("the stack's floor: click + pydantic imported", times["floor"]),
            row("batchtui, 1 item: the engine's run began", timeline["the engine's run began"]),
            row("batchtui, 1 item: the item started", timeline["the item started"]),
            row("batchtui, 1 item: end to end", times["batchtui"]),
            row("xargs -n1 true, 1 item: end to end", times["xargs"]),
        ]
        print(table(f"Start-up of a 1-item run ({args.reps} rounds; {machine_line()})", rows))

        # One run more under -X importtime, untimed (its stderr whole: run_timed keeps a tail).
        full = subprocess.run(
            [sys.executable, "-X", "importtime", *BATCHTUI[1:], *run_one],
            env=env_for(work / "importtime"),
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        shares = import_shares(full)
        total = sum(shares.values())
        irows: list[tuple[str, ...]] = [("who pays", "self import time", "share")]
        for label, seconds in sorted(shares.items(), key=lambda kv: -kv[1]):
            irows.append((label, _ms(seconds), f"{seconds / total:.0%}"))
        irows.append(("all imports (under importtime, inflated)", _ms(total), ""))
        print(table("Imports of a 1-item run, by who pays (python -X importtime)", irows))
        return rows + irows
    finally:
        cleanup(work)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _range(values: list[float]) -> str:
    return f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms" if values else "n/a"


if __name__ == "__main__":
    main()
