"""What a processor returns is checked where it is produced (issue 15, points 1, 4 and 9).

A chunked callable's ``{seq: result}`` dict is matched by seq (``7`` or ``"7"``) or fails
clearly; a result over ``--max-result-bytes`` fails its item (never the engine); a cost that
is given is a finite number >= 0 or the item fails; NaN and infinities never become null.
"""

from __future__ import annotations

import math
import pickle
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.attempts import Classifier, Outcome, run_items
from batchtui.engine.config import load_config
from batchtui.engine.errors import BatchtuiError, ResultTooLarge, UserError
from batchtui.engine.outputs import DEFAULT_MAX_RESULT_BYTES, checked_result, match_chunk
from batchtui.engine.processors import CallableProcessor
from batchtui.engine.shell.item import Item, ProcessOutput
from batchtui.engine.shell.processor import ShellProcessor

from .conftest import only_batch, read_jsonl

RunCli = Callable[..., subprocess.CompletedProcess[str]]

FUNCS = """
import math

def by_str_seq(items):
    return {str(it.seq): {"v": it.seq} for it in items}

def by_position(items):
    return {i: {"v": it.seq} for i, it in enumerate(items)}

def evens_only(items):
    return {it.seq: it.seq for it in items if it.seq % 2 == 0}

def int_and_str(items):
    out = {it.seq: 1 for it in items}
    out[str(items[0].seq)] = 2
    return out

def padded(items):
    return {f"0{it.seq}": 1 for it in items}

def bool_key(items):
    return {True: 1}

def as_text(items):
    return "abc"

def nothing(items):
    return None

def short_list(items):
    return [1] * (len(items) - 1)

def chunk_costs(items):
    return [{"cost": it.data} for it in items]

def big_for_one(item):
    return "x" * 2_000_000 if item.seq == 1 else {"seq": item.seq}

def echo(item):
    return item.data

def cost(item):
    return {"cost": COSTS[item.seq]}

COSTS = ["7", None, -5, math.nan, math.inf, True, 10**400, 0, 2, 2.5]

def nan_inside(item):
    return {"a": [1, math.nan]}

def bare_inf(item):
    return -math.inf

def with_null(item):
    return {"a": None, "b": [None, 1.5]}
"""


@pytest.fixture
def funcs(tmp_path: Path) -> Path:
    path = tmp_path / "funcs.py"
    path.write_text(FUNCS)
    return path


def callable_of(funcs: Path, name: str, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> CallableProcessor:
    return CallableProcessor(f"{funcs}:{name}", max_result_bytes=max_result_bytes)


def items(seqs: list[int], tmp_path: Path, data: Any = None) -> list[Item]:
    return [Item(seq=s, key=str(s), data=s if data is None else data, attempt=1, batch_dir=str(tmp_path)) for s in seqs]


def by_seq(outcomes: list[Outcome]) -> dict[int, Outcome]:
    return {o.seq: o for o in outcomes}


def error_type(o: Outcome) -> str | None:
    return None if o.error is None else o.error.error_type


def stored(result: Any) -> Any:
    """A result as the engine writes it (a Fragment is JSON already)."""
    return orjson.loads(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))


def item_rows(batch: Path) -> dict[int, tuple[str, str | None, str | None, str | None, float | None]]:
    with sqlite3.connect(batch / "items.db") as db:
        rows = db.execute("SELECT seq, status, error_type, error_category, error_message, cost FROM items")
        return {seq: tuple(rest) for seq, *rest in rows}  # type: ignore[misc]


# -- point 1: a chunked callable's dict ----------------------------------------------------------


def test_a_chunked_dict_keyed_by_str_seq_completes_with_its_results(
    run_cli: RunCli, out_dir: Path, tmp_path: Path, funcs: Path
) -> None:
    (tmp_path / "in.txt").write_text("".join(f"line{i}\n" for i in range(7)))
    proc = run_cli(["run", "in.txt", "--call", f"{funcs}:by_str_seq", "--chunk-size", "3", "--headless"])
    assert proc.returncode == 0, proc.stderr
    lines = read_jsonl(only_batch(out_dir) / "results.jsonl")
    assert sorted((line["seq"], line["result"]) for line in lines) == [(i, {"v": i}) for i in range(7)]  # type: ignore[type-var]


