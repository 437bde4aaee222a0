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

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.actions import parse
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen

__all__ = ["KeyEntry", "key_entries", "key_words", "user_keymap"]


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


def key_entries(screen: Screen[Any]) -> list[KeyEntry]:
    """The screen's keys: its own first (in the order it binds them), then the focused
    widget's, then the app's; keys bound to the same action of the same node are one entry."""
    grouped: dict[tuple[int, str], list[tuple[str, Binding, bool, DOMNode]]] = {}
    for node, bindings in screen._modal_binding_chain:
        for key, binding in bindings:
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
    ``[keymap]``), from ``path`` ($XDG_CONFIG_HOME/batchtui/keymap.toml); none if it does not
    exist. A file that cannot be read gives no overrides and says why."""
    if not path.is_file():
        return {}, None
    try:
        data = tomllib.loads(path.read_text())
        return {str(k): str(v) for k, v in data.get("keymap", data).items()}, None
    except (OSError, tomllib.TOMLDecodeError, AttributeError) as exc:
        return {}, f"{path}: {exc}"
