"""The ``--cmd`` template: parsed once, rendered per item with every value shell-quoted.

``{}`` is the item's main value (a file's path, a line, or a record as compact JSON),
``{path} {name} {stem} {suffix} {parent} {seq} {key} {out}`` are built-ins and any other
``{field}`` is a CSV/JSONL record field; ``{{`` and ``}}`` are literal braces. Every substituted
value goes through :func:`shlex.quote`, and :mod:`.quoting` follows the template's own quotes so
that ``convert "{}" "{out}/a.png"`` is as safe as ``convert {} {out}/a.png``.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from ..errors import UserError
from .item import Item, out_path, value_text
from .quoting import ShellContext

__all__ = ["ARG_STRLEN", "BUILTINS", "CommandTemplate", "CommandTooLong", "MissingField", "NulByte"]

#: Placeholder names with a fixed meaning; any other name is a record field.
BUILTINS: Final = frozenset({"", "path", "name", "stem", "suffix", "parent", "seq", "key", "out"})
#: Built-ins a record field of the same name stands in for: a path's parts of a JSON text mean nothing,
#: while a CSV column called ``name`` or ``path`` is common.
_PATHLIKE: Final = frozenset({"path", "name", "stem", "suffix", "parent"})
#: A field name: an identifier, where ``-`` may also follow the first character (``user-id``).
_FIELD: Final = re.compile(r"[^\W\d][\w-]*")


def _arg_strlen() -> int:
    """The longest single argument or ``NAME=value`` exec takes, with its NUL: Linux's
    MAX_ARG_STRLEN, 32 pages (128 KiB with 4 KiB pages). Other systems limit only the total
    (ARG_MAX); 128 KiB is kept there as well, so an item behaves alike everywhere."""
    try:
        page = os.sysconf("SC_PAGE_SIZE") if sys.platform.startswith("linux") else 4096
    except (ValueError, OSError):
        page = 4096
    return 32 * page


ARG_STRLEN: Final = _arg_strlen()


class MissingField(KeyError):
    """The template names a record field this item does not have."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else "missing field"


class NulByte(ValueError):
    """A value the template takes holds a NUL byte, which no exec can pass: the item fails so on
    every attempt (its error type keeps a retry from putting it back: store.selection)."""


class CommandTooLong(ValueError):
    """The rendered command is longer than one exec argument may be (the kernel's limit for one
    argument: the whole command is one argument of ``sh -c``): the item fails so on every attempt
    (its error type keeps a retry from putting it back: store.selection)."""


class _Slot(NamedTuple):
    name: str
    wrap: str  # "" outside quotes, "'" or '"' inside the template's own quotes


