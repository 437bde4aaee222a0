"""Limits per key (``--limit-by TEMPLATE RATE[,CONCURRENCY]``), retry-after and AIMD (issue 20.2).

The end-to-end tests run a batch of URLs against real HTTP servers on 127.0.0.1-3 (one thread
each, a few requests, shut down after the test), which record when each request came and
answer 429 with a Retry-After to a host asking faster than the server allows.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchtui.engine.config import BatchConfig, load_config
from batchtui.engine.control import new_command
from batchtui.engine.dispatch import Dispatcher
from batchtui.engine.enqueue import create_batch
from batchtui.engine.errors import CommandFailed, UserError, classify, retry_after_of_output
from batchtui.engine.limits import KeyLimits, KeyTemplate, check_limit_source, parse_limit_by, url_host
from batchtui.engine.models import BatchState
from batchtui.engine.processors import Item, python_spec, shell_spec
from batchtui.engine.runner import BatchRunner
from batchtui.engine.sources import build_spec

from .conftest import invoke_in_process, read_live
from .test_runner_steps import FakeExecutor, make_runner  # noqa: F401 (the fixture)

PROCS = Path(__file__).with_name("procs.py")


# -- the settings ------------------------------------------------------------------------------


def test_limit_by_parses_template_rate_and_concurrency() -> None:
    limit = parse_limit_by("{host} 5/s,4")
    assert (limit.template.template, limit.rate, limit.concurrency) == ("{host}", 5.0, 4)
    limit = parse_limit_by("{host}-{parent} 120/m")
    assert (limit.template.template, limit.rate, limit.concurrency) == ("{host}-{parent}", 2.0, None)
    # The CLI's two words, a blank after the comma included, are one setting stored as text.
    config = BatchConfig(limit_by=("{host}", "5/s, 4"))  # type: ignore[arg-type]
    assert config.limit_by == "{host} 5/s,4"
    assert parse_limit_by(config.limit_by).concurrency == 4


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{host} fast", "is not N, N/s, N/m or N/h"),
        ("{host} 0/s", "rate '0/s'"),
        ("{host} 5/s,0", "concurrency '0' is not a whole number from 1 to 4096"),
        ("{host} 5/s,5000", "concurrency '5000'"),
        ("{host} 5/s,x", "concurrency 'x'"),
        ("{host} 5/s,4,3", "is not RATE[,CONCURRENCY]"),
        ("5/s", "is not TEMPLATE RATE[,CONCURRENCY]"),
        ("{host 5/s", "unbalanced '{'"),
        ("{out} 5/s", "{out} (a folder of the batch, one per item) cannot be a key"),
        ("{a b} 5/s", "bad placeholder {a b}"),
    ],
)
def test_bad_limit_by_is_a_clear_config_error(value: str, says: str) -> None:
    with pytest.raises(UserError) as info:
        load_config({"limit_by": value}, environ={})
    assert says in str(info.value) and "limit_by" in str(info.value)


def test_bad_limit_by_on_the_command_line_exits_2_with_one_message(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.example/1\n")
    result = invoke_in_process(
        ["run", str(urls), "--cmd", "true", "--headless", "--limit-by", "{host}", "5/s,0"],
        out=tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "concurrency '0'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_host_needs_url_lines_and_fields_need_records(tmp_path: Path) -> None:
    check_limit_source("{host} 5/s", ["lines", "stdin"])
    check_limit_source("{region} 5/s", ["csv"])
    check_limit_source("{parent} 5/s", ["dir"])
    # A record's own host field stands in for {host} (a common column name); a field the
    # sources lack is refused, not rendered as one shared empty key.
    check_limit_source("{host} 5/s", ["csv"], {"host", "url"})
    with pytest.raises(UserError, match=r"the sources have no field host \(they have: url\)"):
        check_limit_source("{host} 5/s", ["csv"], {"url"})
    with pytest.raises(UserError, match=r"no field region"):
        check_limit_source("{region} 5/s", ["jsonl"], {"id"})
    with pytest.raises(
        UserError, match=r"\{host\} is the host of a URL line \(or a record's host field\), and this batch reads dir"
    ):
        check_limit_source("{host} 5/s", ["dir"])
    with pytest.raises(UserError, match=r"record fields \(region\) need CSV or JSONL sources"):
        check_limit_source("{region} 5/s", ["lines"])
    rows = tmp_path / "rows.csv"
    rows.write_text("url\nhttp://a.example/1\n")
    result = invoke_in_process(
        ["run", str(rows), "--cmd", "true", "--headless", "--limit-by", "{host}", "5/s"],
        out=tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "the sources have no field host (they have: url)" in result.stderr
    assert (
        KeyTemplate("{host}").render(Item(seq=0, key="k", data={"host": "db-1"}, attempt=1, batch_dir="/b", kind="csv"))
        == "db-1"
    )  # a record's host field, not the host of its JSON text


def test_key_template_renders_plain_text_per_item() -> None:
    def item(data: Any, kind: str = "lines") -> Item:
        return Item(seq=3, key="k", data=data, attempt=1, batch_dir="/b", kind=kind)

    host = KeyTemplate("{host}")
    assert host.render(item("https://User:pw@API.Example.com:8443/v1?q=1")) == "api.example.com"
    assert host.render(item("not a url")) == ""  # a line without a host: the shared empty key
    assert url_host("http://[::1/") == ""  # a malformed URL: no host, no exception
    assert KeyTemplate("{region}/{seq}").render(item({"region": "eu; rm -rf /"}, "csv")) == "eu; rm -rf //3"
    assert KeyTemplate("{region}").render(item({"other": 1}, "csv")) == ""  # a missing field
    assert KeyTemplate("{{x}}{parent}").render(item("/data/a/f.txt", "files")) == "{x}/data/a"


# -- retry-after -------------------------------------------------------------------------------


class _WithRetryAfter(ConnectionError):
    def __init__(self, value: Any) -> None:
        super().__init__("429")
        self.retry_after = value


class _RaisingRetryAfter(ConnectionError):
    @property
    def retry_after(self) -> float:
        raise RuntimeError("broken property")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(5, 5.0), (0.5, 0.5), ("7", 7.0), (0, 0.0), (1e9, 86400.0), (-1, None), (math.nan, None), (True, None)],
)
def test_an_exceptions_retry_after_is_read_and_bounded(value: Any, seconds: float | None) -> None:
    info = classify(_WithRetryAfter(value))
    assert info.category == "transient" and info.retry_after == seconds


def test_a_retry_after_that_raises_or_is_absent_is_none() -> None:
    assert classify(_RaisingRetryAfter("x")).retry_after is None
    assert classify(ConnectionError("x")).retry_after is None


def test_a_commands_last_json_line_carries_its_retry_after() -> None:
    assert retry_after_of_output(b'working\n{"retry_after": 5}\n\n', b"") == 5.0
    assert retry_after_of_output(b"plain output\n", b'warn\n{"retry_after": "2.5"}') == 2.5
    assert retry_after_of_output(b'{"retry_after": 5}\nlater line\n', b"") is None  # not the last line
    assert retry_after_of_output(b'{"retry_after": -3}', b"{not json") is None
    info = classify(CommandFailed(75, "", retry_after=4.0))
    assert (info.category, info.retry_after) == ("transient", 4.0)


def test_a_shell_commands_retry_after_delays_its_retry(tmp_path: Path) -> None:
    """exit 75 with {"retry_after": 0.6} as its last line: the retry starts 0.6 s later at least
    (the backoff alone would retry at once)."""
    urls = tmp_path / "lines.txt"
    urls.write_text("one\n")
    cmd = 'if [ "$BATCHTUI_ATTEMPT" = 1 ]; then echo \'{{"retry_after": 0.6}}\'; exit 75; fi; echo ok'
    config = BatchConfig(output_dir=str(tmp_path / "out"), fsync=False, backoff=0.0, backoff_max=0.0, workers=1)
    batch = create_batch(config, build_spec([str(urls)]), shell_spec(cmd))
    result = BatchRunner(batch).run()
    assert result.exit_code == 0
    rows = _attempts(batch.items_db)
    assert [r[0] for r in rows] == [1, 2]
    gap = _at(rows[1][1]) - _at(rows[0][2])
    assert gap >= 0.6 - 0.002  # the stored times are rounded to the millisecond


def _attempts(db_path: Path) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT attempt, started_at, finished_at FROM attempts ORDER BY attempt"))
    finally:
        db.close()


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- the dispatcher, on a fake clock -------------------------------------------------------------


def _dispatcher(lines: list[str], limit_by: str, **config: Any) -> Dispatcher:
    rows = [(seq, line, f'"{line}"', "lines", 0) for seq, line in enumerate(lines)]

    def next_pending(after: int, limit: int) -> list[tuple[int, str, str, str, int]]:
        return [row for row in rows if row[0] > after][:limit]

    cfg = BatchConfig(limit_by=limit_by, **config)
    return Dispatcher(cfg, python_spec(f"{PROCS}:noop"), "/b", next_pending, lambda: None)


def _seqs(taken: Any) -> list[int]:
    return [item.seq for chunk in taken.chunks for item in chunk]


def test_a_limited_key_never_blocks_the_others() -> None:
    """Six items of host a come first: a is held to 1/s, b and c go out at once behind them."""
    lines = [f"http://a/{i}" for i in range(6)] + ["http://b/0", "http://c/0", "http://b/1"]
    d = _dispatcher(lines, "{host} 1/s")
    inflight: set[int] = set()
    t = 1000.0
    first = _seqs(d.take(t, 100, 1, inflight))
    assert first == [0, 6, 7]  # one of a (its token), then b and c; b's second waits for its token
    inflight.update(first)
    assert d.next_event(t, paused=False) == pytest.approx(1.0)  # the next token of a and b
    assert _seqs(d.take(t + 0.5, 100, 1, inflight)) == []
    nxt = _seqs(d.take(t + 1.0, 100, 1, inflight))
    assert nxt == [1, 8]  # held items of open keys first, in seq order
    assert not d.idle


def test_a_keys_concurrency_cap_counts_items_in_flight() -> None:
    d = _dispatcher([f"http://a/{i}" for i in range(4)] + ["http://b/0"], "{host} 50/s,2")
    inflight: set[int] = set()
    t = 50.0
    out = _seqs(d.take(t, 100, 1, inflight))
    assert out == [0, 4]  # a's token bucket has no burst at 50/s: one a now
    inflight.update(out)
    out = _seqs(d.take(t + 1, 100, 1, inflight))
    assert out == [1]  # a is at its cap of 2 in flight
    inflight.update(out)
    assert _seqs(d.take(t + 2, 100, 1, inflight)) == []
    inflight.discard(0)  # one of a ended
    assert _seqs(d.take(t + 3, 100, 1, inflight)) == [2]


def test_a_retry_after_holds_the_key_and_halves_its_rate_then_successes_restore_it() -> None:
    limits = KeyLimits(parse_limit_by("{host} 4/s"))
    item = Item(seq=0, key="k", data="http://a/0", attempt=1, batch_dir="/b")
    t = 10.0
    assert limits.blocked("a", t) is None
    limits.acquire(0, "a", t)
    limits.retry_after(item, 3.0, t + 0.1)
    limits.settle(set())
    state = limits.keys["a"]
    assert (state.rate, state.backoffs, state.done) == (2.0, 1, 0)
    assert limits.blocked("a", t + 3.0) == pytest.approx(0.1)  # nothing of a before the retry-after
    assert limits.blocked("a", t + 3.1) is None
    for seq in range(1, 21):  # twenty successes: 5% of 4/s back each, capped at 4/s
        limits.acquire(seq, "a", t + 10 + seq)
        limits.settle(set())
    assert (state.rate, state.done) == (4.0, 20)
    view = limits.view({"a": 3}, t + 40)
    assert [(v.key, v.rate, v.waiting, v.backoffs, v.done) for v in view] == [("a", 4.0, 3, 1, 20)]


# -- control reaches items held back by a limit ---------------------------------------------------


@pytest.fixture
def limited_runner(request: pytest.FixtureRequest) -> Any:
    """test_runner_steps' runner over a fake executor, given the lines (URLs) of the batch."""
    return request.getfixturevalue("make_runner")


