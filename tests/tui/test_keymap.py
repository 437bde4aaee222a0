"""The user's keymap file and the keys said in words on an ASCII terminal (tui/keys.py)."""

from __future__ import annotations

from pathlib import Path

from batchtui.tui.keys import key_words, user_keymap


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
