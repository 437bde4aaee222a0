"""What a processor returns, checked where it is produced: in the worker, before it travels.

A result reaches the engine only as JSON it can store as it is: at most ``--max-result-bytes``
of it (:class:`~.errors.ResultTooLarge`), no NaN or infinity (JSON has none, and orjson would
write them as ``null``: :class:`~.errors.InvalidResult`), and a ``cost`` that is a finite number
>= 0 whenever the key is there (:class:`~.errors.InvalidCost`: a string, a null or a negative
cost counted as nothing, or summed, would silently switch ``--max-cost`` off). A chunked
callable's return value is matched to its items by :func:`match_chunk`.

The check costs nothing extra for scalars and short strings. Anything else is serialized here,
once, and handed on as an :class:`orjson.Fragment` that the engine embeds byte for byte, so a
large value is never serialized twice, and a too-large one never leaves the worker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from .errors import ChunkResultMismatch, InvalidCost, InvalidResult, MissingResult, ResultTooLarge

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "MAX_RESULT_BYTES_CAP",
    "check_finite",
    "checked_cost",
    "checked_result",
    "cost_of",
    "fmt_size",
    "match_chunk",
    "parse_size",
    "too_large",
]

#: The default of ``--max-result-bytes``: far above any sane result, far below what hurts.
DEFAULT_MAX_RESULT_BYTES: Final = 16 << 20
#: The largest ``--max-result-bytes``: SQLite stores no value over 10^9 bytes (SQLITE_MAX_LENGTH).
MAX_RESULT_BYTES_CAP: Final = 512 << 20
#: JSON of a str of n characters takes at most 6n + 2 bytes (``\u00XX`` escapes) and at least n + 2.
_ESCAPED_MAX: Final = 6
_OPTIONS: Final = orjson.OPT_NON_STR_KEYS  # as the engine writes results (outcomes.py)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"16M"``, ``"512k"``, ``"1G"``, ``"16MiB"`` or ``"1000"`` as bytes (K, M, G: powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not N, NK, NM or NG (e.g. 16M)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def fmt_size(n: int) -> str:
    """``16 MiB``, ``1.5 KiB``, ``12 bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def too_large(size: int, limit: int, *, at_least: bool = False) -> ResultTooLarge:
    """The error of a result of ``size`` bytes of JSON (or more) over ``limit``."""
    what = f"at least {fmt_size(size)}" if at_least else fmt_size(size)
    return ResultTooLarge(
        f"result is {what} of JSON, over --max-result-bytes {fmt_size(limit)}: "
        "write large output to a file (e.g. in the item's {out} folder) and give its path as the result"
    )


#: The largest cost: of ``--max-cost``, and of one item's. Each item's is bounded so that the
#: batch's total stays a finite number (two items of 1e308 summed to infinity, and the total
#: spent vanished from live_progress.json, report.json and `show`).
MAX_COST: Final = 1e15


def checked_cost(raw: Any) -> float:
    """A given cost as the budget counts it; :class:`InvalidCost` unless a finite number from 0
    to :data:`MAX_COST`.

    A numeric string ("7") is refused rather than parsed: "7", "7.5", "$7" and "1,5" would each
    need a guess, and a wrong guess spends the budget wrongly without a word."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, str):
            hint = " (a string: give the number itself)"
        elif raw is None:
            hint = " (null: give a number, or leave the key out)"
        else:
            hint = ""
        shown = repr(raw)
        raise InvalidCost(f"cost {shown if len(shown) <= 40 else 'a ' + type(raw).__name__} is not a number{hint}")
    try:
        cost = float(raw)
    except OverflowError:
        raise InvalidCost("cost is an integer too large for a float") from None
    if not math.isfinite(cost):
        raise InvalidCost(f"cost {cost!r} is not finite")
    if cost < 0:
        raise InvalidCost(f"cost {raw!r} is negative")
    if cost > MAX_COST:
        raise InvalidCost(f"cost {raw!r} is over {MAX_COST:g}, the most one item (or a budget) may cost")
    return cost


def cost_of(value: Any) -> float | None:
    """A result's cost: its ``"cost"`` key when it is a dict that has one (checked), else None."""
    if isinstance(value, dict) and "cost" in value:
        return checked_cost(value["cost"])
    return None


