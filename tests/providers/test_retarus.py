"""Retarus Fax4A: the provider contract against the two-data-centre fake, each documented quirk, the mappings."""

from __future__ import annotations

import base64
import dataclasses
import json
import tomllib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.errors import (
    AuthenticationFailed,
    ConfigError,
    MalformedResponse,
    ProviderPermanentError,
    ProviderTemporaryError,
    ProviderUnavailable,
    RateLimited,
    SubmissionUnknown,
)
from bridge.fakes import create_app
from bridge.fakes.base import FakeApp
from bridge.fakes.retarus import RetarusFakeState, validate_job
from bridge.models import FaxStatus, SendReceipt
from bridge.providers import build_provider
from bridge.providers.base import Capability
from bridge.providers.retarus import (
    RECIPIENT_STATUSES,
    REGIONS,
    RetarusProvider,
    RetarusSettings,
    document_name,
    is_ha_url,
    map_report,
    parse_inbound,
    reports_of,
    to_e164,
)
from tests.providers.contract import ContractSuite, Harness, Outcome, one_page_pdf, outbound

REPO = Path(__file__).resolve().parents[2]
CUSTOMER = "99999TE"
SEND_PATH = f"/rest/v1/{CUSTOMER}/fax"
DE1, DE2, HA = "faxws.de1.retarus.com", "faxws.de2.retarus.com", "faxws-ha.de.retarus.com"

FINAL_CODES: dict[Outcome, str] = {
    "delivered": "OK",
    "busy": "BUSY",
    "no_answer": "RING_TO",
    "invalid_number": "WRONG_NO",
}


class RetarusHarness(Harness):
    name = "retarus"
    send_path = SEND_PATH

    def section(self) -> dict[str, Any]:
        # Secrets come from files relative to state_dir, as in production.
        (self.tmp_path / "retarus.password").write_text("secret\n")
        (self.tmp_path / "retarus-inbound.password").write_text("inbound-secret\n")
        return {
            "type": "retarus",
            "customer_number": CUSTOMER,
            "username": "faxuser",
            "password_file": "retarus.password",
            "timeouts": {"connect": 1, "read": 0.5, "write": 1, "pool": 1},
            "inbound": {"topic": "faxbridge", "password_file": "retarus-inbound.password"},
        }

    @property
    def state(self) -> RetarusFakeState:
        assert isinstance(self.fake.state, RetarusFakeState)
        return self.fake.state

    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        assert receipt.provider_fax_id is not None
        self.state.set_outcome(receipt.provider_fax_id, FINAL_CODES[outcome])
        self.state.advance(self.state.send_seconds + 1)

    def faxes_at_fake(self) -> int:
        return len(self.state.jobs)

    async def inject_inbound(self, pdf: bytes, caller: str, called: str) -> None:
        self.state.inject_inbound(pdf, caller=caller, called=called)


class TestContract(ContractSuite):
    harness_class = RetarusHarness


# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path) -> RetarusHarness:
    return RetarusHarness(tmp_path)


@pytest.fixture
def state(harness: RetarusHarness) -> RetarusFakeState:
    return harness.state


@pytest.fixture
async def provider(harness: RetarusHarness) -> AsyncIterator[RetarusProvider]:
    built = harness.provider()
    assert isinstance(built, RetarusProvider)
    yield built
    await built.aclose()


def build(
    harness: RetarusHarness, transport: httpx.AsyncBaseTransport | None = None, **changes: Any
) -> RetarusProvider:
    section = {**harness.section(), **changes}
    built = build_provider(
        "retarus", section, harness.tmp_path, extra={"transport": transport or harness.fake.transport()}
    )
    assert isinstance(built, RetarusProvider)
    return built


def hosts(state: RetarusFakeState, method: str | None = None, path: str = "/") -> list[str]:
    return [r.headers["host"] for r in state.requests_to(path, method)]


class HostFault(httpx.AsyncBaseTransport):
    """Passes requests to the fake, except that one host fails: one data centre down, the other fine."""

    def __init__(self, inner: httpx.AsyncBaseTransport, host: str, fail: Callable[[httpx.Request], httpx.Response]):
        self.inner, self.host, self.fail = inner, host, fail

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.host:
            return self.fail(request)
        return await self.inner.handle_async_request(request)


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


