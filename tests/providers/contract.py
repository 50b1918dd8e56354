"""One contract suite for every provider adapter, run against that provider's fake.

A provider's test module defines a ``Harness`` subclass (how to configure the adapter for its fake and how
to make the fake report an outcome) and a test class deriving from ``ContractSuite`` with ``harness_class``
set. Every test asserts what the worker relies on: a send and its final status; each kind of failure mapped
into the one vocabulary with a plain reason and the provider's code; ``429`` with its wait; ``5xx`` and
timeouts after the request was written marked "maybe accepted"; interrupted sends reconciled so that the fake
ends with exactly one fax; the inbound list, download and acknowledgement where the provider has them.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from fpdf import FPDF

from bridge.errors import (
    CapabilityMissing,
    ProviderPermanentError,
    ProviderTemporaryError,
    ProviderUnavailable,
    RateLimited,
    SubmissionUnknown,
)
from bridge.fakes import create_app
from bridge.fakes.base import FakeApp
from bridge.models import FaxStatus, OutboundFax, SendReceipt
from bridge.providers import build_provider
from bridge.providers.base import Capability, FaxProvider

Outcome = Literal["delivered", "busy", "no_answer", "invalid_number"]
# Every fake reads an outcome from the number's last digits (see bridge/fakes/*).
OUTCOME_NUMBERS: dict[str, str] = {
    "delivered": "+4930123456",
    "busy": "+4930120001",
    "no_answer": "+4930120002",
    "invalid_number": "+4930120003",
}


def one_page_pdf(text: str = "Contract fax page") -> bytes:
    doc = FPDF()
    doc.set_font("helvetica", size=16)
    doc.add_page()
    doc.text(20, 30, text)
    return bytes(doc.output())


def outbound(job_id: str = "01JOBCONTRACT00001", to: str = "+4930123456") -> OutboundFax:
    return OutboundFax(
        job_id=job_id,
        to=to,
        document=one_page_pdf(),
        pages=1,
        sender="jane@example.com",
        account="demo",
        subject="contract",
        caller_id="+4930999000",
        header="Example GmbH",
    )


class Harness(ABC):
    """One adapter type and its fake."""

    name: ClassVar[str]
    """The adapter's ``type`` (and the fake's name)."""
    send_path: ClassVar[str]
    """The path prefix of the request that hands a fax over (faults are injected there)."""
    send_method: ClassVar[str] = "POST"
    """Its method, so that reads of the same path (a journal) are not hit by the fault."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.fake: FakeApp = create_app(self.name, **self.fake_options())

    def fake_options(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def section(self) -> dict[str, Any]:
        """The ``[providers.NAME]`` section that points the adapter at the fake (any base URL; the transport
        is replaced). Timeouts should be short (``read`` about 0.5 s) so that hang faults end quickly."""

    def provider(self) -> FaxProvider:
        return build_provider(self.name, self.section(), self.tmp_path, extra={"transport": self.fake.transport()})

    @abstractmethod
    async def finish(self, receipt: SendReceipt, outcome: Outcome) -> None:
        """Make the fake's fax end with ``outcome`` (and time pass as needed)."""

    @abstractmethod
    def faxes_at_fake(self) -> int:
        """How many faxes the fake has accepted."""

    async def inject_inbound(self, pdf: bytes, caller: str, called: str) -> None:
        raise NotImplementedError


class ContractSuite:
    """Derive, set ``harness_class``; pytest collects these tests for the provider."""

    harness_class: ClassVar[type[Harness]]

    @pytest.fixture
    async def harness(self, tmp_path: Path) -> Harness:
        return self.harness_class(tmp_path)

    @pytest.fixture
    async def provider(self, harness: Harness) -> Any:
        provider = harness.provider()
        yield provider
        await provider.aclose()

    async def test_send_then_final_status(self, harness: Harness, provider: FaxProvider) -> None:
        receipt = await provider.send(outbound())
        assert receipt.client_reference == "01JOBCONTRACT00001"
        assert harness.faxes_at_fake() == 1
        if Capability.STATUS_POLL not in provider.capabilities:
            # No status call: the worker says "handed over", and must never be able to ask by mistake.
            with pytest.raises(CapabilityMissing):
                await provider.status(receipt)
            return
        report = await provider.status(receipt)
        assert report.status in (FaxStatus.QUEUED, FaxStatus.SENDING)
        await harness.finish(receipt, "delivered")
        report = await provider.status(receipt)
        assert report.status == FaxStatus.DELIVERED
        assert report.raw

    @pytest.mark.parametrize(
        ("outcome", "words"),
        [("busy", "busy"), ("no_answer", "answer"), ("invalid_number", "number")],
    )
    async def test_failures_are_mapped_with_a_plain_reason(
        self, harness: Harness, provider: FaxProvider, outcome: Outcome, words: str
    ) -> None:
        if Capability.STATUS_POLL not in provider.capabilities:
            # Without a status call, a failure the service learns later can only be refused at once, if at all:
            # the fake's numbers for these outcomes must either be taken or refused with a permanent error.
            refusal: ProviderPermanentError | None = None
            try:
                await provider.send(outbound(to=OUTCOME_NUMBERS[outcome]))
            except ProviderPermanentError as refused:
                refusal = refused
            assert refusal is None or str(refusal)
            return
        receipt = await provider.send(outbound())
        await harness.finish(receipt, outcome)
        report = await provider.status(receipt)
        assert report.status == FaxStatus.FAILED
        assert report.reason is not None
        assert words in report.reason.lower()
        assert report.code
        assert report.raw

    async def test_429_says_how_long_to_wait(self, harness: Harness, provider: FaxProvider) -> None:
        harness.fake.state.inject(
            "status", path=harness.send_path, method=harness.send_method, status=429, headers={"Retry-After": "7"}
        )
        with pytest.raises(RateLimited) as limited:
            await provider.send(outbound())
        assert limited.value.retry_after == 7
        assert not limited.value.maybe_accepted
        assert harness.faxes_at_fake() == 0
        await provider.send(outbound())
        assert harness.faxes_at_fake() == 1

    async def test_a_5xx_answer_to_a_send_may_have_been_accepted(self, harness: Harness, provider: FaxProvider) -> None:
        harness.fake.state.inject(
            "status", path=harness.send_path, method=harness.send_method, status=502, body=b"<html>Bad Gateway</html>"
        )
        with pytest.raises(ProviderTemporaryError) as failed:
            await provider.send(outbound())
        assert failed.value.maybe_accepted

    @pytest.mark.parametrize("fault", ["hang_after", "reset_after"])
    async def test_an_interrupted_send_that_was_accepted_is_found_not_resent(
        self, harness: Harness, provider: FaxProvider, fault: Literal["hang_after", "reset_after"]
    ) -> None:
        harness.fake.state.inject(fault, path=harness.send_path, method=harness.send_method)
        fax = outbound()
        with pytest.raises(ProviderUnavailable) as interrupted:
            await provider.send(fax)
        assert interrupted.value.maybe_accepted
        assert harness.faxes_at_fake() == 1
        if Capability.CLIENT_REFERENCE not in provider.capabilities:
            # It may find the fax (a journal, a list) but may never claim it is absent: the worker would resend.
            try:
                found = await provider.find_submission(fax)
            except (SubmissionUnknown, CapabilityMissing):
                found = None
            else:
                assert found is not None
            assert harness.faxes_at_fake() == 1
            return
        receipt = await provider.find_submission(fax)
        assert receipt is not None
        assert harness.faxes_at_fake() == 1

    async def test_an_interrupted_send_that_never_arrived_is_known_to_be_absent(
        self, harness: Harness, provider: FaxProvider
    ) -> None:
        harness.fake.state.inject("hang", path=harness.send_path, method=harness.send_method)
        fax = outbound()
        with pytest.raises(ProviderUnavailable) as interrupted:
            await provider.send(fax)
        assert interrupted.value.maybe_accepted  # a timeout cannot tell
        assert harness.faxes_at_fake() == 0
        if Capability.CLIENT_REFERENCE not in provider.capabilities:
            with pytest.raises((SubmissionUnknown, CapabilityMissing)):
                await provider.find_submission(fax)
            return
        assert await provider.find_submission(fax) is None
        await provider.send(fax)
        assert harness.faxes_at_fake() == 1

    async def test_inbound_list_download_and_acknowledge(self, harness: Harness, provider: FaxProvider) -> None:
        if Capability.INBOUND_POLL not in provider.capabilities:
            with pytest.raises(CapabilityMissing):
                await provider.poll_incoming()
            return
        pdf = one_page_pdf("Incoming fax")
        await harness.inject_inbound(pdf, caller="+31201234567", called="+4930999000")
        [ref] = await provider.poll_incoming()
        assert ref.caller == "+31201234567"
        assert ref.called == "+4930999000"
        assert isinstance(ref.received_at, datetime)
        assert ref.received_at.tzinfo is not None
        if Capability.INBOUND_DOWNLOAD in provider.capabilities:
            document = await provider.download(ref)
            assert document.startswith((b"%PDF", b"II*\x00", b"MM\x00*"))
            if document.startswith(b"%PDF"):
                from pypdf import PdfReader

                assert "Incoming fax" in PdfReader(io.BytesIO(document)).pages[0].extract_text()
        if Capability.INBOUND_ACK in provider.capabilities:
            await provider.acknowledge(ref)
            assert await provider.poll_incoming() == []


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
