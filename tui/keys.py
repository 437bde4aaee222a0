"""The keys of a screen as the help dialog and the command palette list them.

Both are generated from the bindings that are live on the screen (the focused widget's and
its parents', the screen's and the app's, with the user's keymap applied), never from a
hand-kept copy, so a key added to a screen shows in both at once. Textual's public
``active_bindings`` keeps one binding a key (the focused table's ``space`` hides the screen's),
so the chain it is made from is read instead, each node's bindings whole (the one private
name used: Textual has no public list of a node's bindings with the user's keymap applied).
Whether an action applies is asked of the node it runs on through its public ``check_action``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.actions import parse
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.keys import ASCII_KEY_NAMES, KEY_NAME_REPLACEMENTS, Keys
from textual.screen import Screen

__all__ = ["KeyEntry", "binding_ids", "check_keymap", "explained", "is_key", "key_entries", "key_words", "user_keymap"]


@dataclass(frozen=True)
class KeyEntry:
    """One action and every key bound to it on the screen."""

    keys: tuple[str, ...]
    action: str
    description: str
    tooltip: str
    node: DOMNode
    #: ``check_action`` says it applies now (one that does not is shown greyed).
    enabled: bool

    @property
    def key_text(self) -> str:
        return " / ".join(self.keys)

    @property
    def title(self) -> str:
        return self.description or self.action.partition("(")[0].replace("_", " ").capitalize()

    @property
    def action_name(self) -> str:
        """The action without its parameters (what ``check_action`` is asked about)."""
        return self.action.partition("(")[0]


def _action_state(node: DOMNode, action: str) -> bool | None:
    """What ``check_action`` says of ``action`` bound on ``node`` (``app.``, ``screen.`` and
    ``focused.`` name the node it is run on, as Textual's action namespaces do)."""
    namespace, name, parameters = parse(action)
    target = getattr(node.app, namespace, None) if namespace in ("app", "screen", "focused") else node
    return (target or node).check_action(name, parameters)


def _rank(node: DOMNode, screen: Screen[Any]) -> int:
    if node is screen:
        return 0
    if node is screen.app:
        return 2
    return 1  # the focused widget or one of its parents


def explained(bindings: list[BindingType], actions: tuple[str, ...]) -> list[BindingType]:
    """``bindings``, and after each binding of ``actions`` a hidden one on the same key (and id:
    a keymap moves both) that says why the key does nothing while ``check_action`` greys its
    action out (Textual passes a key it refuses on to the key's next binding): a greyed key
    pressed said nothing, where the palette said why."""
    out: list[BindingType] = []
    for b in bindings:
        out.append(b)
        if isinstance(b, Binding) and b.action in actions:
            said = f"why_not({b.action!r}, {b.description!r})"
            out.append(Binding(b.key, said, "", show=False, id=b.id, priority=b.priority, system=True))
    return out


def key_entries(screen: Screen[Any]) -> list[KeyEntry]:
    """The screen's keys: its own first (in the order it binds them), then the focused
    widget's, then the app's; keys bound to the same action of the same node are one entry."""
    grouped: dict[tuple[int, str], list[tuple[str, Binding, bool, DOMNode]]] = {}
    for node, bindings in screen._modal_binding_chain:
        for key, binding in bindings:
            if binding.system:  # a greyed key's explanation (explained) is its key's own
                continue
            # check_action: None is greyed, False hidden from the footer (the detail's stream
            # switch while no output shows); either way the key is listed, as not applying now.
            state = _action_state(node, binding.action)
            grouped.setdefault((id(node), binding.action), []).append((key, binding, bool(state), node))
    entries = []
    for group in grouped.values():
        _key, binding, enabled, node = group[0]
        displays = tuple(dict.fromkeys(screen.app.get_key_display(b) for _k, b, _e, _n in group))
        entries.append(
            KeyEntry(
                keys=displays,
                action=binding.action,
                description=binding.description,
                tooltip=binding.tooltip,
                node=node,
                enabled=enabled,
            )
        )
    order = {id(e): i for i, e in enumerate(entries)}
    return sorted(entries, key=lambda e: (_rank(e.node, screen), order[id(e)]))


#: Keys Textual shows as symbols, said in words on an ASCII terminal.
KEY_WORDS = {"⏎": "enter", "↑": "up", "↓": "down", "←": "left", "→": "right", "⌫": "backspace", "⇥": "tab"}


def key_words(shown: str) -> str:
    """A key's display with its symbols said in words (``⏎`` -> ``enter``), for ASCII terminals."""
    if not shown.isascii():
        for symbol, word in KEY_WORDS.items():
            shown = shown.replace(symbol, word)
    return shown


def user_keymap(path: Path) -> tuple[dict[str, str], str | None]:
    """The user's key overrides, ``{binding id = "keys"}`` (at the top level or under
    ``[keymap]``; a list of keys, or keys separated by commas), from ``path``
    ($XDG_CONFIG_HOME/batchtui/keymap.toml); none if it does not exist. A file that cannot be
    read gives no overrides and says why; an entry that is not one is left out and said
    (:func:`check_keymap` says which ids and keys are not ours)."""
    if not path.is_file():
        return {}, None
    try:
        data = tomllib.loads(path.read_text())
        table = data.get("keymap", data)
        if not isinstance(table, dict):
            raise AttributeError(f"[keymap] must be a table of binding ids, not {type(table).__name__}")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError) as exc:
        return {}, f"{path}: {exc}"
    keymap: dict[str, str] = {}
    bad: list[str] = []
    for name, value in table.items():
        if isinstance(value, str | int) and not isinstance(value, bool):
            keymap[str(name)] = str(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            keymap[str(name)] = ",".join(value)
        else:
            bad.append(f"{name} = {value!r} is not a key or a list of keys")
    return keymap, f"{path}: {'; '.join(bad)}" if bad else None


#: The modifiers a key may have (``ctrl+shift+up``).
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})


