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

from dataclasses import dataclass
from typing import Any

from textual.actions import parse
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widgets import Button

__all__ = ["KeyEntry", "explained", "key_entries", "key_words", "label_buttons", "rebound_key"]


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


def rebound_key(screen: Screen[Any], binding_id: str) -> str | None:
    """The key ``binding_id`` has on ``screen`` now (as shown), when the user's keymap moved it
    from the screen's own; else None. A dialog's button says its key: "Yes (y)" stayed so with
    ``confirm_yes = "j"``, and y did nothing."""
    defaults = {
        key.strip()
        for b in type(screen).BINDINGS
        if isinstance(b, Binding) and b.id == binding_id
        for key in b.key.split(",")
    }
    for _node, bindings in screen._modal_binding_chain:
        for key, binding in bindings:
            if binding.id == binding_id and not binding.system:
                return None if key in defaults else screen.app.get_key_display(binding)
    return None


def label_buttons(screen: Screen[Any], buttons: dict[str, tuple[str, str]]) -> None:
    """Each button of ``screen`` named in ``buttons`` (``{button id: (binding id, text)}``)
    labelled ``text (key)`` with the key the user's keymap gave its binding (see
    :func:`rebound_key`); one whose key is the screen's own keeps its label."""
    for button_id, (binding_id, text) in buttons.items():
        key = rebound_key(screen, binding_id)
        if key is not None:
            screen.query_one(f"#{button_id}", Button).label = f"{text} ({key})"
