"""The key rule of a batch's records, which every source added to it must follow (`add`).

A CSV or JSONL record's key is its --key-field's value, or else a hash of its whole content, and
the duplicates are dropped on the key: one batch that mixed the two rules would count a record it
holds as new. Lines and files have one rule each (the line, the path) and need no check.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import UserError
from .fmt import clean
from .sources import SourceSpec

__all__ = ["with_batch_key"]

_RECORD_KINDS: Final = frozenset({"csv", "jsonl"})


def with_batch_key(batch_id: str, sources: list[dict[str, Any]], spec: SourceSpec) -> SourceSpec:
    """``spec`` with the key rule the batch's records already have (``sources``: the batch's
    sources as its manifest stores them).

    A record's key is its --key-field's value, or else a hash of its whole content, and the
    duplicates are dropped on the key. One batch that mixed the two rules (or two fields) would
    take a record it already holds as a new item, and run it again. So an add without
    --key-field gets the batch's field; one with another rule is refused. A batch with no CSV
    or JSONL source yet takes the add's rule."""
    if not any(e.kind in _RECORD_KINDS for e in spec.entries):
        return spec
    rules = {
        source.get("key_field")
        for source in sources
        if any(entry.get("kind") in _RECORD_KINDS for entry in source.get("entries", ()))
    }
    if not rules or spec.key_field in rules:
        return spec
    theirs = next(iter(rules)) if len(rules) == 1 else None
    if spec.key_field is None and theirs is not None:
        return spec.model_copy(update={"key_field": theirs})
    if theirs is None:
        how = "by their whole content (it was made without --key-field)"
        fix = "leave --key-field out"
    else:
        how = f"by their field {theirs!r}"
        fix = "leave --key-field out (the batch's own is used)"
    mine = f"--key-field {spec.key_field!r}" if spec.key_field is not None else "a key by content"
    raise UserError(
        f"batch {clean(batch_id)} identifies its records {how}: {mine} would count the records"
        f" it holds as new ones and run them again; {fix}"
    )
