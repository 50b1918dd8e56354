"""The iFax adapter against its fake: the provider contract, iFax's quirks, and the code and status mappings."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

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
from bridge.fakes.ifax import DEFAULT_ACCESS_TOKEN, OUTCOMES, IFaxFakeState, WebhookCall
from bridge.models import FaxStatus, InboundRef, SendReceipt, StatusUpdate
from bridge.providers import build_provider, provider_class
from bridge.providers._http import HttpTimeouts
from bridge.providers.base import Capability
from bridge.providers.ifax import _CODES, IFaxProvider, IFaxSettings, describe_code, map_fax_object
from tests.conftest import REPO, SettingsFactory
from tests.providers.contract import ContractSuite, Harness, Outcome, one_page_pdf, outbound

SEND = "/v1/customer/fax-send"
STATUS = "/v1/customer/fax-status"
LIST_ALL = "/v1/customer/inbound/fax-list-all"
DOWNLOAD = "/v1/customer/inbound/fax-download"
TIMEOUTS = {"connect": 1, "read": 0.5, "write": 1, "pool": 1}


class IFaxHarness(Harness):
    name = "ifax"
    send_path = SEND

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.options = options
        super().__init__(tmp_path)

    def fake_options(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def state(self) -> IFaxFakeState:
        return cast(IFaxFakeState, self.fake.state)

    def section(self, **changes: Any) -> dict[str, Any]:
        (self.tmp_path / "ifax-access-token").write_text(DEFAULT_ACCESS_TOKEN + "\n")
        section: dict[str, Any] = {
            "type": "ifax",
            "base_url": "https://api.ifax.test/v1",
            "access_token_file": "ifax-access-token",
            "timeouts": TIMEOUTS,
        }
        section.update(changes)
        return {k: v for k, v in section.items() if v is not None}

    def provider(self, **changes: Any) -> IFaxProvider:
        built = build_provider(
            self.name, self.section(**changes), self.tmp_path, extra={"transport": self.fake.transport()}
        )
        assert isinstance(built, IFaxProvider)
        return built

    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        assert receipt.provider_fax_id is not None
        self.state.finish(receipt.provider_fax_id, outcome)

    def faxes_at_fake(self) -> int:
        return len(self.state.sent)

    async def inject_inbound(self, pdf: bytes, caller: str, called: str) -> None:
        self.state.inject_inbound(pdf, caller, called)


class TestContract(ContractSuite):
    harness_class = IFaxHarness


@pytest.fixture
def harness(tmp_path: Path) -> IFaxHarness:
    return IFaxHarness(tmp_path)


@pytest.fixture
async def provider(harness: IFaxHarness) -> AsyncIterator[IFaxProvider]:
    built = harness.provider()
    yield built
    await built.aclose()


def now() -> datetime:
    return datetime.now(UTC)


def sent_body(harness: IFaxHarness, index: int = -1) -> dict[str, Any]:
    body = json.loads(harness.state.requests_to(SEND)[index].body)
    assert isinstance(body, dict)
    return body


def envelope_fault(harness: IFaxHarness, path: str, payload: Any, status: int = 200) -> None:
    harness.state.inject(
        "status",
        path=path,
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )


# -- registry, settings and the example configuration -----------------------------------------------------


def test_found_by_its_type_name() -> None:
    assert provider_class("ifax") is IFaxProvider
    assert IFaxProvider.settings_model is IFaxSettings
    assert Capability.CLIENT_REFERENCE not in IFaxProvider.capabilities
    assert {Capability.STATUS_POLL, Capability.WEBHOOK, Capability.INBOUND_POLL} <= IFaxProvider.capabilities


def test_the_key_comes_from_exactly_one_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of access_token_file or access_token"):
        build_provider("ifax", {"type": "ifax"}, tmp_path)
    with pytest.raises(ConfigError, match="exactly one of access_token_file or access_token"):
        build_provider("ifax", {"type": "ifax", "access_token": "k", "access_token_file": "f"}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.ifax\.acess_token"):
        build_provider("ifax", {"type": "ifax", "acess_token": "k"}, tmp_path)
    with pytest.raises(ConfigError, match="go together"):
        build_provider("ifax", {"type": "ifax", "access_token": "k", "webhook_username": "u"}, tmp_path)


def test_the_example_section_is_valid_and_names_every_setting(tmp_path: Path) -> None:
    text = (REPO / "config" / "provider-ifax.toml").read_text()
    section = tomllib.loads(text)["providers"]["ifax"]
    built = build_provider("ifax", section, tmp_path)
    assert isinstance(built, IFaxProvider)
    documented = set(re.findall(r"^#?([a-z_]+) = ", text, re.MULTILINE)) | {
        "timeouts",
        "access_token",
        "webhook_password",
    }
    assert set(IFaxSettings.model_fields) - {"type"} <= documented
    assert set(HttpTimeouts.model_fields) <= documented
    # No secret in the file: only the *_file keys and the environment carry them.
    assert not re.search(r"^(access_token|webhook_password)\s*=", text, re.MULTILINE)
    assert "FAXBRIDGE_PROVIDERS__IFAX__ACCESS_TOKEN" in text


async def test_the_key_can_come_from_the_environment(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = IFaxHarness(tmp_path)
    monkeypatch.setenv("FAXBRIDGE_PROVIDERS__IFAX__ACCESS_TOKEN", DEFAULT_ACCESS_TOKEN)
    settings = make_settings(providers={"ifax": {"type": "ifax", "base_url": "https://api.ifax.test/v1"}})
    built = build_provider("ifax", settings.providers["ifax"], tmp_path, extra={"transport": fake.fake.transport()})
    try:
        receipt = await built.send(outbound())
    finally:
        await built.aclose()
    assert receipt.provider_fax_id is not None
    assert fake.state.requests_to(SEND)[0].headers["accesstoken"] == DEFAULT_ACCESS_TOKEN


async def test_an_unreadable_key_file_makes_faxes_wait(harness: IFaxHarness) -> None:
    provider = harness.provider(access_token_file="missing-token")
    try:
        with pytest.raises(ProviderTemporaryError, match="cannot read the iFax access token") as failed:
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert not failed.value.maybe_accepted
    assert harness.state.requests == []


# -- what is sent -------------------------------------------------------------------------------------------


async def test_send_request_carries_the_document_caller_id_and_header(
    harness: IFaxHarness, provider: IFaxProvider
) -> None:
    fax = outbound()
    receipt = await provider.send(fax)
    [request] = harness.state.requests_to(SEND)
    assert request.method == "POST"
    assert request.headers["accesstoken"] == DEFAULT_ACCESS_TOKEN
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    body = sent_body(harness)
    assert body["faxNumber"] == "+4930123456"
    assert body["callerId"] == "+4930999000"
    assert body["from_name"] == "Example GmbH"
    assert body["faxQuality"] == "Standard"
    [item] = body["faxData"]
    assert item["fileName"] == "01JOBCONTRACT00001.pdf"
    assert base64.b64decode(item["fileData"]) == fax.document
    assert "subject" not in body  # only with a cover template
    stored = harness.state.find(receipt.provider_fax_id or "")
    assert stored.from_number == "+4930999000"
    assert stored.from_name == "Example GmbH"
    assert receipt.client_reference == fax.job_id
    assert receipt.raw["data"]["jobId"] == stored.job_id


async def test_caller_id_and_header_can_be_left_out(harness: IFaxHarness) -> None:
    provider = harness.provider(send_caller_id=False, send_header=False, fax_quality="HD", template_id="77")
    try:
        await provider.send(outbound())
    finally:
        await provider.aclose()
    body = sent_body(harness)
    assert "callerId" not in body
    assert "from_name" not in body
    assert body["faxQuality"] == "HD"
    assert body["templateId"] == "77"
    assert body["subject"] == "contract"


async def test_status_asks_with_a_numeric_job_id(harness: IFaxHarness, provider: IFaxProvider) -> None:
    receipt = await provider.send(outbound())
    await provider.status(receipt)
    body = json.loads(harness.state.requests_to(STATUS)[0].body)
    assert body == {"jobId": int(receipt.provider_fax_id or "0")}


async def test_a_fax_moves_from_queued_through_sending_to_delivered(
    harness: IFaxHarness, provider: IFaxProvider
) -> None:
    receipt = await provider.send(outbound())
    report = await provider.status(receipt)
    assert (report.status, report.code) == (FaxStatus.QUEUED, "-11")
    harness.state.advance(harness.state.preprocess_seconds)
    report = await provider.status(receipt)
    assert (report.status, report.code) == (FaxStatus.SENDING, "-3")
    harness.state.advance(harness.state.transmit_seconds)
    report = await provider.status(receipt)
    assert (report.status, report.code, report.pages_sent) == (FaxStatus.DELIVERED, "0", 1)
    assert report.raw["data"]["faxStatus"] == "delivered"


@pytest.mark.parametrize(
    ("number", "status", "code", "words"),
    [
        ("+14155550001", FaxStatus.FAILED, "3931", "busy"),
        ("+14155550002", FaxStatus.FAILED, "8021", "no fax machine answered"),
        ("+14155550003", FaxStatus.FAILED, "3912", "not a valid fax number"),
        ("+14155550004", FaxStatus.FAILED, "6021", "rejected"),
        ("+14155550005", FaxStatus.CANCELLED, "403", "cancelled"),
        ("+14155550006", FaxStatus.DELIVERED, "0", None),
    ],
)
async def test_the_fake_chooses_the_outcome_by_number(
    harness: IFaxHarness, provider: IFaxProvider, number: str, status: FaxStatus, code: str, words: str | None
) -> None:
    receipt = await provider.send(outbound(to=number))
    harness.state.advance(harness.state.transmit_seconds)
    report = await provider.status(receipt)
    assert (report.status, report.code) == (status, code)
    if words is None:
        assert report.reason is None
    else:
        assert report.reason is not None
        assert words in report.reason


# -- quirk: the envelope (an HTTP 200 whose status is 0 is an error) ---------------------------------------


async def test_envelope_error_in_a_200_is_classified_by_its_code(tmp_path: Path) -> None:
    harness = IFaxHarness(tmp_path, verified_caller_ids={"+4930111111"})
    provider = harness.provider()
    try:
        with pytest.raises(ProviderPermanentError) as refused:
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert refused.value.code == "120104"
    assert "not verified" in str(refused.value)
    assert "send_caller_id = false" in str(refused.value)
    assert not refused.value.maybe_accepted
    assert harness.faxes_at_fake() == 0
    # What the fake answered: HTTP 200 with status 0, the quirk itself.
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.ifax.test") as client:
        answer = await client.post(
            SEND,
            json={"faxNumber": "+14155550100", "callerId": "+4930999000", "faxData": [{"fileName": "a.pdf"}]},
            headers={"accessToken": DEFAULT_ACCESS_TOKEN},
        )
    assert answer.status_code == 200
    assert answer.json() == {
        "status": 0,
        "message": "Provided caller ID is not verified",
        "code": 120104,
        "data": None,
    }


async def test_envelope_invalid_number_is_invalid_number(harness: IFaxHarness, provider: IFaxProvider) -> None:
    with pytest.raises(InvalidNumber) as refused:
        await provider.send(outbound(to="+0123"))
    assert refused.value.code == "120100"
    assert "not a valid fax number" in str(refused.value)
    assert not refused.value.maybe_accepted


async def test_envelope_out_of_credit_is_temporary_and_not_accepted(tmp_path: Path) -> None:
    harness = IFaxHarness(tmp_path, credit_pages=0)
    provider = harness.provider()
    try:
        with pytest.raises(ProviderTemporaryError) as refused:
            await provider.send(outbound())
        assert refused.value.code == "9040"
        assert "top the account up" in str(refused.value)
        assert not refused.value.maybe_accepted
        harness.state.credit_pages = 5
        await provider.send(outbound())
    finally:
        await provider.aclose()
    assert harness.faxes_at_fake() == 1
    assert harness.state.credit_pages == 4


@pytest.mark.parametrize("http_status", [200, 400])
async def test_envelope_errors_are_read_whatever_the_http_status(tmp_path: Path, http_status: int) -> None:
    harness = IFaxHarness(tmp_path, error_http_status=http_status)
    provider = harness.provider()
    try:
        with pytest.raises(InvalidNumber):
            await provider.send(outbound(to="+0123"))
        with pytest.raises(ProviderPermanentError) as unknown_fax:
            await provider.status(SendReceipt("999", "job", now()))
    finally:
        await provider.aclose()
    assert unknown_fax.value.code == "12021"
    assert "no fax with this id" in str(unknown_fax.value)


async def test_an_unknown_envelope_error_to_a_send_may_have_been_accepted(
    harness: IFaxHarness, provider: IFaxProvider
) -> None:
    envelope_fault(harness, SEND, {"status": 0, "message": "Something new went wrong", "code": 777777})
    with pytest.raises(ProviderTemporaryError) as failed:
        await provider.send(outbound())
    assert failed.value.maybe_accepted
    assert failed.value.code == "777777"
    assert "Something new went wrong" in str(failed.value)


async def test_an_ifax_internal_error_to_a_send_may_have_been_accepted(
    harness: IFaxHarness, provider: IFaxProvider
) -> None:
    envelope_fault(harness, SEND, {"status": 0, "message": "Processing error. Please try again later", "code": 11013})
    with pytest.raises(ProviderTemporaryError) as failed:
        await provider.send(outbound())
    assert failed.value.maybe_accepted
    receipt = await provider.send(outbound())
    envelope_fault(harness, STATUS, {"status": 0, "message": "FAX status request failed.", "code": 12096})
    with pytest.raises(ProviderTemporaryError) as status_failed:
        await provider.status(receipt)
    assert not status_failed.value.maybe_accepted


@pytest.mark.parametrize("success", [1, "1", True, 1.0])
async def test_every_spelling_of_status_1_is_success(
    harness: IFaxHarness, provider: IFaxProvider, success: Any
) -> None:
    envelope_fault(harness, SEND, {"status": success, "message": "ok", "data": {"jobId": "4711"}})
    receipt = await provider.send(outbound())
    assert receipt.provider_fax_id == "4711"


@pytest.mark.parametrize("failure", [0, "0", False, None, "success", 2])
async def test_anything_but_status_1_is_an_error(harness: IFaxHarness, provider: IFaxProvider, failure: Any) -> None:
    envelope_fault(harness, SEND, {"status": failure, "message": "Invalid parameter", "code": 12009})
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(outbound())
    assert refused.value.code == "12009"


async def test_success_without_a_job_id_may_have_been_accepted(harness: IFaxHarness, provider: IFaxProvider) -> None:
    envelope_fault(harness, SEND, {"status": 1, "message": "ok", "data": {}})
    with pytest.raises(MalformedResponse) as odd:
        await provider.send(outbound())
    assert odd.value.maybe_accepted


async def test_a_2xx_that_is_not_json_may_have_been_accepted(harness: IFaxHarness, provider: IFaxProvider) -> None:
    harness.state.inject("status", path=SEND, status=200, body=b"<html>maintenance</html>")
    with pytest.raises(MalformedResponse) as odd:
        await provider.send(outbound())
    assert odd.value.maybe_accepted
    assert "maintenance" in str(odd.value)


async def test_bad_key_is_refused_with_http_401(harness: IFaxHarness) -> None:
    (harness.tmp_path / "wrong-token").write_text("not-the-key")
    provider = harness.provider(access_token_file="wrong-token")
    try:
        with pytest.raises(AuthenticationFailed):
            await provider.send(outbound())
    finally:
        await provider.aclose()
    assert harness.faxes_at_fake() == 0


async def test_bad_key_is_refused_inside_a_200_envelope(tmp_path: Path) -> None:
    harness = IFaxHarness(tmp_path, auth_http_status=200)
    (tmp_path / "wrong-token").write_text("not-the-key")
    provider = harness.provider(access_token_file="wrong-token")
    try:
        with pytest.raises(AuthenticationFailed) as refused:
            await provider.send(outbound())
        assert refused.value.code == "-310"
        envelope_fault(harness, SEND, {"status": 0, "message": "Invalid accessToken"})
        with pytest.raises(AuthenticationFailed):
            await provider.send(outbound())
    finally:
        await provider.aclose()


async def test_rate_limit_of_the_service_says_how_long_to_wait(harness: IFaxHarness, provider: IFaxProvider) -> None:
    receipt = await provider.send(outbound())
    harness.state.rate_limit = (1, 30.0)
    await provider.status(receipt)
    with pytest.raises(RateLimited) as limited:
        await provider.status(receipt)
    assert limited.value.retry_after is not None
    assert 1 <= limited.value.retry_after <= 30


async def test_find_submission_cannot_tell(provider: IFaxProvider) -> None:
    with pytest.raises(SubmissionUnknown, match=r"01JOBCONTRACT00001\.pdf"):
        await provider.find_submission(outbound())


# -- quirk: both webhook shapes -----------------------------------------------------------------------------


async def test_sent_fax_webhook_plain_and_wrapped(harness: IFaxHarness, provider: IFaxProvider) -> None:
    receipt = await provider.send(outbound(to="+14155550001"))
    assert harness.state.webhooks == []
    harness.state.advance(harness.state.transmit_seconds)
    [call] = harness.state.webhooks
    assert call.kind == "sent"
    for webhook in (call, harness.state.sent_webhook(receipt.provider_fax_id or "", wrapped=True)):
        [update] = provider.parse_webhook(webhook.headers, webhook.body)
        assert isinstance(update, StatusUpdate)
        assert update.provider_fax_id == receipt.provider_fax_id
        assert update.client_reference is None
        assert update.report.status == FaxStatus.FAILED
        assert update.report.code == "3931"
        assert update.report.reason == "the line was busy"
        assert update.report.raw


async def test_received_fax_webhook_as_multipart_with_the_pdf(harness: IFaxHarness, provider: IFaxProvider) -> None:
    pdf = one_page_pdf("Webhook fax")
    fax = harness.state.inject_inbound(pdf, "+12015550123", "+12025550100")
    [call] = harness.state.webhooks
    assert call.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    [ref] = provider.parse_webhook(call.headers, call.body)
    assert isinstance(ref, InboundRef)
    assert (ref.provider_fax_id, ref.caller, ref.called, ref.pages) == (
        str(fax.job_id),
        "+12015550123",
        "+12025550100",
        1,
    )
    assert ref.token == str(fax.transaction_id)
    assert ref.received_at.tzinfo is not None
    # The PDF came with the webhook: no request to iFax is needed for it.
    assert await provider.download(ref) == pdf
    assert harness.state.requests_to(DOWNLOAD) == []
    # A retried webhook is the same fax, and the list shows it once.
    assert provider.parse_webhook(call.headers, call.body) == [ref]
    [listed] = await provider.poll_incoming()
    assert listed.provider_fax_id == ref.provider_fax_id
    await provider.acknowledge(ref)
    assert await provider.poll_incoming() == []
    assert list((provider.inbound_dir / "received").iterdir()) == []


async def test_received_fax_webhook_as_json_without_a_file(harness: IFaxHarness, provider: IFaxProvider) -> None:
    pdf = one_page_pdf("JSON webhook fax")
    fax = harness.state.inject_inbound(pdf, "+2512445025", "+12096380085")
    refs: list[InboundRef] = []
    for call in (
        harness.state.received_webhook(fax.job_id, "json"),
        harness.state.received_webhook(fax.job_id, "json", wrapped=True),
    ):
        assert call.headers["Content-Type"] == "application/json"
        [ref] = provider.parse_webhook(call.headers, call.body)
        assert isinstance(ref, InboundRef)
        assert (ref.provider_fax_id, ref.token) == (str(fax.job_id), str(fax.transaction_id))
        assert ref.caller == "+2512445025"
        assert int(ref.received_at.timestamp()) == int(fax.received_epoch)
        refs.append(ref)
    assert refs[0] == refs[1]
    assert await provider.download(refs[0]) == pdf
    [request] = harness.state.requests_to(DOWNLOAD)
    assert json.loads(request.body) == {"jobId": str(fax.job_id), "transactionId": str(fax.transaction_id)}


async def test_received_fax_webhook_with_form_fields_only(harness: IFaxHarness, provider: IFaxProvider) -> None:
    body = b"jobId=55&transactionId=66&fromNumber=%2B12015550123&toNumber=12025550100&faxReceivedPages=2"
    [ref] = provider.parse_webhook({"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert isinstance(ref, InboundRef)
    assert (ref.provider_fax_id, ref.token, ref.called, ref.pages) == ("55", "66", "+12025550100", 2)


async def test_a_failed_reception_without_pages_is_no_fax(harness: IFaxHarness, provider: IFaxProvider) -> None:
    payload = {"direction": "inbound", "jobId": 9, "transactionId": 10, "faxStatus": "failed", "faxReceivedPages": 0}
    assert provider.parse_webhook({"content-type": "application/json"}, json.dumps(payload).encode()) == []


@pytest.mark.parametrize(
    ("content_type", "body", "match"),
    [
        ("application/json", b"{not json", "not an iFax notification"),
        ("application/json", b'{"hello": "world"}', "without an iFax fax object"),
        ("application/json", b'{"jobId": 5, "message": "?"}', "sent or a received fax"),
    ],
)
def test_webhook_requests_that_are_not_ifax_notifications_are_refused(
    harness: IFaxHarness, content_type: str, body: bytes, match: str
) -> None:
    provider = harness.provider()
    with pytest.raises(ProviderPermanentError, match=match):
        provider.parse_webhook({"Content-Type": content_type}, body)


async def test_webhooks_need_the_basic_credentials_when_configured(tmp_path: Path) -> None:
    harness = IFaxHarness(tmp_path, webhook_auth=("ifax", "s3cret"))
    (tmp_path / "webhook-password").write_text("s3cret\n")
    provider = harness.provider(webhook_username="ifax", webhook_password_file="webhook-password")
    try:
        fax = harness.state.inject_inbound(one_page_pdf(), "+12015550123", "+12025550100")
        call = harness.state.received_webhook(fax.job_id, "json")
        [ref] = provider.parse_webhook(call.headers, call.body)
        assert isinstance(ref, InboundRef)
        unsigned = {k: v for k, v in call.headers.items() if k != "Authorization"}
        with pytest.raises(AuthenticationFailed):
            provider.parse_webhook(unsigned, call.body)
        wrong = {**unsigned, "authorization": "Basic " + base64.b64encode(b"ifax:guess").decode()}
        with pytest.raises(AuthenticationFailed):
            provider.parse_webhook(wrong, call.body)
    finally:
        await provider.aclose()


# -- inbound list and download ------------------------------------------------------------------------------


async def test_inbound_list_walks_the_cursor_with_ifax_dates(tmp_path: Path) -> None:
    harness = IFaxHarness(tmp_path, page_size=2)
    provider = harness.provider()
    try:
        injected = [harness.state.inject_inbound(one_page_pdf(), f"+1201555010{i}", "+12025550100") for i in range(5)]
        refs = await provider.poll_incoming()
    finally:
        await provider.aclose()
    assert [ref.provider_fax_id for ref in refs] == [str(fax.job_id) for fax in injected]
    requests = [json.loads(r.body) for r in harness.state.requests_to(LIST_ALL)]
    assert len(requests) == 4  # three pages of at most two, then an empty one
    assert "lastFaxId" not in requests[0]
    assert requests[1]["lastFaxId"] == str(injected[3].job_id)
    assert all(re.fullmatch(r"\d{2}/\d{2}/\d{4}", r["startDate"]) for r in requests)
    assert all(r["sortBy"] == "newest" for r in requests)


@pytest.mark.parametrize("shape", ["base64", "nested", "url", "raw"])
async def test_every_download_shape_gives_the_pdf(tmp_path: Path, shape: str) -> None:
    harness = IFaxHarness(tmp_path, download_shape=shape)
    provider = harness.provider()
    pdf = one_page_pdf("Shape " + shape)
    try:
        harness.state.inject_inbound(pdf, "+12015550123", "+12025550100")
        [ref] = await provider.poll_incoming()
        assert await provider.download(ref) == pdf
    finally:
        await provider.aclose()


async def test_the_key_is_not_sent_to_another_host(tmp_path: Path) -> None:
    pdf = one_page_pdf()
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "files.example":
            return httpx.Response(200, content=pdf, headers={"Content-Type": "application/pdf"})
        return httpx.Response(200, json={"status": 1, "data": {"data": {"url": "https://files.example/f.pdf"}}})

    (tmp_path / "token").write_text("k")
    section = {"type": "ifax", "access_token_file": "token", "poll_inbound": False}
    provider = build_provider("ifax", section, tmp_path, extra={"transport": httpx.MockTransport(answer)})
    ref = InboundRef("ifax", "1", None, None, now(), token="2")
    try:
        assert await provider.download(ref) == pdf
    finally:
        await provider.aclose()
    assert seen[0].headers["accesstoken"] == "k"
    assert seen[1].url.host == "files.example"
    assert "accesstoken" not in seen[1].headers


async def test_a_download_answer_without_a_document_is_malformed(harness: IFaxHarness, provider: IFaxProvider) -> None:
    fax = harness.state.inject_inbound(one_page_pdf(), "+12015550123", "+12025550100")
    envelope_fault(harness, DOWNLOAD, {"status": 1, "message": "Download Fax Response", "data": {"x": "bm90IGEgcGRm"}})
    ref = InboundRef("ifax", str(fax.job_id), None, None, now(), token=str(fax.transaction_id))
    with pytest.raises(MalformedResponse, match="holds no PDF"):
        await provider.download(ref)


async def test_acknowledged_faxes_stay_acknowledged_after_a_restart(harness: IFaxHarness) -> None:
    first = harness.provider()
    harness.state.inject_inbound(one_page_pdf(), "+12015550123", "+12025550100")
    harness.state.inject_inbound(one_page_pdf(), "+12015550124", "+12025550100")
    try:
        older, newer = await first.poll_incoming()
        await first.acknowledge(older)
    finally:
        await first.aclose()
    second = harness.provider()
    try:
        assert [ref.provider_fax_id for ref in await second.poll_incoming()] == [newer.provider_fax_id]
    finally:
        await second.aclose()


async def test_a_webhook_reference_without_transaction_id_is_found_in_the_list(
    harness: IFaxHarness, provider: IFaxProvider
) -> None:
    pdf = one_page_pdf("Found by list")
    fax = harness.state.inject_inbound(pdf, "+12015550123", "+12025550100")
    ref = InboundRef("ifax", str(fax.job_id), None, None, now(), token=None)
    assert await provider.download(ref) == pdf


# -- quirk: error codes and statuses in plain words ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fax", "status", "words"),
    [
        ({"faxStatus": "failed", "code": 3931, "message": "Busy"}, FaxStatus.FAILED, "the line was busy"),
        ({"faxStatus": "failed", "code": 263, "message": "USER_BUSY"}, FaxStatus.FAILED, "busy"),
        ({"faxStatus": "failed", "code": 8021, "message": "NO_ANSWER"}, FaxStatus.FAILED, "no fax machine answered"),
        ({"faxStatus": "failed", "code": 9024}, FaxStatus.FAILED, "out of paper"),
        ({"faxStatus": "failed", "code": 3912}, FaxStatus.FAILED, "not a valid fax number"),
        ({"faxStatus": "failed", "code": 9006}, FaxStatus.FAILED, "not a working fax number"),
        ({"faxStatus": "failed", "code": 6021}, FaxStatus.FAILED, "rejected the call"),
        ({"faxStatus": "failed", "code": 3211}, FaxStatus.FAILED, "not compatible"),
        ({"faxStatus": "failed", "code": 9040}, FaxStatus.FAILED, "not enough credit"),
        ({"faxStatus": "failed_chargeable", "code": 9001}, FaxStatus.FAILED, "congested"),
        ({"faxStatus": "failed", "code": 424242, "message": "Odd thing"}, FaxStatus.FAILED, "iFax says: Odd thing"),
        ({"faxStatus": "failed"}, FaxStatus.FAILED, "gave no reason"),
        ({"faxStatus": "blocked", "message": "spam"}, FaxStatus.FAILED, "iFax blocked the fax (spam)"),
        ({"faxStatus": "canceled", "code": 403}, FaxStatus.CANCELLED, "cancelled"),
        ({"faxStatus": "partially_cancelled"}, FaxStatus.CANCELLED, "part-way"),
        ({"faxStatus": "sending", "code": -11}, FaxStatus.QUEUED, None),
        ({"faxStatus": "sending", "code": -3}, FaxStatus.SENDING, None),
        ({"faxStatus": "scheduled"}, FaxStatus.QUEUED, None),
        ({"faxStatus": "DELIVERED", "code": "0", "faxTransferredPages": "3"}, FaxStatus.DELIVERED, None),
        ({"success": True, "code": 0}, FaxStatus.DELIVERED, None),
        ({"success": False, "code": 3931}, FaxStatus.FAILED, "busy"),
        ({"faxStatus": "teleported", "message": "?"}, FaxStatus.UNKNOWN, "'teleported'"),
    ],
)
def test_fax_objects_map_to_one_vocabulary(fax: dict[str, Any], status: FaxStatus, words: str | None) -> None:
    report = map_fax_object(fax)
    assert report.status == status
    if words is None:
        assert report.reason is None
    else:
        assert report.reason is not None
        assert words in report.reason
    assert report.raw == fax
    if "code" in fax:
        assert report.code == str(fax["code"])
    else:
        assert report.code == (fax.get("faxStatus") or None)


def test_pages_sent_comes_from_transferred_pages() -> None:
    assert map_fax_object({"faxStatus": "delivered", "code": 0, "faxTransferredPages": 3}).pages_sent == 3


def test_every_code_in_the_table_has_plain_words() -> None:
    assert len(_CODES) > 130
    for code, (reason, _kind) in _CODES.items():
        assert reason, code
        assert reason[0].islower(), code
        # No vendor constant (NO_ANSWER, USER_BUSY…) leaks into what a sender reads.
        assert not re.search(r"[A-Z]{2,}_[A-Z]", reason), (code, reason)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (3931, "busy"),
        (8021, "answered"),
        (120100, "number"),
        (-1063, "too large"),
        (120106, "test key"),
        (12021, "no fax with this id"),
        (999999, None),
        (None, None),
    ],
)
def test_describe_code(code: int | None, words: str | None) -> None:
    described = describe_code(code)
    if words is None:
        assert described is None
    else:
        assert described is not None
        assert words in described


@pytest.mark.parametrize(
    ("payload", "error", "maybe"),
    [
        ({"status": 0, "code": 120100, "message": "Invalid faxNumber"}, InvalidNumber, False),
        ({"status": 0, "code": -2075, "message": "invalidnumber"}, InvalidNumber, False),
        ({"status": 0, "code": -310}, AuthenticationFailed, False),
        ({"status": 0, "code": 12001, "message": "USER_BLOCKED"}, AuthenticationFailed, False),
        ({"status": 0, "code": -123, "message": "No valid documents attached"}, ProviderPermanentError, False),
        ({"status": 0, "code": 120109}, ProviderPermanentError, False),
        ({"status": 0, "code": 120101}, ProviderPermanentError, False),
        ({"status": 0, "code": 120106}, ProviderTemporaryError, False),
        ({"status": 0, "code": -22}, ProviderTemporaryError, False),
        ({"status": 0, "code": -2036, "message": "SERVICE_UNAVAILABLE"}, ProviderTemporaryError, True),
        ({"status": 0, "code": 256}, ProviderTemporaryError, True),
        ({"status": 0, "data": {"code": 120100}}, InvalidNumber, False),
        ({"status": 0, "message": "no idea"}, ProviderTemporaryError, True),
    ],
)
async def test_send_errors_are_classified(
    harness: IFaxHarness, provider: IFaxProvider, payload: dict[str, Any], error: type[Exception], maybe: bool
) -> None:
    envelope_fault(harness, SEND, payload)
    with pytest.raises(error) as raised:
        await provider.send(outbound())
    assert type(raised.value) is error
    assert getattr(raised.value, "maybe_accepted", None) is maybe


# -- the fake itself ----------------------------------------------------------------------------------------


async def fake_call(harness: IFaxHarness, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=harness.fake.transport(), base_url="https://api.ifax.test") as client:
        headers = {"accessToken": DEFAULT_ACCESS_TOKEN, **kwargs.pop("headers", {})}
        return await client.request(kwargs.pop("method", "POST"), path, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"faxData": []}, 12020),
        ({"faxNumber": "12"}, 120100),
        ({"faxNumber": "+14155550100", "callerId": "me"}, 120103),
        ({"faxNumber": "+14155550100", "faxQuality": "Ultra", "faxData": [{}]}, 12009),
        ({"faxNumber": "+14155550100"}, -123),
        ({"faxNumber": "+14155550100", "faxData": [{"fileData": "JVBERg=="}]}, 120107),
        ({"faxNumber": "+14155550100", "faxData": [{"fileName": "a.exe", "fileData": "JVBERg=="}]}, 120109),
        ({"faxNumber": "+14155550100", "faxData": [{"fileName": "a.pdf", "fileData": "not base64!"}]}, 120109),
        ({"faxNumber": "+14155550100", "faxData": [{"fileName": "a.pdf", "fileUrl": "ftp://x"}]}, 120108),
    ],
)
async def test_the_fake_refuses_bad_sends_with_documented_codes(
    harness: IFaxHarness, body: dict[str, Any], code: int
) -> None:
    answer = await fake_call(harness, SEND, json=body)
    assert answer.status_code == 200
    assert answer.json()["status"] == 0
    assert answer.json()["code"] == code
    assert harness.faxes_at_fake() == 0


async def test_the_fake_wants_post_json_and_the_key(harness: IFaxHarness) -> None:
    assert (await fake_call(harness, STATUS, method="GET")).json()["code"] == 12010
    assert (await fake_call(harness, STATUS, json={"jobId": 1, "_method": "DELETE"})).json()["code"] == 12010
    assert (await fake_call(harness, STATUS, content=b"jobId=1")).json()["code"] == 12009
    no_key = await fake_call(harness, STATUS, json={"jobId": 1}, headers={"accessToken": "nope"})
    assert no_key.status_code == 401
    assert no_key.json()["code"] == -310


async def test_the_fake_cancels_until_the_fax_is_done(harness: IFaxHarness, provider: IFaxProvider) -> None:
    first = await provider.send(outbound())
    second = await provider.send(outbound())
    cancel = "/v1/customer/fax-cancel"
    assert (await fake_call(harness, cancel, json={"jobId": first.provider_fax_id})).json()["status"] == 1
    assert (await fake_call(harness, cancel, json={"jobId": first.provider_fax_id})).json()["code"] == 9030
    assert (await provider.status(first)).status == FaxStatus.CANCELLED
    harness.state.advance(harness.state.transmit_seconds)
    assert (await fake_call(harness, cancel, json={"jobId": second.provider_fax_id})).json()["code"] == -162
    assert [w.kind for w in harness.state.webhooks] == ["sent", "sent"]


async def test_the_fake_control_routes(harness: IFaxHarness, provider: IFaxProvider) -> None:
    receipt = await provider.send(outbound())
    outcome = await fake_call(harness, "/_fake/outcome", json={"jobId": receipt.provider_fax_id, "outcome": "busy"})
    assert outcome.status_code == 200
    await fake_call(harness, "/_fake/advance", json={"seconds": 61})
    assert (await provider.status(receipt)).code == "3931"
    pdf = one_page_pdf("Control inbound")
    injected = await fake_call(
        harness,
        "/_fake/inbound",
        json={"pdf_base64": base64.b64encode(pdf).decode(), "caller": "+12015550123", "called": "+12025550100"},
    )
    assert injected.json()["jobId"] in harness.state.received
    webhooks = (await fake_call(harness, "/_fake/webhooks", method="GET")).json()
    assert [w["kind"] for w in webhooks] == ["sent", "received"]
    assert OUTCOMES["busy"] == ("failed", 3931, "Busy")
    assert isinstance(harness.state.webhooks[0], WebhookCall)
