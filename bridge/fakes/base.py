"""What every fake shares: a request log, injected faults, rate limits, time, and serving on loopback.

A fake is a Starlette app wrapped by ``FaultMiddleware`` and paired with a ``FakeState`` (``FakeApp``). The
state is what tests look at and steer: the requests that came in, the faxes the fake holds, faults to
inject into the next matching requests, a rate limit, and a clock (``advance``) that moves sent faxes
through their statuses. Out of process the same controls are reachable under ``/_fake/`` (see
``control_routes``).

Faults (``Fault.kind``):

``status``       answer ``status`` with ``body``/``headers`` without running the API (a 5xx, a 429…)
``delay``        wait ``seconds``, then answer normally (a slow service)
``hang``         never answer, and do nothing (a timeout before the provider took the request); in process
                 the client gets ``httpx.ReadTimeout`` at once, as after its read timeout
``hang_after``   run the API (the fax is accepted), then never answer (a timeout after acceptance); in
                 process ``httpx.ReadTimeout`` at once
``reset_after``  run the API, then break the connection: in process the client gets
                 ``httpx.RemoteProtocolError``, as from a reset; on loopback (where an ASGI app cannot close
                 its socket) it behaves as ``hang_after``
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge._uvicorn import start_server

__all__ = [
    "FakeApp",
    "FakeState",
    "Fault",
    "FaultMiddleware",
    "RecordedRequest",
    "control_routes",
    "serve",
]

FaultKind = Literal["status", "delay", "hang", "hang_after", "reset_after"]
_HANG_SECONDS = 3600.0


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next ``times`` requests whose path starts with ``path``."""

    kind: FaultKind
    path: str = ""
    method: str | None = None
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path) and (self.method is None or self.method.upper() == method.upper())


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class FakeState:
    """The fake's memory and controls; subclasses add the provider's own records (faxes, tokens, reports)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._offset = 0.0
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.rate_limit: tuple[int, float] | None = None
        """At most this many API requests per this many seconds; more get ``429`` with ``Retry-After``."""
        self._window: list[float] = []
        self._ids = itertools.count(1)

    # -- time --------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock in seconds; ``advance`` moves it forward without waiting."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for everything the fake does over time (status progressions, tokens)."""
        self._offset += seconds

    def next_id(self) -> int:
        return next(self._ids)

    # -- faults and limits -------------------------------------------------------------------------------

    def inject(self, kind: FaultKind, **options: Any) -> Fault:
        """Add a fault for the next matching request(s)."""
        fault = Fault(kind=kind, **options)
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def over_rate_limit(self) -> float | None:
        """Seconds to wait when this request is over the rate limit, else ``None`` (and it is counted)."""
        if self.rate_limit is None:
            return None
        count, per = self.rate_limit
        now = self.now()
        self._window = [t for t in self._window if t > now - per]
        if len(self._window) >= count:
            return max(1.0, self._window[0] + per - now)
        self._window.append(now)
        return None

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests whose path starts with ``path``."""
        return [r for r in self.requests if r.path.startswith(path) and (method is None or r.method == method)]


@dataclass
class FakeApp:
    """An ASGI app (with faults applied) and the state behind it."""

    app: ASGIApp
    state: FakeState
    name: str

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that reaches this fake in process."""
        inner = self.app

        async def in_process(scope: Scope, receive: Receive, send: Send) -> None:
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "faxbridge.in_process": True}}
            await inner(scope, receive, send)

        return httpx.ASGITransport(app=in_process)


