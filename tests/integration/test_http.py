"""The bridge's HTTP endpoint over real HTTP: /healthz, /metrics, and a provider webhook replayed at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.fakes.base import start
from tests.conftest import running_bridge
from tests.fakes.smtp import RecordingSink
from tests.integration.smtp_client import atransact, make_message
from tests.integration.test_inbound import fax_pdf, relay
from tests.integration.test_providers_e2e import harness_class, pointed_at

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cret-path-token-0123456789"


def http(**changes: Any) -> dict[str, Any]:
    return {"enabled": True, "listen_port": 0, "webhook_secret": SECRET, **changes}


async def test_healthz_and_metrics(make_settings: Any) -> None:
    settings = make_settings(http=http())
    busy = "+4930999999@fax.localhost"  # the embedded default's number that fails as busy
    async with running_bridge(settings) as bridge:
        base = "http://{}:{}".format(*bridge.http_address)
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).text == "ok\n"
            message = make_message()
            result = await atransact(
                bridge.address[1], "demo@example.com", ["+4930123456@fax.localhost"], message.as_bytes()
            )
            assert result.data_code == 250
            result = await atransact(bridge.address[1], "demo@example.com", [busy], make_message().as_bytes())
            assert result.data_code == 250
            await asyncio.wait_for(bridge.worker.wait_for_count("notice_sent", 2), 30)
            metrics = (await client.get("/metrics")).text
    assert 'faxbridge_jobs{state="delivered"} 1' in metrics
    assert 'faxbridge_jobs{state="received"} 0' in metrics
    assert 'faxbridge_jobs{state="failed"} 1' in metrics
    assert 'faxbridge_events_total{event="submitted"} 2' in metrics
    assert 'faxbridge_submissions_total{provider="local"} 2' in metrics
    assert 'faxbridge_failures_total{provider="local",code="busy"} 1' in metrics
    assert "faxbridge_oldest_active_job_seconds 0" in metrics
    assert "faxbridge_inbound_delivered_total 0" in metrics


async def test_the_endpoint_is_off_unless_enabled(make_settings: Any) -> None:
    async with running_bridge(make_settings()) as bridge:
        assert bridge.http_address is None


async def test_a_webhook_replayed_three_times_at_once_gives_one_mail(
    make_settings: Any, sink: RecordingSink, tmp_path: Path
) -> None:
    state_dir = tmp_path / "var"
    state_dir.mkdir()
    harness = harness_class("ifax")(state_dir)
    url, stop = await start(harness.fake)
    try:
        settings = make_settings(
            mail=relay(sink),
            http=http(),
            inbound={"enabled": True, "poll_seconds": 3600},  # the webhook, not the timer, brings the fax
            providers={"ifax": pointed_at(harness.section(), url)},
            accounts=[{"name": "demo", "provider": "ifax", "country": "DE", "allowed_senders": ["demo@example.com"]}],
        )
        async with running_bridge(settings) as bridge:
            harness.fake.state.inject_inbound(fax_pdf(1), "+31201234567", "+4930999000")
            [call] = harness.fake.state.webhooks
            base = "http://{}:{}".format(*bridge.http_address)
            async with httpx.AsyncClient(base_url=base) as client:
                wrong = await client.post("/webhooks/ifax/not-the-secret", content=call.body, headers=call.headers)
                assert wrong.status_code == 404
                answers = await asyncio.gather(
                    *(
                        client.post(f"/webhooks/ifax/{SECRET}", content=call.body, headers=call.headers)
                        for _ in range(3)
                    )
                )
                assert [a.status_code for a in answers] == [200, 200, 200]
                assert sorted(a.json()["mailed"] for a in answers) == [0, 0, 1]
                header = await client.post(
                    "/webhooks/ifax", content=call.body, headers={**call.headers, "X-Faxbridge-Secret": SECRET}
                )
                assert header.json()["mailed"] == 0
                metrics = (await client.get("/metrics")).text
        [received] = await sink.wait_for(1)
        assert str(received.message["Subject"]).startswith("Fax from +31 20 123 4567")
        assert len(sink.messages) == 1
        assert "faxbridge_inbound_delivered_total 1" in metrics
    finally:
        await stop()