@pytest.mark.parametrize("name", ["by_position", "int_and_str", "padded", "bool_key"])
def test_a_chunked_dict_not_keyed_by_this_chunks_seqs_fails_the_whole_chunk(
    tmp_path: Path, funcs: Path, name: str
) -> None:
    # Keyed by position (0, 1, 2) for seqs 3, 4, 5: nothing matches, and were it seqs 1, 2, 3,
    # two positions would match the wrong items; "07" or True is no way to write a seq.
    outcomes = run_items(callable_of(funcs, name), items([3, 4, 5], tmp_path), Classifier(), True)
    assert [(o.seq, error_type(o)) for o in outcomes] == [(s, "ChunkResultMismatch") for s in (3, 4, 5)]
    assert all(o.error is not None and o.error.category == "item" for o in outcomes)


def test_a_seq_the_chunked_dict_leaves_out_fails_that_item_alone(tmp_path: Path, funcs: Path) -> None:
    outcomes = by_seq(run_items(callable_of(funcs, "evens_only"), items([3, 4, 5, 6], tmp_path), Classifier(), True))
    assert {s: error_type(o) for s, o in outcomes.items()} == {3: "MissingResult", 4: None, 5: "MissingResult", 6: None}
    assert (outcomes[4].result, outcomes[6].result) == (4, 6)
    assert outcomes[3].error is not None and "seq 3" in outcomes[3].error.message


@pytest.mark.parametrize("name", ["as_text", "nothing", "short_list"])
def test_a_chunked_return_that_is_no_list_of_the_chunks_length_fails_clearly(
    tmp_path: Path, funcs: Path, name: str
) -> None:
    outcomes = run_items(callable_of(funcs, name), items([0, 1, 2], tmp_path), Classifier(), True)
    assert [error_type(o) for o in outcomes] == ["ChunkResultMismatch"] * 3


def test_match_chunk_takes_int_and_plain_decimal_string_keys() -> None:
    assert match_chunk({7: "a", "8": "b", 9: None}, [7, 8, 9]) == ["a", "b", None]
    assert match_chunk(iter(["a", "b"]), [1, 2]) == ["a", "b"]


# -- point 4: the size of a result ---------------------------------------------------------------


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_result_over_max_result_bytes_fails_its_item_and_is_never_stored(
    run_cli: RunCli, out_dir: Path, tmp_path: Path, funcs: Path, executor: str
) -> None:
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    args = ["run", "in.txt", "--call", f"{funcs}:big_for_one", "--headless", "--executor", executor]
    proc = run_cli([*args, "--max-result-bytes", "1M", "--max-attempts", "3"])
    assert proc.returncode == 1, proc.stderr
    batch = only_batch(out_dir)
    rows = item_rows(batch)
    assert rows[1][:3] == ("failed", "ResultTooLarge", "item")
    assert "over --max-result-bytes 1 MiB" in str(rows[1][3])
    assert rows[0][0] == rows[2][0] == "complete"
    assert sorted(line["seq"] for line in read_jsonl(batch / "results.jsonl")) == [0, 2]  # type: ignore[type-var]
    assert (batch / "results.jsonl").stat().st_size < 10_000
    with sqlite3.connect(batch / "items.db") as db:
        assert db.execute("SELECT attempts FROM items WHERE seq = 1").fetchone() == (1,)  # not retried


def test_a_huge_input_record_echoed_back_fails_that_item_cleanly(
    run_cli: RunCli, out_dir: Path, tmp_path: Path, funcs: Path
) -> None:
    records = [{"id": 1, "blob": "y" * 3_000_000}, {"id": 2, "blob": "small"}]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    proc = run_cli(["run", "in.jsonl", "--call", f"{funcs}:echo", "--headless", "--max-result-bytes", "2M"])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = item_rows(only_batch(out_dir))
    assert rows[0][:2] == ("failed", "ResultTooLarge") and rows[1][0] == "complete"


def test_the_size_limit_is_exact_on_the_json_bytes() -> None:
    value = {"a": "x" * 100}
    size = len(orjson.dumps(value))
    kept = checked_result(value, size)
    assert isinstance(kept, orjson.Fragment) and stored(kept) == value
    with pytest.raises(ResultTooLarge, match="over --max-result-bytes") as info:
        checked_result(value, size - 1)
    assert type(info.value).__name__ == "ResultTooLarge"
    # A string: too large by its length alone, or small enough whatever its escapes, or exact.
    with pytest.raises(ResultTooLarge, match="at least"):
        checked_result("x" * 1000, 1000)
    assert checked_result("x" * 10, 1000) == "x" * 10
    assert stored(checked_result("\x00" * 100, 602)) == "\x00" * 100  # 600 bytes of \u0000 + 2 quotes
    with pytest.raises(ResultTooLarge, match="over --max-result-bytes"):
        checked_result("\x00" * 100, 601)


