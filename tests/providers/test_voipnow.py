"""The VoipNow adapter against its fake: the contract, every documented quirk, and the mappings."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bridge.errors import (
    AuthenticationFailed,
    CapabilityMissing,
    ConfigError,
    InvalidNumber,
    MalformedResponse,
    ProviderPermanentError,
    ProviderTemporaryError,
    RateLimited,
    SubmissionUnknown,
)
from bridge.fakes.voipnow import FINISH_AFTER, SCHEDULE_AFTER, VoipNowState, number_outcome
from bridge.models import FaxStatus, SendReceipt
from bridge.providers import build_provider
from bridge.providers.base import FaxProvider
from bridge.providers.voipnow import (
    ERRORS,
    FAX_STATES,
    VoipNowProvider,
    classify_error,
    format_recipient,
    parse_error_body,
    state_report,
    token_lifetime,
)
from tests.conftest import SettingsFactory
from tests.providers.contract import ContractSuite, Harness, Outcome, outbound

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "provider-voipnow.toml"
SEND_PATH = "/uapi/faxes/"
TOKEN_PATH = "/oauth/token.php"


class VoipNowHarness(Harness):
    name = "voipnow"
    send_path = SEND_PATH

    def __init__(self, tmp_path: Path, **fake_options: Any) -> None:
        self._fake_options = fake_options
        super().__init__(tmp_path)

    def fake_options(self) -> dict[str, Any]:
        return dict(self._fake_options)

    @property
    def state(self) -> VoipNowState:
        state = self.fake.state
        assert isinstance(state, VoipNowState)
        return state

    def section(self, **changes: Any) -> dict[str, Any]:
        section: dict[str, Any] = {
            "type": "voipnow",
            "base_url": "https://voipnow.test",
            "client_id": "faxbridge-app",
            "client_secret": "fake-app-secret",
            "extension": "0003*210",
            "timeouts": {"connect": 1, "read": 0.5, "write": 1, "pool": 1},
        }
        section.update(changes)
        return {k: v for k, v in section.items() if v is not None}

    def provider(self, **changes: Any) -> FaxProvider:
        # The adapter's token clock is the fake's, so that expiry is tested by advancing it, never by sleeping.
        extra = {"transport": self.fake.transport(), "clock": self.state.now}
        return build_provider(self.name, self.section(**changes), self.tmp_path, extra=extra)

    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        assert receipt.provider_fax_id is not None
        self.state.set_outcome(receipt.provider_fax_id, outcome)
        self.state.advance(FINISH_AFTER)

    def faxes_at_fake(self) -> int:
        return len(self.state.faxes)

    def sends(self) -> int:
        return len(self.state.requests_to(SEND_PATH, "POST"))

    def token_requests(self) -> int:
        return len(self.state.requests_to(TOKEN_PATH, "POST"))


class TestContract(ContractSuite):
    harness_class = VoipNowHarness


@pytest.fixture
def harness(tmp_path: Path) -> VoipNowHarness:
    return VoipNowHarness(tmp_path)


@pytest.fixture
async def provider(harness: VoipNowHarness) -> AsyncIterator[FaxProvider]:
    provider = harness.provider()
    yield provider
    await provider.aclose()


def error_body(code: str, message: str = "message") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


# -- the adapter's declared shape ---------------------------------------------------------------------------


async def test_declares_no_status_no_lookup_no_inbound(harness: VoipNowHarness, provider: FaxProvider) -> None:
    assert isinstance(provider, VoipNowProvider)
    assert provider.capabilities == frozenset()
    receipt = await provider.send(outbound())
    assert receipt.provider_fax_id == "1"
    assert receipt.client_reference == "01JOBCONTRACT00001"
    assert receipt.raw["uid"] == harness.state.faxes["1"].uid
    with pytest.raises(CapabilityMissing):
        await provider.status(receipt)
    with pytest.raises(CapabilityMissing):
        await provider.poll_incoming()


async def test_find_submission_cannot_tell_and_says_where_to_look(provider: FaxProvider) -> None:
    with pytest.raises(SubmissionUnknown, match=r"0003\*210.*01JOBCONTRACT00001\.pdf") as unknown:
        await provider.find_submission(outbound())
    assert unknown.value.maybe_accepted


# -- quirk: the multipart shape ----------------------------------------------------------------------------


async def test_send_shape_files_part_request_json_raw_star_and_bearer(
    harness: VoipNowHarness, provider: FaxProvider
) -> None:
    fax = outbound()
    await provider.send(fax)
    [record] = harness.state.faxes.values()
    [file] = record.files
    assert file.part == "files"
    assert file.filename == "01JOBCONTRACT00001.pdf"
    assert file.content_type == "application/octet-stream"
    assert file.data == fax.document
    assert record.request == {"recipients": ["+4930123456"]}
    assert record.raw_path == "/uapi/faxes/@me/0003*210"
    assert record.token_via == "header"
    [request] = harness.state.requests_to(SEND_PATH)
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["authorization"].startswith("Bearer ")


async def test_caller_id_and_header_are_not_sent_and_said_so_once(
    harness: VoipNowHarness, provider: FaxProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.providers.voipnow")
    await provider.send(outbound("J1"))
    await provider.send(outbound("J2"))
    # The API has no sender-identity field: caller id and header stay out of the request.
    for request in harness.state.requests_to(SEND_PATH):
        assert b"+4930999000" not in request.body
        assert b"Example GmbH" not in request.body
    [record] = [r for r in caplog.records if "caller ID" in r.getMessage()]
    assert "0003*210" in record.getMessage()
    assert provider.display_name == "VoipNow"


async def test_digits_with_a_dial_prefix_and_the_older_api_path(harness: VoipNowHarness) -> None:
    provider = harness.provider(recipient_format="digits", dial_prefix="00", api_path="/unifiedapi", user_id="1")
    try:
        await provider.send(outbound())
    finally:
        await provider.aclose()
    [record] = harness.state.faxes.values()
    assert record.recipients == ["004930123456"]
    assert record.raw_path == "/unifiedapi/faxes/1/0003*210"


@pytest.fixture
async def raw_client(harness: VoipNowHarness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="http://fake") as client:
        token = (await client.post(TOKEN_PATH, data=_token_form())).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _token_form(**changes: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": "faxbridge-app",
        "client_secret": "fake-app-secret",
        **changes,
    }


PDF = ("fax.pdf", b"%PDF-1.4\n%%EOF\n", "application/octet-stream")
REQUEST = json.dumps({"recipients": ["+4930123456"]})


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"json": {"recipients": ["+4930123456"]}}, "fx_recipients_invalid"),  # not multipart at all
        ({"files": [("files", PDF)]}, "fx_recipients_invalid"),  # no request part
        ({"data": {"request": "recipients=+4930123456"}, "files": [("files", PDF)]}, "fx_recipients_invalid"),
        (
            {"data": {"request": json.dumps({"recipients": "+4930123456"})}, "files": [("files", PDF)]},
            "fx_recipients_invalid",
        ),
        ({"data": {"request": json.dumps({"recipients": []})}, "files": [("files", PDF)]}, "fx_recipients_invalid"),
        (
            {"data": {"request": json.dumps({"recipients": ["fax me"]})}, "files": [("files", PDF)]},
            "fx_recipients_invalid",
        ),
        ({"files": [("request", (None, REQUEST))]}, "fx_file_invalid"),  # multipart without a file part
        (
            {"data": {"request": REQUEST}, "files": [("files", ("fax.docx", b"PK\x03\x04", "application/zip"))]},
            "fx_file_invalid",
        ),
        ({"data": {"request": REQUEST}, "files": [("files", ("fax.pdf", b"GIF89a", "image/gif"))]}, "fx_file_invalid"),
        ({"data": {"request": REQUEST}, "files": [("files", ("fax.txt", b"", "text/plain"))]}, "fx_file_invalid"),
        ({"data": {"request": REQUEST}, "files": [("files", PDF)] * 11}, "fx_max_files_reached"),
    ],
)
async def test_the_fake_enforces_the_multipart_shape(
    harness: VoipNowHarness, raw_client: httpx.AsyncClient, kwargs: dict[str, Any], code: str
) -> None:
    response = await raw_client.post("/uapi/faxes/@me/0003*210", **kwargs)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert harness.state.faxes == {}


async def test_the_fake_accepts_every_documented_variant(
    harness: VoipNowHarness, raw_client: httpx.AsyncClient
) -> None:
    token = raw_client.headers["Authorization"].removeprefix("Bearer ")
    text_part = ("note.txt", b"This is my fax", "application/octet-stream")
    two_files = {"data": {"request": REQUEST}, "files": [("files", PDF), ("files", text_part)]}
    # several "files" parts; a file part under another name (click2fax); the request part sent as a file
    assert (await raw_client.post("/uapi/faxes/@me/0003*210", **two_files)).status_code == 200
    assert (
        await raw_client.post("/uapi/faxes/@viewer/210", files=[("fax.pdf", PDF), ("request", ("r.json", REQUEST))])
    ).status_code == 200
    # "*" percent-encoded, the older base path, the token as a query parameter, @owner and the numeric user
    unauthenticated = httpx.AsyncClient(transport=harness.fake.transport(), base_url="http://fake")
    async with unauthenticated:
        response = await unauthenticated.post(
            "/unifiedapi/faxes/@owner/0003%2A210",
            params={"accessRequestToken": f"Bearer {token}"},
            data={"request": REQUEST},
            files=[("files", PDF)],
        )
    assert response.status_code == 200
    numeric_user = await raw_client.post("/uapi/faxes/1/210", data={"request": REQUEST}, files=[("files", PDF)])
    assert numeric_user.status_code == 200
    assert len(harness.state.faxes) == 4
    first, second, third, _ = harness.state.faxes.values()
    assert [f.part for f in first.files] == ["files", "files"]
    assert [f.part for f in second.files] == ["fax.pdf"]
    assert third.extension == "0003*210"
    assert third.raw_path == "/unifiedapi/faxes/@owner/0003%2A210"
    assert third.token_via == "query"
    assert set(response.json()) == {"id", "uid"}


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/uapi/faxes/@me/0003*210", {"Authorization": "Bearer nope"}, 401, "access_denied"),
        ("/uapi/faxes/@me/0003*210", {"Authorization": ""}, 401, "access_denied"),
        ("/uapi/faxes/99/0003*210", {}, 400, "user_invalid"),
        ("/uapi/faxes/@me/@self", {}, 400, "extension_invalid"),
        ("/uapi/faxes/@me/0003*999", {}, 400, "extension_invalid"),
    ],
)
async def test_the_fake_checks_token_user_and_extension(
    raw_client: httpx.AsyncClient, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    response = await raw_client.post(path, headers=headers, data={"request": REQUEST}, files=[("files", PDF)])
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_the_fake_token_endpoint(harness: VoipNowHarness) -> None:
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="http://fake") as client:
        ok = await client.post(TOKEN_PATH, data=_token_form())
        bad = await client.post(TOKEN_PATH, data=_token_form(client_secret="wrong"))
        grant = await client.post(TOKEN_PATH, data=_token_form(grant_type="password"))
    assert ok.status_code == 200
    assert ok.json()["expires_in"] == 3600
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid_client", "error_description": "The client credentials are invalid"}
    assert grant.status_code == 400
    assert grant.json()["error"] == "unsupported_grant_type"


# -- quirk: fx_* and the other documented error codes, each mapped -----------------------------------------


async def test_fx_recipients_invalid_is_an_invalid_number(harness: VoipNowHarness, provider: FaxProvider) -> None:
    with pytest.raises(InvalidNumber) as refused:
        await provider.send(outbound(to="+4930120003"))
    assert refused.value.code == "fx_recipients_invalid"
    assert "not a valid fax number" in str(refused.value)
    assert "recipient_format" in str(refused.value)
    assert not refused.value.maybe_accepted
    assert harness.faxes_at_fake() == 0


async def test_fx_file_invalid_is_permanent(harness: VoipNowHarness, provider: FaxProvider) -> None:
    fax = dataclasses.replace(outbound(), document=b"GIF89a not a pdf")
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(fax)
    assert not isinstance(refused.value, InvalidNumber)
    assert refused.value.code == "fx_file_invalid"
    assert "invalid file" in str(refused.value)
    assert not refused.value.maybe_accepted
    assert harness.faxes_at_fake() == 0


async def test_fx_max_files_reached_is_permanent(tmp_path: Path) -> None:
    harness = VoipNowHarness(tmp_path, max_files=0)
    provider = harness.provider()
    try:
        with pytest.raises(ProviderPermanentError) as refused:
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert refused.value.code == "fx_max_files_reached"
    assert "more files than VoipNow allows" in str(refused.value)
    assert harness.faxes_at_fake() == 0


@pytest.mark.parametrize("status", [400, 500])
async def test_internal_server_error_is_temporary_and_maybe_accepted(
    harness: VoipNowHarness, provider: FaxProvider, status: int
) -> None:
    harness.state.inject("status", path=SEND_PATH, status=status, body=error_body("internal_server_error"))
    with pytest.raises(ProviderTemporaryError) as failed:
        await provider.send(outbound())
    assert failed.value.code == "internal_server_error"
    assert failed.value.maybe_accepted
    assert "internal error" in str(failed.value)


@pytest.mark.parametrize(
    ("changes", "code", "setting"),
    [({"user_id": "42"}, "user_invalid", "user_id"), ({"extension": "0003*999"}, "extension_invalid", "extension")],
)
async def test_a_wrong_user_or_extension_names_the_setting(
    harness: VoipNowHarness, changes: dict[str, str], code: str, setting: str
) -> None:
    provider = harness.provider(**changes)
    try:
        with pytest.raises(ProviderPermanentError) as refused:
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert refused.value.code == code
    assert f"providers.voipnow.{setting}" in str(refused.value)
    assert harness.faxes_at_fake() == 0


async def test_request_not_implemented_is_permanent_not_maybe(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=501, body=error_body("request_not_implemented"))
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(outbound())
    assert refused.value.code == "request_not_implemented"
    assert not refused.value.maybe_accepted


@pytest.mark.parametrize("code", ["access_denied", "access_denided"])
async def test_access_denied_in_both_spellings_after_one_fresh_token(
    harness: VoipNowHarness, provider: FaxProvider, code: str
) -> None:
    harness.state.inject("status", path=SEND_PATH, status=401, body=error_body(code), times=2)
    with pytest.raises(AuthenticationFailed) as refused:
        await provider.send(outbound())
    assert refused.value.code == code
    assert "trusted" in str(refused.value)
    assert not refused.value.maybe_accepted
    assert harness.sends() == 2  # the first refusal is retried once with a new token, not more
    assert harness.token_requests() == 2


async def test_an_unknown_4xx_code_is_permanent_and_kept(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=400, body=error_body("fx_quota_exceeded", "No credit"))
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(outbound())
    assert refused.value.code == "fx_quota_exceeded"
    assert "No credit" in str(refused.value)


async def test_a_404_points_at_api_path(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=404, body=b"Not Found")
    with pytest.raises(ProviderPermanentError, match=r"api_path") as refused:
        await provider.send(outbound())
    assert not refused.value.maybe_accepted


async def test_204_no_faxes_is_never_a_receipt_nor_a_resend(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=204)
    with pytest.raises(SubmissionUnknown) as unknown:
        await provider.send(outbound())
    assert unknown.value.maybe_accepted
    assert "01JOBCONTRACT00001.pdf" in str(unknown.value)


async def test_a_2xx_carrying_an_error_is_classified(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=200, body=error_body("fx_file_invalid"))
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(outbound())
    assert refused.value.code == "fx_file_invalid"


@pytest.mark.parametrize("body", [b"<html>OK</html>", b"{}", b'{"recipients": ["+4930123456"]}'])
async def test_a_2xx_without_a_fax_id_is_maybe_accepted(
    harness: VoipNowHarness, provider: FaxProvider, body: bytes
) -> None:
    harness.state.inject("status", path=SEND_PATH, status=200, body=body)
    with pytest.raises(MalformedResponse) as malformed:
        await provider.send(outbound())
    assert malformed.value.maybe_accepted


async def test_a_numeric_fax_id_is_accepted(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject("status", path=SEND_PATH, status=200, body=b'{"id": 17, "uid": "abc"}')
    receipt = await provider.send(outbound())
    assert receipt.provider_fax_id == "17"
    assert receipt.raw == {"id": 17, "uid": "abc"}


async def test_503_with_retry_after_is_a_rate_limit(harness: VoipNowHarness, provider: FaxProvider) -> None:
    harness.state.inject(
        "status", path=SEND_PATH, status=503, headers={"Retry-After": "30"}, body=error_body("internal_server_error")
    )
    with pytest.raises(RateLimited) as limited:
        await provider.send(outbound())
    assert limited.value.retry_after == 30


def _response(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, request=httpx.Request("POST", "https://voipnow.test/x"))


@pytest.mark.parametrize("code", sorted(ERRORS))
@pytest.mark.parametrize("status", [400, 401, 500])
def test_every_documented_code_is_classified_by_code(code: str, status: int) -> None:
    error = classify_error(_response(status, {"error": {"code": code, "message": "m"}}), provider="p", sending=True)
    assert error is not None
    assert error.code == code
    kind = ERRORS[code].kind
    expected = {
        "invalid_number": InvalidNumber,
        "auth": AuthenticationFailed,
        "temporary": ProviderTemporaryError,
        "permanent": ProviderPermanentError,
    }[kind]
    assert type(error) is expected
    assert error.maybe_accepted == (kind == "temporary")
    assert "{name}" not in str(error)


def test_error_bodies_in_both_shapes() -> None:
    assert parse_error_body(_response(400, {"error": {"code": "fx_file_invalid", "message": "bad"}})) == (
        "fx_file_invalid",
        "bad",
    )
    assert parse_error_body(_response(401, {"error": "invalid_client", "error_description": "no"})) == (
        "invalid_client",
        "no",
    )
    assert parse_error_body(_response(502, b"<html>Bad Gateway</html>")) == (None, None)
    assert parse_error_body(_response(400, ["error"])) == (None, None)
    assert classify_error(_response(200, {"id": "1"}), provider="p", sending=True) is None


# -- quirk: token caching and expiry ------------------------------------------------------------------------


async def test_the_token_is_fetched_once_and_reused(harness: VoipNowHarness, provider: FaxProvider) -> None:
    await provider.send(outbound("J1"))
    await provider.send(outbound("J2"))
    assert harness.token_requests() == 1
    [request] = harness.state.requests_to(TOKEN_PATH)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "faxbridge-app",
        "client_secret": "fake-app-secret",
        "type": "unifiedapi",
        "redirect_uri": "https://voipnow.test/ouath/token.php",
    }


async def test_the_token_is_renewed_before_it_expires(harness: VoipNowHarness, provider: FaxProvider) -> None:
    await provider.send(outbound("J1"))
    harness.state.advance(3600 - 300 - 5)  # inside the lifetime, outside the margin
    await provider.send(outbound("J2"))
    assert harness.token_requests() == 1
    harness.state.advance(10)  # within five minutes of expiry: renewed before VoipNow could refuse it
    await provider.send(outbound("J3"))
    assert harness.token_requests() == 2
    assert harness.sends() == 3  # no request was refused on the way


async def test_a_short_lifetime_renews_at_half_of_it(tmp_path: Path) -> None:
    harness = VoipNowHarness(tmp_path, token_lifetime=100)
    provider = harness.provider()
    try:
        await provider.send(outbound("J1"))
        harness.state.advance(49)
        await provider.send(outbound("J2"))
        assert harness.token_requests() == 1
        harness.state.advance(2)
        await provider.send(outbound("J3"))
        assert harness.token_requests() == 2
    finally:
        await provider.aclose()


async def test_a_token_refused_early_is_replaced_and_the_fax_sent_once(
    harness: VoipNowHarness, provider: FaxProvider
) -> None:
    await provider.send(outbound("J1"))
    harness.state.revoke_tokens()
    receipt = await provider.send(outbound("J2"))
    assert receipt.provider_fax_id == "2"
    assert harness.token_requests() == 2
    assert harness.sends() == 3
    assert harness.faxes_at_fake() == 2


async def test_concurrent_sends_share_one_token_fetch(harness: VoipNowHarness, provider: FaxProvider) -> None:
    await asyncio.gather(*(provider.send(outbound(f"J{i}")) for i in range(5)))
    assert harness.token_requests() == 1
    assert harness.faxes_at_fake() == 5


async def test_bad_credentials_fail_before_any_fax_is_sent(harness: VoipNowHarness) -> None:
    provider = harness.provider(client_secret="wrong")
    try:
        with pytest.raises(AuthenticationFailed, match="client_id") as refused:
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert refused.value.code == "invalid_client"
    assert not refused.value.maybe_accepted
    assert harness.sends() == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 503, "body": b"down"}, ProviderTemporaryError),
        ({"status": 429, "headers": {"Retry-After": "12"}}, RateLimited),
        ({"status": 200, "body": b'{"token_type": "Bearer"}'}, MalformedResponse),
    ],
)
async def test_token_endpoint_failures_are_never_maybe_accepted(
    harness: VoipNowHarness, provider: FaxProvider, fault: dict[str, Any], error: type[Exception]
) -> None:
    harness.state.inject("status", path=TOKEN_PATH, **fault)
    with pytest.raises(error) as failed:
        await provider.send(outbound())
    assert isinstance(failed.value, ProviderTemporaryError)
    assert not failed.value.maybe_accepted
    assert harness.sends() == 0
    if isinstance(failed.value, RateLimited):
        assert failed.value.retry_after == 12


async def test_the_secret_file_is_read_relative_to_state_dir_and_rotated(
    harness: VoipNowHarness, tmp_path: Path
) -> None:
    provider = harness.provider(client_secret=None, client_secret_file="voipnow-secret")
    try:
        with pytest.raises(ProviderTemporaryError, match="voipnow-secret") as unreadable:
            await provider.send(outbound("J1"))
        assert not unreadable.value.maybe_accepted
        assert harness.token_requests() == 0
        (tmp_path / "voipnow-secret").write_text("fake-app-secret\n")
        await provider.send(outbound("J1"))
        harness.state.client_secret = "rotated-secret"
        (tmp_path / "voipnow-secret").write_text("rotated-secret\n")
        harness.state.revoke_tokens()
        await provider.send(outbound("J2"))
    finally:
        await provider.aclose()
    assert harness.faxes_at_fake() == 2
    assert b"client_secret=rotated-secret" in harness.state.requests_to(TOKEN_PATH)[-1].body


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3600, 3600),
        (7200, 7200),
        ("7200", 7200),
        (" 3599 ", 3599),
        (None, 3600),
        ("soon", 3600),
        (0, 3600),
        (-5, 3600),
        (True, 3600),
        ([1], 3600),
    ],
)
def test_token_lifetime_reads_numbers_and_numeric_strings(value: object, seconds: float) -> None:
    assert token_lifetime(value) == seconds


# -- the fake's statuses and number rules ---------------------------------------------------------------------


async def test_the_fake_moves_a_fax_through_voipnow_states(harness: VoipNowHarness, provider: FaxProvider) -> None:
    delivered = await provider.send(outbound("J1"))
    busy = await provider.send(outbound("J2", to="+4930120001"))
    no_answer = await provider.send(outbound("J3", to="+4930120002"))
    state = harness.state
    assert {state.status_of(r.provider_fax_id or "") for r in (delivered, busy, no_answer)} == {"Pre-Approved"}
    state.advance(SCHEDULE_AFTER)
    assert state.status_of("1") == "Scheduled For Sending"
    state.advance(FINISH_AFTER)
    assert [state.status_of(i) for i in ("1", "2", "3")] == ["Sent", "Send Failed", "Send Failed"]
    assert state.describe(state.faxes["2"])["results"] == {"+4930120001": "busy"}
    assert state.describe(state.faxes["3"])["results"] == {"+4930120002": "no_answer"}
    state.set_outcome("1", "invalid_number")
    assert state.status_of("1") == "Send Failed"
    with pytest.raises(ValueError, match="unknown outcome"):
        state.set_outcome("1", "lost")  # type: ignore[arg-type]


def test_number_rules() -> None:
    assert [number_outcome(n) for n in ("+4930120001", "4930120002", "+4930120003", "+4930123456")] == [
        "busy",
        "no_answer",
        "invalid_number",
        "delivered",
    ]


async def test_fake_control_routes(harness: VoipNowHarness, raw_client: httpx.AsyncClient) -> None:
    two = json.dumps({"recipients": ["+4930123456", "+4930120001"]})
    assert (await raw_client.post(f"{SEND_PATH}@me/210", data={"request": two}, files=[("files", PDF)])).is_success
    harness.state.advance(FINISH_AFTER)
    [listed] = (await raw_client.get("/_fake/faxes")).json()
    assert listed["status"] == "Partially Sent"
    changed = await raw_client.post("/_fake/outcome", json={"id": listed["id"], "outcome": "delivered"})
    assert changed.json()["status"] == "Sent"
    assert (await raw_client.post("/_fake/outcome", json={"id": "9", "outcome": "busy"})).status_code == 400
    await raw_client.post("/_fake/revoke-tokens")
    again = await raw_client.post(f"{SEND_PATH}@me/210", data={"request": REQUEST}, files=[("files", PDF)])
    assert again.status_code == 401


# -- mappings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("Not approved", FaxStatus.QUEUED),
        ("Pre-Approved", FaxStatus.QUEUED),
        ("Approved", FaxStatus.QUEUED),
        ("Scheduled For Sending", FaxStatus.QUEUED),
        ("Sent", FaxStatus.DELIVERED),
        ("Partially Sent", FaxStatus.FAILED),
        ("Send Failed", FaxStatus.FAILED),
        ("send_failed", FaxStatus.FAILED),
        ("Vanished", FaxStatus.UNKNOWN),
    ],
)
def test_voipnow_states_map_into_fax_status(state: str, status: FaxStatus) -> None:
    report = state_report(state, {"status": state})
    assert report.status == status
    assert report.code == state
    assert report.raw == {"status": state}
    if status in (FaxStatus.FAILED, FaxStatus.UNKNOWN):
        assert report.reason


def test_every_fax_state_is_covered() -> None:
    assert set(FAX_STATES) == {
        "not approved",
        "pre-approved",
        "approved",
        "scheduled for sending",
        "sending",
        "sent",
        "partially sent",
        "send failed",
    }


@pytest.mark.parametrize(
    ("cause", "words"), [("busy", "busy"), ("no_answer", "answer"), ("invalid_number", "number"), (None, "could not")]
)
def test_failure_causes_get_plain_reasons(cause: str | None, words: str) -> None:
    report = state_report("Send Failed", cause=cause)
    assert report.reason is not None
    assert words in report.reason


def test_recipient_formats() -> None:
    assert format_recipient("+4930123456", recipient_format="e164") == "+4930123456"
    assert format_recipient("+4930123456", recipient_format="digits") == "4930123456"
    assert format_recipient("+4930123456", recipient_format="digits", dial_prefix="00") == "004930123456"
    with pytest.raises(InvalidNumber):
        format_recipient("+49 30 123", recipient_format="e164")


# -- configuration -------------------------------------------------------------------------------------------


async def test_the_example_section_is_valid_and_holds_no_secret(tmp_path: Path) -> None:
    with EXAMPLE.open("rb") as handle:
        section = tomllib.load(handle)["providers"]["voipnow"]
    assert "client_secret" not in section
    provider = build_provider("voipnow", section, tmp_path)
    await provider.aclose()
    assert isinstance(provider, VoipNowProvider)
    assert provider.send_url == "/uapi/faxes/@me/0003*210"
    commented = {line.split("=")[0].strip("# ") for line in EXAMPLE.read_text().splitlines() if "=" in line}
    fields = set(VoipNowProvider.settings_model.model_fields) - {"client_secret"}
    assert fields <= commented | {"timeouts"}


async def test_the_secret_can_come_from_the_environment(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAXBRIDGE_PROVIDERS__VOIPNOW__CLIENT_SECRET", "fake-app-secret")
    section = {"type": "voipnow", "base_url": "https://voipnow.test", "client_id": "faxbridge-app", "extension": "210"}
    settings = make_settings(providers={"voipnow": section})
    assert settings.providers["voipnow"]["client_secret"] == "fake-app-secret"
    harness = VoipNowHarness(tmp_path)
    provider = build_provider(
        "voipnow", settings.providers["voipnow"], tmp_path, extra={"transport": harness.fake.transport()}
    )
    try:
        await provider.send(outbound())
    finally:
        await provider.aclose()
    assert harness.faxes_at_fake() == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client_secret": None}, "exactly one of client_secret_file"),
        ({"client_secret_file": "secret"}, "exactly one of client_secret_file"),
        ({"extension": "@self"}, r"providers\.voipnow\.extension"),
        ({"extension": "21"}, "extended like 0003"),
        ({"user_id": "me"}, r"providers\.voipnow\.user_id"),
        ({"dial_prefix": "00"}, 'needs recipient_format = "digits"'),
        ({"dial_prefix": "+", "recipient_format": "digits"}, "only digits"),
        ({"base_url": "voipnow.example.com"}, "http"),
        ({"api_path": "/api"}, r"providers\.voipnow\.api_path"),
        ({"client_sekret": "x"}, r"providers\.voipnow\.client_sekret"),
    ],
)
def test_bad_sections_name_the_key(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    section = VoipNowHarness(tmp_path).section(**changes)
    with pytest.raises(ConfigError, match=message):
        build_provider("voipnow", section, tmp_path)


async def test_numbers_in_toml_are_read_as_strings(tmp_path: Path) -> None:
    provider = build_provider("voipnow", VoipNowHarness(tmp_path).section(extension=210, user_id=7), tmp_path)
    await provider.aclose()
    assert isinstance(provider, VoipNowProvider)
    assert provider.send_url == "/uapi/faxes/7/210"