def _statuses(runner: BatchRunner) -> dict[int, tuple[str, int]]:
    db = sqlite3.connect(f"file:{runner.batch.items_db}?mode=ro", uri=True)
    try:
        return {s: (st, a) for s, st, a in db.execute("SELECT seq, status, attempts FROM items")}
    finally:
        db.close()


def test_skip_pause_and_stop_reach_items_held_back_by_their_key(limited_runner: Any) -> None:
    lines = [f"http://a/{i}" for i in range(4)] + [f"http://b/{i}" for i in range(2)]
    runner, ex = limited_runner(lines, workers=4, limit_by="{host} 100/s,1")
    t = time.monotonic()
    runner.step(t)
    assert sorted(ex.begin(8)) == [0, 4]  # one of each host: a's 1-3 and b's 5 held back
    # Skip a held item: it never goes out, even once its key is free.
    runner.command(new_command("skip", seqs=[1]))
    runner.step(t)
    ex.end(0)
    runner.step(t + 1)  # takes in the outcome
    runner.step(t + 1)
    assert ex.begin(8) == [2]
    assert _statuses(runner)[1][0] == "skipped"
    # Pause: nothing held goes out while paused, however long.
    runner.command(new_command("pause"))
    runner.step(t + 1)
    ex.end(2)
    ex.end(4)
    for k in range(2, 12):
        runner.step(t + k * 100)
        assert ex.begin(8) == [] and ex.queued() == 0
    # Stop: the held items stay pending, never started, no attempt counted.
    runner.request_stop("test")
    while runner.step(t + 2000):
        pass
    result = runner.finish()
    assert result.state == BatchState.STOPPED
    st = _statuses(runner)
    assert st[3] == ("pending", 0) and st[5] == ("pending", 0)
    assert {st[s][0] for s in (0, 2, 4)} == {"complete"}


