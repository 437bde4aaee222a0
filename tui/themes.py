"""Themes as data: TOML files validated by a pydantic model, turned into Textual themes.

A theme file looks like this (every built-in under ``batchtui/themes/`` is an example)::

    name = "dark"            # what `--theme`, the `t` key and the command palette use
    dark = true
    primary = "#4ea1f3"      # required; the rest fall back to Textual's derivations
    secondary = "#8b7cf6"
    accent = "#f5a524"
    foreground = "#e6e9ef"
    background = "#0f141b"
    surface = "#171d26"
    panel = "#202835"
    success = "#3fb950"      # complete items
    warning = "#e3b341"      # retries, paused
    error = "#f85149"        # failed items
    # boost, luminosity_spread, text_alpha and ansi are accepted too

    [variables]              # any extra Textual CSS variable, e.g.
    footer-key-foreground = "#f5a524"
    input-selection-background = "#4ea1f3 35%"
    block-cursor-text-style = "bold"

Built-in themes ship inside the package; users add or override them with files
in ``$XDG_CONFIG_HOME/batchtui/themes`` (a user theme named like a built-in
replaces it). A broken user file never stops the app: ``load_themes`` returns
it as a problem message naming the file, and the app shows it and goes on.

This module imports textual only inside its functions, so ``color_system`` can be
imported and entered before textual is loaded (see its docstring).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchtui.engine.basemodel import Model

if TYPE_CHECKING:
    from textual.theme import Theme

__all__ = [
    "COLOR_SYSTEMS",
    "DEFAULT_THEME",
    "PREFERRED_ORDER",
    "ThemeFile",
    "ThemeFileError",
    "builtin_dir",
    "color_system",
    "load_theme_file",
    "load_themes",
    "next_theme",
    "theme_names",
    "to_textual",
    "user_dir",
]

DEFAULT_THEME = "dark"
"""The theme the app starts with unless told otherwise."""

PREFERRED_ORDER = ("dark", "light", "high-contrast")
"""These come first in every theme list (and in the `t` cycle); the rest follow by name."""

COLOR_SYSTEMS = ("auto", "standard", "256", "truecolor", "none")
"""Values accepted by ``color_system`` (and ``--color-system``)."""

_COLOR_VARIABLES = ("NO_COLOR", "TEXTUAL_COLOR_SYSTEM")
"""What ``color_system`` sets while the app is made, and gives back after."""

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_VARIABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# What a CSS value of a theme variable may contain. Textual pastes the value into
# the stylesheet, so ';', '{', '}', '$' or a newline could end the declaration early
# or smuggle in a rule; nothing a colour or text style needs is excluded.
_VARIABLE_VALUE = re.compile(r"^[A-Za-z0-9_#.%(), -]+$")


# -- the file model --------------------------------------------------------------------------


def _check_colour(value: str) -> str:
    """Reject anything Textual cannot parse as a colour, with Textual's own hint."""
    from textual.color import Color, ColorParseError

    try:
        Color.parse(value)
    except ColorParseError as error:
        raise ValueError(f"not a colour: {error}") from None
    return value


Colour = Annotated[str, AfterValidator(_check_colour)]
"""A colour as Textual parses it: "#rrggbb", "#rrggbbaa", "rgb(…)", "hsl(…)", a name, "ansi_red"."""


class ThemeFile(Model):
    """One theme file (TOML), validated; ``to_textual`` makes it a Textual ``Theme``.

    Unknown keys are errors (a typo must not silently fall back to a default), and
    every colour and variable is checked the way Textual will use it, so a theme
    that validates cannot break the app's stylesheet when it is switched to.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Annotated[str, Field(pattern=_NAME_PATTERN)]
    dark: bool = True
    primary: Colour
    secondary: Colour | None = None
    accent: Colour | None = None
    foreground: Colour | None = None
    background: Colour | None = None
    surface: Colour | None = None
    panel: Colour | None = None
    boost: Colour | None = None
    success: Colour | None = None
    warning: Colour | None = None
    error: Colour | None = None
    luminosity_spread: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15
    text_alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    ansi: bool = False
    variables: dict[str, str] = {}

    @field_validator("variables")
    @classmethod
    def _check_variables(cls, variables: dict[str, str]) -> dict[str, str]:
        problems = [
            f"{name} = {value!r}: {problem}"
            for name, value in variables.items()
            if (problem := _variable_problem(name, value)) is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return variables

    @model_validator(mode="after")
    def _check_textual_accepts(self) -> ThemeFile:
        # Textual derives ~170 shades from these colours; make it do so now, so a
        # combination it chokes on is reported here rather than when switching themes.
        try:
            to_textual(self).to_color_system().generate()
        except Exception as error:
            raise ValueError(f"Textual cannot build this theme: {error}") from None
        return self


_COLOUR_FIELDS = (
    *("primary", "secondary", "accent", "foreground", "background", "surface", "panel", "boost"),
    *("success", "warning", "error"),
)


def to_textual(t: ThemeFile) -> Theme:
    """The Textual ``Theme`` for a theme file (unset colours stay unset: Textual derives them)."""
    from textual.theme import Theme

    colours = {key: getattr(t, key) for key in _COLOUR_FIELDS}
    return Theme(
        name=t.name,
        dark=t.dark,
        luminosity_spread=t.luminosity_spread,
        text_alpha=t.text_alpha,
        ansi=t.ansi,
        variables=dict(t.variables),
        **colours,
    )


# -- theme variables -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _textual_variable_defaults() -> dict[str, str]:
    """Textual's own theme variables and their default values (any theme gives the same names)."""
    from textual.design import ColorSystem

    return {
        **ColorSystem(primary="#0178d4", dark=True, ansi=True).generate(),
        **ColorSystem(primary="#0178d4", dark=True).generate(),
    }


