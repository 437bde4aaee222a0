"""Reading a batchtui.toml: flat keys named like the long flags, with dashes or underscores.

Apart from engine/config.py (which validates what it gives) so that module stays small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError


def read_toml(path: Path) -> dict[str, Any]:
    """Read a batchtui.toml: flat keys named like the long flags (dashes or underscores)."""
    import tomllib  # here: most runs have no batchtui.toml

    try:
        raw = path.read_bytes()
        # A UTF-8 BOM (Notepad writes one) is no TOML; tomllib called it "Invalid statement".
        data = tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode())
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; tomllib does not say it in its own error
        raise UserError(f"config file {path} is not valid TOML: byte {exc.start} is not UTF-8 text") from None
    section = data.get("batchtui", data)
    if not isinstance(section, dict):
        raise UserError(f"config file {path}: [batchtui] must be a table")
    outside = [key for key in data if key != "batchtui"] if section is not data else []
    if outside:
        # With a [batchtui] table only its keys were read: `workers = 8` above it was accepted,
        # then ignored without a word.
        raise UserError(
            f"config file {path}: {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} outside its"
            " [batchtui] table, whose keys are the settings: move them into it (or drop the table line)"
        )
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name in spelt:  # max-attempts and max_attempts: TOML sees two keys, and the last won
            raise UserError(f"config file {path}: {spelt[name]} and {key} are the same setting: keep one")
        spelt[name], out[name] = key, value
    return out
