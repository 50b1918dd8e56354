"""The Sipwise C5 (NGCP) adapter against its fake: the contract, every documented quirk, and the mappings."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

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
from bridge.fakes.base import FakeApp, RecordedRequest
from bridge.fakes.sipwise import OUTCOMES, SipwiseFakeState, outcome_for
from bridge.models import FaxStatus, OutboundFax, SendReceipt
from bridge.providers import build_provider
from bridge.providers.base import Capability
from bridge.providers.sipwise import (
    JournalEntry,
    SipwiseProvider,
    SipwiseSettings,
    _e164,
    _same_number,
    _top_of_journal,
    describe_failure,
    hal_items,
    map_journal_entry,
    parse_journal_entry,
)
from tests.conftest import SettingsFactory
from tests.providers.contract import ContractSuite, Harness, Outcome, one_page_pdf, outbound

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "provider-sipwise.toml"
FAXES = "/api/faxes/"
LOGIN = ("administrator", "administrator")
UTCZ = ZoneInfo("UTC")


class SipwiseHarness(Harness):
    name = "sipwise"
    send_path = FAXES

    def __init__(self, tmp_path: Path, **fake_options: Any) -> None:
        self._fake_options = fake_options
        super().__init__(tmp_path)

    def fake_options(self) -> dict[str, Any]:
        return dict(self._fake_options)

    @property
    def state(self) -> SipwiseFakeState:
        state = self.fake.state
        assert isinstance(state, SipwiseFakeState)
        return state

    def section(self, **changes: Any) -> dict[str, Any]:
        secret = self.tmp_path / "ngcp-password"
        if not secret.exists():
            self.tmp_path.mkdir(parents=True, exist_ok=True)
            secret.write_text("administrator\n")
        section: dict[str, Any] = {
            "type": "sipwise",
            "base_url": "https://ngcp.test:1443",
            "username": "administrator",
            "password_file": str(secret),
            "subscriber_id": 3,
            # bench/submit.py sends many faxes to one number at once through this section; the default (true)
            # would hold all but the first back. The default is tested on its own below.
            "one_fax_per_number": False,
            "timeouts": {"connect": 1, "read": 0.5, "write": 1, "pool": 1},
        }
        section.update(changes)
        return {k: v for k, v in section.items() if v is not None}

    def build(self, *, clock: Callable[[], datetime] | None = None, **changes: Any) -> SipwiseProvider:
        extra: dict[str, Any] = {"transport": self.fake.transport()}
        if clock is not None:
            extra["clock"] = clock
        provider = build_provider(self.name, self.section(**changes), self.tmp_path, extra=extra)
        assert isinstance(provider, SipwiseProvider)
        return provider

    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        self.state.set_outcome(receipt.client_reference, outcome)
        self.state.advance(self.state.processing_seconds + 1)

    def faxes_at_fake(self) -> int:
        return self.state.faxes_accepted

    async def inject_inbound(self, pdf: bytes, caller: str, called: str) -> None:
        self.state.inject_inbound(pdf, caller=caller, called=called)


class TestContract(ContractSuite):
    harness_class = SipwiseHarness


# -- fixtures and helpers ----------------------------------------------------------------------------------


class Clock:
    """The adapter's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def harness(tmp_path: Path) -> SipwiseHarness:
    return SipwiseHarness(tmp_path)


@pytest.fixture
async def provider(harness: SipwiseHarness) -> AsyncIterator[SipwiseProvider]:
    built = harness.build()
    yield built
    await built.aclose()


def fax(job_id: str = "01JOBSIPWISE00001", to: str = "+4930123456", **changes: Any) -> OutboundFax:
    base = outbound(job_id, to)
    values = {**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes}
    return OutboundFax(**values)


def posts(state: SipwiseFakeState) -> list[RecordedRequest]:
    return state.requests_to(FAXES, "POST")