class CommandTemplate:
    """A parsed ``--cmd`` template; :meth:`render` fills it for one item, every value quoted."""

    __slots__ = ("_parts", "template")

    def __init__(self, template: str) -> None:
        if not template.strip():
            raise UserError("the command template is empty")
        self.template = template
        parts: list[str | _Slot] = []
        ctx = ShellContext(template)
        buf: list[str] = []
        i, n = 0, len(template)
        while i < n:
            ch = template[i]
            if ch == "{" and template.startswith("{{", i):
                buf.append("{")
                i += 2
            elif ch == "}" and template.startswith("}}", i):
                buf.append("}")
                i += 2
            elif ch == "}":
                raise UserError(
                    f"unbalanced '}}' at position {i} in the command template {template!r} "
                    "(write }} for a literal brace)"
                )
            elif ch == "{":
                end = template.find("}", i + 1)
                if end < 0:
                    raise UserError(
                        f"unbalanced '{{' at position {i} in the command template {template!r} "
                        "(write {{ for a literal brace)"
                    )
                name = template[i + 1 : end]
                if name not in BUILTINS and not _FIELD.fullmatch(name):
                    raise UserError(
                        f"bad placeholder {{{name}}} in the command template {template!r}: use {{}}, "
                        "{path}, {name}, {stem}, {suffix}, {parent}, {seq}, {key}, {out} or a record "
                        "field name, and write {{ and }} for literal braces"
                    )
                if buf:
                    literal = "".join(buf)
                    ctx.feed(literal)
                    parts.append(literal)
                    buf = []
                parts.append(_Slot(name, ctx.placeholder(name)))
                i = end + 1
            else:
                buf.append(ch)
                i += 1
        if buf:
            literal = "".join(buf)
            ctx.feed(literal)
            parts.append(literal)
        ctx.finish()
        self._parts: tuple[str | _Slot, ...] = tuple(parts)

    def __repr__(self) -> str:
        return f"CommandTemplate({self.template!r})"

    @property
    def fields(self) -> frozenset[str]:
        """Record field names the template uses (placeholders that are not built-ins)."""
        return frozenset(p.name for p in self._parts if isinstance(p, _Slot) and p.name not in BUILTINS)

    @property
    def uses_out(self) -> bool:
        """Whether the template uses ``{out}`` (the processor then creates that folder)."""
        return any(isinstance(p, _Slot) and p.name == "out" for p in self._parts)

    def render(self, item: Item, out_dir: str | None, quote: Callable[[str], str] = shlex.quote) -> str:
        """The command line for ``item``. ``out_dir`` is ``{out}`` (default ``<batch_dir>/out/<seq>``).
        ``quote`` quotes each value (a view passes one that writes control characters escaped).

        Raises :class:`MissingField` when the item lacks a field the template names, and
        :class:`NulByte` (a ValueError) when a value holds a NUL byte.
        """
        pieces: list[str] = []
        append = pieces.append
        for part in self._parts:
            if isinstance(part, str):
                append(part)
                continue
            text = value_text(_value(item, part.name, out_dir))
            if "\x00" in text:
                raise NulByte(f"the value of {{{part.name}}} contains a NUL byte, which exec cannot pass")
            quoted = quote(text)
            if part.wrap and quoted != text:
                # Inside the template's own quotes: close them, add the quoted word, reopen them.
                quoted = part.wrap + quoted + part.wrap
            append(quoted)
        return "".join(pieces)

    def too_long(self, item: Item, out_dir: str | None, cmd: str) -> str:
        """Why ``cmd`` (this template rendered for ``item``) cannot run: the placeholders whose
        values made it longer than one exec argument may be, largest first, with their sizes."""
        sizes: dict[str, int] = {}
        for part in self._parts:
            if isinstance(part, _Slot):
                size = len(os.fsencode(shlex.quote(value_text(_value(item, part.name, out_dir)))))
                sizes[part.name] = sizes.get(part.name, 0) + size
        big = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        named = ", ".join(f"{{{name}}} is {size:,} bytes" for name, size in big)
        return (
            f"the command line is {len(os.fsencode(cmd)):,} bytes, over the {ARG_STRLEN:,} bytes one "
            f"argument may have (the whole command is one argument of `sh -c`): {named}. Have the "
            "command read the value from the item's JSON instead: $BATCHTUI_ITEM_JSON, or the file "
            "$BATCHTUI_ITEM_JSON_FILE names when the item is over 128 KiB"
        )


def _value(item: Item, name: str, out_dir: str | None) -> Any:
    data = item.data
    if name == "":
        return data
    if name == "seq":
        return item.seq
    if name == "key":
        return item.key
    if name == "out":
        return out_dir if out_dir is not None else out_path(item)
    if isinstance(data, dict):
        if name in data:
            return data[name]
        if name not in _PATHLIKE:
            raise MissingField(f"item has no field {name!r}")
    elif name not in _PATHLIKE:
        raise MissingField(f"item has no field {name!r} (only CSV and JSONL records have fields)")
    path = data if isinstance(data, str) else value_text(data)
    if name == "path":
        return path
    if name == "parent":
        return os.path.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")
    base = os.path.basename(path.rstrip("/")) or path
    if name == "name":
        return base
    stem, suffix = os.path.splitext(base)
    return stem if name == "stem" else suffix
