"""`batchtui run --call ...`: start the pool's worker processes before the CLI's imports.

The ``run`` verb imports the settings models and the engine (about 0.25 s of one core) before
its batch exists. A ``--call`` run on the process executor then starts its workers, each a
fresh interpreter importing for about 0.1 s. Started first (engine/warmstart.py), they import
on the core the CLI leaves idle, and the run adopts them: its first result comes about that
much sooner.

The arguments are not parsed yet (that needs the imports this saves), so this reads them the
simple way, with the environment and the config file the run will read: a guess. A wrong guess
costs only the idle core's time (the run ends the workers it does not adopt, and starts any
more it wants); the settings the run uses are the ones it validates, as always.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: What makes a run want no pool workers started ahead: a shell command, no run at all.
_NOT_A_POOL_RUN = frozenset({"--cmd", "--detach", "--dry-run", "-h", "--help"})


def workers_wanted(args: Sequence[str], environ: Mapping[str, str], cwd: Path) -> int:
    """How many pool workers `batchtui run ARGS` will likely start: 0 unless it runs a callable
    (``--call``) on the process executor here (not ``--detach``, ``--dry-run`` or ``--help``)."""
    call = False
    flags: dict[str, str] = {}
    config_file: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name == "-j" or (name.startswith("-j") and not name.startswith("--")):
            name, value, eq = "--workers", name[2:], "=" if len(name) > 2 else ""
        if name in _NOT_A_POOL_RUN:
            return 0
        if name in ("--call", "--executor", "--workers", "--config"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if name == "--call":
                call = True
            elif name == "--config":
                config_file = value
            else:
                flags[name[2:]] = value
        i += 1
    if not call:
        return 0
    settings = _config_file(Path(config_file) if config_file else cwd / "batchtui.toml")
    # The setting's part of a BATCHTUI_* name in any case, as the config reads it (engine/config_env.py).
    env = {name[9:].lower(): value for name, value in environ.items() if name.startswith("BATCHTUI_")}
    for key in ("executor", "workers"):  # defaults < batchtui.toml < environment < flags
        if key in env:
            settings[key] = env[key]
        if key in flags:
            settings[key] = flags[key]
    if str(settings.get("executor") or "process") != "process":
        return 0
    try:
        workers = int(settings.get("workers") or max(2, os.cpu_count() or 2))
    except (TypeError, ValueError):
        return 0  # the run refuses it, with the reason
    # At most a worker a core: they start on the core the imports leave idle.
    return max(0, min(workers, max(2, os.cpu_count() or 2)))


def _config_file(path: Path) -> dict[str, Any]:
    """``executor`` and ``workers`` of a config file, or nothing (a damaged one is the run's to
    report)."""
    try:
        import tomllib

        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError):
        return {}
    return {key: data[key] for key in ("executor", "workers") if key in data}


def start_ahead(args: Sequence[str]) -> None:
    """Start the pool workers `batchtui run ARGS` will likely want (engine/warmstart.py)."""
    try:
        workers = workers_wanted(args, os.environ, Path.cwd())
    except OSError:  # no current folder
        return
    if workers:
        from batchtui.engine import warmstart

        warmstart.start(workers)
