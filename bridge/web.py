"""The bridge's HTTP endpoint: provider webhooks, ``/healthz`` and ``/metrics`` (Starlette on uvicorn).

It runs in the daemon's own event loop and is off unless ``[http] enabled``; it listens on loopback by
default. Routes:

``GET /healthz``                    ``200 ok`` when the store answers, ``503`` with the reason when it does not
``GET /metrics``                    Prometheus text: jobs by state, events by kind (submitted, delivered,
                                    failed…), incoming faxes mailed, and the age of the oldest unfinished job
``POST /webhooks/{provider}/{secret}``  a provider's push; also with the secret in ``X-Faxbridge-Secret`` at
                                    ``/webhooks/{provider}``. An incoming fax is delivered at once (mailed
                                    once, however often the provider repeats it); a status update wakes the
                                    worker, which asks the provider for the fax's status.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge._uvicorn import start_server
from bridge.errors import BridgeError, ProviderError
from bridge.inbound import InboundDelivery
from bridge.models import InboundRef, JobState
from bridge.providers.base import Capability, FaxProvider
from bridge.stores.base import JobStore
from bridge.worker import Worker

__all__ = ["create_web_app", "serve_web"]


log = logging.getLogger(__name__)

_MAX_WEBHOOK_BYTES = 30 * 1024 * 1024


def create_web_app(
    *,
    store: JobStore,
    providers: Mapping[str, FaxProvider],
    worker: Worker | None,
    inbound: InboundDelivery | None,
    secret: str | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The Starlette app; ``secret`` ``None`` refuses every webhook."""
    # One webhook of a provider is read at a time: reading may store what it carries (iFax's PDF), and the
    # same notification often arrives several times at once.
    parsing: dict[str, asyncio.Lock] = {name: asyncio.Lock() for name in providers}

    async def healthz(request: Request) -> Response:
        try:
            await store.job_counts()
        except BridgeError as exc:
            return PlainTextResponse(f"unhealthy: {exc}\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def metrics(request: Request) -> Response:
        counts = await store.job_counts()
        oldest = await store.oldest_active_job()
        lines = [
            "# HELP faxbridge_jobs Fax jobs by state.",
            "# TYPE faxbridge_jobs gauge",
        ]
        lines += [f'faxbridge_jobs{{state="{state.value}"}} {counts.get(state, 0)}' for state in JobState]
        lines += [
            "# HELP faxbridge_events_total Job events since this instance started, by kind.",
            "# TYPE faxbridge_events_total counter",
        ]
        events = dict(worker.counts) if worker is not None else {}
        lines += [f'faxbridge_events_total{{event="{name}"}} {value}' for name, value in sorted(events.items())]
        sent, failures = await store.provider_totals()
        lines += [
            "# HELP faxbridge_submissions_total Faxes handed to each provider (all instances, since the store began).",
            "# TYPE faxbridge_submissions_total counter",
        ]
        lines += [f'faxbridge_submissions_total{{provider="{_label(p)}"}} {n}' for p, n in sorted(sent.items())]
        lines += [
            "# HELP faxbridge_failures_total Failed faxes by provider and the provider's code.",
            "# TYPE faxbridge_failures_total counter",
        ]
        lines += [
            f'faxbridge_failures_total{{provider="{_label(p)}",code="{_label(c)}"}} {n}'
            for (p, c), n in sorted(failures.items())
        ]
        lines += [
            "# HELP faxbridge_inbound_delivered_total Incoming faxes mailed since this instance started.",
            "# TYPE faxbridge_inbound_delivered_total counter",
            f"faxbridge_inbound_delivered_total {inbound.delivered if inbound is not None else 0}",
            "# HELP faxbridge_oldest_active_job_seconds Age of the oldest job that is not finished.",
            "# TYPE faxbridge_oldest_active_job_seconds gauge",
            f"faxbridge_oldest_active_job_seconds {max(0.0, (clock() - oldest).total_seconds()) if oldest else 0}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def webhook(request: Request) -> Response:
        name = request.path_params["provider"]
        given = request.path_params.get("secret") or request.headers.get("x-faxbridge-secret", "")
        if secret is None or not hmac.compare_digest(given.encode(), secret.encode()):
            return JSONResponse({"error": "unknown webhook"}, status_code=404)
        provider = providers.get(name)
        if provider is None or Capability.WEBHOOK not in provider.capabilities:
            return JSONResponse({"error": "unknown webhook"}, status_code=404)
        body = await request.body()
        if len(body) > _MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            async with parsing[name]:
                events = await asyncio.to_thread(provider.parse_webhook, dict(request.headers), body)
        except ProviderError as exc:
            log.info("webhook for %s refused: %s", name, exc)
            status = 503 if exc.temporary else 400
            return JSONResponse({"error": str(exc)}, status_code=status)
        mailed = 0
        for event in events:
            if isinstance(event, InboundRef):
                if inbound is not None:
                    mailed += await inbound.deliver(provider, event)
            elif worker is not None:
                worker.wake()
        return JSONResponse({"ok": True, "events": len(events), "mailed": mailed})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/webhooks/{provider}/{secret}", webhook, methods=["POST"]),
        Route("/webhooks/{provider}", webhook, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def serve_web(app: Starlette, host: str, port: int) -> tuple[tuple[str, int], Callable[[], Awaitable[None]]]:
    """Serve ``app`` in this loop (the daemon keeps its signals); return the bound address and a stop function."""
    running = await start_server(app, host, port)
    return running.address, running.stop
