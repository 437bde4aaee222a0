"""The user's keymap ($XDG_CONFIG_HOME/batchtui/keymap.toml): read, checked, and what is wrong said.

``binding_id = "key"`` (or a list of keys, or keys separated by commas), at the top level or
under ``[keymap]``. Nothing in it is taken without a word: an id no binding has (with the ids it
may mean), a value that is no key Textual can deliver (``shift+p`` is ``P``; a character's name
is a key only where Textual names that key so), a key another binding of the same screen (or the
app's, on every screen) keeps, a table that is not ``[keymap]``, a file that is no regular file.
What can apply does; what cannot is said in one toast (:func:`summary`).
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import stat
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.keys import ASCII_KEY_NAMES, KEY_NAME_REPLACEMENTS, Keys
from textual.screen import ModalScreen

__all__ = ["BindingInfo", "binding_table", "check_keymap", "is_key", "read_keymap", "summary"]

#: The modifiers a key may have (``ctrl+shift+up``).
MODIFIERS: Final = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
#: The names of keys (besides characters' names, :func:`is_key`).
_KEY_NAMES: Final = frozenset(
    {k.value for k in Keys}
    | set(KEY_NAME_REPLACEMENTS.values())
    | set(ASCII_KEY_NAMES.values())
    | {"space", "enter", "tab", "backspace", "delete", "insert"}
)
#: A value this long is shown cut in a problem (a toast must not fill the screen).
_SHOWN: Final = 40
#: Problems listed in the toast; the others are counted.
_LISTED: Final = 4
_IS_NOT_A_KEY: Final = "(a character, or a name such as ctrl+s, f5, escape, space, pageup; P for shift+p)"


def read_keymap(path: Path) -> tuple[dict[str, str], list[str]]:
    """The entries of the keymap file at ``path`` (``{binding id: "key,key"}``), and what could
    not be read: none when there is no file. A folder, a fifo, a device or a broken link in its
    place is said and not read (a fifo is never opened: it would wait for a writer)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}, ["a broken link: not read"] if os.path.lexists(path) else []
    except OSError as exc:  # a link loop, no permission
        return {}, [f"{exc.strerror or exc}: not read"]
    if not stat.S_ISREG(info.st_mode):
        return {}, [f"{'a folder' if stat.S_ISDIR(info.st_mode) else 'not a regular file'}: not read"]
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"{exc}: not read"]
    entries: dict[str, object] = {k: v for k, v in data.items() if not isinstance(v, dict)}
    problems: list[str] = []
    for name, value in data.items():
        if name == "keymap" and isinstance(value, dict):
            entries.update(value)
        elif isinstance(value, dict):
            problems.append(f"[{_cut(name)}] not read (the keymap is at the top level or under [keymap])")
    if "keymap" in entries:
        problems.append("keymap must be a table: [keymap]")
        del entries["keymap"]
    keymap: dict[str, str] = {}
    for name, value in entries.items():
        if isinstance(value, str | int) and not isinstance(value, bool):
            keymap[name] = str(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            keymap[name] = ",".join(value)
        else:
            problems.append(f"{_cut(name)} = {_cut(repr(value))} is not a key or a list of keys")
    return keymap, problems


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _typed(character: str) -> bool:
    """A character a key types (not a control, format or unassigned code point)."""
    return unicodedata.category(character)[0] != "C"


def key_name(key: str) -> str:
    """A key as Textual names it: a character other than a letter or a digit by its name
    (``?`` is ``question_mark``), anything else as it is."""
    if len(key) != 1 or key.isalnum():
        return key
    try:
        name = unicodedata.name(key).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return ASCII_KEY_NAMES.get(key, key)
    return KEY_NAME_REPLACEMENTS.get(name, name)


def is_key(key: str) -> bool:
    """Whether ``key`` names a key Textual delivers: a character, a key's name (``escape``,
    ``f5``, ``pageup``, ``question_mark``), either after modifiers (``ctrl+s``). Not ``shift+p``
    (Textual delivers ``P``), not ``latin_small_letter_z`` (it names that key ``z``)."""
    if len(key) == 1:
        return _typed(key)
    if key in _KEY_NAMES:
        return True
    *mods, base = key.split("+")
    if not base or any(m not in MODIFIERS for m in mods):
        return False
    if base in _KEY_NAMES:
        return True
    if len(base) == 1:
        return _typed(base) and not (mods == ["shift"] and base.isalpha())
    try:  # a character's name, as Textual names a key it has no name for (``left_square_bracket``)
        character = unicodedata.lookup(base.replace("_", " "))
    except KeyError:
        return False
    return len(character) == 1 and _typed(character) and key_name(character) == base


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A binding id as the app's classes bind it."""

    owner: type[DOMNode]
    """The class that binds it (a screen, a widget, the app)."""
    keys: frozenset[str]
    """Its keys, as Textual names them."""

    @property
    def everywhere(self) -> bool:
        """The app's: in the binding chain of every screen but a dialog (a modal screen's
        chain ends at it)."""
        return issubclass(self.owner, App)

    def meets(self, other: BindingInfo) -> bool:
        """Whether the two are live at once: bound by one class, or one is the app's and the
        other is no dialog's."""
        if self.owner is other.owner:
            return True
        modal = issubclass(self.owner, ModalScreen) or issubclass(other.owner, ModalScreen)
        return (self.everywhere or other.everywhere) and not modal


def binding_table() -> dict[str, BindingInfo]:
    """Every binding id a keymap may name, with its class and keys: batchtui's screens' and
    widgets' (the ones not loaded yet are imported: a keymap is checked only when there is
    one) and Textual's."""
    importlib.import_module(f"{__package__}.app")
    for package in ("screens", "widgets"):
        module = importlib.import_module(f"{__package__}.{package}")
        for info in pkgutil.iter_modules(module.__path__, f"{module.__name__}."):
            importlib.import_module(info.name)
    table: dict[str, BindingInfo] = {}
    pending: list[type[DOMNode]] = [DOMNode]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for binding in cls.__dict__.get("BINDINGS", ()):  # Textual's own too (command_palette)
            if isinstance(binding, Binding) and binding.id and binding.id not in table and not binding.system:
                keys = frozenset(key_name(k.strip()) for k in binding.key.split(","))
                table[binding.id] = BindingInfo(cls, keys)
    return table


def check_keymap(keymap: dict[str, str], table: dict[str, BindingInfo]) -> tuple[dict[str, str], list[str]]:
    """The entries of ``keymap`` that can be applied, and what is wrong with the others (an id
    no binding has, with the ids it may mean; a key that is not one) or with how they apply (a
    key another binding keeps where both are live: the screen's, or the app's everywhere)."""
    good: dict[str, str] = {}
    problems: list[str] = []
    for name, keys in keymap.items():
        if name not in table:
            near = difflib.get_close_matches(name, sorted(table), n=3)
            said = f" (did you mean {', '.join(near)}?)" if near else ""
            problems.append(f"no binding is named {_cut(repr(name))}{said}")
            continue
        listed = [k.strip() for k in keys.split(",")]
        wrong = [k for k in listed if not is_key(k)]
        if wrong:
            shown = ", ".join(_cut(repr(k)) for k in wrong[:3])
            problems.append(f"{name} = {_cut(repr(keys))}: {shown} is not a key {_IS_NOT_A_KEY}")
            continue
        good[name] = ",".join(listed)
    bound = {name: frozenset(key_name(k) for k in keys.split(",")) for name, keys in good.items()}
    for name, now in bound.items():
        mine = table[name]
        for other, info in table.items():
            if other == name or not mine.meets(info):
                continue
            shared = now & bound.get(other, info.keys)
            if shared:
                problems.append(f"{name} = {_cut(repr(good[name]))}: {', '.join(sorted(shared))} is {other}'s key too")
    return good, problems


def summary(path: Path, problems: list[str]) -> str:
    """What a toast says of the keymap's problems: the first few, and how many more."""
    head = problems[:_LISTED]
    more = f"; and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
    return f"{path}: not applied: {'; '.join(head)}{more}"
