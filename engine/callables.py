"""The part of the processors a worker process needs: import a callable (:func:`load_callable`,
never run stale), run it on items (:class:`CallableProcessor`) and :func:`build_processor`.

No settings model in here (no pydantic): a process-pool worker imports this, and its imports
are the wait for its first result. :mod:`.processors` re-exports these names with the
:class:`~.processors.ProcessorSpec` they are built from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from .errors import USER_MODULE_PREFIX, MissingResult, UserError
from .outputs import DEFAULT_MAX_RESULT_BYTES, checked_result, cost_of, match_chunk
from .shell.item import Item, ProcessOutput


class SpecLike(Protocol):
    """What :func:`build_processor` reads of a spec (a ProcessorSpec, or a worker's plain copy)."""

    @property
    def kind(self) -> str: ...
    @property
    def command(self) -> str | None: ...
    @property
    def call(self) -> str | None: ...
    @property
    def cwd(self) -> str: ...


_import_lock = threading.Lock()
#: What load_callable imported in this process, by the call's module part (a file path or a
#: module name): (the module's name in sys.modules, the sha256 of the source it ran). A
#: long-lived process (the TUI, a dask worker) runs many batches: a file edited between two of
#: them is imported again, never run stale.
_loaded: dict[str, tuple[str, str]] = {}
#: Whether user code has run in this process (set before its first import, which may fail
#: half-way). A process that ran it ends the way Python always ends, finalizing every module:
#: the user's code may rely on that (a ``__del__`` that cleans up); see tui/cli/entry.py.
_user_code_ran = False


def user_code_ran() -> bool:
    """Whether this process has imported a user's module (see :func:`load_callable`)."""
    return _user_code_ran


class StaleCode(UserError):
    """The source this process would run is not the source the run started with (the file was
    edited since, or this machine holds another copy): refused rather than run unnoticed."""


def code_digest(call: str, cwd: str | None = None) -> str | None:
    """The sha256 of the source file ``call`` names (``/path/file.py:f``, or the ``.py`` file of
    ``module:f``); None when there is none to read (a compiled or missing module).

    The engine sends it with the tasks of a cluster: each worker checks that the code it loads
    is this code (:func:`load_callable`'s ``code``)."""
    module_name = call.rpartition(":")[0]
    with _import_lock:
        path = _source_path(module_name, cwd)
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def load_callable(call: str, cwd: str | None = None, *, code: str | None = None) -> Callable[..., Any]:
    """Import ``module:function`` or ``/path/file.py:function``; UserError when it cannot.

    The source is read, hashed and run from the same bytes, and a process that imported it
    before imports it again when those bytes changed: a ``file.py`` under a new module name
    (a run still using the old version keeps it), a module by running its new source in its
    own namespace (as ``importlib.reload`` does). Modules the callable imports itself are
    Python's to cache, as always. ``code``: the sha256 the source must have (the engine's
    :func:`code_digest`); :class:`StaleCode` when it has another.
    """
    global _user_code_ran
    module_name, _, func_name = call.rpartition(":")
    digest: str | None
    with _import_lock:
        _user_code_ran = True
        try:
            if module_name.endswith(".py"):
                module, digest = _load_file(Path(module_name))
            else:
                module, digest = _load_module(module_name, cwd)
        except UserError:
            raise
        except Exception as exc:  # an import error in the user's module is the user's to fix
            raise UserError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
        except SystemExit as exc:
            # A script's own `sys.exit(main())` run at import: left to rise, it ended batchtui
            # with the script's exit status and not a word.
            raise UserError(
                f"cannot import {module_name}: it exited as it was imported (SystemExit: {exc.code!r});"
                ' a script\'s main code belongs under `if __name__ == "__main__":`'
            ) from None
    if code is not None and digest is not None and digest != code:
        raise StaleCode(
            f"{getattr(module, '__file__', module_name)} is not the code this run started with"
            f" (sha256 {digest[:12]} here, {code[:12]} where the engine runs): it was edited since the"
            " run started, or this machine has another copy; put the same file everywhere, then resume"
        )
    func = getattr(module, func_name, None)
    if func is None:
        raise UserError(f"{module_name} has no attribute {func_name!r}")
    if not callable(func):
        raise UserError(f"{call} is not callable")
    return func  # type: ignore[no-any-return]


def _load_file(path: Path) -> tuple[ModuleType, str]:  # _import_lock held
    """``path`` imported under a name of its path and content hash (see :func:`load_callable`)."""
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    where = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"{USER_MODULE_PREFIX}{where}_{digest[:16]}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None:
            raise UserError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        sys.modules[name] = module  # before it runs, as an import does (dataclasses look it up)
        try:
            exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
        except BaseException:
            del sys.modules[name]  # a module that failed half-way is never handed out later
            raise
    _loaded[str(path)] = (name, digest)
    return module, digest


def _load_module(module_name: str, cwd: str | None) -> tuple[ModuleType, str | None]:  # _import_lock held
    """``module_name`` imported, run again when its source changed since this process ran it."""
    if cwd and cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = importlib.import_module(module_name)
    path = _source_path(module_name, cwd)
    if path is None:
        return module, None
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    seen = _loaded.get(module_name)
    if seen is not None and seen[1] != digest:
        # From the bytes just hashed, not through importlib.reload: a .pyc written in the same
        # second as an edit of the same size would pass its mtime check and run the old code.
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    _loaded[module_name] = (module_name, digest)
    return module, digest


def _source_path(module_name: str, cwd: str | None) -> Path | None:  # _import_lock held
    """The .py file a call's module part names (None: no source file to read)."""
    if module_name.endswith(".py"):
        return Path(module_name)
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        if cwd and cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None else None
    return Path(origin) if isinstance(origin, str) and origin.endswith(".py") else None


def _output(value: Any, max_result_bytes: int) -> ProcessOutput:
    """A callable's return value as checked in the worker (see :mod:`.results`)."""
    cost = cost_of(value)
    return ProcessOutput(result=checked_result(value, max_result_bytes), cost=cost)


class CallableProcessor:
    """Runs a Python callable on each item (``--call``); its return value is the result.

    Results are checked here, in the worker (:mod:`.results`): a result over
    ``max_result_bytes`` of JSON, with a NaN or an infinity, or with a ``cost`` that is not a
    finite number >= 0 fails its item with a clear error type."""

    def __init__(
        self,
        call: str,
        cwd: str | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        *,
        code: str | None = None,
    ) -> None:
        self.func = load_callable(call, cwd, code=code)
        self.max_result_bytes = max_result_bytes

    def run(self, item: Item) -> ProcessOutput:
        return _output(self.func(item), self.max_result_bytes)

    def run_chunk(self, items: Sequence[Item]) -> list[ProcessOutput | Exception]:
        """Chunked mode: the callable takes a list and returns a list of results (same order)
        or a dict ``{seq: result}`` (see :func:`.results.match_chunk`). Each item's output, or
        the exception that fails that item alone (its result is missing, too large, ...);
        raises when the return value as a whole cannot be matched to the items."""
        values = match_chunk(self.func(list(items)), [item.seq for item in items])
        outputs: list[ProcessOutput | Exception] = []
        for value in values:
            if isinstance(value, MissingResult):
                outputs.append(value)
                continue
            try:
                outputs.append(_output(value, self.max_result_bytes))
            except Exception as exc:  # this item's result is unfit: this item fails
                outputs.append(exc)
        return outputs

    def kill(self, seq: int, attempt: int | None = None) -> bool:
        return False

    def kill_all(self) -> int:
        return 0


def build_processor(
    spec: SpecLike,
    *,
    timeout: float | None = None,
    log_limit: int = 1 << 20,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    code: str | None = None,
) -> Any:
    """The processor object for a spec, built in the process that will run the items
    (``code``: the sha256 a callable's source must have, see :func:`code_digest`)."""
    if spec.kind == "shell":
        assert spec.command is not None
        from .shell.processor import ShellProcessor  # a Python callable's worker never needs it

        return ShellProcessor(
            spec.command, timeout=timeout, log_limit=log_limit, cwd=spec.cwd, max_result_bytes=max_result_bytes
        )
    if spec.kind == "python":
        assert spec.call is not None
        return CallableProcessor(spec.call, spec.cwd, max_result_bytes, code=code)
    from .demo import DemoProcessor

    return DemoProcessor()