# -- quirk: 409 duplicate = already submitted ---------------------------------------------------------------


async def test_a_duplicate_send_is_answered_409_and_returns_a_receipt_not_a_second_fax(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    fax = outbound()
    first = await provider.send(fax)
    again = await provider.send(fax)
    assert len(state.jobs) == 1
    assert state.duplicates_refused == 1
    assert again.client_reference == fax.job_id
    assert again.raw["duplicate"] is True
    # Still running: Retarus lists finished reports only, so the job id is not known yet.
    assert again.provider_fax_id is None
    assert (await provider.status(again)).status == FaxStatus.QUEUED
    state.advance(state.send_seconds + 1)
    report = await provider.status(again)
    assert report.status == FaxStatus.DELIVERED
    assert report.raw["jobId"] == first.provider_fax_id


async def test_an_interrupted_send_released_by_hand_is_refused_as_duplicate(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    state.inject("hang_after", path=SEND_PATH)
    fax = outbound()
    with pytest.raises(ProviderUnavailable) as interrupted:
        await provider.send(fax)
    assert interrupted.value.maybe_accepted
    assert Capability.CLIENT_REFERENCE not in provider.capabilities
    with pytest.raises(SubmissionUnknown):
        await provider.find_submission(fax)  # still sending: not listed, absence cannot be told
    state.advance(state.send_seconds + 1)
    found = await provider.find_submission(fax)
    assert found is not None
    [job] = state.jobs.values()
    assert found.provider_fax_id == job.job_id
    receipt = await provider.send(fax)  # what `faxbridge jobs retry` does after a quarantine
    assert receipt.provider_fax_id == job.job_id  # finished by now, so the lookup finds the id
    assert len(state.jobs) == 1


async def test_a_finished_report_at_dc2_is_found_by_reference(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    state.placement = "de2"
    fax = outbound()
    await provider.send(fax)
    state.advance(state.send_seconds + 1)
    found = await provider.find_submission(fax)
    assert found is not None
    assert found.raw["dataCentre"] == "https://faxws.de2.retarus.com/rest/v1"


# -- quirk: two data centres --------------------------------------------------------------------------------


async def test_a_report_only_at_dc2_is_found(provider: RetarusProvider, state: RetarusFakeState) -> None:
    state.placement = "de2"
    receipt = await provider.send(outbound())
    [job] = state.jobs.values()
    assert job.data_centre == "de2"
    assert (await provider.status(receipt)).status == FaxStatus.SENDING
    state.advance(state.send_seconds + 1)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.DELIVERED
    assert report.pages_sent == 1
    assert set(hosts(state, "GET", f"/rest/v1/{CUSTOMER}/fax/reports/")) == {DE1, DE2}


async def test_jobs_alternate_between_data_centres_and_each_is_followed(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    receipts = [await provider.send(outbound(job_id=f"01JOBALTERNATE{n:04d}")) for n in range(4)]
    assert [j.data_centre for j in state.jobs.values()] == ["de1", "de2", "de1", "de2"]
    state.advance(state.send_seconds + 1)
    assert [(await provider.status(r)).status for r in receipts] == [FaxStatus.DELIVERED] * 4


async def test_one_data_centre_down_the_other_still_answers(harness: RetarusHarness, state: RetarusFakeState) -> None:
    state.placement = "de2"
    provider = build(harness, HostFault(harness.fake.transport(), DE1, unreachable))
    try:
        receipt = await provider.send(outbound())
        state.advance(state.send_seconds + 1)
        assert (await provider.status(receipt)).status == FaxStatus.DELIVERED
    finally:
        await provider.aclose()


async def test_absence_is_never_concluded_from_a_data_centre_that_did_not_answer(
    harness: RetarusHarness, state: RetarusFakeState
) -> None:
    state.placement = "de1"
    provider = build(harness, HostFault(harness.fake.transport(), DE1, lambda r: httpx.Response(503)))
    try:
        receipt = await provider.send(outbound())
        state.advance(state.send_seconds + 1)
        with pytest.raises(ProviderTemporaryError):
            await provider.status(receipt)  # DE2 says 404, DE1 failed: unknown, not "no report"
        with pytest.raises(ProviderTemporaryError):
            await provider.find_submission(outbound())
    finally:
        await provider.aclose()


async def test_no_report_anywhere_is_unknown_not_final(provider: RetarusProvider) -> None:
    receipt = SendReceipt(
        provider_fax_id="FJNOSUCHJOB000000000000", client_reference="01JOBMISSING000001", accepted_at=datetime.now(UTC)
    )
    report = await provider.status(receipt)
    assert report.status == FaxStatus.UNKNOWN
    assert report.reason is not None
    assert "FJNOSUCHJOB" in report.reason


# -- quirk: reports deleted after reading -------------------------------------------------------------------


async def test_a_finished_report_is_journaled_then_deleted_at_its_data_centre(
    harness: RetarusHarness, provider: RetarusProvider, state: RetarusFakeState
) -> None:
    state.placement = "de2"
    receipt = await provider.send(outbound())
    await provider.status(receipt)
    [job] = state.jobs.values()
    assert not state.jobs[job.job_id].deleted  # a running job's report is kept
    await harness.finish(receipt, "busy")
    report = await provider.status(receipt)
    assert report.status == FaxStatus.FAILED
    assert job.deleted
    [delete] = state.requests_to(f"/rest/v1/{CUSTOMER}/fax/reports/{job.job_id}", "DELETE")
    assert delete.headers["host"] == DE2
    assert state.finished_in("de2") == []
    journal = harness.tmp_path / "retarus" / "retarus" / f"{receipt.client_reference}.json"
    assert json.loads(journal.read_text())["jobId"] == job.job_id
    # Asked again (say the worker stopped before recording it): the same answer, though Retarus has no report.
    before = len(state.requests)
    again = await provider.status(receipt)
    assert (again.status, again.code, again.reason) == (report.status, report.code, report.reason)
    assert len(state.requests) == before


async def test_a_failed_deletion_is_retried_later(
    harness: RetarusHarness, provider: RetarusProvider, state: RetarusFakeState
) -> None:
    receipt = await provider.send(outbound())
    await harness.finish(receipt, "delivered")
    state.inject("status", path=f"/rest/v1/{CUSTOMER}/fax/reports/", method="DELETE", status=500)
    assert (await provider.status(receipt)).status == FaxStatus.DELIVERED
    [job] = state.jobs.values()
    assert not job.deleted
    other = await provider.send(outbound(job_id="01JOBOTHER00000001"))
    await provider.status(other)
    assert job.deleted


async def test_a_report_is_kept_at_retarus_when_the_journal_cannot_be_written(
    harness: RetarusHarness, state: RetarusFakeState
) -> None:
    (harness.tmp_path / "blocked").write_text("a file where the journal directory should be")
    provider = build(harness, report_journal="blocked/journal")
    try:
        receipt = await provider.send(outbound())
        await harness.finish(receipt, "delivered")
        assert (await provider.status(receipt)).status == FaxStatus.DELIVERED
        [job] = state.jobs.values()
        assert not job.deleted
    finally:
        await provider.aclose()


# -- quirk: never the HA address ----------------------------------------------------------------------------


async def test_reports_are_never_read_from_the_ha_address(
    harness: RetarusHarness, provider: RetarusProvider, state: RetarusFakeState
) -> None:
    fax = outbound()
    receipt = await provider.send(fax)
    await provider.send(fax)  # 409, then a lookup by reference
    await harness.finish(receipt, "delivered")
    with pytest.raises(SubmissionUnknown):
        await provider.find_submission(outbound(job_id="01JOBNOTTHERE00001"))
    await provider.status(receipt)
    assert state.ha_report_requests == 0
    assert set(hosts(state, "POST", SEND_PATH)) == {HA}
    report_hosts = set(hosts(state, None, f"/rest/v1/{CUSTOMER}/fax/reports"))
    assert report_hosts == {DE1, DE2}


async def test_the_fake_ha_address_would_have_missed_dc2(state: RetarusFakeState, harness: RetarusHarness) -> None:
    # Why the rule exists: at the HA address a DC2 job is invisible.
    state.placement = "de2"
    provider = build(harness)
    try:
        receipt = await provider.send(outbound())
    finally:
        await provider.aclose()
    async with httpx.AsyncClient(transport=harness.fake.transport(), auth=("faxuser", "secret")) as client:
        answer = await client.get(f"https://{HA}/rest/v1/{CUSTOMER}/fax/reports/{receipt.provider_fax_id}")
        assert answer.status_code == 404
        answer = await client.get(f"https://{DE2}/rest/v1/{CUSTOMER}/fax/reports/{receipt.provider_fax_id}")
        assert answer.status_code == 200
    assert state.ha_report_requests == 1


def test_an_ha_address_is_refused_as_a_report_url(harness: RetarusHarness) -> None:
    with pytest.raises(ConfigError, match="high-availability"):
        build(harness, report_urls=["https://faxws-ha.de.retarus.com/rest/v1", "https://faxws.de1.retarus.com/rest/v1"])


@pytest.mark.parametrize(
    ("url", "ha"),
    [
        ("https://faxws-ha.de.retarus.com/rest/v1", True),
        ("https://faxws-ha.us.retarus.com/rest/v1/", True),
        ("https://faxws.de1.retarus.com/rest/v1", False),
        ("http://127.0.0.1:8025/de2/rest/v1", False),
    ],
)
def test_ha_addresses_are_recognised(url: str, ha: bool) -> None:
    assert is_ha_url(url) is ha


def test_every_region_reads_reports_from_data_centres_only() -> None:
    for name, region in REGIONS.items():
        assert region.report_urls, name
        assert not any(is_ha_url(url) for url in region.report_urls), name
    assert len(REGIONS["de"].report_urls) == 2
    assert is_ha_url(REGIONS["de"].send_url)
    # docs.retarus.com: no HA address for Switzerland and Singapore.
    assert REGIONS["ch"].send_url == REGIONS["ch"].report_urls[0]


# -- the request -------------------------------------------------------------------------------------------


async def test_the_job_request_carries_reference_sender_identity_and_document(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    fax = outbound()
    await provider.send(fax)
    [request] = state.requests_to(SEND_PATH, "POST")
    body = json.loads(request.body)
    assert validate_job(body) is None
    assert body["reference"] == {"customerDefinedId": fax.job_id, "billingInfo": "demo"}
    assert body["recipients"] == [{"number": "+4930123456"}]
    assert body["transportOptions"] == {"csid": "+4930999000"}
    assert body["renderingOptions"] == {"paperFormat": "A4", "resolution": "HIGH", "header": "Example GmbH"}
    [document] = body["documents"]
    assert document["name"] == f"{fax.job_id}.pdf"
    assert base64.b64decode(document["data"]) == fax.document
    assert "statusReportOptions" not in body  # no status push: reports are polled
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"faxuser:secret").decode()


def test_the_sender_header_cannot_add_retarus_placeholders(harness: RetarusHarness) -> None:
    provider = build(harness, header_template="{header}  %C  %d.%m.%Y %H:%M", paper_format="LETTER")
    fax = dataclasses.replace(outbound(), header="Evil %tz=XX %C   Inc")
    job = provider.job_request(fax)
    assert job["renderingOptions"]["header"] == "Evil tz=XX C Inc  %C  %d.%m.%Y %H:%M"
    assert job["renderingOptions"]["paperFormat"] == "LETTER"


def test_no_identity_fields_without_caller_id_and_header(harness: RetarusHarness) -> None:
    provider = build(harness)
    fax = dataclasses.replace(outbound(), caller_id=None, header=None)
    job = provider.job_request(fax)
    assert "transportOptions" not in job
    assert "header" not in job["renderingOptions"]


async def test_job_validity_is_sent_with_a_time_zone_and_accepted(harness: RetarusHarness) -> None:
    provider = build(harness, valid_for_minutes=90, billing_code="cost-4711", blocklist_check=True)
    try:
        job = provider.job_request(outbound(), now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        assert job["meta"]["jobValid"] == {"start": "2026-03-01T12:00:00Z", "end": "2026-03-01T13:30:00Z"}
        assert job["reference"]["billingCode"] == "cost-4711"
        assert job["transportOptions"]["isBlacklistEnabled"] is True
        await provider.send(outbound())
        assert harness.state.rejections == []
        assert len(harness.state.jobs) == 1
    finally:
        await provider.aclose()


async def test_the_fake_refuses_a_start_without_time_zone_with_an_empty_400(harness: RetarusHarness) -> None:
    provider = build(harness)
    job = provider.job_request(outbound())
    await provider.aclose()
    job["meta"] = {"jobValid": {"start": "2026-03-01T12:00:00"}}
    async with httpx.AsyncClient(transport=harness.fake.transport(), auth=("faxuser", "secret")) as client:
        answer = await client.post(f"https://{HA}{SEND_PATH}", json=job)
    assert answer.status_code == 400
    assert answer.content == b""
    assert harness.state.rejections == ["meta.jobValid.start must carry a time zone (or be an ISO duration)"]


@pytest.mark.parametrize(
    ("job_id", "name"),
    [("01jobcontract00001", "01jobcontract00001.pdf"), ("a b/c" * 10, ("a-b-c" * 10)[:28] + ".pdf")],
)
def test_document_names_fit_retarus_rules(job_id: str, name: str) -> None:
    assert document_name(job_id) == name
    assert len(name) <= 32


# -- answers and errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("send_status", [200, 201])
async def test_200_and_201_are_both_success(tmp_path: Path, send_status: int) -> None:
    harness = RetarusHarness(tmp_path)
    harness.fake = create_app("retarus", send_status=send_status)
    provider = build(harness)
    try:
        receipt = await provider.send(outbound())
        assert receipt.provider_fax_id is not None
        assert receipt.provider_fax_id.startswith("FJ")
    finally:
        await provider.aclose()


async def test_a_wrong_password_is_an_authentication_failure_that_sent_nothing(
    harness: RetarusHarness, state: RetarusFakeState
) -> None:
    (harness.tmp_path / "wrong.password").write_text("not-the-password\n")
    provider = build(harness, password_file="wrong.password")
    try:
        with pytest.raises(AuthenticationFailed) as refused:
            await provider.send(outbound())
        assert not refused.value.maybe_accepted
        assert "faxuser" in str(refused.value)
        assert CUSTOMER in str(refused.value)
        assert state.jobs == {}
    finally:
        await provider.aclose()


async def test_a_missing_password_file_is_temporary_and_names_the_file(harness: RetarusHarness) -> None:
    provider = build(harness, password_file="nowhere.password")
    try:
        with pytest.raises(ProviderTemporaryError, match=r"nowhere\.password") as failed:
            await provider.send(outbound())
        assert not failed.value.maybe_accepted
    finally:
        await provider.aclose()


async def test_a_400_to_a_send_is_permanent(provider: RetarusProvider, state: RetarusFakeState) -> None:
    state.inject("status", path=SEND_PATH, status=400)
    with pytest.raises(ProviderPermanentError) as refused:
        await provider.send(outbound())
    assert not refused.value.maybe_accepted
    assert "HTTP 400" in str(refused.value)


async def test_a_2xx_without_job_id_may_have_been_accepted(provider: RetarusProvider, state: RetarusFakeState) -> None:
    state.inject("status", path=SEND_PATH, status=200, body=b"{}", headers={"content-type": "application/json"})
    with pytest.raises(MalformedResponse) as odd:
        await provider.send(outbound())
    assert odd.value.maybe_accepted


async def test_503_with_retry_after_is_rate_limited_and_520_is_temporary(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    state.inject("status", path=SEND_PATH, status=503, headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as limited:
        await provider.send(outbound())
    assert limited.value.retry_after == 30
    state.inject("status", path=SEND_PATH, status=520)
    with pytest.raises(ProviderTemporaryError, match="unknown error") as failed:
        await provider.send(outbound())
    assert failed.value.maybe_accepted


async def test_the_fake_rate_limit_gives_retry_after(provider: RetarusProvider, state: RetarusFakeState) -> None:
    state.rate_limit = (1, 60.0)
    await provider.send(outbound())
    with pytest.raises(RateLimited) as limited:
        await provider.send(outbound(job_id="01JOBSECOND0000001"))
    assert limited.value.retry_after is not None
    assert limited.value.retry_after > 0
    assert len(state.jobs) == 1


@pytest.mark.parametrize("empty_list_status", [200, 404])
async def test_an_empty_report_list_may_be_200_or_404(tmp_path: Path, empty_list_status: int) -> None:
    harness = RetarusHarness(tmp_path)
    harness.fake = create_app("retarus", empty_list_status=empty_list_status)
    provider = build(harness)
    try:
        with pytest.raises(SubmissionUnknown):
            await provider.find_submission(outbound())
    finally:
        await provider.aclose()


def test_report_lists_are_read_in_both_documented_shapes() -> None:
    report = {"jobId": "FJ1", "recipientStatus": []}
    assert reports_of({"reports": [report]}) == [report]
    assert reports_of({"value": {"reports": [report]}}) == [report]
    assert reports_of({}) == []
    assert reports_of({"reports": "nope"}) is None
    assert reports_of([report]) is None


# -- status mapping ------------------------------------------------------------------------------------------

# The REM_DIS report of Retarus' own sample (retarus/retarus-java-fax@d6c0d6e, src/main/resources/
# get_fax_reports_response.json, Apache-2.0), shortened to one cover-page property.
VENDOR_SAMPLE: dict[str, Any] = {
    "jobId": "FJLI3102O5BEPYOTB5LPC9",
    "recipientStatus": [
        {
            "number": "+4900000000",
            "alternativeNumbers": None,
            "properties": [{"key": "FromName", "value": "Sales Engineering Department"}],
            "status": "REM_DIS",
            "reason": "simulated",
            "sentTs": "2023-05-25T11:03:39Z",
            "durationInSecs": 42,
            "sentToNumber": "004900000000",
            "remoteCsid": "",
        }
    ],
    "pages": 2,
    "reference": {
        "customerDefinedId": "2018-08-7T11:04:37.057Z_customerDefinedId",
        "billingCode": "2018-08-7T11:04:37.057Z_billingCode",
        "billingInfo": "2018-08-7T11:04:37.057Z_billingInfo",
    },
}


def _report(*statuses: str, pages: int = 3) -> dict[str, Any]:
    recipients = [
        {"number": f"+49301234{n:02d}", "status": s, "reason": s, "durationInSecs": 0} for n, s in enumerate(statuses)
    ]
    return {"jobId": "FJTEST", "recipientStatus": recipients, "pages": pages}


def test_the_vendor_sample_maps_to_a_failure_with_retarus_reason() -> None:
    report = map_report(VENDOR_SAMPLE)
    assert report.status == FaxStatus.FAILED
    assert report.code == "REM_DIS"
    assert report.reason == "the receiving machine hung up during the transmission (Retarus: simulated)"
    assert report.pages_sent is None
    assert report.raw == VENDOR_SAMPLE


@pytest.mark.parametrize(("code", "expected"), sorted((c, s) for c, (s, _) in RECIPIENT_STATUSES.items()))
def test_every_known_recipient_status_is_mapped(code: str, expected: FaxStatus) -> None:
    report = map_report(_report(code))
    assert report.status == expected
    assert report.code == code
    if expected in (FaxStatus.FAILED, FaxStatus.CANCELLED):
        assert report.reason
        assert len(report.reason) > 20
    if expected == FaxStatus.DELIVERED:
        assert report.pages_sent == 3


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("BUSY", "busy"),
        ("NOFAX", "no fax machine answered"),
        ("NOFAX_DIS", "no fax machine answered"),
        ("NOFAX_TO", "no fax machine answered"),
        ("RING_TO", "no fax machine answered"),
        ("WRONG_NO", "not a valid fax number"),
        ("DIAL_NC", "not a valid fax number"),
        ("BLACKLIST", "do-not-fax list"),
    ],
)
def test_failure_reasons_are_plain_words(code: str, words: str) -> None:
    reason = map_report(_report(code)).reason
    assert reason is not None
    assert words in reason


def test_an_unknown_status_fails_with_retarus_own_code_and_reason() -> None:
    report = map_report(
        {"jobId": "FJ", "recipientStatus": [{"number": "+1", "status": "NEW_CODE", "reason": "line on fire"}]}
    )
    assert report.status == FaxStatus.FAILED
    assert report.code == "NEW_CODE"
    assert report.reason == "Retarus could not deliver the fax (status NEW_CODE: line on fire)"


def test_lower_case_status_is_read() -> None:
    assert map_report(_report("ok")).status == FaxStatus.DELIVERED


@pytest.mark.parametrize(
    ("statuses", "status", "code"),
    [
        (("OK", "PENDING"), FaxStatus.SENDING, "PENDING"),
        (("OK", "OK"), FaxStatus.DELIVERED, "OK"),
        (("OK", "BUSY"), FaxStatus.FAILED, "BUSY"),
        (("OK", ""), FaxStatus.UNKNOWN, None),
    ],
)
def test_several_recipients_are_summed_up(statuses: tuple[str, ...], status: FaxStatus, code: str | None) -> None:
    report = map_report(_report(*statuses))
    assert (report.status, report.code) == (status, code)


def test_a_report_without_recipients_is_unknown() -> None:
    assert map_report({"jobId": "FJ", "recipientStatus": []}).status == FaxStatus.UNKNOWN


async def test_fake_number_rules_drive_outcomes(provider: RetarusProvider, state: RetarusFakeState) -> None:
    expected = {"+4930120001": "BUSY", "+4930120002": "RING_TO", "+4930120003": "WRONG_NO", "+4930120004": "NOFAX"}
    receipts = {n: await provider.send(outbound(job_id=f"01JOBRULE{n[-4:]}00000", to=n)) for n in expected}
    never = await provider.send(outbound(job_id="01JOBRULE000900000", to="+4930120009"))
    state.advance(state.send_seconds + 1)
    for number, code in expected.items():
        report = await provider.status(receipts[number])
        assert (report.status, report.code) == (FaxStatus.FAILED, code)
    state.advance(86400)
    assert (await provider.status(never)).status == FaxStatus.SENDING


# -- inbound (Fax2WSPull) -----------------------------------------------------------------------------------


async def test_inbound_from_both_data_centres_is_merged(provider: RetarusProvider, state: RetarusFakeState) -> None:
    state.inject_inbound(one_page_pdf("one"), caller="+31201234567", called="+4930999000", data_centre="de1")
    state.advance(5)
    state.inject_inbound(one_page_pdf("two"), caller="0033123456789", called="+4930999001", data_centre="de2")
    first, second = await provider.poll_incoming()
    assert (first.caller, second.caller) == ("+31201234567", "+33123456789")
    assert second.called == "+4930999001"
    assert (await provider.download(second)).startswith(b"%PDF")
    [request] = state.requests_to("/faxin/rest/v1/files/", "GET")
    assert request.headers["host"] == "api.de2.retarus.com"


async def test_a_fetched_inbound_fax_reappears_unless_acknowledged(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    fax = state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
    [ref] = await provider.poll_incoming()
    assert ref.provider_fax_id == fax.fax_id
    assert await provider.poll_incoming() == []  # hidden for the lease
    state.advance(300 + 1)
    [again] = await provider.poll_incoming()  # not acknowledged: shown again, nothing lost
    assert again.provider_fax_id == fax.fax_id
    await provider.acknowledge(again)
    state.advance(3600)
    assert await provider.poll_incoming() == []
    assert fax.acknowledged
    [ack] = [r for r in state.requests_to("/faxin/rest/v1/topics/faxbridge", "POST") if "ids=" in r.query]
    assert "fetch=0" in ack.query


async def test_no_inbound_section_lists_nothing(harness: RetarusHarness, state: RetarusFakeState) -> None:
    section = harness.section()
    del section["inbound"]
    provider = build_provider("retarus", section, harness.tmp_path, extra={"transport": harness.fake.transport()})
    try:
        state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        assert await provider.poll_incoming() == []
    finally:
        await provider.aclose()


async def test_a_wrong_inbound_password_is_refused(harness: RetarusHarness, state: RetarusFakeState) -> None:
    (harness.tmp_path / "wrong-inbound.password").write_text("nope")
    provider = build(harness, inbound={"topic": "faxbridge", "password_file": "wrong-inbound.password"})
    try:
        with pytest.raises(AuthenticationFailed):
            await provider.poll_incoming()
    finally:
        await provider.aclose()


def test_inbound_fields_are_read_from_every_plausible_name() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    base = "https://api.de1.retarus.com/faxin/rest/v1"
    ref = parse_inbound(
        "retarus",
        base,
        {"id": "FI1", "metadata": {"senderNumber": "0049 30 1234567", "to": "+4930999000"}, "timestamp": 1767225600000},
        now=now,
    )
    assert ref is not None
    assert (ref.caller, ref.called) == ("+49301234567", "+4930999000")
    assert ref.received_at == datetime(2026, 1, 1, tzinfo=UTC)
    bare = parse_inbound("retarus", base, {"id": "FI2", "documents": []}, now=now)
    assert bare is not None
    assert (bare.caller, bare.called, bare.received_at, bare.pages) == (None, None, now, None)
    assert parse_inbound("retarus", base, {"documents": []}, now=now) is None


async def test_a_document_url_on_another_host_is_not_followed(
    provider: RetarusProvider, state: RetarusFakeState
) -> None:
    fax = state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
    base = "https://api.de1.retarus.com/faxin/rest/v1"
    ref = parse_inbound(
        "retarus",
        base,
        {"id": fax.fax_id, "documents": [{"url": f"https://evil.example.com/files/{fax.document_name}"}]},
        now=datetime.now(UTC),
    )
    assert ref is not None
    assert (await provider.download(ref)).startswith(b"%PDF")
    [request] = state.requests_to("/faxin/rest/v1/files/", "GET")
    assert request.headers["host"] == "api.de1.retarus.com"


@pytest.mark.parametrize(
    ("value", "e164"),
    [
        ("+4930123456", "+4930123456"),
        ("004930123456", "+4930123456"),
        ("+49 (30) 123-456", "+4930123456"),
        ("030123456", "030123456"),
        ("", None),
        (None, None),
    ],
)
def test_numbers_become_e164_where_possible(value: Any, e164: str | None) -> None:
    assert to_e164(value) == e164


# -- settings and the example configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"password": "also-set"}, "exactly one of"),
        ({"password_file": None}, "exactly one of"),
        ({"customer_number": "99 999"}, "customer_number"),
        ({"send_url": "ftp://x"}, "http"),
        ({"report_urls": ["https://faxws.de1.retarus.com/rest/v1"] * 2}, "once"),
        ({"inbound": {"topic": "t"}}, "inbound.password"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_settings_are_refused(harness: RetarusHarness, change: dict[str, Any], message: str) -> None:
    section = {k: v for k, v in {**harness.section(), **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        build_provider("retarus", section, harness.tmp_path)


def test_the_example_configuration_is_valid() -> None:
    text = (REPO / "config" / "provider-retarus.toml").read_text()
    data = tomllib.loads(text)
    [(name, section)] = data["providers"].items()
    settings = RetarusSettings.model_validate(section)
    assert settings.type == "retarus"
    assert settings.password is None
    assert settings.password_file is not None
    assert "password =" not in text.replace("#password =", "")
    assert f"FAXBRIDGE_PROVIDERS__{name.upper()}__PASSWORD" in text


def test_capabilities_are_what_the_adapter_can_answer() -> None:
    assert RetarusProvider.capabilities == {
        Capability.STATUS_POLL,
        Capability.INBOUND_POLL,
        Capability.INBOUND_DOWNLOAD,
        Capability.INBOUND_ACK,
    }


async def test_loopback_prefixes_reach_the_same_data_centres(harness: RetarusHarness, state: RetarusFakeState) -> None:
    base = "http://127.0.0.1:8025"
    state.placement = "de2"
    provider = build(
        harness,
        send_url=f"{base}/ha/rest/v1",
        report_urls=[f"{base}/de1/rest/v1", f"{base}/de2/rest/v1"],
        inbound={
            "topic": "faxbridge",
            "password_file": "retarus-inbound.password",
            "urls": [f"{base}/de1/faxin/rest/v1", f"{base}/de2/faxin/rest/v1"],
        },
    )
    try:
        receipt = await provider.send(outbound())
        state.advance(state.send_seconds + 1)
        assert (await provider.status(receipt)).status == FaxStatus.DELIVERED
        state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000", data_centre="de2")
        [ref] = await provider.poll_incoming()
        assert (await provider.download(ref)).startswith(b"%PDF")
        await provider.acknowledge(ref)
        assert await provider.poll_incoming() == []
    finally:
        await provider.aclose()


def test_fake_is_registered() -> None:
    fake = create_app("retarus")
    assert isinstance(fake, FakeApp)
    assert isinstance(fake.state, RetarusFakeState)