def _variable_problem(name: str, value: str) -> str | None:
    """Why ``name = value`` would break the stylesheet, or None when Textual accepts it.

    The value is checked with Textual's own declaration parser, in the kind of
    property the variable is used in: a text style for ``*-style*`` variables, a
    foreground colour ("auto 87%" allowed) where Textual's default is an "auto"
    colour, and otherwise a colour that is valid as a background too.
    """
    from textual.css.parse import parse_declarations

    if not _VARIABLE_NAME.match(name):
        return "not a variable name (letters, digits, '-' and '_')"
    if not value.strip() or not _VARIABLE_VALUE.match(value):
        return "not a plain CSS value (no ';', '{', '}', '$' or line breaks)"
    properties: tuple[str, ...]
    if "style" in name.split("-"):
        properties, kind = ("text-style",), "text style such as 'bold', 'none' or 'b reverse'"
    elif _textual_variable_defaults().get(name, "").startswith("auto"):
        properties, kind = ("color",), "colour (or 'auto 87%')"
    else:
        properties, kind = ("color", "background"), "colour such as '#88c0d0' or '#88c0d0 35%'"
    for prop in properties:
        try:
            parse_declarations(f"{prop}: {value};", ("", ""))
        except Exception:
            return f"not a {kind}"
    return None


# -- reading files ---------------------------------------------------------------------------


