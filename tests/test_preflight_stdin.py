"""Preflight on a stdin source: stdin is not read (that would eat the items) and not said to be
empty (it was: `seq 5 | batchtui run - --cmd true` warned "the source has no items")."""

from __future__ import annotations

import io
import sys

import pytest

from batchtui.engine.preflight import Preflight, check_source
from batchtui.engine.sources import build_spec


def test_a_stdin_source_is_neither_read_nor_called_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.StringIO("a\nb\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    pf = Preflight()
    check_source(pf, build_spec(["-"]))
    [check] = pf.checks
    assert (check.name, check.level) == ("source", "ok"), check
    assert "stdin" in check.message
    assert stdin.tell() == 0  # nothing of it was read
