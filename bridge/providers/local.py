"""The embedded default provider: faxes go to a folder, incoming faxes come from a folder.

``send`` writes ``<outbox>/<job-id>.pdf`` and a JSON sidecar ``<job-id>.json`` (number, pages, sender, account,
time, status), each written to a temporary name, flushed to disk and renamed, the sidecar last. It also appends
one line per submission to ``<outbox>/submissions.log``, so anyone can see that a fax was sent exactly once.
Numbers matching a configured ``fail`` pattern are accepted and then reported failed with the configured
reason, so the failure path can be tried by hand. Files dropped into ``<inbox>`` (PDF or TIFF, with an optional
JSON sidecar giving ``caller`` and ``called``) are listed as incoming faxes.

Because the sidecar appears atomically and last, its presence answers "did an interrupted send reach the
provider?" with certainty: the local provider has the ``CLIENT_REFERENCE`` capability.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge._files import fsync_dir, write_atomically
from bridge.errors import ProviderUnavailable, SubmissionUnknown
from bridge.models import FaxStatus, InboundRef, OutboundFax, SendReceipt, StatusReport
from bridge.providers.base import Capability, FaxProvider, ProviderContext, ProviderSettings

INBOUND_SUFFIXES = frozenset({".pdf", ".tif", ".tiff"})


class FailRule(BaseModel):
    """Numbers matching ``pattern`` (a regular expression on the E.164 form) fail with ``reason``."""

    model_config = ConfigDict(extra="forbid")

    pattern: str
    reason: str = "the line was busy"
    code: str = "busy"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class LocalSettings(ProviderSettings):
    """``[providers.NAME]`` with ``type = "local"``."""

    outbox: Path = Path("outbox")
    inbox: Path = Path("inbox")
    fail: list[FailRule] = Field(default_factory=list)


class LocalProvider(FaxProvider):
    """Writes outgoing faxes to ``outbox`` and lists incoming ones from ``inbox``."""

    type_name: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.STATUS_POLL,
            Capability.CLIENT_REFERENCE,
            Capability.INBOUND_POLL,
            Capability.INBOUND_DOWNLOAD,
            Capability.INBOUND_ACK,
        }
    )
    settings_model: ClassVar[type[ProviderSettings]] = LocalSettings

    def __init__(self, context: ProviderContext, settings: ProviderSettings) -> None:
        super().__init__(context, settings)
        assert isinstance(settings, LocalSettings)
        self.outbox = context.path(settings.outbox)
        self.inbox = context.path(settings.inbox)
        self._fail = [(re.compile(rule.pattern), rule) for rule in settings.fail]
        # Appends to the submissions log from concurrent jobs must not interleave.
        self._log_lock = asyncio.Lock()

    def _sidecar(self, job_id: str) -> Path:
        return self.outbox / f"{job_id}.json"

    async def send(self, fax: OutboundFax) -> SendReceipt:
        """Write the fax and its sidecar to the outbox; fail-pattern numbers are accepted, then fail."""
        now = datetime.now(UTC)
        outcome: dict[str, Any] = {"status": "delivered"}
        for pattern, rule in self._fail:
            if pattern.search(fax.to):
                outcome = {"status": "failed", "reason": rule.reason, "code": rule.code}
                break
        record = {
            "job_id": fax.job_id,
            "number": fax.to,
            "pages": fax.pages,
            "sender": fax.sender,
            "account": fax.account,
            "subject": fax.subject,
            "caller_id": fax.caller_id,
            "header": fax.header,
            "submitted_at": now.isoformat(),
            **outcome,
        }
        try:
            async with self._log_lock:
                await asyncio.to_thread(self._write, fax, record)
        except FileExistsError:
            raise SubmissionUnknown(
                f"job {fax.job_id} is already in the outbox {self.outbox}; it was not written again",
                provider=self.name,
                maybe_accepted=True,
            ) from None
        except OSError as exc:
            # The sidecar is written last; if it is missing, find_submission says "not sent" and a retry is safe.
            raise ProviderUnavailable(
                f"cannot write to the outbox {self.outbox}: {exc.strerror}; check its permissions and free space",
                provider=self.name,
            ) from exc
        return SendReceipt(provider_fax_id=fax.job_id, client_reference=fax.job_id, accepted_at=now, raw=record)

    def _write(self, fax: OutboundFax, record: dict[str, Any]) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        write_atomically(self.outbox / f"{fax.job_id}.pdf", fax.document)
        write_atomically(self._sidecar(fax.job_id), json.dumps(record, indent=2).encode() + b"\n", exclusive=True)
        with (self.outbox / "submissions.log").open("ab") as log:
            log.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            log.flush()
            os.fsync(log.fileno())
        fsync_dir(self.outbox)

    async def status(self, receipt: SendReceipt) -> StatusReport:
        """Read the outcome back from the sidecar."""
        try:
            text = await asyncio.to_thread(self._sidecar(receipt.client_reference).read_text)
            record = json.loads(text)
        except FileNotFoundError:
            return StatusReport(status=FaxStatus.UNKNOWN, reason="the fax is no longer in the outbox")
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(f"cannot read the outbox sidecar: {exc}", provider=self.name) from exc
        status = FaxStatus.DELIVERED if record.get("status") == "delivered" else FaxStatus.FAILED
        return StatusReport(
            status=status,
            reason=record.get("reason"),
            code=record.get("code"),
            pages_sent=record.get("pages") if status == FaxStatus.DELIVERED else 0,
            raw=record,
        )

    async def find_submission(self, fax: OutboundFax) -> SendReceipt | None:
        """The sidecar exists exactly when the send completed."""
        path = self._sidecar(fax.job_id)
        try:
            record = json.loads(await asyncio.to_thread(path.read_text))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(f"cannot read {path}: {exc}", provider=self.name) from exc
        accepted = datetime.fromisoformat(record["submitted_at"])
        return SendReceipt(provider_fax_id=fax.job_id, client_reference=fax.job_id, accepted_at=accepted, raw=record)

    async def download(self, ref: InboundRef) -> bytes:
        """The file itself."""
        path = self.inbox / ref.provider_fax_id
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ProviderUnavailable(
                f"cannot read the incoming fax {path}: {exc.strerror}", provider=self.name
            ) from exc

    async def acknowledge(self, ref: InboundRef) -> None:
        """Move the file (and its sidecar) into ``<inbox>/delivered/``, out of the next listing."""
        await asyncio.to_thread(self._move_delivered, ref.provider_fax_id)

    def _move_delivered(self, name: str) -> None:
        done = self.inbox / "delivered"
        done.mkdir(exist_ok=True)
        for path in (self.inbox / name, (self.inbox / name).with_suffix(".json")):
            if path.exists():
                path.replace(done / path.name)
        fsync_dir(done)
        fsync_dir(self.inbox)

    async def poll_incoming(self) -> list[InboundRef]:
        """List the PDF and TIFF files in the inbox, oldest first."""
        return await asyncio.to_thread(self._list_inbox)

    def _list_inbox(self) -> list[InboundRef]:
        if not self.inbox.is_dir():
            return []
        refs = []
        for path in sorted(self.inbox.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
            if path.suffix.lower() not in INBOUND_SUFFIXES or path.name.startswith("."):
                continue
            meta: dict[str, Any] = {}
            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                try:
                    loaded = json.loads(sidecar.read_text())
                    meta = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    meta = {}
            refs.append(
                InboundRef(
                    provider=self.name,
                    provider_fax_id=path.name,
                    caller=str(meta["caller"]) if meta.get("caller") else None,
                    called=str(meta["called"]) if meta.get("called") else None,
                    received_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                    token=str(path),
                )
            )
        return refs
