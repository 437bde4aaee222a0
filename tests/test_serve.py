"""`batchtui serve` over HTTP: the token on every request, the cookie the first page sets, the
websocket's origin, /status.json against the store, and the refusals (a public host without
--expose, a port in use, the extra missing). The page in a real browser: test_serve_browser.py."""

from __future__ import annotations

import importlib.util
import json
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import CLI, cli_env, invoke_in_process, only_batch

needs_serve = pytest.mark.skipif(
    importlib.util.find_spec("textual_serve") is None, reason="the serve extra is not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(
    args: list[str], out: Path, cwd: Path, wrapper: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str]:
    """``batchtui serve ARGS`` (after ``wrapper``, a command that execs the rest); returns the
    process and the URL it printed once its port was bound."""
    proc = subprocess.Popen(
        [*wrapper, *CLI, "serve", *args],
        env=cli_env(out),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        seen.append(line)
        if "?token=" in line:
            return proc, line.strip()
    proc.kill()
    raise AssertionError(f"no URL printed: {seen} {proc.stderr.read() if proc.stderr else ''}")


def get(
    url: str, *, cookie: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


#: One finished batch and one server for the module's tests (each would cost a `run` and a
#: server's start-up): they run on one xdist worker.
pytestmark = pytest.mark.xdist_group("serve")


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def finished_batch(out_root: Path) -> Path:
    """300 numbers through ``expr N % 7``: every 7th fails (exit 1)."""
    (out_root / "in.txt").write_text("".join(f"{i}\n" for i in range(1, 301)))
    out = out_root / "batch_output"
    done = subprocess.run(
        [*CLI, "run", "in.txt", "--as", "lines", "--cmd", "expr {} % 7", "--headless"],
        env=cli_env(out),
        cwd=out_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # some failed
    return only_batch(out)


@pytest.fixture(scope="module")
def served(finished_batch: Path) -> Iterator[tuple[str, str, Path]]:
    """The batch served read-only: (base URL, token, batch dir)."""
    port = free_port()
    proc, url = start_serve([finished_batch.name, "--port", str(port)], finished_batch.parent, finished_batch.parent)
    try:
        base, _, token = url.partition("/?token=")
        yield base, token, finished_batch
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # Ctrl+C / SIGTERM: a clean exit


@needs_serve
def test_every_request_needs_the_token_and_the_first_page_sets_the_cookie(served: tuple[str, str, Path]) -> None:
    base, token, _batch = served
    assert len(token) >= 32
    for url in (
        f"{base}/",
        f"{base}/?token=wrong",
        f"{base}/?token=",
        f"{base}/status.json",
        f"{base}/static/js/textual.js",
    ):
        code, _headers, body = get(url)
        assert code == 403, url
        assert b"token" in body
    assert get(f"{base}/?token={token[:-1]}")[0] == 403  # one character short
    assert get(f"{base}/?token=%C3%A9{token}")[0] == 403  # not ASCII: refused, not an error
    assert get(f"{base}/", cookie="batchtui_token=wrong")[0] == 403

    code, headers, body = get(f"{base}/?token={token}")
    assert code == 200 and b"textual-terminal" in body
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"batchtui_token={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    # The page's websocket URL is the address the browser used, not the bound one.
    assert f"ws:{base.removeprefix('http:')}/ws".encode() in body
    # The page's own requests carry the cookie, not the token.
    assert get(f"{base}/static/js/textual.js", cookie=f"batchtui_token={token}")[0] == 200


@needs_serve
def test_a_host_header_that_is_not_a_host_never_reaches_the_page(served: tuple[str, str, Path]) -> None:
    base, token, _batch = served
    code, _h, body = get(f"{base}/?token={token}", headers={"Host": 'x"><script>alert(1)</script>'})
    assert code == 200
    assert b"<script>alert" not in body
    assert f"ws:{base.removeprefix('http:')}/ws".encode() in body  # the bound address instead


@needs_serve
def test_a_websocket_from_another_origin_is_refused(served: tuple[str, str, Path]) -> None:
    base, token, _batch = served
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    cookie = f"batchtui_token={token}"
    code, _h, body = get(f"{base}/ws", cookie=cookie, headers={**upgrade, "Origin": "http://evil.example"})
    assert code == 403 and b"origin" in body
    # The same handshake from the page's own origin is taken (101 switches protocols; urllib
    # reads it as a response it cannot follow, so a raw socket asks).
    host = base.removeprefix("http://")
    with socket.create_connection(tuple(host.split(":")), timeout=10) as conn:  # type: ignore[arg-type]
        lines = ["GET /ws?width=80&height=24 HTTP/1.1", f"Host: {host}", f"Origin: {base}", f"Cookie: {cookie}"]
        lines += [f"{k}: {v}" for k, v in upgrade.items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert conn.recv(64).startswith(b"HTTP/1.1 101")


@needs_serve
def test_status_json_is_the_batch_summary_read_from_the_store(served: tuple[str, str, Path]) -> None:
    base, token, batch = served
    code, headers, body = get(f"{base}/status.json?token={token}")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    status = json.loads(body)
    db = sqlite3.connect(batch / "items.db")
    try:
        by_status = dict(db.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())
    finally:
        db.close()
    assert by_status == {"complete": 258, "failed": 42}
    assert status["batch_id"] == batch.name and status["state"] == "finished"
    totals = status["totals"]
    assert (totals["total"], totals["complete"], totals["failed"], totals["pending"]) == (300, 258, 42, 0)


@needs_serve
def test_without_a_batch_status_json_lists_every_batch(finished_batch: Path, tmp_path: Path) -> None:
    out_dir = finished_batch.parent
    proc, url = start_serve(["--port", str(free_port()), "--output-dir", str(out_dir)], out_dir, tmp_path)
    try:
        base, _, token = url.partition("/?token=")
        code, _h, body = get(f"{base}/status.json?token={token}")
        assert code == 200
        assert [row["batch_id"] for row in json.loads(body)["batches"]] == [finished_batch.name]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_serve
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::", "example.com"])
def test_a_host_beyond_this_machine_needs_expose(host: str, finished_batch: Path, tmp_path: Path) -> None:
    done = invoke_in_process(["serve", finished_batch.name, "--host", host], out=finished_batch.parent, cwd=tmp_path)
    assert done.returncode == 2
    assert "--expose" in done.stderr and "Traceback" not in done.stderr
    assert "token=" not in done.stdout


def test_loopback_hosts() -> None:
    pytest.importorskip("textual_serve")
    from batchtui.tui.serve import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "localhost.example.com", "128.0.0.1"))


@needs_serve
@needs_serve
def test_a_ctrl_c_ignored_when_serve_started_stays_ignored(finished_batch: Path, tmp_path: Path) -> None:
    """`batchtui serve ... &` in a script starts with SIGINT ignored (sh's `&`): the Ctrl-C meant
    for the script does not end it; SIGTERM still does, cleanly."""
    port = free_port()
    trap = ("sh", "-c", 'trap "" INT; exec "$@"', "sh")
    proc, _url = start_serve([finished_batch.name, "--port", str(port)], finished_batch.parent, tmp_path, trap)
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        masks = {
            line.split(":")[0]: int(line.split()[1], 16)
            for line in status.splitlines()
            if line.startswith(("SigIgn", "SigCgt"))
        }
        interrupt, terminate = 1 << (signal.SIGINT - 1), 1 << (signal.SIGTERM - 1)
        assert masks["SigIgn"] & interrupt and not masks["SigCgt"] & interrupt
        assert masks["SigCgt"] & terminate
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_port_in_use_is_said_before_any_url(finished_batch: Path, tmp_path: Path) -> None:
    out_dir = finished_batch.parent
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, "serve", finished_batch.name, "--port", str(port)],
            check=False,
            env=cli_env(out_dir),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"port {port}" in done.stderr and "in use" in done.stderr and "Traceback" not in done.stderr
    assert "token=" not in done.stdout


def test_without_the_extra_serve_says_what_to_install(
    finished_batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "textual_serve", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "textual_serve.server", None)
    monkeypatch.delitem(sys.modules, "batchtui.tui.serve", raising=False)
    done = invoke_in_process(["serve", finished_batch.name], out=finished_batch.parent, cwd=tmp_path)
    assert done.returncode == 2
    assert "pip install 'batchtui[serve]'" in done.stderr and "Traceback" not in done.stderr


@needs_serve
def test_a_tabs_app_ends_with_its_server_even_after_kill_9(finished_batch: Path, tmp_path: Path) -> None:
    """A browser tab's app process reads and writes pipes of the server: once the server is
    killed nothing tells it, so it watches the server itself (tui/served_app.py)."""
    import asyncio

    import aiohttp
    import psutil

    proc, url = start_serve([finished_batch.name, "--port", str(free_port())], finished_batch.parent, tmp_path)
    base, _, token = url.partition("/?token=")

    async def open_a_tab_then_kill_the_server() -> list[psutil.Process]:
        async with aiohttp.ClientSession() as session:
            headers = {"Cookie": f"batchtui_token={token}"}
            async with session.ws_connect(f"{base}/ws?width=80&height=24", origin=base, headers=headers) as ws:
                while True:  # the app has drawn its first frame
                    message = await ws.receive(timeout=30)
                    assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), message
                    if message.type == aiohttp.WSMsgType.BINARY and len(message.data) > 100:
                        break
                apps = psutil.Process(proc.pid).children(recursive=True)
                proc.kill()
                proc.wait()
                return apps

    try:
        apps = asyncio.run(open_a_tab_then_kill_the_server())
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any("served_app" in " ".join(p.cmdline()) for p in apps), apps
    deadline = time.monotonic() + 15
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in apps):
        assert time.monotonic() < deadline, [p.cmdline() for p in apps if p.is_running()]
        time.sleep(0.05)
