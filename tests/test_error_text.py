"""An error's message and stderr tail as the views show them: cut at a newline only, and never
in the middle of a character."""

from __future__ import annotations

from batchtui.engine.errors import CommandFailed, classify
from batchtui.engine.shell.output import STDERR_TAIL, Tail, decode_tail


def test_a_commands_message_is_its_last_line_split_at_newlines_only() -> None:
    """U+0085 (NEL) inside a line: str.splitlines cut the message to "nel"."""
    info = classify(CommandFailed(4, "first\r\nfail: c1 csi \x85 nel\n\n"))
    assert info.message == "fail: c1 csi \x85 nel"
    info = classify(CommandFailed(4, "10%\r50%\r100% done\n"))  # a progress line: its last state
    assert info.message == "100% done"
    assert classify(ValueError("a\u2028b\nc")).message == "a\u2028b"


def test_a_tail_cut_inside_a_character_begins_at_the_next_one() -> None:
    """A 15,000-byte stderr line of 中 (3 bytes each): its message began with "\\xad"."""
    err = Tail(STDERR_TAIL)
    err.add(("中" * 5000).encode())
    text = decode_tail(err)
    assert text and set(text) == {"中"} and len(text) == STDERR_TAIL // 3
    # Nothing was cut: its first bytes are kept as they are, even when they are no character.
    whole = Tail(STDERR_TAIL)
    whole.add(b"\x80\x81abc")
    assert whole.last(STDERR_TAIL) == b"\x80\x81abc"
