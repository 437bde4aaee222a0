"""The item objects every processor receives (:class:`Item`) and returns (:class:`ProcessOutput`).

They live with the shell processor because its template reads them most, but a Python callable
and the demo get the same objects: ``batchtui.engine.processors`` re-exports both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Item", "ProcessOutput", "load_data", "out_path", "value_text"]


@dataclass(frozen=True, slots=True)
class Item:
    """What a processor receives for one attempt at one item.

    ``data`` is a str (a resolved file path or a stripped line) or a dict (a CSV/JSONL record);
    ``kind`` is the source kind: ``dir``/``files``, ``lines``/``stdin``, ``csv``/``jsonl``.
    """

    seq: int
    key: str
    data: Any
    attempt: int
    batch_dir: str
    kind: str = "lines"

    def __reduce__(self) -> tuple[Any, ...]:
        # To a pool worker, a chunk at a time: its fields as a tuple. The dataclass' own pickling
        # of a slotted class (a state dict, made with dataclasses.fields() for each item, and
        # object.__setattr__ for each field as it is read back) cost twice as much each way.
        return (Item, (self.seq, self.key, self.data, self.attempt, self.batch_dir, self.kind))

    @property
    def value(self) -> str:
        """The item's main value: a path, a line, or a record as compact JSON."""
        data = self.data
        return data if isinstance(data, str) else value_text(data)


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    """A processor's result for one item; ``cost`` counts toward ``--max-cost``."""

    result: Any
    cost: float | None = None


def value_text(value: Any) -> str:
    """A value as command-line text: a str as is, anything else as its JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError too: big ints, odd types
        return str(value)


def out_path(item: Item) -> str:
    """``{out}`` of ``item``: ``out/<seq>`` in its batch directory."""
    return os.path.join(item.batch_dir, "out", str(item.seq))


def load_data(text: str) -> Any:
    """An item's data from its JSON in items.db. orjson refuses the ``\\udcXX`` escapes of a
    file name that is not UTF-8 (see enqueue._data_json); the json module reads them back into
    the surrogate-escaped str os.fsdecode gives, which open() and a shell get as the exact bytes."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        import json

        return json.loads(text)