def test_a_result_serialized_in_a_worker_process_travels_as_its_json() -> None:
    out = Outcome(3, 1, 0.0, 0.1, checked_result({"k": [1, 2]}, 1000), 0.5)
    back = pickle.loads(pickle.dumps(out))
    assert isinstance(back.result, orjson.Fragment)
    assert (back.seq, back.cost, stored(back.result)) == (3, 0.5, {"k": [1, 2]})


def test_max_result_bytes_is_a_setting_with_sizes(tmp_path: Path) -> None:
    assert load_config({}, environ={}, cwd=tmp_path).max_result_bytes == 16 << 20
    assert load_config({"max_result_bytes": "512K"}, environ={}, cwd=tmp_path).max_result_bytes == 512 << 10
    assert load_config({}, environ={"BATCHTUI_MAX_RESULT_BYTES": "2M"}, cwd=tmp_path).max_result_bytes == 2 << 20
    (tmp_path / "batchtui.toml").write_text('max-result-bytes = "1G"\n')
    with pytest.raises(UserError, match="max_result_bytes"):  # over the 512 MiB SQLite can take
        load_config({}, environ={}, cwd=tmp_path)
    for bad in ("lots", "0", "-1K"):
        with pytest.raises(UserError, match="max_result_bytes"):
            load_config({"max_result_bytes": bad}, environ={}, cwd=tmp_path / "none")


def test_the_flag_rejects_a_bad_size_with_one_line(invoke_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    proc = invoke_cli(["run", "in.txt", "--cmd", "true", "--headless", "--max-result-bytes", "lots"])
    assert proc.returncode == 2
    assert "max_result_bytes" in proc.stderr and "Traceback" not in proc.stderr


def run_shell(batch: Path, template: str, **kw: Any) -> ProcessOutput:
    return ShellProcessor(template, **kw).run(Item(seq=0, key="k", data="v", attempt=1, batch_dir=str(batch)))


LINE_SCRIPT = """
import sys
n, brace = int(sys.argv[1]), sys.argv[2] == "1"
sys.stdout.write("noise\\n" + ('{"a": "%s"}' if brace else "%s") % ("z" * n) + "\\n")
"""


@pytest.fixture
def json_line(tmp_path: Path) -> Callable[..., str]:
    """A command printing noise, then one line of ``n`` bytes of ``z`` (in a JSON object, or not)."""
    script = tmp_path / "line.py"
    script.write_text(LINE_SCRIPT)

    def command(n: int, brace: bool = True) -> str:
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {n} {int(brace)}"

    return command


def test_a_shell_result_line_longer_than_the_stdout_kept_is_kept_whole(
    batch: Path, json_line: Callable[..., str]
) -> None:
    # stdout keeps max(log_limit, 64 KiB) for the logs; the result line is kept up to the limit.
    got = run_shell(batch, json_line(300_000), log_limit=0, max_result_bytes=1 << 20)
    assert isinstance(got.result, dict) and got.result["a"] == "z" * 300_000


def test_a_shell_result_line_over_the_limit_fails_the_item(batch: Path, json_line: Callable[..., str]) -> None:
    with pytest.raises(
        ResultTooLarge, match=r"^result is 1\.96 KiB of JSON, over --max-result-bytes 1000 bytes: write"
    ):
        run_shell(batch, json_line(2000), max_result_bytes=1000)
    with pytest.raises(ResultTooLarge, match="result is at least 293 KiB") as info:  # too long to keep
        run_shell(batch, json_line(300_000), log_limit=0, max_result_bytes=100_000)
    assert type(info.value).__name__ == "ResultTooLarge"
    # A long line of plain text is output, not a result: its tail, as ever.
    got = run_shell(batch, json_line(300_000, brace=False), log_limit=0, max_result_bytes=100_000)
    assert got.result == {"stdout_tail": "z" * 200}


# -- point 9: costs, NaN and infinities ----------------------------------------------------------


def test_a_python_cost_that_is_no_finite_number_at_least_0_fails_the_item(tmp_path: Path, funcs: Path) -> None:
    outcomes = by_seq(run_items(callable_of(funcs, "cost"), items(list(range(10)), tmp_path), Classifier(), False))
    assert {s: error_type(o) for s, o in outcomes.items() if s < 7} == dict.fromkeys(range(7), "InvalidCost")
    assert [(outcomes[s].error, outcomes[s].cost) for s in (7, 8, 9)] == [(None, 0.0), (None, 2.0), (None, 2.5)]
    messages = [o.error.message for s, o in sorted(outcomes.items()) if o.error is not None]
    assert messages[0] == "cost '7' is not a number (a string: give the number itself)"
    assert messages[1] == "cost None is not a number (null: give a number, or leave the key out)"
    assert messages[2] == "cost -5 is negative"
    assert messages[3:5] == ["cost nan is not finite", "cost inf is not finite"]


def test_a_chunked_callables_costs_are_checked_per_item(tmp_path: Path, funcs: Path) -> None:
    chunk = [Item(seq=s, key=str(s), data=d, attempt=1, batch_dir=str(tmp_path)) for s, d in enumerate([1, -1, "2"])]
    outcomes = run_items(callable_of(funcs, "chunk_costs"), chunk, Classifier(), True)
    assert [(error_type(o), o.cost) for o in outcomes] == [(None, 1.0), ("InvalidCost", None), ("InvalidCost", None)]


def test_nan_or_infinity_in_a_python_result_fails_the_item_never_becomes_null(tmp_path: Path, funcs: Path) -> None:
    for name, where in (("nan_inside", "result['a'][1] is NaN or infinite"), ("bare_inf", "result is -inf")):
        (outcome,) = run_items(callable_of(funcs, name), items([0], tmp_path), Classifier(), False)
        assert error_type(outcome) == "InvalidResult" and outcome.error is not None
        assert outcome.error.message.startswith(where)
    (outcome,) = run_items(callable_of(funcs, "with_null"), items([0], tmp_path), Classifier(), False)
    assert outcome.error is None and stored(outcome.result) == {"a": None, "b": [None, 1.5]}


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ('{"cost": 1e400}', "InvalidCost", "cost inf is not finite"),
        ('{"cost": -1e400}', "InvalidCost", "cost -inf is not finite"),
        ('{"cost": NaN}', "InvalidCost", "cost nan is not finite"),
        ('{"cost": -50000}', "InvalidCost", "cost -50000 is negative"),
        # Finite, but two of them summed to infinity: the batch's total spent vanished.
        ('{"cost": 1e308}', "InvalidCost", "cost 1e+308 is over 1e+15, the most one item"),
        ('{"cost": 1000000000000001}', "InvalidCost", "cost 1000000000000001 is over 1e+15"),
        ('{"cost": "7"}', "InvalidCost", "cost '7' is not a number"),
        ('{"cost": null}', "InvalidCost", "cost None is not a number"),
        ('{"x": Infinity, "cost": 1}', "InvalidResult", "result['x'] is NaN or infinite"),
    ],
)
def test_a_shell_cost_or_number_json_cannot_hold_fails_the_item(
    batch: Path, line: str, error: str, message: str
) -> None:
    (batch / "line").write_text(line + "\n")
    with pytest.raises(BatchtuiError) as info:
        run_shell(batch, f"cat {batch / 'line'}")
    assert type(info.value).__name__ == error
    assert str(info.value).startswith(message)


