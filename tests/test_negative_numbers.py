"""A negative number typed where a value goes is read as that value (and refused for what it is),
not as an unknown option: `workers B -1` said "No such option '-1'"."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from batchtui.tui.cli.group import main as cli


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["workers", "b1", "-1"], "-1 is not in the range 1<=x<=4096"),
        (["workers", "b1", "-1", "--wait", "2"], "-1 is not in the range 1<=x<=4096"),
        (["workers", "b1", "3", "--wait", "-1"], "'--wait': -1 must be at least 0"),  # an option's value stays
        (["skip", "b1", "4", "-1"], "'-1' is not an item number (digits 0-9) or a range"),
        (["logs", "b1", "-2"], "-2 is not in the range 0<=x<=9223372036854775807"),
        (["workers", "b1", "--", "-1"], "-1 is not in the range 1<=x<=4096"),  # as typed
    ],
)
def test_a_negative_number_is_a_value_refused_for_what_it_is(args: list[str], said: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert said in result.output, result.output
    assert "No such option" not in result.output