def multipart_parts(request: RecordedRequest) -> dict[str, tuple[str | None, str, bytes]]:
    """name → (filename, content type, payload) of a recorded multipart request."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=default_policy).parsebytes(head + request.body)
    parts: dict[str, tuple[str | None, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str)
        assert isinstance(payload, bytes)
        parts[name] = (part.get_filename(), part.get_content_type(), payload)
    return parts


async def raw_client(fake: FakeApp, auth: tuple[str, str] | None = LOGIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=fake.transport(), base_url="https://ngcp.test:1443", auth=auth)


def entry(status: str, reason: str = "", **fields: Any) -> JournalEntry:
    item = {"id": 7, "direction": "out", "callee": "4930123456", "status": status, "reason": reason, **fields}
    parsed = parse_journal_entry(item, UTCZ)
    assert parsed is not None
    return parsed


# -- quirk: 201 with an empty body ----------------------------------------------------------------------------


async def test_the_201_has_an_empty_body_so_the_fax_is_found_in_the_journal(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    receipt = await provider.send(fax())
    assert receipt.provider_fax_id is None  # no body, no Location: creation is asynchronous
    assert receipt.client_reference == "01JOBSIPWISE00001"
    assert receipt.raw["http_status"] == 201
    assert receipt.raw["journal_mark"] == 0  # the journal was empty when the fax was handed over
    assert receipt.raw["destination"] == "4930123456"
    # Nothing in the journal until the fax server is done: queued, not failed, not unknown.
    assert (await provider.status(receipt)).status == FaxStatus.QUEUED
    harness.state.advance(harness.state.processing_seconds + 1)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.DELIVERED
    assert report.code == "SUCCESS"
    assert report.pages_sent == 1
    assert report.raw["id"] == harness.state.spool[0].journal_id


async def test_the_send_is_multipart_with_a_json_field_and_a_faxfile_part(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    sent = fax(header="Example GmbH", caller_id="+4930999000")
    await provider.send(sent)
    [request] = posts(harness.state)
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(request)
    assert set(parts) == {"json", "faxfile"}
    json_name, _, json_text = parts["json"]
    assert json_name is None  # a plain form field: the NGCP reads it with $c->req->param('json')
    # Sipwise has no caller-id field: the NGCP dials with the subscriber's number.
    assert json.loads(json_text) == {"subscriber_id": 3, "destination": "4930123456", "pageheader": "Example GmbH"}
    assert parts["faxfile"] == ("01JOBSIPWISE00001.pdf", "application/pdf", sent.document)
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"administrator:administrator").decode()


async def test_pageheader_can_be_left_out_and_the_destination_prefixed(harness: SipwiseHarness) -> None:
    provider = harness.build(send_pageheader=False, destination_prefix="00")
    try:
        receipt = await provider.send(fax(header="Example GmbH"))
        [request] = posts(harness.state)
        assert json.loads(multipart_parts(request)["json"][2]) == {"subscriber_id": 3, "destination": "004930123456"}
        # The NGCP's rewrite rules normalise 0049… to 49…: the journal entry is still recognised as ours.
        await harness.finish(receipt, "busy")
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.code == "FAILED/SIP 486"
    finally:
        await provider.aclose()


async def test_a_location_header_names_the_journal_entry_when_a_version_sends_one(tmp_path: Path) -> None:
    harness = SipwiseHarness(tmp_path, location_header=True)
    provider = harness.build()
    try:
        receipt = await provider.send(fax())
        assert receipt.provider_fax_id is not None
        assert receipt.raw["location"] == f"/api/faxes/{receipt.provider_fax_id}"
        # The entry does not exist yet (404): the fax is queued.
        assert (await provider.status(receipt)).status == FaxStatus.QUEUED
        await harness.finish(receipt, "no_answer")
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.reason is not None
        assert report.reason.startswith("no fax machine answered")
        assert harness.state.requests_to(f"{FAXES}{receipt.provider_fax_id}", "GET")
        assert not [r for r in harness.state.requests_to(FAXES, "GET") if r.path == FAXES]  # no journal scan
    finally:
        await provider.aclose()


async def test_an_older_journal_entry_to_the_same_number_is_not_taken_for_the_new_fax(harness: SipwiseHarness) -> None:
    clock = Clock()
    provider = harness.build(clock=clock, one_fax_per_number=None)  # the default
    try:
        first = await provider.send(fax("01JOBFIRST0000001"))
        await harness.finish(first, "delivered")
        assert (await provider.status(first)).status == FaxStatus.DELIVERED
        clock.advance(minutes=1)  # the mark read by that status poll is no longer fresh: read again
        second = await provider.send(fax("01JOBSECOND000001"))
        assert second.raw["journal_mark"] == harness.state.spool[0].journal_id
        assert (await provider.status(second)).status == FaxStatus.QUEUED  # not the first fax's SUCCESS
        await harness.finish(second, "busy")
        assert (await provider.status(second)).status == FaxStatus.FAILED
        # The first entry after the first fax's mark is the first fax; the later one is the second fax's.
        assert (await provider.status(first)).status == FaxStatus.DELIVERED
        marks = [parse_qs(r.query).get("rows") for r in harness.state.requests_to(FAXES, "GET")]
        assert marks.count(["2"]) == 2  # one mark read per send, none while the last read was fresh
    finally:
        await provider.aclose()


async def test_when_the_mark_cannot_be_read_entries_after_the_send_time_count(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    harness.state.inject("status", path=FAXES, method="GET", status=500, body=b'{"code":500,"message":"x"}')
    receipt = await provider.send(fax())
    assert receipt.raw["journal_mark"] is None  # the send itself succeeded and is not failed for it
    assert len(posts(harness.state)) == 1
    assert (await provider.status(receipt)).status == FaxStatus.QUEUED
    await harness.finish(receipt, "delivered")
    assert (await provider.status(receipt)).status == FaxStatus.DELIVERED


# -- quirk: one-item HAL collections ----------------------------------------------------------------------------


async def test_the_fake_renders_one_item_as_an_object_and_several_as_a_list(harness: SipwiseHarness) -> None:
    state = harness.state
    async with await raw_client(harness.fake) as client:
        empty = (await client.get(FAXES, params={"subscriber_id": 3})).json()
        assert "_embedded" not in empty
        assert empty["total_count"] == 0
        state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        one = (await client.get(FAXES, params={"subscriber_id": 3})).json()
        assert isinstance(one["_embedded"]["ngcp:faxes"], dict)
        assert isinstance(one["_links"]["ngcp:faxes"], dict)
        state.inject_inbound(one_page_pdf(), caller="+31201234568", called="+4930999000")
        two = (await client.get(FAXES, params={"subscriber_id": 3, "rows": 1})).json()
        assert two["total_count"] == 2
        assert isinstance(two["_embedded"]["ngcp:faxes"], dict)
        assert two["_links"]["next"]["href"] == "/api/faxes/?page=2&rows=1&subscriber_id=3"
        both = (await client.get(FAXES, params={"subscriber_id": 3})).json()
        assert isinstance(both["_embedded"]["ngcp:faxes"], list)
        assert len(both["_embedded"]["ngcp:faxes"]) == 2
        assert both["_links"]["self"]["href"] == "/api/faxes/?page=1&rows=10&subscriber_id=3"


def test_hal_items_accepts_an_object_a_list_or_nothing() -> None:
    item = {"id": 1}
    assert hal_items({"_embedded": {"ngcp:faxes": item}}, "faxes") == [item]
    assert hal_items({"_embedded": {"ngcp:faxes": [item, {"id": 2}]}}, "faxes") == [item, {"id": 2}]
    assert hal_items({"total_count": 0, "_links": {}}, "faxes") == []
    assert hal_items({"_embedded": {"faxes": item}}, "faxes") == [item]
    with pytest.raises(MalformedResponse):
        hal_items({"_embedded": {"ngcp:faxes": "x"}}, "faxes")
    with pytest.raises(MalformedResponse):
        hal_items({"_embedded": [item]}, "faxes")


async def test_the_journal_is_paged_and_one_item_pages_are_read(harness: SipwiseHarness) -> None:
    provider = harness.build(journal_rows=1)
    try:
        for n in range(3):
            harness.state.inject_inbound(one_page_pdf(f"Fax {n}"), caller=f"+3120123456{n}", called="+4930999000")
        refs = await provider.poll_incoming()
        assert [ref.caller for ref in refs] == ["+31201234560", "+31201234561", "+31201234562"]
        pages = [parse_qs(r.query)["page"] for r in harness.state.requests_to(FAXES, "GET")]
        assert pages == [["1"], ["2"], ["3"]]
    finally:
        await provider.aclose()


# -- quirk: the multipart shape, enforced by the fake -----------------------------------------------------------


async def test_the_fake_enforces_the_multipart_shape(harness: SipwiseHarness) -> None:
    pdf = one_page_pdf()
    resource = json.dumps({"subscriber_id": 3, "destination": "4930123456"})
    async with await raw_client(harness.fake) as client:
        as_file = await client.post(FAXES, files={"json": ("x.json", resource, "application/json"), "faxfile": pdf})
        assert as_file.status_code == 400
        assert "well-formed 'application/json'" in as_file.json()["message"]
        other_name = await client.post(FAXES, data={"json": resource}, files={"file": ("a.pdf", pdf)})
        assert other_name.status_code == 422
        assert "You need to specify a file to fax" in other_name.json()["message"]
        form = await client.post(FAXES, data={"json": resource})  # urlencoded, no file at all
        assert form.status_code == 415
        assert form.json() == {
            "code": 415,
            "message": "Unsupported media type 'application/x-www-form-urlencoded', "
            "accepting multipart/form-data, application/json only.",
        }
        bad_type = await client.post(FAXES, data={"json": resource}, files={"faxfile": ("a.bin", b"\x00\xff\x00")})
        assert bad_type.status_code == 422
        assert "Supported File Types" in bad_type.json()["message"]
        no_dest = await client.post(FAXES, data={"json": '{"subscriber_id": 3}'}, files={"faxfile": ("a.pdf", pdf)})
        assert no_dest.json()["message"].startswith("Validation failed. field='destination'")
        good = await client.post(FAXES, data={"json": resource}, files={"faxfile": ("a.pdf", pdf)})
        assert (good.status_code, good.content, good.headers.get("location")) == (201, b"", None)
        text = await client.post(FAXES, json={"subscriber_id": 3, "destination": "4930123456", "data": "Hallo"})
        assert text.status_code == 201
    assert harness.state.faxes_accepted == 2
    assert [status for status, _ in harness.state.rejected] == [400, 422, 415, 422, 422]


async def test_the_fake_wants_the_login_and_the_fax_licence(tmp_path: Path) -> None:
    harness = SipwiseHarness(tmp_path)
    async with await raw_client(harness.fake, auth=("administrator", "wrong")) as client:
        response = await client.get(FAXES)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Basic realm="api_admin_http"'
    unlicensed = SipwiseHarness(tmp_path, fax_licence=False)
    async with await raw_client(unlicensed.fake) as client:
        response = await client.get(FAXES)
        assert (response.status_code, response.json()) == (403, {"code": 403, "message": "Invalid license"})


async def test_recordings_have_formats_and_the_unclosed_disposition_quote(harness: SipwiseHarness) -> None:
    row = harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
    async with await raw_client(harness.fake) as client:
        pdf = await client.get(f"/api/faxrecordings/{row.id}", params={"format": "pdf14"})
        assert pdf.content.startswith(b"%PDF")
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"].endswith(".pdf")
        assert pdf.headers["content-disposition"].count('"') == 1
        assert (await client.get(f"/api/faxrecordings/{row.id}", params={"format": "png"})).json() == {
            "code": 422,
            "message": "Unknown fax recording format",
        }
        missing = await client.get("/api/faxrecordings/999")
        assert missing.json()["message"] == "Fax recording 999 was not found."


async def test_the_fake_is_steered_through_its_control_routes(harness: SipwiseHarness) -> None:
    async with await raw_client(harness.fake, auth=None) as client:
        pdf = base64.b64encode(one_page_pdf()).decode()
        injected = await client.post(
            "/_fake/inbound", json={"caller": "+31201234567", "called": "+4930999000", "document_base64": pdf}
        )
        row = harness.state.journal[injected.json()["id"]]
        assert (row.direction, row.caller, row.callee) == ("in", "31201234567", "4930999000")
    provider = harness.build()
    try:
        receipt = await provider.send(fax())
        async with await raw_client(harness.fake, auth=None) as client:
            chosen = await client.post("/_fake/outcome", json={"fax": receipt.client_reference, "outcome": "declined"})
            assert chosen.json()["outcome"] == "declined"
            await client.post("/_fake/advance", json={"seconds": 60})
            [spooled] = (await client.get("/_fake/spool")).json()
            assert spooled["upload_name"] == "01JOBSIPWISE00001.pdf"
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.code == "FAILED/SIP 603"
    finally:
        await provider.aclose()


# -- quirk: journal look-up for find_submission -----------------------------------------------------------------


async def test_find_submission_looks_the_journal_up_after_an_interrupted_send(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    assert Capability.CLIENT_REFERENCE not in provider.capabilities
    harness.state.inject("hang_after", path=FAXES, method="POST")
    sent = fax()
    with pytest.raises(ProviderTemporaryError) as interrupted:
        await provider.send(sent)
    assert interrupted.value.maybe_accepted
    assert harness.faxes_at_fake() == 1
    # The fax server has not finished: no entry, and that proves nothing.
    with pytest.raises(SubmissionUnknown, match="does not prove"):
        await provider.find_submission(sent)
    harness.state.advance(harness.state.processing_seconds + 1)
    receipt = await provider.find_submission(sent)
    assert receipt is not None
    assert receipt.provider_fax_id == str(harness.state.spool[0].journal_id)
    assert receipt.client_reference == sent.job_id
    assert receipt.raw["found_by"] == "journal"
    assert (await provider.status(receipt)).status == FaxStatus.DELIVERED
    assert harness.faxes_at_fake() == 1


async def test_find_submission_never_says_certainly_absent(harness: SipwiseHarness, provider: SipwiseProvider) -> None:
    harness.state.inject("hang", path=FAXES, method="POST")
    sent = fax()
    with pytest.raises(ProviderTemporaryError):
        await provider.send(sent)
    harness.state.advance(3600)
    assert harness.faxes_at_fake() == 0
    with pytest.raises(SubmissionUnknown):
        await provider.find_submission(sent)
    # A process that did not see the send has no journal position to look from.
    other = harness.build()
    try:
        with pytest.raises(SubmissionUnknown, match="did not see the interrupted send"):
            await other.find_submission(sent)
    finally:
        await other.aclose()


async def test_find_submission_ignores_an_older_entry_to_the_same_number(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    earlier = await provider.send(fax("01JOBEARLIER00001"))
    await harness.finish(earlier, "delivered")
    await provider.status(earlier)
    harness.state.inject("reset_after", path=FAXES, method="POST")
    sent = fax("01JOBRESET0000001")
    with pytest.raises(ProviderTemporaryError):
        await provider.send(sent)
    with pytest.raises(SubmissionUnknown):
        await provider.find_submission(sent)
    await harness.finish(SendReceipt(None, sent.job_id, datetime.now(UTC)), "invalid_number")
    receipt = await provider.find_submission(sent)
    assert receipt is not None
    assert receipt.provider_fax_id == str(harness.state.spool[1].journal_id)
    report = await provider.status(receipt)
    assert report.status == FaxStatus.FAILED
    assert report.reason is not None
    assert "not a valid fax number" in report.reason


# -- one fax per number ---------------------------------------------------------------------------------------


async def test_a_second_fax_to_a_number_waits_for_the_first_ones_journal_entry(harness: SipwiseHarness) -> None:
    provider = harness.build(one_fax_per_number=None)  # the default
    try:
        first = await provider.send(fax("01JOBFIRST0000001"))
        with pytest.raises(ProviderTemporaryError) as held:
            await provider.send(fax("01JOBSECOND000001"))
        assert held.value.code == "NUMBER_IN_USE"
        assert not held.value.maybe_accepted
        assert harness.faxes_at_fake() == 1
        await provider.send(fax("01JOBOTHER0000001", to="+4930765432"))  # another number goes at once
        await provider.send(fax("01JOBFIRST0000001"))  # the same job again is not held back by itself
        await harness.finish(first, "delivered")
        assert (await provider.status(first)).status == FaxStatus.DELIVERED
        await provider.send(fax("01JOBSECOND000001"))
        assert harness.faxes_at_fake() == 4
    finally:
        await provider.aclose()


async def test_entries_that_cannot_be_told_apart_are_never_reported_delivered(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    a = await provider.send(fax("01JOBAAAAAAAAAAA1"))
    b = await provider.send(fax("01JOBBBBBBBBBBBB1"))
    harness.state.set_outcome(a.client_reference, "delivered")
    harness.state.set_outcome(b.client_reference, "busy")
    harness.state.advance(harness.state.processing_seconds + 1)
    for receipt in (a, b):
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.code == "AMBIGUOUS"
        assert report.reason is not None
        assert "check the journal" in report.reason


async def test_agreeing_entries_give_their_common_outcome(harness: SipwiseHarness, provider: SipwiseProvider) -> None:
    a = await provider.send(fax("01JOBAAAAAAAAAAA1"))
    b = await provider.send(fax("01JOBBBBBBBBBBBB1"))
    await harness.finish(a, "delivered")
    await harness.finish(b, "delivered")
    assert (await provider.status(a)).status == FaxStatus.DELIVERED
    assert (await provider.status(b)).status == FaxStatus.DELIVERED


# -- time-outs, errors ----------------------------------------------------------------------------------------


async def test_a_fax_with_no_journal_entry_for_too_long_is_reported_failed(harness: SipwiseHarness) -> None:
    clock = Clock()
    provider = harness.build(clock=clock, journal_timeout_hours=2)
    try:
        receipt = await provider.send(fax(to="+4930120009"))  # 0009: the fax server never writes an entry
        harness.state.advance(3600)
        assert (await provider.status(receipt)).status == FaxStatus.QUEUED
        clock.advance(hours=2, minutes=1)
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.code == "NO_JOURNAL_ENTRY"
        assert report.reason is not None
        assert "before sending it again" in report.reason
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"faxserver_feature": False}, ProviderPermanentError, "faxserver feature"),
        ({"fax_licence": False}, ProviderPermanentError, "licence"),
        ({"subscriber_not_found_status": 404, "subscribers": {4: "4930999001"}}, ProviderPermanentError, "subscriber"),
        ({"subscribers": {4: "4930999001"}}, ProviderPermanentError, "check subscriber_id"),
    ],
)
async def test_send_refusals_are_permanent_and_say_what_to_fix(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    harness = SipwiseHarness(tmp_path, **options)
    provider = harness.build()
    try:
        with pytest.raises(error) as refused:
            await provider.send(fax())
        assert words in str(refused.value).lower()
        assert isinstance(refused.value, ProviderPermanentError)
        assert not refused.value.maybe_accepted
        assert not isinstance(refused.value, AuthenticationFailed)
    finally:
        await provider.aclose()


async def test_fax_deactivated_by_a_settings_patch_makes_sends_fail(harness: SipwiseHarness) -> None:
    async with await raw_client(harness.fake) as client:
        patched = await client.patch(
            "/api/faxserversettings/3",
            content=json.dumps([{"op": "replace", "path": "/active", "value": 0}]),
            headers={"Content-Type": "application/json-patch+json", "Prefer": "return=representation"},
        )
        assert patched.status_code == 200
        assert patched.json()["active"] is False
    provider = harness.build()
    try:
        with pytest.raises(ProviderPermanentError, match=r"fax is not active for subscriber 3.*faxserversettings/3"):
            await provider.send(fax())
    finally:
        await provider.aclose()


async def test_a_wrong_password_is_an_authentication_failure_and_a_new_one_is_read(harness: SipwiseHarness) -> None:
    provider = harness.build()
    secret = harness.tmp_path / "ngcp-password"
    try:
        secret.write_text("not-the-password\n")
        with pytest.raises(AuthenticationFailed, match="Authorization required"):
            await provider.send(fax())
        secret.write_text("administrator\n")
        await provider.send(fax())
        secret.unlink()
        with pytest.raises(ProviderTemporaryError, match="cannot read the NGCP password") as missing:
            await provider.send(fax("01JOBNOPASSWORD01"))
        assert not missing.value.maybe_accepted
        assert harness.faxes_at_fake() == 1
    finally:
        await provider.aclose()


async def test_a_destination_the_ngcp_refuses_is_an_invalid_number(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    harness.state.inject(
        "status",
        path=FAXES,
        method="POST",
        status=422,
        body=b"{\"code\":422,\"message\":\"Validation failed. field='destination', input='x', errors='bad'\"}\n",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(InvalidNumber, match="refused the destination"):
        await provider.send(fax())
    with pytest.raises(InvalidNumber):
        await provider.send(fax(to="030123456"))


async def test_a_429_on_the_journal_says_how_long_to_wait(harness: SipwiseHarness, provider: SipwiseProvider) -> None:
    receipt = await provider.send(fax())
    harness.state.inject("status", path=FAXES, method="GET", status=429, headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as limited:
        await provider.status(receipt)
    assert limited.value.retry_after == 30


# -- received faxes ----------------------------------------------------------------------------------------------


async def test_received_faxes_keep_custody_in_a_ledger_across_restarts(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    harness.state.inject_inbound(one_page_pdf("First"), caller="+31201234567", called="+4930999000")
    harness.state.inject_inbound(one_page_pdf("Second"), caller="0301234567", called="100")
    first, second = await provider.poll_incoming()
    assert (second.caller, second.called) == ("0301234567", "100")  # national and extension: as the NGCP wrote them
    assert first.received_at.tzinfo is not None
    assert abs(first.received_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert first.token == f"/api/faxrecordings/{first.provider_fax_id}"
    assert first.pages == 1
    await provider.acknowledge(first)
    assert [ref.provider_fax_id for ref in await provider.poll_incoming()] == [second.provider_fax_id]
    restarted = harness.build()
    try:
        assert [ref.provider_fax_id for ref in await restarted.poll_incoming()] == [second.provider_fax_id]
    finally:
        await restarted.aclose()
    ledger = json.loads((harness.tmp_path / "sipwise-sipwise" / "acknowledged.json").read_text())
    assert list(ledger["acknowledged"]) == [first.provider_fax_id]
    assert len(harness.state.journal) == 2  # the NGCP's journal is left alone


async def test_acknowledge_can_delete_the_journal_entry(harness: SipwiseHarness) -> None:
    provider = harness.build(inbound_ack="delete")
    try:
        harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        [ref] = await provider.poll_incoming()
        await provider.acknowledge(ref)
        assert harness.state.journal == {}
        assert await provider.poll_incoming() == []
        await provider.acknowledge(ref)  # already gone: fine
    finally:
        await provider.aclose()
    old = SipwiseHarness(harness.tmp_path / "old", allow_delete=False)
    provider = old.build(inbound_ack="delete")
    try:
        old.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        [ref] = await provider.poll_incoming()
        with pytest.raises(ProviderPermanentError, match='inbound_ack = "remember"'):
            await provider.acknowledge(ref)
    finally:
        await provider.aclose()


async def test_outgoing_old_and_failed_entries_are_not_listed_as_received(harness: SipwiseHarness) -> None:
    clock = Clock()
    provider = harness.build(clock=clock, inbound_lookback_hours=1)
    try:
        receipt = await provider.send(fax())
        await harness.finish(receipt, "delivered")
        harness.state.inject_inbound(b"", caller="+31201234567", called="+4930999000", status="FAILED")
        kept = harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        assert [ref.provider_fax_id for ref in await provider.poll_incoming()] == [str(kept.id)]
        clock.advance(hours=2)
        assert await provider.poll_incoming() == []
    finally:
        await provider.aclose()
    switched_off = harness.build(inbound=False)
    try:
        assert await switched_off.poll_incoming() == []
    finally:
        await switched_off.aclose()


async def test_a_recording_that_is_not_a_document_is_malformed(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    harness.state.inject_inbound(b"just some text\n", caller="+31201234567", called="+4930999000")
    [ref] = await provider.poll_incoming()
    with pytest.raises(MalformedResponse, match="not as PDF or TIFF"):
        await provider.download(ref)
    request = harness.state.requests_to("/api/faxrecordings/")[-1]
    assert parse_qs(request.query) == {"format": ["pdf14"]}


async def test_older_versions_numbers_as_strings_peer_fields_and_local_times(tmp_path: Path) -> None:
    harness = SipwiseHarness(
        tmp_path, numbers_as_strings=True, legacy_peer_fields=True, honour_tz=False, owner_tz="Europe/Vienna"
    )
    provider = harness.build(journal_timezone="Europe/Vienna")
    try:
        receipt = await provider.send(fax())
        await harness.finish(receipt, "delivered")
        report = await provider.status(receipt)
        assert report.status == FaxStatus.DELIVERED
        assert report.raw["pages"] == "1"
        assert "callee" not in report.raw
        assert report.pages_sent == 1
        harness.state.inject_inbound(one_page_pdf(), caller="+31201234567", called="+4930999000")
        [ref] = await provider.poll_incoming()
        assert ref.caller == "+31201234567"
        assert ref.called is None
        # Written in Vienna's local time without a zone; read as such, it is now in UTC.
        assert abs(ref.received_at - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        await provider.aclose()


# -- settings import -------------------------------------------------------------------------------------------


async def test_import_settings_reports_whether_secrets_are_set_never_their_values(
    harness: SipwiseHarness, provider: SipwiseProvider
) -> None:
    harness.state.subscribers[3].mailtofax["acl"] = [
        {"from_email": "*@example.com", "received_from": "192.0.2.25", "destination": None, "use_regex": 0}
    ]
    harness.state.subscribers[3].faxserver["password"] = "faxpassword"
    summary = await provider.import_settings()
    assert summary.subscriber_id == 3
    assert summary.fax_active
    assert summary.t38
    assert summary.ecm
    assert summary.header_name == "Example GmbH"
    assert summary.has_fax_password
    assert summary.has_secret_key
    assert summary.secret_key_renew == "daily"
    assert summary.secret_renew_notify == ("user1@company.com",)
    assert summary.destinations[0].filetype == "PDF14"
    assert summary.destinations[0].incoming
    [rule] = summary.acl
    assert (rule.from_email, rule.received_from, rule.destination, rule.use_regex) == (
        "*@example.com",
        "192.0.2.25",
        None,
        False,
    )
    assert "secretkeypassword" not in repr(summary)
    assert "faxpassword" not in repr(summary)
    async with await raw_client(harness.fake) as client:
        removed = await client.patch(
            "/api/mailtofaxsettings/3",
            content=json.dumps([{"op": "replace", "path": "/secret_key", "value": ""}]),
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert (removed.status_code, removed.headers["preference-applied"]) == (204, "return=minimal")
    assert not (await provider.import_settings(3)).has_secret_key
    with pytest.raises(ProviderPermanentError, match="subscriber 9"):
        await provider.import_settings(9)


# -- mappings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected", "plain", "code"),
    [
        ("SUCCESS", "Normal Clearing / SIP 200 OK [1/3]", FaxStatus.DELIVERED, None, "SUCCESS"),
        ("success", "", FaxStatus.DELIVERED, None, "success"),
        ("FAILED", "User Busy / SIP 486 Busy Here [3/3]", FaxStatus.FAILED, "the line was busy", "FAILED/SIP 486"),
        ("FAILED", "No Answer / SIP 480 Temporarily Unavailable", FaxStatus.FAILED, "no fax machine answered", None),
        ("FAILED", "SIP 408 Request Timeout", FaxStatus.FAILED, "no fax machine answered", "FAILED/SIP 408"),
        ("FAILED", "Unallocated Number / SIP 404 Not Found", FaxStatus.FAILED, "the number is not a valid", None),
        ("FAILED", "SIP 484 Address Incomplete", FaxStatus.FAILED, "the number is not a valid", None),
        ("FAILED", "Call Rejected / SIP 603 Decline", FaxStatus.FAILED, "the receiving side refused", None),
        ("FAILED", "SIP 488 Not Acceptable Here", FaxStatus.FAILED, "does not take fax calls", None),
        ("FAILED", "SIP 402 Payment Required", FaxStatus.FAILED, "lack of credit", None),
        ("FAILED", "Normal Clearing / SIP 200 OK [3/3]", FaxStatus.FAILED, "answered, but the fax", "FAILED/SIP 200"),
        ("FAILED", "SIP 503 Service Unavailable", FaxStatus.FAILED, "telephone network", "FAILED/SIP 503"),
        ("BUSY", "", FaxStatus.FAILED, "the line was busy", "BUSY"),
        ("ERROR", "User busy", FaxStatus.FAILED, "the line was busy", "ERROR"),
        ("FAILED", "No user responding", FaxStatus.FAILED, "no fax machine answered", "FAILED"),
        ("ERROR", "T.30 training failure", FaxStatus.FAILED, "the fax server reported ERROR", "ERROR"),
        ("", "", FaxStatus.SENDING, None, None),
        ("PENDING", "", FaxStatus.SENDING, None, "PENDING"),
        ("retrying", "[1/3]", FaxStatus.SENDING, None, "retrying"),
        ("CANCELED", "", FaxStatus.CANCELLED, "cancelled", "CANCELED"),
    ],
)
def test_journal_statuses_are_mapped(
    status: str, reason: str, expected: FaxStatus, plain: str | None, code: str | None
) -> None:
    report = map_journal_entry(entry(status, reason, pages="2"))
    assert report.status == expected
    if plain is None:
        assert report.reason is None
    else:
        assert report.reason is not None
        assert plain in report.reason
        if reason:
            assert reason.strip() in report.reason  # the NGCP's own words stay visible
    if code is not None:
        assert report.code == code
    assert report.raw["status"] == status
    if expected == FaxStatus.DELIVERED:
        assert report.pages_sent == 2


def test_the_top_of_the_journal_is_known_only_when_the_page_proves_it() -> None:
    assert _top_of_journal([9, 4], 7) == 9
    assert _top_of_journal([], 0) == 0
    assert _top_of_journal([5], 1) == 5  # the whole journal
    assert _top_of_journal([5], 7) is None  # one row of many: newest or oldest?
    assert _top_of_journal([1, 2], 7) is None  # the NGCP ignored order_by_direction=desc


def test_describe_failure_prefers_the_sip_code() -> None:
    assert describe_failure("FAILED", "Normal Clearing / SIP 486 Busy Here") == (
        "the line was busy (Normal Clearing / SIP 486 Busy Here)",
        486,
    )
    assert describe_failure("FAILED", "") == ("the fax server reported FAILED", None)


def test_journal_entries_are_read_leniently() -> None:
    parsed = parse_journal_entry(
        {
            "id": "12",
            "time": "2016-07-30 09:49:59",
            "subscriber_id": "1",
            "direction": "OUT",
            "peer_number": "431110002",
            "pages": "1",
            "duration": "0",
            "status": "SUCCESS",
            "_links": {"ngcp:faxrecordings": {"href": "https://elsewhere.example/x"}},
        },
        ZoneInfo("Europe/Vienna"),
    )
    assert parsed is not None
    assert (parsed.id, parsed.subscriber_id, parsed.pages, parsed.direction) == (12, 1, 1, "out")
    assert (parsed.caller, parsed.callee) == ("", "431110002")
    assert parsed.time == datetime(2016, 7, 30, 7, 49, 59, tzinfo=UTC)
    assert parsed.recording is None  # our credentials never follow a link off the NGCP
    epoch = parse_journal_entry({"id": 1, "time": "1469872199"}, UTCZ)
    assert epoch is not None
    assert epoch.time == datetime(2016, 7, 30, 9, 49, 59, tzinfo=UTC)
    fraction = parse_journal_entry({"id": 1, "time": "2016-07-30T09:49:59.250+02:00"}, UTCZ)
    assert fraction is not None
    assert fraction.time == datetime(2016, 7, 30, 7, 49, 59, 250000, tzinfo=UTC)
    assert parse_journal_entry({"time": "2016-07-30 09:49:59"}, UTCZ) is None
    unreadable = parse_journal_entry({"id": 3, "time": "yesterday"}, UTCZ)
    assert unreadable is not None
    assert unreadable.time is None


@pytest.mark.parametrize(
    ("journal", "expected"),
    [
        ("4930123456", True),
        ("+4930123456", True),
        ("004930123456", True),
        ("030123456", True),
        ("+49 30 123456", True),
        ("4930123457", False),
        ("123456", False),  # too short to tell
        ("", False),
    ],
)
def test_journal_numbers_are_compared_on_digits(journal: str, expected: bool) -> None:
    assert _same_number("4930123456", journal) is expected


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("431110001", "+431110001"),
        ("+431110001", "+431110001"),
        ("00431110001", "+431110001"),
        ("01110001", "01110001"),
        ("100", "100"),
        ("anonymous", None),
        ("", None),
        ("user@example.com", "user@example.com"),
    ],
)
def test_journal_numbers_become_e164_where_possible(number: str, e164: str | None) -> None:
    assert _e164(number) == e164


def test_the_fake_number_rules() -> None:
    assert [outcome_for(n) for n in ("+4930120001", "+4930120002", "+4930120003", "+4930120009", "+4930123456")] == [
        "busy",
        "no_answer",
        "invalid_number",
        "lost",
        "delivered",
    ]
    assert OUTCOMES["delivered"][0] == "SUCCESS"


# -- settings and the example configuration ---------------------------------------------------------------------


def test_settings_need_exactly_one_password_source(tmp_path: Path) -> None:
    base = {"type": "sipwise", "base_url": "https://ngcp.test:1443/api/", "username": "u", "subscriber_id": 3}
    with pytest.raises(ConfigError, match="exactly one of password_file or password"):
        build_provider("ngcp", base, tmp_path)
    with pytest.raises(ConfigError, match="exactly one"):
        build_provider("ngcp", {**base, "password": "p", "password_file": "f"}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.ngcp\.journal_timezone"):
        build_provider("ngcp", {**base, "password": "p", "journal_timezone": "Mars/Base"}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.ngcp\.destination_prefix"):
        build_provider("ngcp", {**base, "password": "p", "destination_prefix": "x"}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.ngcp\.ca_file: cannot load"):
        build_provider("ngcp", {**base, "password": "p", "ca_file": "missing.pem"}, tmp_path)
    settings = SipwiseSettings.model_validate({**base, "password": "p"})
    assert settings.base_url == "https://ngcp.test:1443"  # "/api/" would be doubled


def test_the_example_names_every_setting_and_validates() -> None:
    with EXAMPLE.open("rb") as handle:
        section = tomllib.load(handle)["providers"]["sipwise"]
    SipwiseSettings.model_validate(section)
    lines = EXAMPLE.read_text().splitlines()
    written = {line.split("=")[0].strip("# ") for line in lines if "=" in line}
    written |= {line.strip("[]").rsplit(".", 1)[-1] for line in lines if line.startswith("[providers.sipwise.")}
    # The password is never written into the file: it comes from password_file or the environment.
    assert set(SipwiseSettings.model_fields) - written - {"type"} == {"password"}
    assert "FAXBRIDGE_PROVIDERS__SIPWISE__PASSWORD" in EXAMPLE.read_text()


async def test_the_password_can_come_from_the_environment(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, harness: SipwiseHarness
) -> None:
    monkeypatch.setenv("FAXBRIDGE_PROVIDERS__SIPWISE__PASSWORD", "administrator")
    section = harness.section(password_file=None)
    section.pop("timeouts")
    settings = make_settings(providers={"sipwise": section})
    loaded = settings.providers["sipwise"]
    assert loaded["password"] == "administrator"
    assert loaded["subscriber_id"] == 3
    provider = build_provider("sipwise", loaded, harness.tmp_path, extra={"transport": harness.fake.transport()})
    try:
        await provider.send(fax())
        assert harness.faxes_at_fake() == 1
    finally:
        await provider.aclose()
