"""A failure's traceback text (engine/tracebacks.py): the frames of a place written once, the
text the same as the traceback module's for every shape of exception."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchtui.engine import tracebacks
from batchtui.engine.tracebacks import format_traceback


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    tracebacks._frames.clear()
    yield
    tracebacks._frames.clear()


def expected(exc: BaseException) -> str:
    return "".join(traceback.TracebackException(type(exc), exc, exc.__traceback__).format())


def caught(fn: Callable[..., Any], *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def fail_at(n: int) -> None:
    inner(n)


def inner(n: int) -> None:
    values = {"a": 1}
    if n % 2:
        raise ValueError(f"odd number {n}\nsecond line")
    values["b"] = values["missing"] + n  # a KeyError, with its ^^^^ marks


def chained(n: int) -> None:
    try:
        inner(n)
    except ValueError as exc:
        raise RuntimeError("wrapped") from exc


def in_context(n: int) -> None:
    try:
        inner(n)
    except ValueError:
        raise LookupError("while handling") from None  # its context is not shown


def in_handler(n: int) -> None:
    try:
        inner(n)
    except ValueError:
        raise LookupError("while handling")  # noqa: B904 - the context shown is the point


def noted(n: int) -> None:
    exc = ValueError(f"with a note {n}")
    exc.add_note(f"note {n}")
    raise exc


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def bad_str(n: int) -> None:
    raise BadStr(n)


def syntax(n: int) -> None:
    compile(f"x = ({n}", "<item>", "exec")


def group(n: int) -> None:
    raise ExceptionGroup("several", [ValueError(n), KeyError(n)])


def recurse(n: int) -> None:
    recurse(n + 1)


SHAPES = [fail_at, chained, in_context, in_handler, noted, bad_str, syntax, group]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda f: f.__name__)
def test_the_text_is_the_traceback_modules_first_and_again(shape: Callable[[int], None]) -> None:
    for n in (1, 3, 2, 4, 5):  # the same places again, other messages
        exc = caught(shape, n)
        assert format_traceback(exc, exc.__traceback__) == expected(exc)


def test_a_later_part_of_a_traceback_is_written_from_there() -> None:
    exc = caught(fail_at, 3)
    tb = exc.__traceback__
    assert tb is not None and tb.tb_next is not None
    part = tb.tb_next  # from fail_at on, as the engine skips its own frames
    want = "".join(traceback.TracebackException(type(exc), exc, part).format())
    assert format_traceback(exc, part) == want
    again = caught(fail_at, 5)
    assert again.__traceback__ is not None and again.__traceback__.tb_next is not None
    assert format_traceback(again, again.__traceback__.tb_next) == "".join(
        traceback.TracebackException(type(again), again, again.__traceback__.tb_next).format()
    )
    assert format_traceback(exc, None) == "".join(traceback.TracebackException(type(exc), exc, None).format())


def test_a_place_is_written_once(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []
    real = traceback.StackSummary.format

    def counting(self: traceback.StackSummary) -> list[str]:
        written.append(len(self))
        return real(self)

    monkeypatch.setattr(traceback.StackSummary, "format", counting)
    for n in (1, 3, 5, 7):
        exc = caught(fail_at, n)
        assert format_traceback(exc, exc.__traceback__).endswith(f"ValueError: odd number {n}\nsecond line\n")
    assert len(written) == 1  # the first failure at that place; the others reuse its text
    other = caught(fail_at, 2)  # another place (a KeyError, a line further)
    format_traceback(other, other.__traceback__)
    assert len(written) == 2
    linked = caught(chained, 1)  # a chain: written whole each time
    format_traceback(linked, linked.__traceback__)
    format_traceback(linked, linked.__traceback__)
    assert len(written) == 2 + 2 * 2  # each time, both the cause's stack and its own


def test_places_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracebacks, "PLACES", 2)
    for shape in (fail_at, noted, bad_str):
        exc = caught(shape, 1)
        assert format_traceback(exc, exc.__traceback__) == expected(exc)
    assert len(tracebacks._frames) == 1  # full at 2: started over with the third


def test_a_runaway_recursion_and_a_traceback_limit_are_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = caught(recurse, 0)
    assert isinstance(exc, RecursionError)
    assert format_traceback(exc, exc.__traceback__) == expected(exc)
    assert "Previous line repeated" in expected(exc)
    assert not tracebacks._frames  # deeper than DEPTH: not kept
    monkeypatch.setattr(sys, "tracebacklimit", 1, raising=False)
    for n in (1, 3):
        exc = caught(fail_at, n)
        assert format_traceback(exc, exc.__traceback__) == expected(exc)
    assert not tracebacks._frames
