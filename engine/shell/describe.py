"""How one attempt at an item runs, as the processor runs it: the command line rendered from the
batch's template, the folder, and the variables batchtui adds to the environment.

Built from the same parts as :class:`.processor.ShellProcessor` (the same :class:`.item.Item`,
:meth:`.template.CommandTemplate.render`, :class:`.itemfiles.ItemEnv`), so what a view shows is
what ran, not a second rendering that could drift from it. A Python processor is described by
its callable (``module:function``) instead of a command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..fmt import clean, shell_line, shell_word
from .item import Item, out_path
from .itemfiles import ENV_JSON_MAX, ITEM_VARS, ItemEnv
from .template import CommandTemplate, MissingField

if TYPE_CHECKING:
    from ..processors import ProcessorSpec

__all__ = ["RunDescription", "describe_run", "pasteable"]

#: The shell every shell processor runs its command with (ShellProcessor's default; the spec
#: does not change it).
SHELL = "/bin/sh"


@dataclass(frozen=True, slots=True)
class RunDescription:
    """What one attempt at an item ran.

    ``kind`` is the processor's (``shell``, ``python``, ``demo``). For a shell item ``argv`` is
    the exact argument list (``/bin/sh -c <command>``) and ``command`` the rendered template;
    ``line`` is that command as a view shows it, to paste into a shell (:func:`pasteable`);
    ``problem`` says why there is none (the item lacks a field the template names: it failed
    before anything ran). ``call`` is a Python processor's ``module:function``. ``env`` holds
    the variables batchtui adds, in the order they are set (an empty value is set empty).
    """

    kind: str
    cwd: str
    command: str | None = None
    line: str | None = None
    argv: tuple[str, ...] = ()
    call: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    problem: str | None = None

    def as_text(self) -> str:
        """The description as plain lines (for a pager, a copy, a report)."""
        lines = []
        if self.line is not None:
            lines.append(f"command: {self.line}")
        elif self.call is not None:
            lines.append(f"callable: {self.call}")
        elif self.kind == "demo":
            lines.append("processor: the built-in demo")
        if self.problem:
            lines.append(f"not run: {self.problem}")
        lines.append(f"folder: {self.cwd}")
        lines.extend(f"{name}={shell_word(value)}" for name, value in self.env)
        return "\n".join(lines)


def describe_run(
    spec: ProcessorSpec, *, seq: int, key: str, data: Any, kind: str, attempt: int, batch_dir: str
) -> RunDescription:
    """How attempt ``attempt`` at item ``seq`` runs (or ran) under ``spec``.

    ``batch_dir`` must be the batch directory as the engine named it (the runner passes its
    path as it resolved it): ``{out}`` and ``BATCHTUI_BATCH_DIR`` are built from it.
    """
    if spec.kind == "python":
        return RunDescription("python", spec.cwd, call=spec.call)
    if spec.kind != "shell" or spec.command is None:
        return RunDescription(spec.kind, spec.cwd)
    item = Item(seq, key, data, attempt, batch_dir, kind)
    template = CommandTemplate(spec.command)
    env = _item_env(item)
    try:
        command = template.render(item, out_path(item) if template.uses_out else None)
    except (MissingField, ValueError) as exc:
        return RunDescription("shell", spec.cwd, env=env, problem=str(exc))
    line = pasteable(template, item, command)
    return RunDescription("shell", spec.cwd, command=command, line=line, argv=(SHELL, "-c", command), env=env)


def pasteable(template: CommandTemplate, item: Item, command: str) -> str:
    """``command`` as one line to paste into a shell, that runs the same command: rendered again
    with each value quoted by :func:`.fmt.shell_word` (a value holding a control character, a
    tab, a newline or an undecodable byte as ``$'...'`` with it escaped, so it pastes as the
    exact value and nothing reaches the terminal raw). A template whose own text holds such a
    character (a script of several lines) is shown as what ran: ``/bin/sh -c $'...'``."""
    line = template.render(item, out_path(item) if template.uses_out else None, quote=shell_word)
    return line if clean(line) == line else shell_line(SHELL, "-c", command)


def _item_env(item: Item) -> tuple[tuple[str, str], ...]:
    """The item's variables as :meth:`.processor.ShellProcessor.run` sets them: its JSON in
    BATCHTUI_ITEM_JSON, or, when too big for one variable, in the attempt's file (removed
    after the attempt) that BATCHTUI_ITEM_JSON_FILE names. (When exec finds the environment as a
    whole too big, the processor moves a JSON of 4 KiB or more to that file too: not foreseen here.)"""
    env = ItemEnv(item)
    if len(env.json) > ENV_JSON_MAX:
        env.path = os.path.join(item.batch_dir, "tmp", env.name)  # the name to_file() gives it, unwritten
    names = (os.fsdecode(name) for name in ITEM_VARS)
    return tuple((name, os.fsdecode(value)) for name, value in zip(names, env.values(), strict=True))
