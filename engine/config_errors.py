"""What an invalid configuration is told as: one line a bad setting, in the words the flags use.

pydantic's own messages name its types and checks ("Input should be greater than or equal to
1", "unable to parse string as an integer"), and a setting of two kinds (``chunk_size``: a
number or ``auto``) failed as two lines under names the user never wrote (``chunk_size.int``,
``chunk_size.literal['auto']``); an item of a list as ``retry_exit_codes.0``. Here each bad
setting is one line, ``name = value: what it must be (from where)``, the value as the user wrote
it, and the checks said as the flags say them ("must be at least 1", "must be a whole number").
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["describe_errors", "fmt_number", "has_bool", "near_setting", "union_settings", "untrusted_message"]

#: pydantic's check -> our words; ``{}`` is the bound (from the error's context).
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}
_KINDS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}


def has_bool(value: Any) -> bool:
    """``value`` is, or holds, true or false (which pydantic would read as 1 and 0)."""
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


def near_setting(name: str, settings: Sequence[str]) -> str | None:
    """The setting a misspelt name ("wrokers") most likely meant, if any is close."""
    near = difflib.get_close_matches(name.replace("-", "_").lower(), list(settings), n=1)
    return near[0] if near else None


def fmt_number(value: float) -> str:
    """A number as the messages write it: 3, not 3.0; 1e-09, not 0.000000001."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"


def _said(err: Mapping[str, Any]) -> str:
    """One error's message in the flags' words."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        if key in ctx:
            return words.format(fmt_number(ctx[key]))
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == "literal_error" and "expected" in ctx:
        return f"must be {ctx['expected']}"
    # pydantic starts a validator's own message with "Value error, ": noise to the user.
    return str(err["msg"]).removeprefix("Value error, ")


def _shown(value: Any) -> str:
    # As the file would spell it: true and false, not Python's True and False.
    return repr(value).replace("True", "true").replace("False", "false") if has_bool(value) else repr(value)


def union_settings(fields: Mapping[str, Any]) -> frozenset[str]:
    """The settings of a pydantic model's ``fields`` that take values of several kinds (``int |
    Literal["auto"]``; ``X | None`` is one kind), whose errors pydantic gives one per kind."""
    return frozenset(
        name
        for name, field in fields.items()
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        and len([arg for arg in typing.get_args(field.annotation) if arg is not type(None)]) > 1
    )


def describe_errors(
    errors: Sequence[Mapping[str, Any]],
    origin: Mapping[str, str],
    settings: Sequence[str],
    union: Collection[str] = (),
) -> str:
    """``invalid configuration:`` and a line for each bad setting of ``errors`` (pydantic's
    ``ValidationError.errors()``); ``origin`` says where each setting came from; ``union``: the
    settings of several kinds (:func:`union_settings`)."""
    lines = ["invalid configuration:"]
    # The errors of one setting of several kinds (chunk_size is a number or "auto") come one per
    # kind, each under the kind's name: one line says what it may be. (A setting that is a
    # model, adaptive_timeout, has its own fields' errors under their names: a line each.)
    unions: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        loc = err["loc"]
        if len(loc) == 2 and str(loc[0]) in union and err["type"] != "extra_forbidden":
            unions.setdefault(str(loc[0]), []).append(err)
    told: set[str] = set()
    for err in errors:
        loc = err["loc"]
        name = str(loc[0]) if loc else "config"
        where = origin.get(name, "") if loc else ""
        suffix = f" (from {where})" if where else ""
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            path = ".".join(str(part) for part in loc) or "config"
            if len(loc) == 1 and isinstance(value, dict):
                # A [run] table, as other tools' files have: the settings are top-level keys here.
                msg = (
                    f"unknown setting: a table; the settings are top-level keys (workers = 4), not in a [{path}] table"
                )
            else:
                near = near_setting(name, settings) if len(loc) == 1 else None
                msg = "unknown setting" + (f"; did you mean {near}?" if near else "")
            lines.append(f"  {path}: {msg}{suffix}")
            continue
        if name in unions:
            if name in told:
                continue
            told.add(name)
            kinds = list(dict.fromkeys(_said(e).removeprefix("must be ") for e in unions[name]))
            msg = "must be " + " or ".join(kinds)
        else:
            msg = _said(err)
            if len(loc) == 2 and isinstance(loc[1], int):
                msg += f" (item {loc[1] + 1} of the list)"
            elif len(loc) > 1:
                name = ".".join(str(part) for part in loc)  # a field of a setting that is a model
        shown = "" if isinstance(value, dict) else f" = {_shown(value)}"
        lines.append(f"  {name}{shown}: {msg}{suffix}")
    return "\n".join(lines)


def untrusted_message(path: Path, names: list[str]) -> str:
    """Why a batchtui.toml only found in the current folder may not set ``names`` (they run code)."""
    flags = " or ".join(f"--{name.replace('_', '-')}" for name in names)
    return (
        f"{path} sets {', '.join(names)}, which runs code; a batchtui.toml that is only found in the"
        f" current folder (it may have come with downloaded data) may not. If you trust it, name it:"
        f" --config {path} (or give {flags} yourself)"
    )