# -- against real HTTP servers ----------------------------------------------------------------


class _Host:
    """An HTTP server on one loopback address: records (monotonic time, path, status) of each
    request and answers 429 with ``Retry-After`` to a request within ``min_interval`` of the
    last one it served."""

    def __init__(self, address: str, min_interval: float, retry_after: str = "0.5") -> None:
        self.hits: list[tuple[float, str, int]] = []
        self._last: float | None = None
        self._lock = threading.Lock()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now = time.monotonic()
                with host._lock:
                    throttle = host._last is not None and now - host._last < min_interval
                    if not throttle:
                        host._last = now
                    host.hits.append((now, self.path, 429 if throttle else 200))
                    if len(host.hits) > 200:  # bounded: a runaway client ends the test
                        raise RuntimeError("too many requests")
                body = b"slow down" if throttle else b"ok"
                self.send_response(429 if throttle else 200)
                if throttle:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{address}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hosts() -> Iterator[Any]:
    made: list[_Host] = []

    def make(address: str, min_interval: float, retry_after: str = "0.5") -> _Host:
        host = _Host(address, min_interval, retry_after)
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


def _run_urls(tmp_path: Path, urls: list[str], **config: Any) -> tuple[Any, Path]:
    source = tmp_path / "urls.txt"
    source.write_text("".join(f"{u}\n" for u in urls))
    cfg = BatchConfig(output_dir=str(tmp_path / "out"), fsync=False, executor="thread", **config)
    batch = create_batch(cfg, build_spec([str(source)]), python_spec(f"{PROCS}:fetch_url"))
    return BatchRunner(batch).run(), batch.path


