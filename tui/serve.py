"""``batchtui serve``: the same Textual app the terminal shows, in a browser, through textual-serve.

Each browser tab gets its own app process (textual-serve runs :mod:`.served_app` with its web
driver); the app watches the batch files as ``watch`` does, so the engine stays the only
writer. Read-only unless ``--allow-control``: the keys that change a batch are refused by the
app itself (tui/screens/base.py), not hidden by the page.

Every request needs the token printed at start: ``?token=...`` on the first page sets a cookie
(HttpOnly, SameSite=Strict) that the page's own requests and its websocket carry; a websocket
from another origin is refused (a page elsewhere cannot drive the dashboard with that cookie).
``/status.json?token=...`` gives the batch summary (``batchtui show --json``'s model) or, with
no batch, every batch (``ls --json``'s rows), for monitoring.

textual-serve, aiohttp and jinja2 are the optional extra ``serve``: imported only here.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import re
import secrets
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from textual_serve.server import Server

from batchtui.engine.batches import BatchScope
from batchtui.engine.interrupts import ignored
from batchtui.engine.listing import list_batches
from batchtui.engine.summary import summarize

#: The cookie the first page sets, so that the page's websocket and static files need no token
#: in their URLs (textual-serve's page builds them itself).
COOKIE: Final = "batchtui_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def app_command(*, scope: BatchScope, batch: Path | None, allow_control: bool, theme: str | None) -> str:
    """The shell command textual-serve runs for each browser tab (it starts it with a shell:
    every part is quoted)."""
    argv = [sys.executable, "-m", "batchtui.tui.served_app", "--output-dir", str(scope.output_dir)]
    argv += ["--server-pid", str(os.getpid())]  # a tab's app ends with the server, even after kill -9
    if scope.only:
        argv.append("--only")
    if batch is not None:
        argv += ["--batch", str(batch)]
    if allow_control:
        argv.append("--allow-control")
    if theme:
        argv += ["--theme", theme]
    return shlex.join(argv)


_HOST: Final = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class DashboardServer(Server):
    """textual-serve's server with a token on every request and ``/status.json``."""

    def __init__(
        self,
        command: str,
        *,
        host: str,
        port: int,
        token: str,
        scope: BatchScope,
        batch: Path | None,
        title: str,
        announce: Callable[[], None],
    ) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self.token = token
        self.scope = scope
        self.batch = batch
        self._announce = announce

    def initialize_logging(self) -> None:
        """No rich log of every connection on the operator's terminal: the start-up lines say
        where it serves; errors still reach stderr through logging's last resort."""

    async def on_startup(self, app: web.Application) -> None:
        """Nothing: the URL is said once the port is bound (:meth:`serve`), not before."""

    def serve(self, debug: bool = False) -> None:
        """textual-serve's ``serve``, saying the URL once the port is bound (aiohttp calls
        ``print`` then): a port in use fails with nothing announced."""
        self.debug = debug
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            if not ignored(sig):  # one ignored when batchtui started stays so (a script's `&`)
                loop.add_signal_handler(sig, self.request_exit)
        web.run_app(
            self._make_app(),
            host=self.host,
            port=self.port,
            handle_signals=False,
            loop=loop,
            print=lambda *_args: self._announce(),
            access_log=None,
            # A tab's app process ends with its websocket's handler: on Ctrl+C, open tabs get
            # this long before their handlers are cancelled (aiohttp's default is a minute).
            shutdown_timeout=2.0,
        )

    async def _make_app(self) -> web.Application:
        app: web.Application = await super()._make_app()
        app.middlewares.append(self._auth)
        app.router.add_get("/status.json", self.handle_status)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        by_query = _same(request.query.get("token"), self.token)
        if not (by_query or _same(request.cookies.get(COOKIE), self.token)):
            raise web.HTTPForbidden(text="forbidden: open the URL with the token that `batchtui serve` printed\n")
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                raise web.HTTPForbidden(text="forbidden: a websocket from another origin\n")
        response = await handler(request)
        if by_query and not isinstance(response, web.WebSocketResponse) and not response.prepared:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        # The page's websocket and static URLs from the address the browser used (an SSH
        # tunnel's port, a name), not from the bound host and port; a Host header that is not a
        # host[:port] is not put in the page. textual-serve's handler builds its context from
        # public_url without awaiting anything: no other request runs between this line and its use.
        host = request.host if _HOST.fullmatch(request.host) else f"{self.host}:{self.port}"
        self.public_url = f"{request.scheme}://{host}"
        response: web.StreamResponse = await super().handle_index(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
        return response

    async def handle_status(self, request: web.Request) -> web.Response:
        # Reading the batch files (every batch's, without one) off the event loop: the open
        # tabs' websockets are served meanwhile.
        body = await asyncio.to_thread(self._status)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _status(self) -> Any:
        if self.batch is not None:
            return summarize(self.batch).model_dump(mode="json")
        return {"batches": [row.model_dump(mode="json") for row in list_batches(self.scope)]}
