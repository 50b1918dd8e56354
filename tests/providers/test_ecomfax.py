"""KPN eComFax: the contract suite against the fake, KPN's quirks, and the adapter's mapping tables."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx
import pytest

from bridge.errors import (
    AuthenticationFailed,
    ConfigError,
    InvalidNumber,
    MalformedResponse,
    ProviderPermanentError,
    ProviderTemporaryError,
    RateLimited,
    SubmissionUnknown,
)
from bridge.fakes.ecomfax import QUEUED_SECONDS, SENDING_SECONDS, EcomfaxState
from bridge.models import FaxStatus, SendReceipt
from bridge.providers import build_provider, provider_class
from bridge.providers.base import Capability
from bridge.providers.ecomfax import (
    EcomfaxProvider,
    EcomfaxSettings,
    e164,
    envelope_error,
    error_info,
    failure_reason,
    job_id_of,
    map_status,
    parse_time,
    quota_reset,
    token_lifetime,
)
from tests.providers.contract import ContractSuite, Harness, Outcome, one_page_pdf, outbound

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID = "faxbridge-test"
SECRET = "s3cret-from-a-file"
BASE = "https://api.kpn.test"
API = "/data/cws/fax"
TOKEN = "/oauth/client_credential/accesstoken"
PAST_THE_END = QUEUED_SECONDS + SENDING_SECONDS + 1


class EcomfaxHarness(Harness):
    name = "ecomfax"
    send_path = f"{API}/sendfax"
    options: ClassVar[dict[str, Any]] = {}

    def fake_options(self) -> dict[str, Any]:
        return {"client_id": CLIENT_ID, "client_secret": SECRET, **self.options}

    @property
    def state(self) -> EcomfaxState:
        assert isinstance(self.fake.state, EcomfaxState)
        return self.fake.state

    def section(self, **overrides: Any) -> dict[str, Any]:
        # Relative: resolved against the state directory, as in production.
        (self.tmp_path / "kpn.secret").write_text(SECRET + "\n")
        return {
            "type": "ecomfax",
            "base_url": BASE,
            "client_id": CLIENT_ID,
            "client_secret_file": "kpn.secret",
            "timeouts": {"connect": 1, "read": 0.5, "write": 1, "pool": 1},
            **overrides,
        }

    def provider(self, **overrides: Any) -> EcomfaxProvider:
        # The adapter shares the fake's clock, so advancing the fake also ages the cached token.
        built = build_provider(
            self.name,
            self.section(**overrides),
            self.tmp_path,
            extra={"transport": self.fake.transport(), "clock": self.state.now},
        )
        assert isinstance(built, EcomfaxProvider)
        return built

    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        assert receipt.provider_fax_id is not None
        self.state.set_outcome(receipt.provider_fax_id, outcome)
        self.state.advance(PAST_THE_END)

    def faxes_at_fake(self) -> int:
        return len(self.state.jobs)

    async def inject_inbound(self, pdf: bytes, caller: str, called: str) -> None:
        self.state.inject_inbound(pdf, caller=caller, called=called)

    def token_requests(self) -> int:
        return len(self.state.requests_to(TOKEN))


class TestContract(ContractSuite):
    harness_class = EcomfaxHarness


@pytest.fixture
def harness(tmp_path: Path) -> EcomfaxHarness:
    return EcomfaxHarness(tmp_path)


@pytest.fixture
async def provider(harness: EcomfaxHarness) -> Any:
    built = harness.provider()
    yield built
    await built.aclose()


def test_registered_with_the_capabilities_it_can_keep() -> None:
    assert provider_class("ecomfax") is EcomfaxProvider
    assert EcomfaxProvider.capabilities == {
        Capability.STATUS_POLL,
        Capability.INBOUND_POLL,
        Capability.INBOUND_DOWNLOAD,
        Capability.INBOUND_ACK,
    }
    # No lookup can prove a fax absent (question 8), and eComFax documents no push.
    assert Capability.CLIENT_REFERENCE not in EcomfaxProvider.capabilities
    assert Capability.WEBHOOK not in EcomfaxProvider.capabilities


def api_requests(harness: EcomfaxHarness, operation: str, method: str | None = None) -> int:
    return len(harness.state.requests_to(f"{API}/{operation}", method))


# -- the token: KPN's quirks ---------------------------------------------------------------------------------


async def test_the_token_endpoint_sends_expires_in_as_a_string(harness: EcomfaxHarness) -> None:
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.kpn.test") as client:
        answer = await client.post(
            TOKEN, params={"grant_type": "client_credentials"}, data={"client_id": CLIENT_ID, "client_secret": SECRET}
        )
    body = answer.json()
    assert answer.status_code == 200
    assert body["expires_in"] == "3599"
    assert isinstance(body["issued_at"], str)
    assert body["refresh_token_expires_in"] == "0"
    assert token_lifetime(body["expires_in"]) == 3599.0


async def test_the_string_expires_in_keeps_the_token_cached_until_it_runs_out(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    receipt = await provider.send(outbound())
    await provider.status(receipt)
    await provider.status(receipt)
    assert harness.token_requests() == 1
    harness.state.advance(3000)  # still inside 3599 s minus the 60 s margin
    await provider.status(receipt)
    assert harness.token_requests() == 1
    harness.state.advance(560)  # 3560 s: inside the margin, so a new token before the old one expires
    await provider.status(receipt)
    assert harness.token_requests() == 2
    # Refreshed ahead of expiry: no call was refused and repeated.
    assert api_requests(harness, "jobstatus") == 4


async def test_the_grant_type_travels_in_the_query_and_the_credentials_in_the_form(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    await provider.send(outbound())
    [token_request] = harness.state.requests_to(TOKEN)
    assert parse_qs(token_request.query) == {"grant_type": ["client_credentials"]}
    assert parse_qs(token_request.body.decode()) == {"client_id": [CLIENT_ID], "client_secret": [SECRET]}
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    [send] = harness.state.requests_to(f"{API}/sendfax")
    assert send.headers["authorization"].startswith("Bearer ")


async def test_the_fake_refuses_a_grant_type_in_the_body(harness: EcomfaxHarness) -> None:
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.kpn.test") as client:
        answer = await client.post(
            TOKEN, data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET}
        )
    assert answer.status_code == 400
    assert answer.json() == {"ErrorCode": "invalid_request", "Error": "Required param : grant_type"}


async def test_an_expired_token_at_the_fake_gets_the_apigee_fault(harness: EcomfaxHarness) -> None:
    token = harness.state.issue_token()
    harness.state.advance(3600)
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.kpn.test") as client:
        answer = await client.get(f"{API}/injobs", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.json()["fault"]["detail"]["errorcode"] == "keymanagement.service.access_token_expired"


async def test_concurrent_calls_share_one_token_fetch(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    await asyncio.gather(*(provider.send(outbound(f"01JOBCONCURRENT{n}")) for n in range(5)))
    assert harness.faxes_at_fake() == 5
    assert harness.token_requests() == 1


async def test_a_401_fetches_a_new_token_and_repeats_the_call_once(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    receipt = await provider.send(outbound())
    harness.state.revoke_tokens()  # KPN forgot the token before its expires_in
    report = await provider.status(receipt)
    assert report.status in (FaxStatus.QUEUED, FaxStatus.SENDING)
    assert harness.token_requests() == 2
    assert api_requests(harness, "jobstatus") == 2  # the refused call and its one repetition


async def test_a_401_on_the_send_is_repeated_once_and_sends_one_fax(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    await provider.send(outbound("01JOBFIRST"))
    harness.state.revoke_tokens()
    receipt = await provider.send(outbound("01JOBSECOND"))
    assert receipt.provider_fax_id is not None
    assert harness.faxes_at_fake() == 2
    assert api_requests(harness, "sendfax") == 3


async def test_a_second_401_is_authentication_failed_without_a_third_try(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    fault = json.dumps({"fault": {"faultstring": "Invalid Access Token", "detail": {"errorcode": "x.invalid"}}})
    harness.state.inject("status", path=f"{API}/sendfax", status=401, body=fault.encode(), times=5)
    with pytest.raises(AuthenticationFailed) as refused:
        await provider.send(outbound())
    assert "Invalid Access Token" in str(refused.value)
    assert refused.value.code == "x.invalid"
    assert not refused.value.maybe_accepted
    assert api_requests(harness, "sendfax") == 2
    assert harness.token_requests() == 2


async def test_wrong_client_credentials_are_an_authentication_failure(harness: EcomfaxHarness) -> None:
    provider = build_provider(
        "ecomfax",
        {**harness.section(), "client_secret_file": None, "client_secret": "wrong"},
        harness.tmp_path,
        extra={"transport": harness.fake.transport()},
    )
    try:
        with pytest.raises(AuthenticationFailed, match="ClientId is Invalid") as refused:
            await provider.send(outbound())
        assert refused.value.code == "invalid_client"
        assert not refused.value.maybe_accepted
        assert harness.faxes_at_fake() == 0
    finally:
        await provider.aclose()


async def test_a_failing_token_endpoint_is_temporary_and_sends_nothing(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    harness.state.inject("status", path=TOKEN, status=503, body=b"<html>Service Unavailable</html>")
    with pytest.raises(ProviderTemporaryError) as failed:
        await provider.send(outbound())
    assert not failed.value.maybe_accepted
    assert harness.faxes_at_fake() == 0


async def test_the_secret_file_is_read_again_for_each_token(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    receipt = await provider.send(outbound())
    (harness.tmp_path / "kpn.secret").write_text("rotated-secret\n")
    harness.state.client_secret = "rotated-secret"
    harness.state.revoke_tokens()
    await provider.status(receipt)
    assert parse_qs(harness.state.requests_to(TOKEN)[-1].body.decode())["client_secret"] == ["rotated-secret"]


async def test_an_unreadable_secret_file_names_the_file(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    (harness.tmp_path / "kpn.secret").unlink()
    with pytest.raises(AuthenticationFailed, match=r"kpn\.secret"):
        await provider.send(outbound())
    assert harness.state.requests_to(TOKEN) == []


# -- sending -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upload", "path", "recorded"), [("json", "/sendfax", "json"), ("multipart", "/sendfax/raw", "raw")]
)
async def test_both_send_variants_are_accepted_by_the_fake(
    harness: EcomfaxHarness, upload: str, path: str, recorded: str
) -> None:
    provider = harness.provider(upload=upload)
    try:
        fax = outbound()
        receipt = await provider.send(fax)
        [job] = harness.state.jobs.values()
        assert receipt.provider_fax_id == job.jobid
        assert receipt.raw["upload"] == upload
        assert job.upload == recorded
        assert harness.state.requests_to(f"{API}{path}", "POST")
        assert [r.number for r in job.recipients] == ["+4930123456"]
        assert job.documents[0][1] == fax.document
        assert job.reference == fax.job_id
        assert job.custom_fax_number == "+4930999000"  # OutboundFax.caller_id
        await harness.finish(receipt, "delivered")
        report = await provider.status(receipt)
        assert report.status == FaxStatus.DELIVERED
        assert report.pages_sent == 1
    finally:
        await provider.aclose()


async def test_caller_id_is_the_custom_fax_number_and_the_header_is_not_sent(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    await provider.send(outbound("01JOBWITHID"))
    sent = json.loads(harness.state.requests_to(f"{API}/sendfax")[0].body)
    assert sent["customFaxNumber"] == "+4930999000"
    assert "Example GmbH" not in json.dumps(sent)  # no documented per-fax field for header text
    await provider.send(dataclasses.replace(outbound("01JOBNOID"), caller_id=None))
    assert "customFaxNumber" not in json.loads(harness.state.requests_to(f"{API}/sendfax")[1].body)


async def test_dial_prefix_00_writes_the_destination_internationally(harness: EcomfaxHarness) -> None:
    provider = harness.provider(dial_prefix="00")
    try:
        await provider.send(outbound())
        [job] = harness.state.jobs.values()
        assert job.recipients[0].number == "004930123456"
    finally:
        await provider.aclose()


async def test_a_number_the_fake_refuses_is_invalid_number_at_once(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    with pytest.raises(InvalidNumber, match="not a valid fax number") as refused:
        await provider.send(outbound(to="+12345"))
    assert refused.value.code == "INVALID_RECIPIENT"
    assert not refused.value.maybe_accepted
    assert harness.faxes_at_fake() == 0


async def test_the_fake_validates_the_send_payloads(harness: EcomfaxHarness) -> None:
    token = harness.state.issue_token()
    auth = {"Authorization": f"Bearer {token}"}
    good = {"recipients": [{"faxNumber": "+4930123456"}], "documents": [{"content": "JVBERi0="}]}
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.kpn.test") as client:
        cases = [
            await client.post(f"{API}/sendfax", json={**good, "documents": []}, headers=auth),
            await client.post(f"{API}/sendfax", json={**good, "documents": [{"content": "%%%"}]}, headers=auth),
            await client.post(f"{API}/sendfax", json={**good, "recipients": "+4930123456"}, headers=auth),
            await client.post(f"{API}/sendfax", content=b"recipients=1", headers=auth),
            await client.post(f"{API}/sendfax/raw", files={"recipients": (None, "+4930123456")}, headers=auth),
            await client.post(f"{API}/sendfax/raw", data={"recipients": "+4930123456"}, headers=auth),
            await client.post(f"{API}/sendfax/raw", json=good, headers=auth),
        ]
        ok = await client.post(
            f"{API}/sendfax/raw",
            data={"recipients": '["+4930123456", "+4930120001"]'},
            files=[("file", ("a.pdf", b"%PDF-1.4", "application/pdf"))],
            headers=auth,
        )
    assert [(c.status_code, c.json()["code"]) for c in cases] == [
        (400, "INVALID_DOCUMENT"),
        (400, "INVALID_DOCUMENT"),
        (400, "INVALID_RECIPIENT"),
        (400, "INVALID_REQUEST"),
        (400, "INVALID_DOCUMENT"),
        (400, "INVALID_REQUEST"),
        (400, "INVALID_REQUEST"),
    ]
    assert ok.status_code == 201
    assert [r.outcome for r in harness.state.jobs[ok.json()["jobid"]].recipients] == ["delivered", "busy"]
    assert harness.faxes_at_fake() == 1


async def test_an_envelope_error_in_a_2xx_is_classified(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    invalid = json.dumps({"error": {"code": "INVALID_NUMBER", "message": "unknown destination"}}).encode()
    harness.state.inject("status", path=f"{API}/sendfax", status=200, body=invalid)
    with pytest.raises(InvalidNumber, match="unknown destination"):
        await provider.send(outbound())
    transient = json.dumps({"success": False, "code": "TEMPORARY_FAILURE", "message": "try later"}).encode()
    harness.state.inject("status", path=f"{API}/sendfax", status=200, body=transient)
    with pytest.raises(ProviderTemporaryError) as later:
        await provider.send(outbound())
    assert not later.value.maybe_accepted
    refused = json.dumps({"success": False, "code": "DOCUMENT_TOO_LARGE"}).encode()
    harness.state.inject("status", path=f"{API}/sendfax", status=200, body=refused)
    with pytest.raises(ProviderPermanentError) as permanent:
        await provider.send(outbound())
    assert permanent.value.code == "DOCUMENT_TOO_LARGE"


async def test_a_wrong_base_url_says_so(harness: EcomfaxHarness) -> None:
    provider = harness.provider(api_path="/data/cws/fxa")
    try:
        with pytest.raises(ProviderPermanentError, match="check base_url") as missing:
            await provider.send(outbound())
        assert missing.value.code == "404"
    finally:
        await provider.aclose()


async def test_a_2xx_send_answer_without_a_job_id_may_have_been_accepted(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    harness.state.inject("status", path=f"{API}/sendfax", status=201, body=b'{"status": "ok"}')
    with pytest.raises(MalformedResponse) as unclear:
        await provider.send(outbound())
    assert unclear.value.maybe_accepted


async def test_a_redirect_answer_to_a_send_may_have_been_accepted(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    harness.state.inject("status", path=f"{API}/sendfax", status=302, headers={"Location": f"{API}/jobstatus/1"})
    with pytest.raises(MalformedResponse) as unclear:
        await provider.send(outbound())
    assert unclear.value.maybe_accepted


# -- status --------------------------------------------------------------------------------------------------


async def test_a_fax_moves_through_the_fake_statuses(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    receipt = await provider.send(outbound())
    assert (await provider.status(receipt)).status == FaxStatus.QUEUED
    harness.state.advance(QUEUED_SECONDS)
    assert (await provider.status(receipt)).status == FaxStatus.SENDING
    assert api_requests(harness, "jobdetails") == 0  # details only once the job has ended
    harness.state.advance(SENDING_SECONDS)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.DELIVERED
    assert report.code == "OK"
    assert set(report.raw) == {"jobstatus", "jobdetails"}


@pytest.mark.parametrize(
    ("number", "code", "words"),
    [
        ("+4930120001", "BUSY", "busy"),
        ("+4930120002", "NO_ANSWER", "no fax machine answered"),
        ("+4930120003", "INVALID_NUMBER", "not a valid fax number"),
        ("+4930120004", "NO_FAX_DEVICE", "not with a fax machine"),
        ("+4930120005", "COMMUNICATION_ERROR", "broke off"),
    ],
)
async def test_the_number_rules_of_the_fake_end_in_failures_with_plain_reasons(
    harness: EcomfaxHarness, provider: EcomfaxProvider, number: str, code: str, words: str
) -> None:
    receipt = await provider.send(outbound(to=number))
    harness.state.advance(PAST_THE_END)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.FAILED
    assert report.code == code
    assert report.reason is not None
    assert words in report.reason
    assert report.pages_sent == 0
    assert report.raw["jobdetails"]["recipients"][0]["result"] == code


async def test_a_cancelled_job_is_cancelled(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    receipt = await provider.send(outbound())
    assert receipt.provider_fax_id is not None
    harness.state.cancel(receipt.provider_fax_id)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.CANCELLED
    assert report.code == "CANCELLED"


async def test_a_job_the_service_no_longer_knows_is_unknown(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    receipt = SendReceipt(provider_fax_id="999", client_reference="j", accepted_at=datetime.now(UTC))
    report = await provider.status(receipt)
    assert report.status == FaxStatus.UNKNOWN
    assert report.reason is not None
    assert "no longer knows job 999" in report.reason


@pytest.mark.parametrize("fake_style", ["query", "path"])
async def test_auto_id_style_finds_how_the_job_id_travels_and_remembers_it(tmp_path: Path, fake_style: str) -> None:
    class Styled(EcomfaxHarness):
        options: ClassVar[dict[str, Any]] = {"id_style": fake_style}

    harness = Styled(tmp_path)
    provider = harness.provider()
    try:
        receipt = await provider.send(outbound())
        await provider.status(receipt)
        await provider.status(receipt)
        calls = harness.state.requests_to(f"{API}/jobstatus")
        paths = [(r.path, r.query) for r in calls]
        if fake_style == "query":
            assert paths == [(f"{API}/jobstatus", f"jobid={receipt.provider_fax_id}")] * 2
        else:
            # One miss with ?jobid=, then the path form only.
            assert paths == [
                (f"{API}/jobstatus", f"jobid={receipt.provider_fax_id}"),
                (f"{API}/jobstatus/{receipt.provider_fax_id}", ""),
                (f"{API}/jobstatus/{receipt.provider_fax_id}", ""),
            ]
    finally:
        await provider.aclose()


async def test_a_fixed_id_style_is_used_as_configured(harness: EcomfaxHarness) -> None:
    provider = harness.provider(id_style="path")
    try:
        receipt = await provider.send(outbound())
        report = await provider.status(receipt)  # the fake takes ?jobid= only: the path form is a 404
        assert report.status == FaxStatus.UNKNOWN
        assert [r.path for r in harness.state.requests_to(f"{API}/jobstatus")] == [
            f"{API}/jobstatus/{receipt.provider_fax_id}"
        ]
    finally:
        await provider.aclose()


# -- quota ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["epoch", "monotonic"])
async def test_quota_used_up_stops_calls_until_the_reset(tmp_path: Path, clock: str) -> None:
    class Small(EcomfaxHarness):
        options: ClassVar[dict[str, Any]] = {"quota_limit": 3, "quota_period": 3600.0}

    harness = Small(tmp_path)
    provider: Any = harness.provider() if clock == "epoch" else None
    if provider is None:
        # A clock that starts near zero, as time.monotonic does: only its progress may count.
        start = harness.state.now()
        provider = build_provider(
            "ecomfax",
            harness.section(),
            tmp_path,
            extra={"transport": harness.fake.transport(), "clock": lambda: harness.state.now() - start + 12.0},
        )
    try:
        receipt = await provider.send(outbound())  # 1 of 3
        await provider.status(receipt)  # 2
        await provider.status(receipt)  # 3: quota-used reaches quota-limit
        calls = len(harness.state.requests)
        with pytest.raises(RateLimited) as limited:
            await provider.send(outbound("01JOBNEXT"))
        assert len(harness.state.requests) == calls  # not even asked
        assert limited.value.code == "quota"
        assert not limited.value.maybe_accepted
        assert limited.value.retry_after is not None
        assert 0 < limited.value.retry_after <= 3600
        harness.state.advance(limited.value.retry_after + 1)
        await provider.send(outbound("01JOBNEXT"))
        assert harness.faxes_at_fake() == 2
    finally:
        await provider.aclose()


async def test_a_quota_429_without_retry_after_waits_for_quota_reset(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    receipt = await provider.send(outbound())
    harness.state.quota_limit = harness.state.quota_used  # another client of the account used the rest
    harness.state.quota_used += 1
    with pytest.raises(RateLimited) as limited:
        await provider.status(receipt)
    assert limited.value.code == "policies.ratelimit.QuotaViolation"
    assert limited.value.retry_after is not None
    assert 0 <= limited.value.retry_after <= 60


# -- interrupted sends -----------------------------------------------------------------------------------------


async def test_find_submission_finds_an_accepted_fax_by_its_reference(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    harness.state.inject("hang_after", path=f"{API}/sendfax")
    fax = outbound()
    with pytest.raises(ProviderTemporaryError):
        await provider.send(fax)
    receipt = await provider.find_submission(fax)
    assert receipt is not None
    [job] = harness.state.jobs.values()
    assert receipt.provider_fax_id == job.jobid
    assert receipt.client_reference == fax.job_id


async def test_find_submission_cannot_prove_a_fax_absent(harness: EcomfaxHarness, provider: EcomfaxProvider) -> None:
    await provider.send(outbound("01JOBOTHER0001"))  # another job whose reference contains the same digits
    with pytest.raises(SubmissionUnknown, match="portal") as unknown:
        await provider.find_submission(outbound("01JOBOTHER"))
    assert unknown.value.maybe_accepted


# -- inbound -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("infax_format", ["json", "binary", "redirect"])
async def test_every_infax_answer_form_gives_the_document(tmp_path: Path, infax_format: str) -> None:
    class Formatted(EcomfaxHarness):
        options: ClassVar[dict[str, Any]] = {"infax_format": infax_format}

    harness = Formatted(tmp_path)
    provider = harness.provider()
    try:
        pdf = one_page_pdf("Incoming")
        harness.state.inject_inbound(pdf, caller="+31201234567", called="+31207654321")
        [ref] = await provider.poll_incoming()
        assert await provider.download(ref) == pdf
        if infax_format == "redirect":
            [link] = harness.state.requests_to("/files/")
            assert "authorization" not in link.headers  # a storage link never gets our token
    finally:
        await provider.aclose()


async def test_inbound_numbers_and_times_are_read_in_e164_and_utc(tmp_path: Path) -> None:
    class Amsterdam(EcomfaxHarness):
        options: ClassVar[dict[str, Any]] = {"timezone": "Europe/Amsterdam"}

    harness = Amsterdam(tmp_path)
    provider = harness.provider(timezone="Europe/Amsterdam")
    try:
        key = harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        received = harness.state.incoming[key].received
        written = harness.state.local_time(received)  # Amsterdam wall time, no offset
        assert abs(datetime.fromisoformat(written).replace(tzinfo=UTC).timestamp() - received) > 3598
        [ref] = await provider.poll_incoming()
        assert ref.provider_fax_id == key
        assert (ref.caller, ref.called) == ("+31201234567", "+4930999000")  # the fake writes 0031…, 0049…
        assert ref.received_at.utcoffset() == timedelta(0)
        assert abs(ref.received_at.timestamp() - received) < 1
        assert ref.pages == 1
    finally:
        await provider.aclose()


async def test_a_fax_fetched_but_not_stored_survives_a_restart(harness: EcomfaxHarness) -> None:
    pdf = one_page_pdf("Incoming fax")
    harness.state.inject_inbound(pdf, caller="+31201234567", called="+4930999000")
    first = harness.provider()
    [ref] = await first.poll_incoming()
    assert await first.download(ref) == pdf
    await first.aclose()  # the bridge dies before it stored the fax: no acknowledge
    assert harness.state.pending_inbound() == []  # /infax consumed it at eComFax

    second = harness.provider()
    try:
        [again] = await second.poll_incoming()  # listed from the custody journal
        assert again.provider_fax_id == ref.provider_fax_id
        assert again.caller == "+31201234567"
        assert await second.download(again) == pdf
        assert api_requests(harness, "resetincomingjob", "PATCH") == 1
        await second.acknowledge(again)
        assert await second.poll_incoming() == []
        journal = json.loads((harness.tmp_path / "ecomfax-ecomfax-custody.json").read_text())
        assert journal == {"held": {}, "done": {}}
    finally:
        await second.aclose()


async def test_without_the_custody_service_a_lost_fetch_is_a_clear_error(tmp_path: Path) -> None:
    class NoCustody(EcomfaxHarness):
        options: ClassVar[dict[str, Any]] = {"custody": False}

    harness = NoCustody(tmp_path)
    harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
    provider = harness.provider()
    try:
        [ref] = await provider.poll_incoming()
        await provider.download(ref)
        with pytest.raises(ProviderPermanentError, match="Custody Service") as refused:
            await provider.download(ref)
        assert refused.value.code == "CUSTODY_SERVICE_DISABLED"
    finally:
        await provider.aclose()


async def test_an_acknowledged_fax_stays_hidden_if_injobs_still_lists_it(
    harness: EcomfaxHarness, provider: EcomfaxProvider
) -> None:
    key = harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
    [ref] = await provider.poll_incoming()
    await provider.download(ref)
    await provider.acknowledge(ref)
    harness.state.incoming[key].processed = False  # the reading in which /infax does not consume
    assert await provider.poll_incoming() == []
    harness.state.incoming[key].processed = True
    await provider.poll_incoming()
    journal = json.loads((harness.tmp_path / "ecomfax-ecomfax-custody.json").read_text())
    assert journal["done"] == {}  # forgotten once eComFax stopped listing it


async def test_a_send_only_account_does_not_list_incoming_faxes(harness: EcomfaxHarness) -> None:
    provider = harness.provider(inbound=False)
    try:
        harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        assert await provider.poll_incoming() == []
        assert api_requests(harness, "injobs") == 0
    finally:
        await provider.aclose()


async def test_the_fake_takes_an_inbound_fax_over_its_control_route(harness: EcomfaxHarness) -> None:
    pdf = one_page_pdf("From outside")
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.kpn.test") as client:
        answer = await client.post(
            "/_fake/inbound",
            json={"caller": "+31201234567", "called": "+4930999000", "document": base64.b64encode(pdf).decode()},
        )
    assert answer.status_code == 200
    assert harness.state.incoming[answer.json()["key"]].document == pdf


# -- settings and the example configuration --------------------------------------------------------------


def test_exactly_one_secret_source(tmp_path: Path) -> None:
    base = {"type": "ecomfax", "client_id": "id"}
    with pytest.raises(ConfigError, match="exactly one of client_secret_file or client_secret"):
        build_provider("kpn", base, tmp_path)
    with pytest.raises(ConfigError, match="exactly one"):
        build_provider("kpn", {**base, "client_secret": "a", "client_secret_file": "b"}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.kpn\.timezone"):
        build_provider("kpn", {**base, "client_secret": "a", "timezone": "Mars/Olympus"}, tmp_path)


@pytest.mark.parametrize(
    ("base_url", "api", "token"),
    [
        (None, "https://api-prd.kpn.com/data/cws/fax", "https://api-prd.kpn.com/oauth/client_credential/accesstoken"),
        ("http://127.0.0.1:8025", "http://127.0.0.1:8025/data/cws/fax", "http://127.0.0.1:8025" + TOKEN),
        # The documented API root is accepted as base_url too.
        ("https://api-prd.kpn.com/data/cws/fax/", "https://api-prd.kpn.com/data/cws/fax", None),
        ("https://proxy.example/kpn", "https://proxy.example/kpn/data/cws/fax", "https://proxy.example/kpn" + TOKEN),
    ],
)
def test_the_api_root_and_token_url_follow_the_base_url(base_url: str | None, api: str, token: str | None) -> None:
    section: dict[str, Any] = {"type": "ecomfax", "client_id": "id", "client_secret": "s"}
    if base_url:
        section["base_url"] = base_url
    settings = EcomfaxSettings.model_validate(section)
    assert settings.api_root() == api
    assert settings.resolved_token_url() == (token or "https://api-prd.kpn.com" + TOKEN)


def test_the_example_configuration_is_valid_and_holds_no_secret() -> None:
    text = (REPO / "config" / "provider-ecomfax.toml").read_text()
    sections = tomllib.loads(text)["providers"]
    [(name, section)] = sections.items()
    settings = EcomfaxSettings.model_validate(section)
    assert settings.client_secret is None
    assert settings.client_secret_file is not None
    assert "client_secret =" not in text.replace("#client_secret =", "")
    for option in EcomfaxSettings.model_fields:
        assert option in text, f"{option} is not documented in the example"
    assert f"FAXBRIDGE_PROVIDERS__{name.upper()}__CLIENT_SECRET" in text


def test_the_secret_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.settings import load_settings

    config = tmp_path / "faxbridge.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\nfax_domains = ["fax.example.com"]\n[mail]\nmaildir = "mail"\n'
        '[providers.kpn]\ntype = "ecomfax"\nclient_id = "id"\n'
        '[[accounts]]\nname = "office"\nprovider = "kpn"\ncountry = "NL"\nallowed_senders = ["*@example.com"]\n'
    )
    monkeypatch.setenv("FAXBRIDGE_PROVIDERS__KPN__CLIENT_SECRET", "from-env")
    settings = load_settings(config)
    provider = build_provider("kpn", settings.providers["kpn"], tmp_path)
    assert isinstance(provider, EcomfaxProvider)
    assert provider.config.client_secret is not None
    assert provider.config.client_secret.get_secret_value() == "from-env"


# -- mapping tables ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "result", "expected", "code"),
    [
        ("PENDING", None, FaxStatus.QUEUED, "PENDING"),
        ("queued", None, FaxStatus.QUEUED, "queued"),
        ("SENDING", None, FaxStatus.SENDING, "SENDING"),
        ("In progress", None, FaxStatus.SENDING, "In progress"),
        ("RETRYING", "BUSY", FaxStatus.SENDING, "RETRYING"),
        ("SENT", "OK", FaxStatus.DELIVERED, "OK"),
        ("Delivered", None, FaxStatus.DELIVERED, "Delivered"),
        ("SENT", "BUSY", FaxStatus.FAILED, "BUSY"),  # a contradiction is reported as failed, never delivered
        ("FAILED", "NO_ANSWER", FaxStatus.FAILED, "NO_ANSWER"),
        ("FAILED", None, FaxStatus.FAILED, "FAILED"),
        ("BUSY", None, FaxStatus.FAILED, "BUSY"),
        ("PARTIAL", None, FaxStatus.FAILED, "PARTIAL"),
        ("CANCELLED", "CANCELLED", FaxStatus.CANCELLED, "CANCELLED"),
        ("canceled", None, FaxStatus.CANCELLED, "canceled"),
        ("COMPLETED", "OK", FaxStatus.DELIVERED, "OK"),
        ("COMPLETED", "NO_FAX_TONE", FaxStatus.FAILED, "NO_FAX_TONE"),
        ("COMPLETED", None, FaxStatus.UNKNOWN, "COMPLETED"),
        ("ARCHIVED", None, FaxStatus.UNKNOWN, "ARCHIVED"),
        (None, None, FaxStatus.UNKNOWN, None),
    ],
)
def test_status_mapping(status: str | None, result: str | None, expected: FaxStatus, code: str | None) -> None:
    mapped, reason, mapped_code = map_status(status, result)
    assert mapped == expected
    assert mapped_code == code
    if expected in (FaxStatus.FAILED, FaxStatus.CANCELLED, FaxStatus.UNKNOWN):
        assert reason
    else:
        assert reason is None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("BUSY", "the line was busy"),
        ("line-busy", "the line was busy"),
        ("NO_ANSWER", "no fax machine answered"),
        ("INVALID_NUMBER", "the number is not a valid fax number"),
        ("UNALLOCATED_NUMBER", "the number is not a valid fax number"),
        ("NO_FAX_TONE", "the number answered, but not with a fax machine (a person or a voice line)"),
        ("COMMUNICATION_ERROR", "the connection broke off during the transmission"),
        ("REJECTED", "the receiving side refused the call"),
        ("DOCUMENT_ERROR", "eComFax could not read the document"),
        ("INSUFFICIENT_CREDIT", "the eComFax account has no credit left"),
        ("MAX_RETRIES", "eComFax gave up after its retries"),
    ],
)
def test_failure_codes_read_as_plain_reasons(code: str, reason: str) -> None:
    assert failure_reason(code) == reason


def test_an_unknown_failure_code_keeps_the_providers_words() -> None:
    assert failure_reason("E4711", "Modem exploded") == "eComFax reported a failure (E4711: Modem exploded)"
    assert failure_reason(None) == "eComFax reported a failure without a reason"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"fault": {"faultstring": "Invalid Access Token", "detail": {"errorcode": "k.invalid"}}},
            ("Invalid Access Token", "k.invalid"),
        ),
        ({"ErrorCode": "invalid_client", "Error": "ClientId is Invalid"}, ("ClientId is Invalid", "invalid_client")),
        ({"code": "INVALID_RECIPIENT", "message": "bad"}, ("bad", "INVALID_RECIPIENT")),
        ({"errorCode": "E1", "errorMessage": "boom"}, ("boom", "E1")),
        ({"error": {"code": "E2", "message": "nested"}}, ("nested", "E2")),
        ({"error": "invalid_request", "error_description": "oauth"}, ("oauth", "invalid_request")),
        ({"errors": [{"code": "E3", "message": "listed"}]}, ("listed", "E3")),
        ({"type": "about:blank", "title": "Bad Request", "detail": "rfc7807"}, ("rfc7807", "about:blank")),
        ("<html>", (None, None)),
    ],
)
def test_every_error_body_shape_is_read(body: object, expected: tuple[str | None, str | None]) -> None:
    assert error_info(body) == expected


@pytest.mark.parametrize(
    ("body", "job_id"),
    [
        ({"jobid": "4000001"}, "4000001"),
        ({"jobId": 42}, "42"),
        ({"id": "abc"}, "abc"),
        ({"data": {"jobid": "7"}, "status": 1, "message": ""}, "7"),
        ([{"jobid": "8"}], "8"),
        ({"status": "ok"}, None),
        ({"jobid": True}, None),
    ],
)
def test_the_job_id_is_found_in_every_answer_shape(body: object, job_id: str | None) -> None:
    assert job_id_of(body) == job_id


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"jobid": "1", "status": "FAILED"}, False),  # a failed fax is not a failed call
        ({"success": False, "code": "X"}, True),
        ({"error": {"code": "X"}}, True),
        ({"fault": {"faultstring": "Spike arrest violation"}}, True),
        ({"errors": []}, False),
    ],
)
def test_envelope_errors(body: object, error: bool) -> None:
    assert envelope_error(body) is error


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3599", 3599.0), (3599, 3599.0), (" 1800 ", 1800.0), ("soon", 300.0), (None, 300.0), ("0", 300.0)],
)
def test_token_lifetime_reads_kpns_string(value: object, seconds: float) -> None:
    assert token_lifetime(value) == seconds


RESET = datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value",
    ["1740830400000", "1740830400", "2025-03-01T12:00:00Z", "2025-03-01T12:00:00", "Sat, 01 Mar 2025 12:00:00 GMT"],
)
def test_quota_reset_is_read_in_every_format(value: str) -> None:
    assert quota_reset(value) == RESET


def test_an_unreadable_quota_reset_blocks_nothing() -> None:
    assert quota_reset("next tuesday") is None
    assert quota_reset(None) is None


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2025-03-01T13:00:00", "Europe/Amsterdam", "2025-03-01T12:00:00+00:00"),
        ("2025-03-01T13:00:00+01:00", "UTC", "2025-03-01T12:00:00+00:00"),
        ("20250301130000", "Europe/Amsterdam", "2025-03-01T12:00:00+00:00"),
        ("01/03/2025 13:00:00", "Europe/Amsterdam", "2025-03-01T12:00:00+00:00"),
        (1740830400000, "UTC", "2025-03-01T12:00:00+00:00"),
    ],
)
def test_times_become_utc(value: object, zone: str, expected: str) -> None:
    from zoneinfo import ZoneInfo

    when = parse_time(value, ZoneInfo(zone))
    assert when is not None
    assert when.isoformat() == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("0031201234567", "+31201234567"),
        ("+31 20 123 4567", "+31201234567"),
        ("0201234567", "+31201234567"),  # national, read with country = NL
        ("31201234567", "+31201234567"),  # international without + or 00
        ("anonymous", None),
        ("", None),
        ("12", "12"),  # kept as given when it cannot be read
    ],
)
def test_inbound_numbers_become_e164(number: str, expected: str | None) -> None:
    assert e164(number, "NL") == expected
