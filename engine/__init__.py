"""The batchtui engine: durable batch runs, headless. Never imports textual.

Public surface::

    from batchtui.engine import BatchConfig, BatchRunner, Fatal, Item, create_batch

Processors raise :class:`Fatal` to halt a batch (resumable); any other exception fails the
item (TimeoutError and ConnectionError are retried).

The names are loaded on first use (PEP 562): importing one submodule, as the CLI does for
``batchtui ls``, must not pull in the runner, the store and the executors with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .batchdir import BatchDir
    from .batches import iter_batches, resolve_batch
    from .config import BatchConfig, load_config
    from .enqueue import create_batch
    from .errors import Fatal, UserError
    from .models import BatchState, ItemStatus, LiveProgress, Manifest, Report
    from .processors import Item, ProcessorSpec, ProcessOutput
    from .runner import BatchRunner, RunResult

#: public name -> the submodule that defines it
_SOURCES: dict[str, str] = {
    "BatchDir": "batchdir",
    "iter_batches": "batchdir",
    "resolve_batch": "batchdir",
    "BatchConfig": "config",
    "load_config": "config",
    "create_batch": "enqueue",
    "Fatal": "errors",
    "UserError": "errors",
    "BatchState": "models",
    "ItemStatus": "models",
    "LiveProgress": "models",
    "Manifest": "models",
    "Report": "models",
    "Item": "processors",
    "ProcessorSpec": "processors",
    "ProcessOutput": "processors",
    "BatchRunner": "runner",
    "RunResult": "runner",
}


__getattr__, __dir__ = lazy_names(__name__, _SOURCES)


__all__ = [
    "BatchConfig",
    "BatchDir",
    "BatchRunner",
    "BatchState",
    "Fatal",
    "Item",
    "ItemStatus",
    "LiveProgress",
    "Manifest",
    "ProcessOutput",
    "ProcessorSpec",
    "Report",
    "RunResult",
    "UserError",
    "create_batch",
    "iter_batches",
    "load_config",
    "resolve_batch",
]
