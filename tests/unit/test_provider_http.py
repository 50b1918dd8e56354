"""The shared HTTP layer of the adapters: how answers and network failures are classified."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from bridge.errors import (
    AuthenticationFailed,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    ProviderUnavailable,
    RateLimited,
)
from bridge.providers._http import check_response, request, retry_after_seconds


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "https://fax.test/send"))


@pytest.mark.parametrize(
    ("status", "headers", "sending", "kind", "maybe"),
    [
        (429, {"Retry-After": "7"}, True, RateLimited, False),
        (503, {"Retry-After": "30"}, True, RateLimited, False),
        (503, {}, True, ProviderTemporaryError, True),
        (500, {}, False, ProviderTemporaryError, False),
        (408, {}, True, ProviderTemporaryError, True),
        (302, {"Location": "/elsewhere"}, True, ProviderTemporaryError, True),
        (302, {"Location": "/elsewhere"}, False, ProviderPermanentError, False),
        (401, {}, True, AuthenticationFailed, False),
        (403, {}, False, AuthenticationFailed, False),
        (400, {}, True, ProviderPermanentError, False),
    ],
)
def test_answers_are_classified(
    status: int, headers: dict[str, str], sending: bool, kind: type[ProviderError], maybe: bool
) -> None:
    with pytest.raises(kind) as caught:
        check_response(answer(status, headers), provider="x", sending=sending)
    assert type(caught.value) is kind
    assert caught.value.maybe_accepted is maybe


def test_rate_limit_carries_the_wait() -> None:
    with pytest.raises(RateLimited) as caught:
        check_response(answer(429, {"Retry-After": "7"}), provider="x")
    assert caught.value.retry_after == 7


def test_success_passes_through() -> None:
    response = answer(201)
    assert check_response(response, provider="x") is response


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now=now) == 120
    assert retry_after_seconds("Tue, 01 Dec 2026 12:01:30 GMT", now=now) == 90
    assert retry_after_seconds("Tue, 01 Dec 2026 11:00:00 GMT", now=now) == 0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None) is None


class Failing(httpx.AsyncBaseTransport):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self.error


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.PoolTimeout("busy"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.WriteTimeout("stuck"), True),
        (httpx.RemoteProtocolError("reset"), True),
        (httpx.ReadError("reset"), True),
    ],
)
async def test_network_failures_say_whether_the_send_may_have_arrived(error: Exception, maybe: bool) -> None:
    async with httpx.AsyncClient(transport=Failing(error), base_url="https://fax.test") as client:
        with pytest.raises(ProviderUnavailable) as caught:
            await request(client, "POST", "/send", provider="x", sending=True)
        assert caught.value.maybe_accepted is maybe
        with pytest.raises(ProviderUnavailable) as caught:
            await request(client, "GET", "/status", provider="x")
        assert caught.value.maybe_accepted is False
