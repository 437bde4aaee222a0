"""The user's keymap file (tui/keymap.py) and the keys said in words on an ASCII terminal
(tui/keys.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from batchtui.tui.app import BatchtuiApp
from batchtui.tui.keymap import binding_table, check_keymap, is_key, read_keymap, summary
from batchtui.tui.keys import key_entries, key_words
from batchtui.tui.screens.modals import ConfirmScreen, HelpScreen

from .conftest import run


def _browser_with_keymap(tmp_path: Path, keymap: str) -> BatchtuiApp:
    """The app on an empty output folder, with ``keymap`` as the user's keymap.toml."""
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "batchtui"
    config.mkdir(parents=True)
    (config / "keymap.toml").write_text(keymap)
    (tmp_path / "out").mkdir()
    return BatchtuiApp(output_dir=tmp_path / "out", watch_files=False, handle_hangup=False)


def test_a_keymap_file_is_read_at_the_top_level_and_under_keymap(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    assert read_keymap(path) == ({}, [])  # none: nothing to say
    path.write_text('pause = "space"\nquit = "ctrl+q"\n')
    assert read_keymap(path) == ({"pause": "space", "quit": "ctrl+q"}, [])
    path.write_text('[keymap]\npause = "space"\n')
    assert read_keymap(path) == ({"pause": "space"}, [])
    # Both: the top level was dropped without a word when a table followed.
    path.write_text('pause = "P"\nstop = "X"\n[keymap]\nskip = "K"\n[other]\nretry = "Y"\n')
    keymap, problems = read_keymap(path)
    assert keymap == {"pause": "P", "stop": "X", "skip": "K"}
    assert problems == ["[other] not read (the keymap is at the top level or under [keymap])"]
    # A byte-order mark, as some editors write one.
    path.write_bytes(b'\xef\xbb\xbfpause = "P"\n')
    assert read_keymap(path) == ({"pause": "P"}, [])


def test_a_broken_keymap_file_gives_no_overrides_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text("pause = \n")
    keymap, problems = read_keymap(path)
    assert keymap == {}
    assert len(problems) == 1 and "line 1" in problems[0] and problems[0].endswith(": not read")


def test_no_regular_file_in_its_place_is_read_and_each_is_said(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.mkdir()
    assert read_keymap(path) == ({}, ["a folder: not read"])
    path.rmdir()
    os.mkfifo(path)  # never opened: it would wait for a writer
    assert read_keymap(path) == ({}, ["not a regular file: not read"])
    path.unlink()
    path.symlink_to(tmp_path / "nowhere")
    assert read_keymap(path) == ({}, ["a broken link: not read"])
    path.unlink()
    path.symlink_to(path)
    keymap, problems = read_keymap(path)
    assert keymap == {} and problems and problems[0].endswith(": not read")
    path.unlink()
    real = tmp_path / "dotfiles.toml"
    real.write_text('pause = "P"\n')
    path.symlink_to(real)  # a link to a file, as dotfile managers make them: read
    assert read_keymap(path) == ({"pause": "P"}, [])


def test_symbols_are_said_in_words() -> None:
    assert key_words("⏎") == "enter"
    assert key_words("shift+↑") == "shift+up"
    assert key_words("q") == "q"


def test_a_list_of_keys_is_read_and_a_value_that_is_no_key_is_said(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text('pause = ["space", "P"]\nskip = true\nstop = [1]\nretry = 5\n')
    keymap, problems = read_keymap(path)
    assert keymap == {"pause": "space,P", "retry": "5"}
    assert problems == ["skip = True is not a key or a list of keys", "stop = [1] is not a key or a list of keys"]
    path.write_text("keymap = 3\n")
    assert read_keymap(path) == ({}, ["keymap must be a table: [keymap]"])


@pytest.mark.parametrize(
    "key", ["a", "P", "?", "5", "ctrl+s", "f5", "escape", "space", "pageup", "question_mark", "shift+tab", "ctrl+shift+up",
            "ctrl+left_square_bracket", "enter", "minus"]
)  # fmt: skip
def test_keys_textual_can_bind(key: str) -> None:
    assert is_key(key)


@pytest.mark.parametrize(
    "key", ["", "[b]", "ctrl+", "foo", "ctrl+foo", "bogus+a", "\x1b", "space bar", "+s", "shift+p", "ESCAPE", "BELL",
            "latin_small_letter_z", "ctrl+zero_width_joiner", "\u200b"]
)  # fmt: skip
def test_what_textual_never_delivers_is_not_a_key(key: str) -> None:
    """Names Textual gives no key (it delivers P for shift+p, z for latin_small_letter_z) and
    control or format characters: a keymap with them bound a key that never fired."""
    assert not is_key(key)


NOT_A_KEY = "(a character, or a name such as ctrl+s, f5, escape, space, pageup; P for shift+p)"


def test_every_binding_id_of_the_app_may_be_named_and_no_other() -> None:
    table = binding_table()
    assert {"pause", "skip", "retry", "stop", "quit", "help", "theme", "detail_skip", "browser_resume"} <= set(table)
    good, problems = check_keymap(
        {"pause": "P", "skp": "x", "skip": "[b]", "quit": "ctrl+q, f10", "retry": "r,??,  "}, table
    )
    assert good == {"pause": "P", "quit": "ctrl+q,f10"}
    assert problems == [
        "no binding is named 'skp' (did you mean skip?)",
        f"skip = '[b]': '[b]' is not a key {NOT_A_KEY}",
        f"retry = 'r,??,  ': '??', '' is not a key {NOT_A_KEY}",
    ]


def test_a_key_another_binding_keeps_where_both_are_live_is_said() -> None:
    """pause = "q" took q from quit on the dashboard, retry = "slash" the filter's key, without a
    word. The app's keys meet every screen's but a dialog's (its chain ends at it); a swap of two
    keys is no clash; the same key on two screens is none either."""
    table = binding_table()
    good, problems = check_keymap(
        {"pause": "q", "retry": "slash", "theme": "?", "help": "h", "stop": "p", "skip": "x", "browser_delete": "o"},
        table,
    )
    assert set(good) == {"pause", "retry", "theme", "help", "stop", "skip", "browser_delete"}
    # stop = "p": pause's key, which moved to q; browser_preview's, on another screen.
    assert problems == ["pause = 'q': q is quit's key too", "retry = 'slash': slash is filter's key too"]


def test_the_toast_lists_a_few_problems_each_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text("".join(f'nope{i} = "x"\n' for i in range(2000)) + f'pause = "{"y" * 3000}"\n')
    keymap, problems = read_keymap(path)
    good, wrong = check_keymap(keymap, binding_table())
    text = summary(path, problems + wrong)
    assert good == {} and len(wrong) == 2001
    assert text.endswith("; and 1997 more") and len(text) < 600, text


def test_the_app_applies_what_it_can_of_a_keymap_and_says_what_it_cannot(tmp_path: Path) -> None:
    """A keymap with a typo'd id and a key that is none: the good entry works, the others are said
    in one toast (before, they were dropped without a word and the operator's key did nothing)."""

    async def body() -> None:
        app = _browser_with_keymap(tmp_path, 'browser_refresh = "f6"\nskp = "x"\nbrowser_preview = "[b]"\n')
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await pilot.pause()
            said = [str(n.message) for n in app._notifications]
            assert len(said) == 1, said
            assert "not applied: no binding is named 'skp' (did you mean" in said[0], said
            assert "browser_preview = '[b]': '[b]' is not a key" in said[0], said
            bound = {e.key_text for e in key_entries(app.screen) if e.action_name == "reload"}
            assert bound == {"f6"}

    run(body)


def test_a_dialog_button_says_the_key_the_keymap_gave_it(tmp_path: Path) -> None:
    """confirm_yes = "j": the button said "Yes (y)" and y did nothing."""

    async def body() -> None:
        app = _browser_with_keymap(tmp_path, 'confirm_yes = "j"\n')
        async with app.run_test(size=(120, 40)) as pilot:
            answers: list[bool | None] = []
            await app.push_screen(ConfirmScreen("Go?", "detail"), answers.append)
            await pilot.pause()
            labels = [str(b.label) for b in app.screen.query("Button")]
            assert labels == ["Yes (j)", "No (n)"]
            await pilot.press("j")
            await pilot.pause()
            assert answers == [True]

    run(body)


def test_the_readme_names_every_binding_id_and_no_other() -> None:
    """The README's list is what a user remaps with: an id added to a screen and not listed
    there (or one renamed) fails here."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme.split("The binding ids:", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_.0-9]+)`", listed)) - {"tab1", "tab5"}
    named |= {f"tab{n}" for n in range(1, 6)}
    ours = set(binding_table())
    assert named == ours


def test_the_key_a_keymap_gives_the_help_closes_it_too(tmp_path: Path) -> None:
    """help = "h": h opened the help and did not close it (its dialog closed on escape, q, ?)."""

    async def body() -> None:
        app = _browser_with_keymap(tmp_path, 'help = "h"\n')
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            browser = app.screen
            await pilot.press("h")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("h")
            await pilot.pause()
            assert app.screen is browser
            await pilot.press("h", "question_mark")  # its own keys still close it
            await pilot.pause()
            assert app.screen is browser

    run(body)
