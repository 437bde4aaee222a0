"""The user's keymap file and the keys said in words on an ASCII terminal (tui/keys.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from batchtui.tui.app import BatchtuiApp
from batchtui.tui.keys import binding_ids, check_keymap, is_key, key_entries, key_words, user_keymap

from .conftest import run


def test_a_keymap_file_is_read_at_the_top_level_or_under_keymap(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    assert user_keymap(path) == ({}, None)  # none: nothing to say
    path.write_text('pause = "space"\nquit = "ctrl+q"\n')
    assert user_keymap(path) == ({"pause": "space", "quit": "ctrl+q"}, None)
    path.write_text('[keymap]\npause = "space"\n')
    assert user_keymap(path) == ({"pause": "space"}, None)


def test_a_broken_keymap_file_gives_no_overrides_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text("pause = \n")
    keymap, problem = user_keymap(path)
    assert keymap == {}
    assert problem is not None and problem.startswith(f"{path}: ") and "line 1" in problem


def test_symbols_are_said_in_words() -> None:
    assert key_words("⏎") == "enter"
    assert key_words("shift+↑") == "shift+up"
    assert key_words("q") == "q"


def test_a_list_of_keys_is_read_and_a_value_that_is_no_key_is_said(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text('pause = ["space", "P"]\nskip = true\nstop = {a = 1}\nretry = 5\n')
    keymap, problem = user_keymap(path)
    assert keymap == {"pause": "space,P", "retry": "5"}
    assert (
        problem
        == f"{path}: skip = True is not a key or a list of keys; stop = {{'a': 1}} is not a key or a list of keys"
    )
    path.write_text("keymap = 3\n")
    assert user_keymap(path) == ({}, f"{path}: [keymap] must be a table of binding ids, not int")


@pytest.mark.parametrize(
    "key", ["a", "P", "?", "5", "ctrl+s", "f5", "escape", "space", "pageup", "question_mark", "shift+tab", "ctrl+shift+up",
            "ctrl+left_square_bracket", "enter", "minus"]
)  # fmt: skip
def test_keys_textual_can_bind(key: str) -> None:
    assert is_key(key)


@pytest.mark.parametrize("key", ["", "[b]", "ctrl+", "foo", "ctrl+foo", "bogus+a", "\x1b", "space bar", "+s"])
def test_what_is_not_a_key(key: str) -> None:
    assert not is_key(key)


def test_every_binding_id_of_the_app_may_be_named_and_no_other() -> None:
    ids = binding_ids()
    assert {"pause", "skip", "retry", "stop", "quit", "help", "theme", "detail_skip", "browser_resume"} <= ids
    good, problems = check_keymap(
        {"pause": "P", "skp": "x", "skip": "[b]", "quit": "ctrl+q, f10", "retry": "r,??"}, ids
    )
    assert good == {"pause": "P", "quit": "ctrl+q,f10"}
    assert problems == [
        "no binding is named 'skp' (did you mean skip?)",
        "skip = '[b]': '[b]' is not a key (a character, or a name such as ctrl+s, f5, escape, space, pageup)",
        "retry = 'r,??': '??' is not a key (a character, or a name such as ctrl+s, f5, escape, space, pageup)",
    ]


def test_the_app_applies_what_it_can_of_a_keymap_and_says_what_it_cannot(tmp_path: Path) -> None:
    """A keymap with a typo'd id and a key that is none: the good entry works, each other is said
    (before, both were dropped without a word and the operator's key did nothing)."""
    xdg = Path(os.environ["XDG_CONFIG_HOME"]) / "batchtui"
    xdg.mkdir(parents=True)
    (xdg / "keymap.toml").write_text('browser_refresh = "f6"\nskp = "x"\nbrowser_preview = "[b]"\n')
    (tmp_path / "out").mkdir()

    async def body() -> None:
        app = BatchtuiApp(output_dir=tmp_path / "out", watch_files=False, handle_hangup=False)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            said = [str(n.message) for n in app._notifications]
            assert any("no binding is named 'skp' (did you mean" in m for m in said), said
            assert any("browser_preview = '[b]': '[b]' is not a key" in m for m in said), said
            bound = {e.key_text for e in key_entries(app.screen) if e.action_name == "reload"}
            assert bound == {"f6"}

    run(body)


def test_the_readme_names_every_binding_id_and_no_other() -> None:
    """The README's list is what a user remaps with: an id added to a screen and not listed
    there (or one renamed) fails here."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme.split("The binding ids:", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_.0-9]+)`", listed)) - {"tab1", "tab5"}
    named |= {f"tab{n}" for n in range(1, 6)}
    ours = binding_ids() - {""}
    assert named == ours