class ThemeFileError(ValueError):
    """A theme file that cannot be used; ``str()`` is the message for the user, path first."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _describe(error: ValidationError) -> str:
    """A pydantic error as one line a theme author can act on."""
    known = list(ThemeFile.model_fields)
    parts: list[str] = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(where, known, n=1)
            parts.append(f"unknown key {where!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif kind == "string_pattern_mismatch" and where == "name":
            parts.append(f"name: use up to 64 letters, digits, '-' and '_' (got {item['input']!r})")
        elif kind == "missing":
            parts.append(f"missing required key {where!r}")
        else:
            ctx = item.get("ctx") or {}
            message = str(ctx["error"]) if kind == "value_error" and "error" in ctx else item["msg"]
            if kind != "value_error" and isinstance(item["input"], str | int | float | bool):
                message += f" (got {item['input']!r})"
            parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def load_theme_file(path: Path) -> ThemeFile:
    """Read and validate one theme file.

    Raises:
        ThemeFileError: unreadable, not UTF-8, not TOML, or not a valid theme; the
            message names the file and says what is wrong.
    """
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ThemeFileError(path, "not UTF-8 text") from None
    except OSError as error:
        raise ThemeFileError(path, f"cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ThemeFileError(path, f"not valid TOML: {error}") from None
    try:
        return ThemeFile.model_validate(data)
    except ValidationError as error:
        raise ThemeFileError(path, _describe(error)) from None


def _theme_files(directory: Path) -> list[Path]:
    """The ``*.toml`` files of a directory, by name; dotfiles (editor locks, backups) are skipped."""
    return sorted(p for p in directory.iterdir() if p.suffix == ".toml" and not p.name.startswith("."))


def builtin_dir() -> Path:
    """The directory of the built-in theme files (the installed ``batchtui.themes`` package)."""
    root = files("batchtui.themes")
    # Installed as a directory (wheel or editable), which is all we support; a
    # zipped install would need Traversable reads instead.
    return root if isinstance(root, Path) else Path(str(root))


def user_dir() -> Path:
    """Where users put their own themes: ``$XDG_CONFIG_HOME/batchtui/themes``.

    ``XDG_CONFIG_HOME`` counts only when set to an absolute path (as the XDG spec
    says); otherwise it is ``~/.config/batchtui/themes``. The directory may not exist.
    """
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "batchtui" / "themes"


def load_themes(*, user_dir: Path | None = None) -> tuple[dict[str, Theme], list[str]]:
    """Every built-in theme plus every user theme, by name, and the problems met.

    Args:
        user_dir: where to look for user themes; default ``user_dir()``. A missing
            directory is fine (no user themes).

    Returns:
        ``(themes, problems)``. A user theme named like a built-in replaces it. A user
        file that cannot be used is left out and described in ``problems`` (one
        human-readable line each, naming the file); this never raises for user files.

    Raises:
        ThemeFileError: a built-in theme is broken (a packaging bug the tests catch).
    """
    themes: dict[str, Theme] = {}
    for path in _theme_files(builtin_dir()):
        spec = load_theme_file(path)
        themes[spec.name] = to_textual(spec)

    problems: list[str] = []
    paths: list[Path] = []
    try:
        directory = user_dir if user_dir is not None else _default_user_dir()
    except RuntimeError as error:  # no home directory to be found
        problems.append(f"cannot find the user theme directory: {error}")
    else:
        try:
            paths = _theme_files(directory)
        except FileNotFoundError:
            pass  # no user themes
        except OSError as error:
            problems.append(f"{directory}: cannot read the user theme directory: {error.strerror or error}")

    defined_in: dict[str, Path] = {}
    for path in paths:
        try:
            spec = load_theme_file(path)
        except ThemeFileError as error:
            problems.append(str(error))
            continue
        if spec.name in defined_in:
            problems.append(
                f"{path}: theme {spec.name!r} is also defined in {defined_in[spec.name]}; using {path.name}"
            )
        defined_in[spec.name] = path
        themes[spec.name] = to_textual(spec)
    return themes, problems


_default_user_dir = user_dir  # load_themes' keyword argument shadows the function's name


# -- choosing --------------------------------------------------------------------------------


def theme_names(themes: Iterable[str]) -> list[str]:
    """Theme names in display order: dark, light, high-contrast first, then the rest by name.

    Takes the names or the mapping ``load_themes`` returns.
    """
    names = set(themes)
    first = [name for name in PREFERRED_ORDER if name in names]
    return first + sorted(names - set(first), key=lambda name: (name.casefold(), name))


def next_theme(current: str, names: list[str]) -> str:
    """The theme after ``current`` in ``names``, wrapping around (the `t` key).

    An unknown ``current`` gives the first name; an empty list gives ``current`` back.
    """
    if not names:
        return current
    if current not in names:
        return names[0]
    return names[(names.index(current) + 1) % len(names)]


# -- colour system ---------------------------------------------------------------------------


@contextmanager
def color_system(value: str | None) -> Iterator[None]:
    """Force the terminal colour system of the apps made inside (``--color-system``).

    Enter it **before importing textual.app** (in the CLI, before the TUI modules are
    imported) and make the app inside: Textual reads ``TEXTUAL_COLOR_SYSTEM`` once, into
    ``textual.constants.COLOR_SYSTEM``, when textual is first imported, and an ``App``
    reads ``NO_COLOR`` and that constant when it is made. If textual is already loaded,
    the constant is updated as well, so apps made afterwards still follow it.

    On leaving, ``os.environ`` is given back as it was (the constant keeps the choice).
    The environment is the one the run's items inherit: a dashboard's colours must not
    change what a command or a callable sees (a ``NO_COLOR`` the user set, taken away by
    ``truecolor``, would put escapes into the results).

    Why: over SSH the terminal's abilities are guessed from ``TERM`` and ``COLORTERM``,
    which are often lost or wrong on the way (sshd does not forward ``COLORTERM`` by
    default; tmux and screen rewrite ``TERM``). A truecolor terminal then gets 256
    colours, or a 256-colour one gets truecolor escapes it shows as garbage.

    Args:
        value: ``auto`` (detect), ``standard`` (16 colours), ``256``, ``truecolor``,
            ``none`` (no colour: sets ``NO_COLOR``, which Textual honours by drawing
            in monochrome), or None to leave everything alone. A forced colour
            system overrides an inherited ``NO_COLOR``, as no-color.org says
            command-line options should.

    Raises:
        ValueError: any other value (before anything changed).
    """
    if value is None:
        yield
        return
    choice = value.strip().lower()
    if choice not in COLOR_SYSTEMS:
        raise ValueError(f"unknown colour system {value!r}: choose one of {', '.join(COLOR_SYSTEMS)}")
    before = {name: os.environ.get(name) for name in _COLOR_VARIABLES}
    if choice == "none":
        # TEXTUAL_COLOR_SYSTEM=none would crash Textual (rich knows no "none" system);
        # NO_COLOR is its supported switch. Standard keeps the few escapes left minimal.
        os.environ["NO_COLOR"] = "1"
        system = "standard"
    else:
        if choice != "auto":
            os.environ.pop("NO_COLOR", None)
        system = choice
    os.environ["TEXTUAL_COLOR_SYSTEM"] = system
    constants = sys.modules.get("textual.constants")
    if constants is not None:
        setattr(constants, "COLOR_SYSTEM", system)  # noqa: B010 (a Final the type checker guards)
    try:
        yield
    finally:
        for name, old in before.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