def test_each_host_gets_its_own_rate_and_none_waits_behind_another(tmp_path: Path, hosts: Any) -> None:
    """Three hosts at 2/s each, all of the first host's URLs first in the source: each host's
    requests come at least ~0.5 s apart (the server's clock), and the third host's first request
    comes before the first host's last one (no head-of-line blocking)."""
    servers = [hosts(f"127.0.0.{i}", 0.0) for i in (1, 2, 3)]
    urls = [f"{s.url}/{n}" for s in servers for n in range(4)]
    result, _ = _run_urls(tmp_path, urls, workers=6, limit_by="{host} 2/s,2")
    assert result.exit_code == 0
    for s in servers:
        times = [t for t, _p, _st in s.hits]
        assert len(times) == 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.5 - 0.15, gaps  # 2/s, no burst (a little scheduling jitter allowed)
        assert times[-1] - times[0] >= 1.5 - 0.15
    first_host_last = servers[0].hits[-1][0]
    assert servers[2].hits[0][0] < first_host_last
    assert servers[1].hits[0][0] < first_host_last


def test_a_429s_retry_after_is_honoured_and_its_host_slows_down(tmp_path: Path, hosts: Any) -> None:
    """The server takes one request each 0.3 s and answers a faster one 429, Retry-After 0.5;
    the key allows 10/s, one at a time. After each 429, nothing comes from the engine to that
    host before the Retry-After is over, and every URL ends complete."""
    server = hosts("127.0.0.1", 0.3, retry_after="0.5")
    urls = [f"{server.url}/{n}" for n in range(4)]
    result, batch = _run_urls(tmp_path, urls, workers=4, limit_by="{host} 10/s,1", max_attempts=10, backoff=0.0)
    assert result.exit_code == 0
    throttled = [(t, p) for t, p, st in server.hits if st == 429]
    assert throttled, "the key's rate is over the server's: some requests must have got a 429"
    for t429, _path in throttled:
        later = [t for t, _p, _st in server.hits if t > t429]
        if later:
            assert min(later) - t429 >= 0.5  # the retry-after holds the whole key, not only the item
    live = read_live(batch)
    (key,) = live["limits"]  # type: ignore[misc]
    assert key["key"] == "127.0.0.1" and key["backoffs"] == len(throttled)
    assert key["rate"] < 10.0  # still below the configured rate: AIMD brings it back slowly
    assert len([1 for _t, _p, st in server.hits if st == 200]) == 4
    shown = invoke_in_process(["show", str(batch)], out=tmp_path / "out", cwd=tmp_path)
    assert "  Limits:    {host} 10/s,1 (a rate and an in-flight cap per key)" in shown.stdout
    assert f"retry-afters {len(throttled)}" in shown.stdout.split("127.0.0.1: ")[1].splitlines()[0]


