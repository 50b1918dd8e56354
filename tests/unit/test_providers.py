"""The provider registry and the contract's defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from bridge.errors import CapabilityMissing, ConfigError
from bridge.models import OutboundFax, SendReceipt
from bridge.providers import available, build_provider, provider_class
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings
from bridge.providers.local import LocalProvider

FAX = OutboundFax(job_id="j1", to="+4930123456", document=b"%PDF-1.4\n", pages=1, sender="a@b.c", account="demo")


class SendOnly(FaxProvider):
    type_name: ClassVar[str] = "send-only"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings

    async def send(self, fax: OutboundFax) -> SendReceipt:
        return SendReceipt(provider_fax_id=None, client_reference=fax.job_id, accepted_at=datetime.now(UTC))


async def test_asking_for_a_missing_capability_is_a_clear_error(tmp_path: Path) -> None:
    provider = SendOnly(ProviderContext(name="p", state_dir=tmp_path), ProviderSettings(type="send-only"))
    receipt = await provider.send(FAX)
    with pytest.raises(CapabilityMissing, match="'p' does not report status"):
        await provider.status(receipt)
    with pytest.raises(CapabilityMissing, match="cannot look up submissions"):
        await provider.find_submission(FAX)
    with pytest.raises(CapabilityMissing, match="no inbound side"):
        await provider.poll_incoming()


def test_local_is_built_in() -> None:
    assert "local" in available()
    assert provider_class("local") is LocalProvider


def test_unknown_type_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown provider type 'telefax'; known types: ") as caught:
        build_provider("main", {"type": "telefax"}, tmp_path)
    known = str(caught.value).rsplit(": ", 1)[1].split(", ")
    assert "local" in known
    assert known == sorted(known)
    # Built-in adapters are found by their module, never the package's private helpers or the contract.
    assert not {"base", "_http"} & set(known)
    with pytest.raises(ConfigError, match=r"providers\.main\.type: missing"):
        build_provider("main", {}, tmp_path)


def test_a_bad_section_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.main\.fail\.0\.pattern: Value error, not a regular"):
        build_provider("main", {"type": "local", "fail": [{"pattern": "(", "reason": "x"}]}, tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.main\.outbx"):
        build_provider("main", {"type": "local", "outbx": "x"}, tmp_path)