class FaultMiddleware:
    """Records every request, then applies the rate limit and the next matching fault."""

    def __init__(self, app: ASGIApp, state: FakeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        if path.startswith("/_fake/"):
            await self.app(scope, _replay(body), send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        self.state.requests.append(
            RecordedRequest(method, path, scope.get("query_string", b"").decode("latin-1"), headers, body)
        )
        wait = self.state.over_rate_limit()
        if wait is not None:
            response = JSONResponse({"error": "rate limit exceeded"}, status_code=429)
            response.headers["Retry-After"] = str(int(wait + 0.999))
            await response(scope, _replay(body), send)
            return
        fault = self.state.take_fault(method, path)
        if fault is None:
            await self.app(scope, _replay(body), send)
            return
        if fault.kind == "status":
            await Response(fault.body, status_code=fault.status, headers=fault.headers)(scope, _replay(body), send)
            return
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            await self.app(scope, _replay(body), send)
            return
        # In process, httpx's ASGI transport has no timeouts and would wait for ever: the client gets the
        # exception its real transport would raise once its read timeout ran out, at once.
        in_process = bool(scope.get("extensions", {}).get("faxbridge.in_process"))
        if fault.kind == "hang":
            if in_process:
                raise httpx.ReadTimeout("timed out (injected: the service never answered)")
            await asyncio.sleep(fault.seconds or _HANG_SECONDS)
            return
        # hang_after and reset_after: the provider does the work, the client never hears of it.
        await self.app(scope, _replay(body), _discard)
        if in_process and fault.kind == "reset_after":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if in_process:
            raise httpx.ReadTimeout("timed out (injected: the service took the request and never answered)")
        await asyncio.sleep(fault.seconds or _HANG_SECONDS)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(_HANG_SECONDS)
        return {"type": "http.disconnect"}

    return receive


async def _discard(message: Message) -> None:
    return None


ControlHandler = Callable[[Request], Awaitable[Response]]


def control_routes(state: FakeState, extra: dict[str, ControlHandler] | None = None) -> list[BaseRoute]:
    """``/_fake/`` endpoints, so that a fake on loopback can be steered from outside.

    ``POST /_fake/faults`` (a ``Fault`` as JSON), ``POST /_fake/advance`` (``{"seconds": n}``),
    ``POST /_fake/rate-limit`` (``{"count": n, "per": s}`` or ``{}`` to lift it), ``GET /_fake/requests``;
    a provider's fake adds its own (such as injecting an incoming fax) through ``extra``.
    """

    async def faults(request: Request) -> Response:
        data = await request.json()
        if "body" in data:
            data["body"] = str(data["body"]).encode()
        fault = state.inject(**data)
        return JSONResponse({"kind": fault.kind, "path": fault.path})

    async def advance(request: Request) -> Response:
        data = await request.json()
        state.advance(float(data.get("seconds", 0)))
        return JSONResponse({"now": state.now()})

    async def rate_limit(request: Request) -> Response:
        data = await request.json()
        state.rate_limit = (int(data["count"]), float(data["per"])) if data else None
        return JSONResponse({"rate_limit": state.rate_limit})

    async def requests(request: Request) -> Response:
        return JSONResponse(
            [{"method": r.method, "path": r.path, "query": r.query, "bytes": len(r.body)} for r in state.requests]
        )

    routes: list[BaseRoute] = [
        Route("/_fake/faults", faults, methods=["POST"]),
        Route("/_fake/advance", advance, methods=["POST"]),
        Route("/_fake/rate-limit", rate_limit, methods=["POST"]),
        Route("/_fake/requests", requests, methods=["GET"]),
    ]
    for path, handler in (extra or {}).items():
        routes.append(Route(f"/_fake/{path.strip('/')}", handler, methods=["POST", "GET"]))
    return routes


def build(name: str, state: FakeState, routes: list[BaseRoute]) -> FakeApp:
    """Wrap a provider's routes (and the control routes) into a ``FakeApp``."""
    app = Starlette(routes=[*routes, *control_routes(state, getattr(state, "control", None))])
    return FakeApp(app=FaultMiddleware(app, state), state=state, name=name)


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """The user and password of an HTTP Basic ``Authorization`` header, or ``None``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def json_body(raw: bytes) -> Any:
    """Parse a JSON body; ``None`` when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


async def serve(fake: FakeApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve ``fake`` until Ctrl-C or SIGTERM (``faxbridge fake-provider``)."""
    running = await start_server(fake.app, host, port, own_signals=True)
    await running.task


async def start(fake: FakeApp, *, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], Awaitable[None]]]:
    """Serve ``fake`` on loopback in this event loop; return its base URL and a function that stops it."""
    running = await start_server(fake.app, host, port)
    return f"http://{host}:{running.address[1]}", running.stop
