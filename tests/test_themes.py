"""Themes: built-in and user TOML files, validation messages, cycling, colour system."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.color import Color
from textual.containers import VerticalScroll
from textual.theme import Theme
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, ProgressBar, Sparkline

from batchtui.tui.themes import (
    COLOR_SYSTEMS,
    PREFERRED_ORDER,
    ThemeFile,
    ThemeFileError,
    builtin_dir,
    color_system,
    load_theme_file,
    load_themes,
    next_theme,
    theme_names,
    to_textual,
    user_dir,
)

BUILTIN_FILES = sorted(builtin_dir().glob("*.toml"))


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG config home; returns its batchtui themes directory (not created)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "batchtui" / "themes"


# -- built-ins -------------------------------------------------------------------------------


def test_builtin_dir_is_the_package_and_holds_themes() -> None:
    import batchtui.themes

    assert builtin_dir() == Path(batchtui.themes.__file__).parent
    assert len(BUILTIN_FILES) >= 5


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_every_builtin_loads_converts_and_is_complete(path: Path) -> None:
    spec = load_theme_file(path)
    theme = to_textual(spec)
    assert isinstance(theme, Theme)
    assert theme.name == spec.name == path.stem  # file named after its theme
    assert theme.to_color_system().generate()["primary"]
    # Built-ins set every colour explicitly (users may leave them to Textual).
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    required = {"name", "dark", "primary", "secondary", "accent", "foreground", "background", "surface", "panel"}
    assert required | {"success", "warning", "error"} <= raw.keys()
    assert isinstance(raw["dark"], bool)


def test_required_names_exist_and_come_first() -> None:
    themes, problems = load_themes(user_dir=Path("/nonexistent/batchtui-themes"))
    assert problems == []
    assert set(PREFERRED_ORDER) <= themes.keys()
    assert themes["dark"].dark and not themes["light"].dark and themes["high-contrast"].dark
    names = theme_names(themes)
    assert names[:3] == ["dark", "light", "high-contrast"]
    assert names[3:] == sorted(names[3:])
    assert sorted(names) == sorted(themes)


def _luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of '#rrggbb'."""
    channels = [int(hex_colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two '#rrggbb' colours."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_text_and_status_colours_are_readable(path: Path) -> None:
    spec = load_theme_file(path)
    assert spec.background and spec.foreground
    assert contrast(spec.foreground, spec.background) >= 7.0  # WCAG AAA for body text
    for key in ("primary", "success", "warning", "error"):
        colour = getattr(spec, key)
        assert contrast(colour, spec.background) >= 4.5, key  # AA: statuses are shown as text


def test_high_contrast_is_black_white_and_aaa_everywhere() -> None:
    spec = load_theme_file(builtin_dir() / "high-contrast.toml")
    assert (spec.background, spec.foreground) == ("#000000", "#ffffff")
    assert spec.text_alpha == 1.0
    for key in ("primary", "secondary", "accent", "success", "warning", "error"):
        assert contrast(getattr(spec, key), "#000000") >= 7.0, key
    assert spec.variables["text-muted"] and contrast(spec.variables["text-muted"], "#000000") >= 7.0


# -- user themes -----------------------------------------------------------------------------


def test_user_dir_follows_xdg(xdg: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert user_dir() == xdg
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # not absolute: ignored, per the spec
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_dir() == tmp_path / "home" / ".config" / "batchtui" / "themes"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert user_dir() == tmp_path / "home" / ".config" / "batchtui" / "themes"


def test_missing_user_dir_is_no_problem(xdg: Path) -> None:
    themes, problems = load_themes()
    assert problems == []
    assert set(PREFERRED_ORDER) <= themes.keys()


def test_user_theme_is_added_and_can_override_a_builtin(xdg: Path) -> None:
    builtin_dark = load_themes(user_dir=xdg)[0]["dark"]
    write(xdg, "ocean.toml", 'name = "ocean"\nprimary = "#1e90ff"\nbackground = "#001a33"\n')
    write(xdg, "my-dark.toml", 'name = "dark"\nprimary = "#ff00ff"\n[variables]\nfooter-key-foreground = "#ff00ff"\n')
    themes, problems = load_themes()  # default: the XDG directory
    assert problems == []
    assert themes["ocean"].primary == "#1e90ff"
    assert themes["ocean"].dark is True  # Textual's default
    assert themes["dark"].primary == "#ff00ff" != builtin_dark.primary
    assert themes["dark"].variables == {"footer-key-foreground": "#ff00ff"}
    assert theme_names(themes)[:3] == ["dark", "light", "high-contrast"]
    assert "ocean" in theme_names(themes)


def test_same_name_in_two_user_files_is_reported_and_the_last_wins(xdg: Path) -> None:
    write(xdg, "a.toml", 'name = "twin"\nprimary = "#111111"\n')
    write(xdg, "b.toml", 'name = "twin"\nprimary = "#222222"\n')
    themes, problems = load_themes(user_dir=xdg)
    assert themes["twin"].primary == "#222222"
    assert len(problems) == 1 and "b.toml" in problems[0] and "a.toml" in problems[0]


BROKEN = {
    "bad-toml.toml": ('name = "x"\nprimary = \n', "not valid TOML"),
    "bad-colour.toml": ('name = "x"\nprimary = "reed"\n', "did you mean 'red'"),
    "unknown-key.toml": ('name = "x"\nprimary = "#fff"\nprimry = "#000"\n', "unknown key 'primry'"),
    "unknown-table.toml": ('name = "x"\nprimary = "#fff"\n[colours]\nred = "#f00"\n', "unknown key 'colours'"),
    "no-name.toml": ('primary = "#fff"\n', "missing required key 'name'"),
    "no-primary.toml": ('name = "x"\n', "missing required key 'primary'"),
    "bad-name.toml": ('name = "has space"\nprimary = "#fff"\n', "name:"),
    "bad-type.toml": ('name = "x"\nprimary = "#fff"\ndark = "yes"\n', "dark:"),
    "bad-range.toml": ('name = "x"\nprimary = "#fff"\ntext_alpha = 2\n', "text_alpha:"),
    "bad-variable.toml": ('name = "x"\nprimary = "#fff"\n[variables]\nfooter-key-foreground = "zzz"\n', "zzz"),
    "bad-style.toml": ('name = "x"\nprimary = "#fff"\n[variables]\nlink-style = "wobbly"\n', "text style"),
    "auto-background.toml": ('name = "x"\nprimary = "#fff"\n[variables]\nfooter-background = "auto 50%"\n', "auto"),
    "css-injection.toml": ('name = "x"\nprimary = "#fff"\n[variables]\nborder = "red; } * { color: red"\n', "plain"),
}


@pytest.mark.parametrize("filename", sorted(BROKEN))
def test_broken_user_theme_is_a_problem_naming_the_file_not_an_error(xdg: Path, filename: str) -> None:
    text, expected = BROKEN[filename]
    path = write(xdg, filename, text)
    write(xdg, "good.toml", 'name = "good"\nprimary = "#00ff00"\n')
    themes, problems = load_themes(user_dir=xdg)
    assert "good" in themes and "x" not in themes
    assert set(PREFERRED_ORDER) <= themes.keys()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ")
    assert expected in problems[0]
    with pytest.raises(ThemeFileError, match=filename):
        load_theme_file(path)


def test_unreadable_and_odd_user_files(xdg: Path) -> None:
    (xdg).mkdir(parents=True)
    (xdg / "binary.toml").write_bytes(b"\xff\xfe\x00")
    (xdg / "dangling.toml").symlink_to(xdg / "nowhere")
    (xdg / ".#editor-lock.toml").symlink_to(xdg / "nowhere")  # emacs lock: skipped silently
    (xdg / "notes.txt").write_text("not a theme")  # not *.toml: ignored
    _, problems = load_themes(user_dir=xdg)
    assert len(problems) == 2
    assert any("binary.toml" in p and "UTF-8" in p for p in problems)
    assert any("dangling.toml" in p and "cannot read" in p for p in problems)


def test_user_dir_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    not_a_dir = write(tmp_path, "themes", "")
    themes, problems = load_themes(user_dir=not_a_dir)
    assert "dark" in themes
    assert len(problems) == 1 and str(not_a_dir) in problems[0]


def test_valid_variables_and_optional_fields_are_accepted() -> None:
    spec = ThemeFile.model_validate(
        {
            "name": "custom_1",
            "primary": "ansi_blue",
            "boost": "#ffffff0a",
            "text_alpha": 1,
            "luminosity_spread": 0.2,
            "variables": {
                "text": "auto 87%",
                "input-selection-background": "#81a1c1 35%",
                "link-background": "initial",
                "link-style-hover": "bold not underline",
                "button-focus-text-style": "b reverse",
                "my-app-colour": "rgb(10, 20, 30)",
            },
        }
    )
    theme = to_textual(spec)
    assert theme.text_alpha == 1.0 and theme.boost == "#ffffff0a"
    assert theme.variables["text"] == "auto 87%"


# -- cycling ---------------------------------------------------------------------------------


def test_next_theme_cycles() -> None:
    names = ["dark", "light", "high-contrast", "nord"]
    seen = ["dark"]
    for _ in names:
        seen.append(next_theme(seen[-1], names))
    assert seen == ["dark", "light", "high-contrast", "nord", "dark"]
    assert next_theme("gone", names) == "dark"
    assert next_theme("dark", ["dark"]) == "dark"
    assert next_theme("dark", []) == "dark"


def test_theme_names_accepts_plain_names() -> None:
    assert theme_names(["zeta", "light", "Alpha", "dark", "beta"]) == ["dark", "light", "Alpha", "beta", "zeta"]


# -- in a real app ---------------------------------------------------------------------------


class ThemeTestApp(App[None]):
    """A few widgets using many theme variables (footer, table cursor, input, scrollbars)."""

    BINDINGS: ClassVar[list[BindingType]] = [("t", "next_theme", "Theme")]
    AUTO_FOCUS = None  # so `t` reaches the binding, not the Input

    def __init__(self, themes: dict[str, Theme]) -> None:
        super().__init__()
        self.batch_themes = themes

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Label("complete 12  failed 3", classes="status")
            yield ProgressBar(total=100)
            yield Sparkline([1, 4, 2, 8, 5])
            yield Input(value="filter")
            yield Button("Retry", variant="error")
            yield DataTable()
        yield Footer()

    def on_mount(self) -> None:
        for theme in self.batch_themes.values():
            self.register_theme(theme)
        table = self.query_one(DataTable)
        table.add_columns("seq", "status")
        table.add_rows([(i, "complete") for i in range(50)])

    def action_next_theme(self) -> None:
        self.theme = next_theme(self.theme, theme_names(self.batch_themes))


def test_every_theme_applies_in_a_running_app(xdg: Path) -> None:
    write(xdg, "user.toml", 'name = "user"\nprimary = "#ff8800"\ndark = false\n')
    themes, problems = load_themes()
    assert problems == []
    names = theme_names(themes)

    async def run() -> list[str]:
        app = ThemeTestApp(themes)
        applied = []
        async with app.run_test(size=(80, 24)) as pilot:
            app.theme = names[0]
            await pilot.pause()
            for _ in names:
                applied.append(app.current_theme.name)
                variables = app.get_css_variables()
                shown, wanted = Color.parse(variables["primary"]), Color.parse(themes[app.theme].primary)
                assert max(abs(a - b) for a, b in zip(shown.rgb, wanted.rgb, strict=True)) <= 2  # HSL rounding
                assert app.has_class(f"-theme-{app.theme}")
                await pilot.press("t")
                await pilot.pause()
            assert app.theme == names[0]  # went all the way round
        return applied

    assert asyncio.run(run()) == names


# -- colour system ---------------------------------------------------------------------------


def test_importing_the_themes_module_does_not_import_textual() -> None:
    # Otherwise color_system would always be too late.
    code = "import sys, batchtui.tui.themes; print(any(m.startswith('textual') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("value", "expected"), [("256", "256"), ("truecolor", "truecolor"), ("standard", "standard")])
def test_color_system_applies_before_textual_is_imported(value: str, expected: str) -> None:
    code = (
        "import os, sys\n"
        "from batchtui.tui.themes import color_system\n"
        f"with color_system({value!r}):\n"
        "    from textual.app import App\n"
        "    app = App()\n"
        "    print(app.console.color_system, app.no_color, 'NO_COLOR' in os.environ)\n"
        "print(os.environ.get('NO_COLOR'), os.environ.get('TEXTUAL_COLOR_SYSTEM'), App().console.color_system)\n"
    )
    env = {**os.environ, "NO_COLOR": "1"}  # a forced colour system overrides an inherited NO_COLOR
    env.pop("TEXTUAL_COLOR_SYSTEM", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    inside, after = out.stdout.splitlines()
    assert inside.split() == [expected, "False", "False"]
    # The environment is given back (the run's items inherit it); apps made later keep the choice.
    assert after.split() == ["1", "None", expected]


def test_color_system_none_means_no_colour_without_crashing_textual() -> None:
    code = (
        "import os\n"
        "from batchtui.tui.themes import color_system\n"
        "with color_system('none'):\n"
        "    from textual.app import App\n"
        "    app = App()\n"
        "    print(os.environ['NO_COLOR'], app.no_color)\n"
        "print('NO_COLOR' in os.environ, 'TEXTUAL_COLOR_SYSTEM' in os.environ, app.no_color)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TEXTUAL_COLOR_SYSTEM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1", "True", "False", "False", "True"]


def test_color_system_after_textual_import_still_reaches_new_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    from textual import constants

    monkeypatch.setenv("TEXTUAL_COLOR_SYSTEM", "auto")  # restored afterwards
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(constants, "COLOR_SYSTEM", constants.COLOR_SYSTEM)
    with color_system(" 256 "):
        assert os.environ["TEXTUAL_COLOR_SYSTEM"] == "256"
        assert App().console.color_system == "256"
    assert os.environ["TEXTUAL_COLOR_SYSTEM"] == "auto"
    assert App().console.color_system == "256"
    with color_system(None):  # no flag given: nothing changes
        assert os.environ["TEXTUAL_COLOR_SYSTEM"] == "auto"
    assert App().console.color_system == "256"


@pytest.mark.parametrize("value", ["16", "windows", "", "true color"])
def test_color_system_rejects_unknown_values(value: str) -> None:
    before = dict(os.environ)
    with pytest.raises(ValueError, match="auto, standard, 256, truecolor, none"), color_system(value):
        pass
    assert dict(os.environ) == before
    assert "256" in COLOR_SYSTEMS
