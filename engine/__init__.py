"""The batchtui engine: durable batch runs, headless. Never imports textual.

Public surface::

    from batchtui.engine import BatchConfig, BatchRunner, Fatal, Item, create_batch

Processors raise :class:`Fatal` to halt a batch (resumable); any other exception fails the
item (TimeoutError and ConnectionError are retried).
"""

from __future__ import annotations

from .batchdir import BatchDir, iter_batches, resolve_batch
from .config import BatchConfig, load_config
from .enqueue import create_batch
from .errors import Fatal, UserError
from .models import BatchState, ItemStatus, LiveProgress, Manifest, Report
from .processors import Item, ProcessorSpec, ProcessOutput
from .runner import BatchRunner, RunResult

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