#: The names of keys (besides characters' names, :func:`is_key`).
_KEY_NAMES = frozenset(
    {k.value for k in Keys}
    | set(KEY_NAME_REPLACEMENTS.values())
    | set(ASCII_KEY_NAMES.values())
    | {"space", "enter", "tab", "backspace", "delete", "insert"}
)


def _typed(character: str) -> bool:
    """A character a key types (not a control, format or unassigned code point)."""
    return unicodedata.category(character)[0] != "C"


def is_key(key: str) -> bool:
    """Whether ``key`` names a key Textual can bind: a character, a key's name (``escape``,
    ``f5``, ``pageup``, ``question_mark``), either after modifiers (``ctrl+s``)."""
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
        return _typed(base)
    try:  # a character's name, as Textual names a key it has no name for (``left_square_bracket``)
        return len(unicodedata.lookup(base.replace("_", " "))) == 1
    except KeyError:
        return False


def binding_ids() -> set[str]:
    """Every binding id a keymap may name: batchtui's screens' and widgets' (the ones not
    loaded yet are imported: a keymap is checked only when there is one) and Textual's."""
    importlib.import_module(f"{__package__}.app")
    for package in ("screens", "widgets"):
        module = importlib.import_module(f"{__package__}.{package}")
        for info in pkgutil.iter_modules(module.__path__, f"{module.__name__}."):
            importlib.import_module(info.name)
    ids: set[str] = set()
    pending: list[type[DOMNode]] = [DOMNode]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for binding in cls.__dict__.get("BINDINGS", ()):  # Textual's own too (command_palette)
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids


def check_keymap(keymap: dict[str, str], ids: set[str]) -> tuple[dict[str, str], list[str]]:
    """The entries of ``keymap`` that can be applied, and what is wrong with the others: an id
    no binding has (with the ids it may mean), a key that is not one."""
    good: dict[str, str] = {}
    problems: list[str] = []
    for name, keys in keymap.items():
        if name not in ids:
            near = difflib.get_close_matches(name, sorted(ids), n=3)
            problems.append(f"no binding is named {name!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
            continue
        listed = [k.strip() for k in keys.split(",")]
        wrong = [k for k in listed if not is_key(k)]
        if wrong:
            problems.append(
                f"{name} = {keys!r}: {', '.join(repr(k) for k in wrong)} is not a key"
                " (a character, or a name such as ctrl+s, f5, escape, space, pageup)"
            )
            continue
        good[name] = ",".join(listed)
    return good, problems
