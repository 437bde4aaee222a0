"""A Ctrl-C (SIGINT, or SIGTERM/SIGHUP as the CLI makes them) that lands inside a step a
KeyboardInterrupt must not cut in two comes once the step is done (engine/interrupts.py).

Landing inside ``Thread.start`` of the enqueue's writer, one ended `run -` with "RuntimeError:
release unlocked lock" and exit 1 instead of 130 (seen once in a full suite run)."""

from __future__ import annotations

import ast
import enum
import os
import signal
import threading
from pathlib import Path
from typing import Literal

import pytest

from batchtui.engine.basemodel import Model
from batchtui.engine.interrupts import held_signals
from batchtui.engine.store import ItemStore


def test_a_signal_inside_comes_once_the_body_is_done() -> None:
    done: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), held_signals():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the rest of the body ran")
    assert done == ["the rest of the body ran"]
    assert signal.getsignal(signal.SIGINT) is before


def test_nothing_is_raised_when_no_signal_came() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with held_signals():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_reaches_the_handler_the_cli_put_in_place() -> None:
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with held_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            assert got == []  # held: not yet
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_ctrl_c_as_the_enqueue_starts_its_writer_ends_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ctrl-C comes as a KeyboardInterrupt once the writer thread has started, and the writer
    is ended and joined before it goes on up: no RuntimeError, no writer left behind."""
    real_start = threading.Thread.start

    def start_with_a_ctrl_c(self: threading.Thread) -> None:
        real_start(self)
        if self.name == "batchtui-enqueue":
            os.kill(os.getpid(), signal.SIGINT)  # typed as start() returns: its thread runs

    monkeypatch.setattr(threading.Thread, "start", start_with_a_ctrl_c)
    rows = [(f"k{i}", f'"k{i}"', "line", "pending", None, None, None, None, None, None) for i in range(10)]
    store = ItemStore.create(tmp_path / "items.db", durable=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.enqueue(iter(rows), chunk=4)
        assert [t for t in threading.enumerate() if t.name == "batchtui-enqueue"] == []
    finally:
        store.close()


#: Set to make the next hash of a :class:`_Armed` member send this process a SIGINT.
_ARMED: list[bool] = []


class _Armed(enum.Enum):
    """An enum whose hash is Python code: pydantic-core calls it while it builds the validator
    of a ``Literal`` of it, as it builds ``Literal`` fields of the manifest's models."""

    A = "a"

    def __hash__(self) -> int:
        if _ARMED:
            _ARMED.clear()
            os.kill(os.getpid(), signal.SIGINT)
        return hash(self._name_)


def test_a_ctrl_c_inside_a_model_build_comes_once_the_model_is_built() -> None:
    """pydantic-core dropped a KeyboardInterrupt raised inside its validator build (or reported
    it as a SchemaError: `run` died with a traceback and exit 1, its half-made batch left)."""

    class Pick(Model):
        choice: Literal[_Armed.A]

    _ARMED.append(True)
    with pytest.raises(KeyboardInterrupt):
        Pick(choice=_Armed.A)
    assert _ARMED == [], "the SIGINT was sent from inside the build"
    assert Pick.__pydantic_complete__
    assert Pick(choice=_Armed.A).choice is _Armed.A  # built whole: the next use works


def test_every_pydantic_model_of_batchtui_is_built_under_held_signals() -> None:
    root = Path(__file__).resolve().parents[1]
    direct = [
        f"{path.relative_to(root)}: {node.name}"
        for folder in ("engine", "tui")
        for path in sorted((root / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base) in {"BaseModel", "pydantic.BaseModel"} for base in node.bases)
        and path.name != "basemodel.py"
    ]
    assert direct == [], "derive from batchtui.engine.basemodel.Model"
