"""One sanitizer and one duration formatter for the engine's messages, the CLI and the TUI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from batchtui.engine.fmt import clean, clean_block, cut_percent, fmt_duration, fmt_percent, unclean
from batchtui.engine.sources import build_spec, describe
from batchtui.tui.text import plain, plain_block

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tab\there", "tab\\x09here"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("bell\x07", "bell\\x07"),
        ("nul\x00x", "nul\\x00x"),
        ("csi\x9b31m", "csi\\x9b31m"),  # C1 CSI: a terminal takes it as ESC [
        ("new\nline\r\n", "new\\x0aline\\x0d\\x0a"),
        ("bidi\u202eevil\u200b", "bidi\\u202eevil\\u200b"),
        ("tag\U000e0001", "tag\\U000e0001"),
        ("bad\udcff name", "bad\\udcff name"),  # a file name's raw byte (os.fsdecode)
        ("[bold]x[/] [link=https://evil.example]y[/link]", "[bold]x[/] [link=https://evil.example]y[/link]"),
        ("宽字符 ok", "宽字符 ok"),
        ("", ""),
    ],
)
def test_clean_escapes_every_control_character_and_leaves_markup_alone(text: str, shown: str) -> None:
    assert clean(text) == shown
    assert clean(text).isprintable()


def test_clean_cuts_long_values_before_escaping() -> None:
    assert clean("x" * 10, limit=4) == "xxx…"
    assert clean("x" * 4, limit=4) == "xxxx"
    assert clean("\x1b" * 10, limit=3) == "\\x1b\\x1b…"  # an escape is never cut in half
    assert clean(12345) == "12345"  # anything, as its str
    assert len(clean("k" * 100_000, limit=1024)) == 1024


def test_clean_block_keeps_lines_and_shows_tabs_as_spaces() -> None:
    assert clean_block("Traceback:\n\tat x\x1b[31m\n[bold]") == "Traceback:\n    at x\\x1b[31m\n[bold]"


def test_rich_text_of_untrusted_text_is_never_markup() -> None:
    text = plain("[bold]x\x1b[0m\t", limit=80)
    assert text.plain == "[bold]x\\x1b[0m\\x09" and not text.spans
    assert plain_block("a\tb\n[red]c").plain == "a    b\n[red]c"


@pytest.mark.parametrize(
    ("seconds", "coarse", "fine"),
    [
        (None, "?", "?"),
        (-3.0, "0s", "0ms"),
        (0.0004, "0s", "0ms"),
        (0.35, "0s", "350ms"),
        (0.9996, "1s", "1.0s"),
        (4.24, "4s", "4.2s"),
        (59.94, "1m00s", "59.9s"),
        (59.96, "1m00s", "1m00s"),
        (187.4, "3m07s", "3m07s"),
        (119.6, "2m00s", "2m00s"),
        (3599.6, "1h00m", "1h00m"),
        (7500.0, "2h05m", "2h05m"),
        (30 * 86400.0, "720h00m", "720h00m"),
    ],
)
def test_fmt_duration(seconds: float | None, coarse: str, fine: str) -> None:
    assert fmt_duration(seconds) == coarse
    assert fmt_duration(seconds, fine=True) == fine


def test_the_engine_messages_use_the_same_sanitizer(tmp_path: Path) -> None:
    name = tmp_path / "a\tb\x1b.txt"
    name.write_text("x\n")
    assert describe(build_spec([str(name)])) == "a\\x09b\\x1b.txt (lines)"


def test_no_second_sanitizer_or_duration_formatter() -> None:
    """Only engine/fmt.py decides how a control character or a duration is shown."""
    # enqueue.py asks isprintable() whether a line needs JSON escaping (not to show it).
    allowed = {ROOT / "engine" / "fmt.py", ROOT / "engine" / "enqueue.py"}
    offenders = []
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("tui/**/*.py")]):
        if path in allowed:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "isprintable":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} tests isprintable")
            named = isinstance(node, ast.FunctionDef) and node.name.startswith(("fmt_", "_fmt", "_format"))
            if named and ("duration" in node.name or "age" in node.name):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} defines {node.name}")
    assert offenders == []


@pytest.mark.parametrize(
    ("percent", "digits", "shown"),
    [
        (100.0 * 2499 / 2500, 0, "99%"),  # one item left: never "100%"
        (100.0 * 2499 / 2500, 1, "99.9%"),
        (100.0 * 2499 / 2500, 2, "99.96%"),
        (100.0 * 199 / 200, 0, "99%"),
        (100.0, 0, "100%"),
        (100.0, 1, "100.0%"),
        (29 / 100 * 100, 0, "29%"),  # 28.999999999999996 in floats
        (100.0 * 7 / 10, 1, "70.0%"),
        (0.4, 0, "0%"),
        (0.0, 2, "0.00%"),
    ],
)
def test_a_percent_is_cut_never_rounded_up(percent: float, digits: int, shown: str) -> None:
    assert fmt_percent(percent, digits) == shown
    assert cut_percent(percent, digits) == float(shown.rstrip("%"))


def test_a_percent_cut_again_at_fewer_digits_stays_below_100() -> None:
    """live_progress.json keeps two decimals and a view shows none: 99.99 must read 99."""
    assert fmt_percent(cut_percent(100.0 * 9999 / 10000, 2)) == "99%"


def test_count_is_singular_only_for_one() -> None:
    from batchtui.engine.fmt import count

    assert count(1, "item") == "1 item"
    assert count(0, "item") == "0 items"
    assert count(2, "duplicate") == "2 duplicates"
    assert count(-1, "item") == "-1 items"
    assert count(1234, "item", grouped=True) == "1,234 items"
    assert count(1234, "item") == "1234 items"


def test_error_line_names_a_failure_once() -> None:
    from batchtui.engine.fmt import error_line

    assert error_line("exit 1", "exit 1") == "exit 1"  # a command that printed nothing
    assert error_line("exit 1", "no such file\nsecond line") == "exit 1: no such file"
    assert error_line("ValueError", "") == "ValueError"
    assert error_line(None, "a message") == "a message"
    assert error_line("timeout", None) == "timeout"


def test_the_items_table_row_of_a_silent_failed_command_says_exit_once() -> None:
    from batchtui.engine.store.queries import ItemRow
    from batchtui.tui.widgets.items_rows import Row

    fields = dict.fromkeys(ItemRow.__slots__)
    fields.update(seq=4, key="k", kind="line", status="failed", attempts=1, error_type="exit 3", error_message="exit 3")
    row = Row.from_item(ItemRow(**fields))
    assert row.error == "exit 3"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("\\x1b[31mred", "\x1b[31mred"),  # as every view shows an ESC
        ("\\x1B", "\x1b"),  # upper-case digits too
        ("a\\u202eb \\U000e0001", "a\u202eb \U000e0001"),  # a bidi override, a tag character
        ("\\x41 \\u00e9", "\\x41 \\u00e9"),  # printable: clean never writes these, so typed as meant
        ("\\x1 \\xZZ \\u12 \\", "\\x1 \\xZZ \\u12 \\"),  # no escape
        ("plain", "plain"),
    ],
)
def test_unclean_reads_back_the_escapes_clean_writes(typed: str, meant: str) -> None:
    assert unclean(typed) == meant


def test_unclean_undoes_clean() -> None:
    text = "\x1b]0;title\x07 tab\there \u200b\udcff [red]x[/]"
    assert unclean(clean(text)) == text
