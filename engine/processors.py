"""Processors: what runs one item. A shell template, a Python callable, or the demo.

A :class:`ProcessorSpec` is plain data (stored in the manifest, pickled to worker processes);
:func:`build_processor` turns it into an object with ``run(item) -> ProcessOutput`` in whatever
process runs the items.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from .errors import Fatal, UserError
from .shell import CommandTemplate, Item, ProcessOutput, ShellProcessor

__all__ = [
    "CallableProcessor",
    "Item",
    "ProcessOutput",
    "Processor",
    "ProcessorSpec",
    "build_processor",
    "chunk_size_for",
    "load_callable",
]


class Processor(Protocol):
    def run(self, item: Item) -> ProcessOutput: ...

    def kill(self, seq: int, attempt: int | None = None) -> bool: ...

    def kill_all(self) -> int: ...


class ProcessorSpec(BaseModel):
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

    @property
    def template_fields(self) -> frozenset[str]:
        if self.kind == "shell" and self.command:
            return CommandTemplate(self.command).fields
        return frozenset()


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


_import_lock = threading.Lock()


def load_callable(call: str, cwd: str | None = None) -> Callable[..., Any]:
    """Import ``module:function`` or ``/path/file.py:function``; UserError when it cannot."""
    module_name, _, func_name = call.rpartition(":")
    with _import_lock:
        try:
            if module_name.endswith(".py"):
                path = Path(module_name)
                name = f"batchtui_user_{abs(hash(str(path)))}"
                module = sys.modules.get(name)
                if module is None:
                    spec = importlib.util.spec_from_file_location(name, path)
                    if spec is None or spec.loader is None:
                        raise UserError(f"cannot load {path}")
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    if str(path.parent) not in sys.path:
                        sys.path.insert(0, str(path.parent))
                    spec.loader.exec_module(module)
            else:
                if cwd and cwd not in sys.path:
                    sys.path.insert(0, cwd)
                module = importlib.import_module(module_name)
        except UserError:
            raise
        except Exception as exc:  # an import error in the user's module is the user's to fix
            raise UserError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise UserError(f"{module_name} has no attribute {func_name!r}")
    if not callable(func):
        raise UserError(f"{call} is not callable")
    return func  # type: ignore[no-any-return]


def cost_of(value: Any) -> float | None:
    """A callable's result's cost: its "cost" when it is a dict with a number there."""
    if isinstance(value, dict):
        raw = value.get("cost")
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
    return None


def _output(value: Any) -> ProcessOutput:
    return ProcessOutput(result=value, cost=cost_of(value))


class CallableProcessor:
    """Runs a Python callable on each item (``--call``); its return value is the result."""

    def __init__(self, call: str, cwd: str | None = None) -> None:
        self.func = load_callable(call, cwd)

    def run(self, item: Item) -> ProcessOutput:
        return _output(self.func(item))

    def run_chunk(self, items: Sequence[Item]) -> list[ProcessOutput]:
        """Chunked mode: the callable takes a list and returns a list of results (same order)
        or a dict {seq: result}."""
        values = self.func(list(items))
        if isinstance(values, dict):
            return [_output(values.get(item.seq)) for item in items]
        values = list(values)
        if len(values) != len(items):
            raise ValueError(f"chunked callable returned {len(values)} results for {len(items)} items")
        return [_output(v) for v in values]

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        return False

    def kill_all(self) -> int:
        return 0


def build_processor(spec: ProcessorSpec, *, timeout: float | None = None, log_limit: int = 1 << 20) -> Any:
    """The processor object for a spec, built in the process that will run the items."""
    if spec.kind == "shell":
        assert spec.command is not None
        return ShellProcessor(spec.command, timeout=timeout, log_limit=log_limit, cwd=spec.cwd)
    if spec.kind == "python":
        assert spec.call is not None
        return CallableProcessor(spec.call, spec.cwd)
    from .demo import DemoProcessor

    return DemoProcessor()


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


__all__ += ["Fatal", "accepts_one_argument", "demo_spec", "python_spec", "shell_spec"]
