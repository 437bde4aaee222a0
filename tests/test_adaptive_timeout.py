"""``--timeout 300%`` (engine/adaptive.py): the limit follows the median success, after a minimum
of successes, never under its floor; a plain number stays an absolute limit.

Real batches: shell commands on the thread executor, Python callables on the process executor,
a resume that remembers the earlier run's successes. Then the parts: the histogram's median,
the policy's limit, the parsing and its errors, the views (show, the dashboard's counts row).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.reactive import var

from batchtui.engine.adaptive import (
    DEFAULT_AFTER,
    DEFAULT_FLOOR_S,
    RECOMPUTE_S,
    AdaptiveLimit,
    DurationHistogram,
    TimeoutPolicy,
    split_timeout,
    timeout_text,
)
from batchtui.engine.config import MAX_SECONDS, load_config
from batchtui.engine.errors import UserError
from batchtui.engine.models import LiveProgress, TimeoutInForce
from batchtui.tui.widgets.counts import CountsRow
from batchtui.tui.widgets.errors_panel import ErrorsPanel

from .conftest import invoke_in_process, only_batch, read_json

#: One item: ``hang`` sleeps 30 s once ``armed`` exists in the folder (else fails, exit 3);
#: anything else is the seconds to sleep.
ITEM_SH = """\
case "$1" in
  hang) if [ -e "$2/armed" ]; then exec sleep 30; else exit 3; fi ;;
  *) exec sleep "$1" ;;
