"""What every HTTP adapter shares: one ``httpx.AsyncClient``, explicit timeouts, and error classification.

The rule the worker depends on: an exception from ``send`` says whether the request *may have reached* the
provider (``maybe_accepted``). Before the request was written (no connection, a pool timeout) it certainly
did not; once it was written (a read timeout, a reset, a ``5xx`` answer to it) it may have, and the worker
then asks the provider before sending again. When in doubt: maybe.

Answers are classified the same way for every provider:

* ``429``, and ``503`` with ``Retry-After``: ``RateLimited`` with the wait the provider asked for;
* other ``5xx``, ``408``: ``ProviderTemporaryError``;
* ``401``/``403``: ``AuthenticationFailed`` (adapters with tokens refresh once and retry before that);
* a ``3xx`` answer to a send (redirects are not followed): ``maybe_accepted``;
* other ``4xx`` (and ``3xx``): ``ProviderPermanentError``, with the adapter's own reason when it has one.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import (
    AuthenticationFailed,
    ProviderPermanentError,
    ProviderTemporaryError,
    ProviderUnavailable,
    RateLimited,
)
from bridge.providers.base import ProviderContext

__all__ = [
    "HttpTimeouts",
    "check_response",
    "make_client",
    "request",
    "retry_after_seconds",
]

# Errors raised before a single byte of the request left this host: the provider cannot have it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class HttpTimeouts(BaseModel):
    """``[providers.NAME.timeouts]``: seconds for each phase of a request."""

    model_config = ConfigDict(extra="forbid")

    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=60.0, gt=0)
    """Time to wait for the answer; uploads of large faxes are answered only once the provider stored them."""
    write: float = Field(default=60.0, gt=0)
    pool: float = Field(default=10.0, gt=0)


def make_client(
    context: ProviderContext,
    *,
    base_url: str,
    timeouts: HttpTimeouts,
    auth: httpx.Auth | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """The adapter's one client. ``context.extra["transport"]`` replaces the network (tests, fakes)."""
    transport = context.extra.get("transport")
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool),
        auth=auth,
        headers=dict(headers or {}),
        transport=transport if isinstance(transport, httpx.AsyncBaseTransport) else None,
        follow_redirects=False,
    )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    sending: bool = False,
    **kwargs: Any,
) -> httpx.Response:
    """Make one request; network failures become ``ProviderUnavailable``.

    ``sending`` marks the request that hands a fax over: if it fails after being written, the error says
    ``maybe_accepted``.
    """
    try:
        return await client.request(method, url, **kwargs)
    except _NOT_SENT as exc:
        raise ProviderUnavailable(
            f"{provider}: cannot reach the fax service ({type(exc).__name__}: {exc})", provider=provider
        ) from exc
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(
            f"{provider}: the fax service did not answer in time ({type(exc).__name__})",
            provider=provider,
            maybe_accepted=sending,
        ) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"{provider}: the connection to the fax service failed ({type(exc).__name__}: {exc})",
            provider=provider,
            maybe_accepted=sending,
        ) from exc


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_response(
    response: httpx.Response,
    *,
    provider: str,
    sending: bool = False,
    reason: str | None = None,
    code: str | None = None,
) -> httpx.Response:
    """Return ``response`` if it is a success (2xx); raise the classified error otherwise.

    ``reason`` and ``code`` are the adapter's reading of the error body, when it has one.
    """
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = reason or f"HTTP {status}"
    error_code = code or str(status)
    wait = retry_after_seconds(response.headers.get("retry-after"))
    if status == 429 or (status == 503 and wait is not None):
        raise RateLimited(
            f"{provider}: the fax service asks us to slow down ({detail})",
            retry_after=wait,
            provider=provider,
            code=error_code,
        )
    if status >= 500 or status == 408:
        raise ProviderTemporaryError(
            f"{provider}: the fax service failed ({detail})",
            provider=provider,
            code=error_code,
            maybe_accepted=sending,
        )
    if sending and 300 <= status < 400:
        # Redirects are not followed; a send answered with one may still have been taken by the service.
        raise ProviderTemporaryError(
            f"{provider}: the fax service answered the send with a redirect ({detail})",
            provider=provider,
            code=error_code,
            maybe_accepted=True,
        )
    if status in (401, 403):
        raise AuthenticationFailed(
            f"{provider}: the fax service refused our credentials ({detail}); check the provider settings",
            provider=provider,
            code=error_code,
        )
    raise ProviderPermanentError(f"{provider}: {detail}", provider=provider, code=error_code)
