"""Reading the settings the ``BATCHTUI_*`` environment gives, and refusing one given twice.

Apart from engine/config.py (which validates what it gives) so that module stays small, as
engine/config_file.py is for batchtui.toml. Environment names are case-sensitive and the
setting is not: ``BATCHTUI_WORKERS=2`` and ``BATCHTUI_workers=8`` are one setting, and the one
the dictionary happened to list last won in silence. Both are refused now, as a batchtui.toml
refuses ``max-attempts`` beside ``max_attempts``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from .errors import UserError

ENV_PREFIX: Final = "BATCHTUI_"

#: BATCHTUI_* names that are no setting: what batchtui sets for an item's command and for a hook
#: (a batchtui started from either sees them), and the switches it reads outside the settings.
ENV_NOT_SETTINGS: Final = frozenset(
    {"ITEM_JSON", "ITEM_JSON_FILE", "SEQ", "ATTEMPT", "BATCH_DIR", "EVENT", "STATE"}
    | {"RUN_TOKEN", "SPAWNER", "STATE_DIR", "ASCII"}
)


def env_layer(
    environ: Mapping[str, str], known: Collection[str], near: Callable[[str], str | None]
) -> tuple[dict[str, str], dict[str, str]]:
    """The settings the environment gives (``known``: the setting names), and the variable
    that gave each. Any other BATCHTUI_* name is refused, as an unknown key of batchtui.toml is:
    a typo (BATCHTUI_WOKERS=8) would otherwise change nothing, silently (``near`` suggests the
    setting meant). One setting given by two variables (two spellings of its case) is refused."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field in known:
            if field in names:
                raise UserError(f"the environment: {names[field]} and {name} are the same setting: keep one")
            out[field], names[field] = value, name
        elif name[len(ENV_PREFIX) :] not in ENV_NOT_SETTINGS:
            unknown.append(name)
    if unknown:
        lines = ["invalid configuration:"]
        for name in unknown:
            guess = near(name[len(ENV_PREFIX) :])
            hint = f"; did you mean {ENV_PREFIX}{guess.upper()}?" if guess else ""
            lines.append(f"  {name}: unknown setting (from the environment{hint})")
        raise UserError("\n".join(lines))
    return out, names


def refuse_rule_twice(label: str, layer: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
    """``timeout = "300%"`` is the adaptive rule as well as the absolute limit: beside an
    ``adaptive_timeout`` in the same file (or environment) it is that setting given twice, and
    the timeout's rule won in silence. ``names``: how each key was spelt there."""
    timeout = layer.get("timeout")
    if isinstance(timeout, str) and "%" in timeout and layer.get("adaptive_timeout") is not None:
        spelt = names or {}
        first, second = spelt.get("timeout", "timeout"), spelt.get("adaptive_timeout", "adaptive_timeout")
        raise UserError(
            f"{label}: {first}={timeout} and {second} are the same setting (the adaptive timeout rule): keep one"
        )
