"""The provider contract: how the worker talks to a fax service.

An adapter turns our ``OutboundFax`` into the service's request and its answers into ``SendReceipt`` and
``StatusReport``. It raises the errors in ``bridge.errors``: ``ProviderTemporaryError`` when trying again later
may help, ``ProviderPermanentError`` when it will not, and sets ``maybe_accepted`` when a failed send may still
have reached the service. Only the adapter knows that; when in doubt it says "maybe".
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridge.errors import CapabilityMissing
from bridge.models import InboundRef, OutboundFax, SendReceipt, StatusReport, StatusUpdate


class Capability(enum.StrEnum):
    """What a provider can do beyond sending."""

    STATUS_POLL = "status_poll"
    """``status`` reports the outcome of a sent fax."""
    CLIENT_REFERENCE = "client_reference"
    """``find_submission`` can tell whether an interrupted send reached the provider."""
    INBOUND_POLL = "inbound_poll"
    """``poll_incoming`` lists faxes received for us."""
    INBOUND_DOWNLOAD = "inbound_download"
    """``download`` fetches an incoming fax as PDF (or TIFF) bytes."""
    INBOUND_ACK = "inbound_ack"
    """``acknowledge`` tells the provider an incoming fax is safely stored (custody passes to us)."""
    WEBHOOK = "webhook"
    """``parse_webhook`` reads the provider's pushed status or inbound notifications."""


class ProviderSettings(BaseModel):
    """Base of each provider's ``[providers.NAME]`` section; ``type`` names the adapter."""

    model_config = ConfigDict(extra="forbid")

    type: str


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What a provider gets from the application when it is built."""

    name: str
    """The section name in ``[providers.NAME]``; several sections may use one adapter type."""
    state_dir: Path
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Stand-ins for the outside world, for tests and fakes: ``"transport"`` (an ``httpx`` transport that
    replaces the network, see ``_http.make_client``) and ``"clock"`` (a callable returning seconds, for token
    lifetimes). Empty in production."""

    def path(self, value: Path) -> Path:
        """Resolve a configured path against the state directory."""
        return value if value.is_absolute() else self.state_dir / value


class FaxProvider(ABC):
    """One fax service. Instances are built once at start-up and closed at shutdown."""

    type_name: ClassVar[str]
    """The ``type`` value that selects this adapter."""
    capabilities: ClassVar[frozenset[Capability]]
    settings_model: ClassVar[type[ProviderSettings]]

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        self.context = context
        self.settings = settings

    @property
    def name(self) -> str:
        """The configured provider name."""
        return self.context.name

    @property
    def display_name(self) -> str:
        """How notices name the service ("VoipNow"): the class's ``service_name``, else the adapter type."""
        return str(getattr(type(self), "service_name", "") or self.type_name)

    @abstractmethod
    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Hand the fax over; return once the provider has accepted it."""

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """Return the provider's word on a sent fax. Only called with ``STATUS_POLL``."""
        raise CapabilityMissing(f"provider {self.name!r} does not report status", provider=self.name)

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """After an interrupted send: the receipt if the provider has the fax, ``None`` if it certainly has not.

        Raises ``SubmissionUnknown`` when the provider cannot tell. Only called with ``CLIENT_REFERENCE``.
        """
        raise CapabilityMissing(f"provider {self.name!r} cannot look up submissions", provider=self.name)

    async def poll_incoming(self) -> list[InboundRef]:
        """List faxes received for us. Only called with ``INBOUND_POLL``."""
        raise CapabilityMissing(f"provider {self.name!r} has no inbound side", provider=self.name)

    async def download(self, ref: InboundRef) -> bytes:
        """The incoming fax's document. Only called with ``INBOUND_DOWNLOAD``."""
        raise CapabilityMissing(f"provider {self.name!r} cannot download incoming faxes", provider=self.name)

    async def acknowledge(self, ref: InboundRef) -> None:
        """Tell the provider the incoming fax is stored; it may delete it. Only called with ``INBOUND_ACK``."""
        raise CapabilityMissing(f"provider {self.name!r} has no custody hand-over", provider=self.name)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[StatusUpdate | InboundRef]:
        """Read one webhook request the provider sent. Only called with ``WEBHOOK``.

        Raises ``ProviderPermanentError`` for a request that is not a valid notification of this provider.
        """
        raise CapabilityMissing(f"provider {self.name!r} sends no webhooks", provider=self.name)

    async def aclose(self) -> None:  # noqa: B027 - most adapters hold nothing to close
        """Release connections and files."""