def test_a_shell_cost_of_1e400_fails_items_from_the_cli_and_spends_nothing(
    invoke_cli: RunCli, out_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    cmd = "if [ {} = a ]; then echo '{{\"cost\": 1e400}}'; else echo '{{\"cost\": 2}}'; fi"
    proc = invoke_cli(["run", "in.txt", "--cmd", cmd, "--headless", "--max-cost", "100"])
    assert proc.returncode == 1, proc.stderr
    rows = item_rows(only_batch(out_dir))
    assert rows[0][:2] == ("failed", "InvalidCost") and rows[0][4] is None
    assert rows[1][0] == "complete" and rows[1][4] == 2.0
    assert not math.isnan(rows[1][4])


def test_a_result_nested_past_the_json_limit_says_so_in_words() -> None:
    """orjson refuses nesting past 255 levels with 'Recursion limit reached': the item's error
    says what is wrong with its result instead."""
    deep: list[Any] = []
    inner = deep
    for _ in range(300):
        inner.append([])
        inner = inner[0]
    with pytest.raises(TypeError) as raised:
        checked_result(deep, DEFAULT_MAX_RESULT_BYTES)
    assert str(raised.value) == "result is not JSON-serializable: it is nested more than 255 levels deep"
    with pytest.raises(TypeError, match=r"^result is not JSON-serializable: Type is not JSON serializable: set$"):
        checked_result({1, 2}, DEFAULT_MAX_RESULT_BYTES)


def test_a_cost_of_exactly_the_most_is_taken(batch: Path) -> None:
    (batch / "line").write_text('{"cost": 1e15}\n')
    assert run_shell(batch, f"cat {batch / 'line'}").cost == 1e15