def checked_result(value: Any, limit: int) -> Any:
    """``value`` as the engine may take it: itself when its type alone shows it small and sound,
    else an :class:`orjson.Fragment` of its JSON (serialized here, once).

    Raises :class:`ResultTooLarge` (JSON over ``limit`` bytes), :class:`InvalidResult` (NaN or
    an infinity anywhere in it) or ``TypeError`` (not JSON-serializable)."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise InvalidResult(f"result is {value!r}, which JSON cannot hold: return None or a string")
        return value
    if kind is str:
        n = len(value)
        if n + 2 > limit:  # too large whatever its encoding: not even encoded
            raise too_large(n + 2, limit, at_least=True)
        if _ESCAPED_MAX * n + 2 <= limit:
            return value
    try:
        raw = orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        if str(exc) == "Recursion limit reached":  # orjson's words for nesting past 255 levels
            raise TypeError("result is not JSON-serializable: it is nested more than 255 levels deep") from None
        raise TypeError(f"result is not JSON-serializable: {exc}") from None
    if len(raw) > limit:
        raise too_large(len(raw), limit)
    if b"null" in raw:  # orjson writes NaN and infinities as null: only then is a walk needed
        check_finite(value)
    return orjson.Fragment(raw)


def check_finite(value: Any) -> None:
    """:class:`InvalidResult` when ``value`` holds a NaN or an infinity (JSON has neither)."""
    path = _nonfinite(value)
    if path is not None:
        where = "result" + "".join(f"[{part!r}]" for part in reversed(path))
        raise InvalidResult(f"{where} is NaN or infinite, which JSON cannot hold: use None or a string")


def _nonfinite(value: Any) -> list[Any] | None:
    """The path (innermost first) to a NaN or infinity in ``value``, or None.

    Called on what orjson serialized (depth at most 255) or the json module parsed."""
    if isinstance(value, float):
        return None if math.isfinite(value) else []
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nonfinite(item)
            if found is not None:
                found.append(key)
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _nonfinite(item)
            if found is not None:
                found.append(index)
                return found
    return None


def _seq_key(key: Any) -> int | None:
    """The seq a chunked dict's key names: an int, or its plain decimal string ("7", not "07")."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isascii() and key.isdigit() and (key == "0" or key[0] != "0"):
        return int(key)
    return None


def _shown(keys: Sequence[Any]) -> str:
    return ", ".join(repr(k)[:40] for k in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def match_chunk(values: Any, seqs: Sequence[int]) -> list[Any]:
    """Each item's value from what a chunked callable returned for the items ``seqs``.

    A list (any iterable but a string) gives the results in the chunk's order and must have one
    per item. A dict maps each seq, as an int or its decimal string (``7`` or ``"7"``), to its
    result. A dict key that is no seq of this chunk, or a seq given twice (``7`` and ``"7"``),
    means the dict is not keyed by seq (by position, say), so none of its values can be trusted:
    :class:`ChunkResultMismatch` for the whole chunk. A seq the dict leaves out gets a
    :class:`MissingResult` in its place (that item fails; the others complete)."""
    n = len(seqs)
    if isinstance(values, Mapping):
        index_of = {seq: i for i, seq in enumerate(seqs)}
        missing = object()
        out: list[Any] = [missing] * n
        strangers: list[Any] = []
        twice: list[int] = []
        for key, value in values.items():
            seq = _seq_key(key)
            index = index_of.get(seq) if seq is not None else None
            if index is None:
                strangers.append(key)
            elif out[index] is not missing:
                twice.append(seqs[index])
            else:
                out[index] = value
        if strangers:
            raise ChunkResultMismatch(
                f"chunked callable's dict has keys that are not seqs of its chunk: {_shown(strangers)} "
                f"(the chunk's seqs: {_shown(seqs)}); key the dict by item.seq"
            )
        if twice:
            raise ChunkResultMismatch(
                f"chunked callable's dict gives seq {_shown(twice)} twice (as an int and a string)"
            )
        return [
            MissingResult(f"chunked callable's dict has no result for seq {seq}") if value is missing else value
            for seq, value in zip(seqs, out, strict=True)
        ]
    if values is None or isinstance(values, (str, bytes, bytearray)) or not _iterable(values):
        raise ChunkResultMismatch(
            f"chunked callable returned {type(values).__name__}: expected a list of {n} results "
            "(in the chunk's order) or a dict {seq: result}"
        )
    results = list(values)
    if len(results) != n:
        raise ChunkResultMismatch(f"chunked callable returned {len(results)} results for {n} items")
    return results


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True
