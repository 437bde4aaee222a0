"""Processors: what runs one item. A shell template, a Python callable, or the demo.

A :class:`ProcessorSpec` is plain data (stored in the manifest, pickled to worker processes);
:func:`build_processor` turns it into an object with ``run(item) -> ProcessOutput`` in whatever
process runs the items.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ConfigDict

from .basemodel import Model
from .callables import CallableProcessor, StaleCode, build_processor, code_digest, load_callable
from .errors import Fatal, UserError
from .outputs import cost_of
from .shell.item import Item, ProcessOutput
from .shell.template import CommandTemplate

__all__ = [
    "CallableProcessor",
    "Item",
    "ProcessOutput",
    "Processor",
    "ProcessorSpec",
    "StaleCode",
    "build_processor",
    "chunk_size_for",
    "code_digest",
    "load_callable",
]


class Processor(Protocol):
    def run(self, item: Item) -> ProcessOutput: ...

    def kill(self, seq: int, attempt: int | None = None) -> bool: ...

    def kill_all(self) -> int: ...


class ProcessorSpec(Model):
    """What processes the items; stored in manifest.json as ``processor``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["shell", "python", "demo"]
    command: str | None = None
    call: str | None = None
    cwd: str
    chunked: bool = False

    def describe(self) -> str:
        if self.kind == "shell":
            return f"shell: {self.command}"
        if self.kind == "python":
            return f"python: {self.call}" + (" (chunked)" if self.chunked else "")
        return "demo"


def shell_spec(command: str) -> ProcessorSpec:
    CommandTemplate(command)  # validates placeholders now, not at the first item
    return ProcessorSpec(kind="shell", command=command, cwd=os.getcwd())


def python_spec(call: str, *, chunked: bool = False) -> ProcessorSpec:
    module, sep, func = call.rpartition(":")
    if not sep or not module or not func:
        raise UserError(f"--call {call!r}: expected module:function or path/to/file.py:function")
    if module.endswith(".py") or os.sep in module:
        path = Path(module).expanduser()
        if not path.is_file():
            raise UserError(f"--call {call!r}: no file {path}")
        call = f"{path.resolve()}:{func}"
    return ProcessorSpec(kind="python", call=call, cwd=os.getcwd(), chunked=chunked)


def demo_spec() -> ProcessorSpec:
    return ProcessorSpec(kind="demo", cwd=os.getcwd())


def accepts_one_argument(func: Callable[..., Any]) -> bool:
    """Whether ``func`` can be called with one positional argument (preflight)."""
    try:
        inspect.signature(func).bind(object())
    except TypeError:
        return False
    except ValueError:  # builtins without a signature
        return True
    return True


def chunk_size_for(total: int, cap: int = 32) -> int:
    """The seeds' heuristic: <=100 items all at once, <=1000 about 10 chunks, else ``cap``."""
    if total <= 0:
        return 1
    if total <= 100:
        return total
    if total <= 1000:
        return max(1, total // 10)
    return cap


__all__ += ["Fatal", "accepts_one_argument", "cost_of", "demo_spec", "python_spec", "shell_spec"]
