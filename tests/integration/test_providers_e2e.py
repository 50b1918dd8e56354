"""SMTP → bridge → each real provider adapter → its fake on loopback, and the notice back.

The provider section comes from the provider's contract harness (``tests/providers/test_<name>.py``), with
its service address pointed at the fake, which runs under uvicorn on 127.0.0.1 as a person trying a
configuration would run it (``faxbridge fake-provider NAME``). Real TCP, real HTTP, the real worker.
"""

from __future__ import annotations

import asyncio
import email
import importlib
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.fakes import available
from bridge.fakes.base import start
from bridge.models import JobState, SendReceipt
from bridge.providers import provider_class
from bridge.providers.base import Capability
from tests.conftest import maildir_bytes, running_bridge
from tests.integration.smtp_client import atransact, make_message
from tests.providers.contract import Harness, one_page_pdf

pytestmark = pytest.mark.timeout(120)
FAX = "+4930123456@fax.localhost"


def harness_class(name: str) -> type[Harness]:
    module = importlib.import_module(f"tests.providers.test_{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Harness) and value is not Harness
    ]
    assert len(found) == 1, f"tests/providers/test_{name}.py should define one Harness"
    return found[0]


def pointed_at(section: dict[str, Any], url: str) -> dict[str, Any]:
    """The section with every service address moved to the fake's host and port, paths kept."""

    def swap(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            return url + parts.path + (f"?{parts.query}" if parts.query else "")
        if isinstance(value, list):
            return [swap(item) for item in value]
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        return value

    section = {key: swap(value) for key, value in section.items()}
    if section.get("type") == "retarus":
        # The Retarus fake tells its data centres apart by a path prefix on loopback (see its docstring).
        section["send_url"] = f"{url}/ha/rest/v1"
        section["report_urls"] = [f"{url}/de1/rest/v1", f"{url}/de2/rest/v1"]
        if "inbound" in section:
            section["inbound"] = {
                **section["inbound"],
                "urls": [f"{url}/de1/faxin/rest/v1", f"{url}/de2/faxin/rest/v1"],
            }
    return section


@pytest.mark.parametrize("name", available())
async def test_a_mail_is_faxed_through_the_provider(name: str, make_settings: Any, tmp_path: Path) -> None:
    # The harness writes its secret files where the bridge resolves relative paths: the state directory.
    state_dir = tmp_path / "var"
    state_dir.mkdir()
    harness = harness_class(name)(state_dir)
    url, stop = await start(harness.fake)
    try:
        section = pointed_at(harness.section(), url)
        settings = make_settings(
            worker={"status_poll_seconds": 0.2, "poll_seconds": 0.2},
            providers={name: section},
            accounts=[{"name": "demo", "provider": name, "country": "DE", "allowed_senders": ["demo@example.com"]}],
        )
        async with running_bridge(settings) as bridge:
            message = make_message(attachments=[("letter.pdf", one_page_pdf("Letter via " + name), "application/pdf")])
            result = await atransact(bridge.address[1], "demo@example.com", [FAX], message.as_bytes())
            assert result.data_code == 250, result.data_text
            job_id = result.data_text.rsplit(" as ", 1)[1]
            capabilities = provider_class(name).capabilities
            await asyncio.wait_for(bridge.worker.wait_for_count("submitted", 1), 30)
            assert harness.faxes_at_fake() == 1
            if Capability.STATUS_POLL in capabilities:
                job = await bridge.store.get_job(job_id)
                receipt = SendReceipt(
                    provider_fax_id=job.provider_fax_id,
                    client_reference=job_id,
                    accepted_at=job.submitted_at or datetime.now(UTC),
                    raw=job.detail.get("receipt", {}),
                )
                await harness.finish(receipt, "delivered")
            await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 1), 30)
            job = await bridge.store.get_job(job_id)
            expected = JobState.DELIVERED if Capability.STATUS_POLL in capabilities else JobState.SUBMITTED
            assert job.state == expected
            [notice] = [email.message_from_bytes(raw, policy=default) for raw in maildir_bytes(settings)]
            subject = str(notice["Subject"])
            assert ("delivered" in subject) if expected == JobState.DELIVERED else ("handed to" in subject)
            assert harness.faxes_at_fake() == 1
    finally:
        await stop()