esac
"""


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("id,secs\n" + "".join(f"{i},{secs}\n" for i, secs in enumerate(rows)))
    return path


def _items(batch: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """key -> (status, error type, error category)."""
    return {key: (status, etype, cat) for key, status, etype, cat, _msg in _rows(batch)}


def _rows(batch: Path) -> list[tuple[str, str, str | None, str | None, str | None]]:
    with closing(sqlite3.connect(f"file:{batch / 'items.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT key, status, error_type, error_category, error_message FROM items").fetchall()


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    done = invoke_in_process(["run", "--headless", *args], out=tmp_path / "out", cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


# -- real batches ------------------------------------------------------------------------------


def test_a_hung_shell_command_is_killed_as_timeout_long_before_it_ends(tmp_path: Path) -> None:
    """One worker, so the order is the source's: 3 quick items, 2 slow ones (1.3 s, past the
    limit the floor would set) while fewer than 10 items succeeded (never killed), 10 quick,
    then one that hangs for 30 s: killed as a timeout at the 1 s floor (3x the ~50 ms median is
    less), then 2 quick ones still run."""
    (tmp_path / "item.sh").write_text(ITEM_SH)
    (tmp_path / "armed").touch()
    source = _csv(tmp_path / "items.csv", ["0.05"] * 3 + ["1.3"] * 2 + ["0.05"] * 10 + ["hang"] + ["0.05"] * 2)
    began = time.monotonic()
    code, _out, err = _run(
        tmp_path,
        "--workers",
        "1",
        "--max-attempts",
        "1",
        "--key-field",
        "id",
        "--cmd",
        f"sh {tmp_path}/item.sh {{secs}} {tmp_path}",
        "--timeout",
        "300%",
        str(source),
    )
    took = time.monotonic() - began
    assert code == 1, err  # one item failed
    assert took < 15, f"the hung item held the batch {took:.1f}s"
    batch = only_batch(tmp_path / "out")
    items = _items(batch)
    assert items["15"] == ("failed", "timeout", "timeout")
    assert items["3"][0] == items["4"][0] == "complete"  # slow, but before the 10th success
    assert all(status == "complete" for key, (status, _t, _c) in items.items() if key != "15")
    (message,) = [msg for key, *_rest, msg in _rows(batch) if key == "15"]
    assert message == f"timed out after {DEFAULT_FLOOR_S:g}s"  # the limit in force, not "0s"
    live = LiveProgress.model_validate(read_json(batch / "live_progress.json"))
    assert live.timeout is not None
    assert live.timeout.basis == "floor" and live.timeout.limit_s == DEFAULT_FLOOR_S
    assert live.timeout.successes == 17
    assert live.timeout.median_s is not None and 0.04 < live.timeout.median_s < 0.5
    shown = invoke_in_process(["show", batch.name], out=tmp_path / "out", cwd=tmp_path).stdout
    assert "Timeout:   300% of the median success (after 10 successes), at least 1s" in shown
    assert "in force: 1s (the floor; 300% of median " in shown


def test_items_running_when_the_limit_comes_into_force_get_it(tmp_path: Path) -> None:
    """A Python callable on the process executor: item 0 hangs from the start, when no item has
    succeeded (no limit yet); once 5 have, the limit (3x the median, at least 0.5 s) applies to
    it too and the watchdog kills it as a timeout, well before its 30 s."""
    (tmp_path / "work.py").write_text(
        "import time\n\ndef work(item):\n    time.sleep(30 if item.data['secs'] == 'hang' else float(item.data['secs']))\n"
    )
    source = _csv(tmp_path / "items.csv", ["hang"] + ["0.05"] * 12)
    began = time.monotonic()
    code, _out, err = _run(
        tmp_path,
        "--workers",
        "2",
        "--max-attempts",
        "1",
        "--key-field",
        "id",
        "--call",
        f"{tmp_path}/work.py:work",
        "--timeout",
        "300%,min=0.5s,after=5",
        str(source),
    )
    took = time.monotonic() - began
    assert code == 1, err
    assert took < 15, f"the hung item held the batch {took:.1f}s"
    items = _items(only_batch(tmp_path / "out"))
    assert items["0"] == ("failed", "timeout", "timeout")
    assert sum(status == "complete" for status, _t, _c in items.values()) == 12


def test_a_resume_counts_the_earlier_runs_successes(tmp_path: Path) -> None:
    """The first run: 12 quick items succeed, one fails (exit 3). The resume retries that one
    alone, and now it hangs: the 12 earlier successes (from the store) put the limit in force
    at once, so it is killed at the floor, not after 30 s."""
    (tmp_path / "item.sh").write_text(ITEM_SH)
    source = _csv(tmp_path / "items.csv", ["0.05"] * 12 + ["hang"])
    cmd = f"sh {tmp_path}/item.sh {{secs}} {tmp_path}"
    code, _out, err = _run(
        tmp_path,
        "--workers",
        "2",
        "--max-attempts",
        "1",
        "--key-field",
        "id",
        "--cmd",
        cmd,
        "--timeout",
        "300%,min=0.5s",
        str(source),
    )
    assert code == 1, err
    batch = only_batch(tmp_path / "out")
    assert _items(batch)["12"] == ("failed", "exit 3", "item")
    (tmp_path / "armed").touch()
    began = time.monotonic()
    done = invoke_in_process(
        ["resume", batch.name, "--retry-failed", "--headless", "--workers", "1"], out=tmp_path / "out", cwd=tmp_path
    )
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert took < 15, f"the hung item held the resume {took:.1f}s"
    assert _items(batch)["12"] == ("failed", "timeout", "timeout")
    manifest = read_json(batch / "manifest.json")
    assert manifest["config"]["adaptive_timeout"] == "300%,min=0.5s,after=10"  # kept by the resume


# -- the median, the limit -----------------------------------------------------------------------


def test_the_histograms_median_is_within_one_percent() -> None:
    rng = random.Random(7)
    for values in (
        [rng.lognormvariate(-3, 1.5) for _ in range(10_001)],
        [0.05] * 50 + [30.0] * 3,
        [2e-7, 5e-7, 1e-6],  # under the first bucket
        [1e9],  # past the last
    ):
        hist = DurationHistogram()
        hist.add_many(values[: len(values) // 2])
        for v in values[len(values) // 2 :]:
            hist.add(v)
        exact = sorted(values)[(len(values) + 1) // 2 - 1]
        median = hist.median()
        assert median is not None
        assert hist.n == len(values)
        if exact < DurationHistogram.LOW:
            assert median == DurationHistogram.LOW
        elif exact > MAX_SECONDS:
            assert median > MAX_SECONDS * 0.99
        else:
            assert abs(median - exact) <= 0.01 * exact, (median, exact)
    assert DurationHistogram().median() is None


def test_the_limit_waits_for_enough_successes_then_follows_the_median() -> None:
    policy = TimeoutPolicy(None, AdaptiveLimit(percent=300, floor_s=0.5, after=4))
    for _ in range(3):
        policy.learn(1.0)
    assert policy.limit(0.0) is None and not policy.adaptive  # 3 of 4 successes: no limit
    assert policy.view(0.0) == TimeoutInForce(
        limit_s=None, basis="learning", successes=3, percent=300, floor_s=0.5, after=4
    )
    policy.learn(1.0)
    assert policy.limit(0.0) == pytest.approx(3.0, rel=0.01) and policy.adaptive
    for _ in range(10):
        policy.learn(0.1)  # the median falls to 0.1 s: 0.3 s, under the floor
    assert policy.limit(0.0) == pytest.approx(3.0, rel=0.01)  # computed again at most each RECOMPUTE_S
    assert policy.limit(RECOMPUTE_S) == 0.5
    view = policy.view(RECOMPUTE_S)
    assert view is not None and view.basis == "floor" and view.median_s == pytest.approx(0.1, rel=0.01)
    assert timeout_text(view) == "timeout 500ms (the floor; 300% of median 100ms)"


def test_an_absolute_max_applies_from_the_start_and_caps_the_adaptive_limit() -> None:
    policy = TimeoutPolicy(2.0, AdaptiveLimit(percent=300, after=2))
    assert policy.limit(0.0) == 2.0  # before enough successes: the max alone
    assert timeout_text(policy.view(0.0)) == "timeout 300% after 2 successes (0 so far), until then 2s"  # type: ignore[arg-type]
    policy.seed([5.0, 5.0])  # an earlier run's successes
    assert policy.limit(0.0) == 2.0
    view = policy.view(0.0)
    assert view is not None and view.basis == "max"
    plain = TimeoutPolicy(30.0, None)
    assert plain.limit(0.0) == 30.0 and not plain.adaptive
    assert timeout_text(plain.view(0.0)) == "timeout 30s"  # type: ignore[arg-type]
    assert TimeoutPolicy(None, None).view(0.0) is None


# -- the setting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0%", "0% must be more than 100%"),
        ("-5%", "-5% must be more than 100%"),
        ("100%", "100% must be more than 100%"),
        ("abc%", "'abc' is not a number"),
        ("1e400%", "1e400% is not a finite number"),
        ("nan%", "nan% is not a finite number"),
        ("300%,min=abc", "'abc' is not a duration"),
        ("300%,min=0", "min=0s must be 10ms to 30 days"),
        ("300%,after=0", "after=0 must be 1 to 1000000"),
        ("300%,after=x", "after=x: a whole number"),
        ("300%,foo=1", "the parts after P% are min=DURATION, max=DURATION and after=N"),
        ("300%,min=1s,min=2s", "each once"),
        ("300%,min=10s,max=5s", "min=10s is more than max=5s"),
        ("300%,max=1e9", "max=1000000000 is more than the maximum"),
        ("300,min=5s", "parts such as min= follow a percentage"),
        ("30s", "'30s' is not a number of seconds or a percentage"),
    ],
)
def test_bad_values_are_usage_errors_that_say_why(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    done = invoke_in_process(
        ["run", "--headless", "--cmd", "true", "--timeout", value, str(tmp_path / "a.txt")],
        out=tmp_path / "out",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_plain_number_stays_absolute(tmp_path: Path) -> None:
    config = load_config({"timeout": "300"}, environ={}, cwd=tmp_path)
    assert (config.timeout, config.adaptive_timeout) == (300.0, None)
    assert split_timeout("300") == (300.0, None)
    config = load_config({"timeout": 30.0}, environ={}, cwd=tmp_path)
    assert (config.timeout, config.adaptive_timeout) == (30.0, None)


def test_a_config_file_and_the_environment_take_the_same_text(tmp_path: Path) -> None:
    (tmp_path / "batchtui.toml").write_text('timeout = "250%,min=2s,max=1m,after=20"\n')
    config = load_config({}, environ={}, cwd=tmp_path)
    assert config.timeout == 60.0
    assert config.adaptive_timeout == AdaptiveLimit(percent=250, floor_s=2.0, after=20)
    config = load_config({}, environ={"BATCHTUI_TIMEOUT": "400%"}, cwd=tmp_path / "nowhere")
    assert config.adaptive_timeout == AdaptiveLimit(percent=400, floor_s=DEFAULT_FLOOR_S, after=DEFAULT_AFTER)
    (tmp_path / "bad.toml").write_text('timeout = "abc%"\n')
    with pytest.raises(UserError) as err:
        load_config({}, config_file=tmp_path / "bad.toml", environ={})
    assert f"timeout = 'abc%': 'abc%': 'abc' is not a number (e.g. 300%) (from {tmp_path / 'bad.toml'})" in str(
        err.value
    )


def test_a_resume_keeps_the_rule_and_a_new_timeout_replaces_it(tmp_path: Path) -> None:
    stored = load_config({"timeout": "300%,max=60s"}, environ={}, cwd=tmp_path).model_dump(mode="json")
    assert stored["adaptive_timeout"] == "300%,min=1s,after=10" and stored["timeout"] == 60.0
    kept = load_config({"workers": 3}, base=stored, environ={})
    assert kept.adaptive_timeout == AdaptiveLimit(percent=300) and kept.timeout == 60.0
    replaced = load_config({"timeout": 30.0}, base=stored, environ={})
    assert (replaced.timeout, replaced.adaptive_timeout) == (30.0, None)
    again = load_config({"timeout": "200%"}, base=stored, environ={})
    assert (again.timeout, again.adaptive_timeout) == (None, AdaptiveLimit(percent=200))


# -- the dashboard ----------------------------------------------------------------------------------


class CountsApp(App[None]):
    live: var[LiveProgress | None] = var(None, always_update=True)

    def compose(self) -> ComposeResult:
        yield CountsRow(id="counts").data_bind(CountsApp.live)


def test_the_dashboard_shows_the_timeout_in_force() -> None:
    in_force = TimeoutInForce(
        limit_s=0.155, basis="median", median_s=0.0517, successes=40, percent=300, floor_s=0.1, after=10
    )

    async def body() -> str:
        app = CountsApp()
        async with app.run_test(size=(120, 5)) as pilot:
            app.live = LiveProgress(
                batch_id="b1", state="running", updated_at="2026-01-01T00:00:00+00:00", timeout=in_force
            )
            await pilot.pause()
            content = app.query_one("#count-extra").content  # type: ignore[attr-defined]
            return str(getattr(content, "plain", content))

    assert asyncio.run(body()) == "workers 0  timeout 155ms (300% of median)"


class ErrorsApp(App[None]):
    live: var[LiveProgress | None] = var(None, always_update=True)

    def compose(self) -> ComposeResult:
        yield ErrorsPanel(id="errors-box").data_bind(ErrorsApp.live)


def test_the_errors_title_shows_the_timeout_where_the_counts_row_is_hidden() -> None:
    # Under 30 rows (80x24) the counts row is hidden: the errors panel's title says it.
    in_force = TimeoutInForce(
        limit_s=1.0, basis="floor", median_s=0.2, successes=40, percent=300, floor_s=1.0, after=10
    )

    async def body() -> list[str]:
        app = ErrorsApp()
        async with app.run_test(size=(80, 8)) as pilot:
            seen = []
            for timeout in (None, in_force):
                app.live = LiveProgress(
                    batch_id="b1", state="running", updated_at="2026-01-01T00:00:00+00:00", timeout=timeout
                )
                await pilot.pause()
                content = app.query_one("#errors-title").content  # type: ignore[attr-defined]
                seen.append(str(getattr(content, "plain", content)))
            return seen

    assert asyncio.run(body()) == ["Errors", "Errors  timeout 1s (floor)"]