def test_a_fast_key_goes_out_in_bursts_and_a_slow_one_never_does() -> None:
    """A key's bucket holds 20 ms of its rate (at least one item): at 1e6/s a take hands out a
    window's worth at once (not one item a turn of the loop); at 5/s, one and then none."""
    fast = _dispatcher([f"http://a/{i}" for i in range(100)], "{host} 1000000/s")
    assert len(_seqs(fast.take(7.0, 64, 8, set()))) == 64
    slow = _dispatcher([f"http://a/{i}" for i in range(100)], "{host} 5/s")
    assert _seqs(slow.take(7.0, 64, 8, set())) == [0]
    assert _seqs(slow.take(7.1, 64, 8, {0})) == []


def test_idle_keys_are_forgotten_so_a_key_per_item_stays_bounded() -> None:
    from batchtui.engine.limits import MAX_KEYS

    limits = KeyLimits(parse_limit_by("{seq} 100/s"))
    for seq in range(3 * MAX_KEYS):
        now = seq * 0.05  # each key's bucket is full again 10 ms after its one item
        limits.acquire(seq, str(seq), now)
        limits.settle(set())
    assert len(limits.keys) <= MAX_KEYS


def test_a_long_key_is_kept_short_and_distinct() -> None:
    limits = KeyLimits(parse_limit_by("{} 5/s"))
    a = limits.key_of(Item(seq=0, key="a", data="x" * 100_000 + "a", attempt=1, batch_dir="/b"))
    b = limits.key_of(Item(seq=1, key="b", data="x" * 100_000 + "b", attempt=1, batch_dir="/b"))
    assert len(a) < 300 and a != b and a.startswith("x" * 200)


def test_the_setting_is_stored_shown_and_checked_again_on_resume(tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.example/1\nhttp://b.example/2\n")
    out = tmp_path / "out"
    ran = invoke_in_process(
        ["run", str(urls), "--cmd", "true", "--headless", "--limit-by", "{host}", "50/s,2"], out=out, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    (batch,) = out.iterdir()
    assert read_live(batch)["limits"] == []  # nothing waits or was slowed at the end
    manifest = orjson.loads((batch / "manifest.json").read_bytes())
    assert manifest["config"]["limit_by"] == "{host} 50/s,2"
    shown = invoke_in_process(["show", str(batch)], out=out, cwd=tmp_path)
    assert "Limits:    {host} 50/s,2" in shown.stdout
    refused = invoke_in_process(
        ["resume", str(batch), "--headless", "--limit-by", "{region}", "1/s"], out=out, cwd=tmp_path
    )
    assert refused.returncode == 2 and "record fields (region) need CSV or JSONL sources" in refused.stderr
