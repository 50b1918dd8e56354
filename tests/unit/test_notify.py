"""Notices to senders (``bridge.notify``) and the two ways mail leaves the bridge (``bridge.mailer``)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email
import email.policy
import email.utils
import mailbox
import os
import re
import socket
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from bridge.errors import NotificationError
from bridge.inbound import FaxImages, account_for_incoming, compose_incoming
from bridge.mailer import MaildirMailer, Mailer, PartialDeliveryError, RelayMailer, build_mailer
from bridge.models import FaxJob, InboundRef, JobState, NoticeState
from bridge.notify import compose_notice, load_templates, notice_recipients
from bridge.secret_keys import compose_key_notice
from bridge.settings import InboundDestination, MailSettings, RelaySettings, Settings
from bridge.templates import TemplateError
from tests.conftest import SettingsFactory, default_config
from tests.fakes.smtp import RecordingSink, start_sink

FROM = "Fax Gateway <faxbridge@fax.example.com>"
HOST = "faxbridge.example.net"
NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


def make_job(**changes: Any) -> FaxJob:
    job = FaxJob(
        job_id="01JOB000000000000000000001",
        message_id="msg-1",
        account="acme",
        provider="local",
        recipient="+4930123456@fax.example.com",
        number="+4930123456",
        sender="Alice@Example.COM",
        subject="Quarterly report",
        original_message_id="<orig-1@mail.example.com>",
        state=JobState.DELIVERED,
        notice=NoticeState.PENDING,
        attempts=1,
        pages=3,
        provider_fax_id="P-17",
        reason=None,
        code=None,
        created_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC),
        updated_at=NOW,
        next_attempt_at=NOW,
        submitted_at=dt.datetime(2026, 3, 2, 9, 1, tzinfo=dt.UTC),
        finished_at=dt.datetime(2026, 3, 2, 9, 4, 5, tzinfo=dt.UTC),
    )
    return dataclasses.replace(job, **changes)


def notice(job: FaxJob, **kwargs: Any) -> EmailMessage:
    options: dict[str, Any] = {"from_address": FROM, "to": ["alice@example.com"], "hostname": HOST, "now": NOW}
    options.update(kwargs)
    return compose_notice(job, **options)


def reparse(message: EmailMessage) -> EmailMessage:
    """What a receiving mail client sees: the notice serialised and parsed again."""
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


# -- composing notices -----------------------------------------------------------------------------------


def test_delivered_notice_threads_to_the_original_and_is_marked_automatic() -> None:
    message = reparse(notice(make_job(), document_notes=["report.pdf: 3 pages"]))

    assert message["Subject"] == "Fax to +49 30 123456 delivered — 3 pages (Re: Quarterly report)"
    assert message["From"] == FROM
    assert message["To"] == "alice@example.com"
    assert message["In-Reply-To"] == "<orig-1@mail.example.com>"
    assert message["References"] == "<orig-1@mail.example.com>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Loop"] == "faxbridge@fax.example.com"
    assert message["X-Faxbridge-Job"] == "01JOB000000000000000000001"
    assert message["X-Faxbridge-State"] == "delivered"
    assert email.utils.parsedate_to_datetime(message["Date"]) == NOW
    message_id = message["Message-ID"]
    assert message_id.startswith("<")
    assert message_id.endswith(f"@{HOST}>")
    assert message_id != "<orig-1@mail.example.com>"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"

    body = body_of(message)
    assert "was delivered" in body
    assert "+49 30 123456" in body
    assert "01JOB000000000000000000001" in body
    assert re.search(r"^Received: +2 March 2026 at 09:00$", body, re.MULTILINE)
    assert re.search(r"^Delivered: +2 March 2026 at 09:04$", body, re.MULTILINE)
    assert "report.pdf: 3 pages" in body
    assert "What you can do" not in body


def test_every_notice_has_a_fresh_message_id() -> None:
    first, second = notice(make_job()), notice(make_job())
    assert first["Message-ID"] != second["Message-ID"]


@pytest.mark.parametrize(
    ("state", "reason", "subject", "words"),
    [
        (
            JobState.FAILED,
            "line busy",
            "Fax to +49 30 123456 failed: line busy (Re: Quarterly report)",
            ["could not be delivered", "Reason: line busy", "send your email again later"],
        ),
        (
            JobState.REJECTED,
            "the PDF is password-protected",
            "Fax to +49 30 123456 not sent: the PDF is password-protected (Re: Quarterly report)",
            ["was not sent", "Reason: the PDF is password-protected", "Nothing was dialled", "without a password"],
        ),
        (
            JobState.QUARANTINED,
            None,
            "Fax to +49 30 123456: delivery uncertain (Re: Quarterly report)",
            ["cannot tell whether", "has not been sent again", "Ask the recipient whether your fax arrived"],
        ),
    ],
)
def test_failure_notices_say_what_happened_and_what_to_do(
    state: JobState, reason: str | None, subject: str, words: list[str]
) -> None:
    message = reparse(notice(make_job(state=state, reason=reason, attempts=3)))

    assert message["Subject"] == subject
    assert message["X-Faxbridge-State"] == state.value
    assert message["Auto-Submitted"] == "auto-replied"
    body = body_of(message)
    for word in words:
        assert word in body
    assert "What you can do:" in body
    assert "01JOB000000000000000000001" in body


def test_failed_notice_counts_attempts_and_names_the_provider_code() -> None:
    body = body_of(notice(make_job(state=JobState.FAILED, reason="no answer", code="NOANSWER", attempts=3)))
    assert re.search(r"^Attempts: +3$", body, re.MULTILINE)
    assert "NOANSWER" in body


def test_subject_without_sender_subject_or_pages() -> None:
    assert notice(make_job(subject="", pages=None))["Subject"] == "Fax to +49 30 123456 delivered"
    assert notice(make_job(subject="  ", pages=1))["Subject"] == "Fax to +49 30 123456 delivered — 1 page"
    failed = make_job(state=JobState.FAILED, reason=None, subject="")
    assert notice(failed)["Subject"] == "Fax to +49 30 123456 failed"


def test_numbers_are_formatted_for_people() -> None:
    message = notice(make_job(number="+31201234567", subject=""))
    assert message["Subject"] == "Fax to +31 20 123 4567 delivered — 3 pages"
    # Something phonenumbers cannot read is shown as stored rather than crashing the notice.
    assert notice(make_job(number="garbage", subject=""))["Subject"] == "Fax to garbage delivered — 3 pages"


def test_line_breaks_in_subject_and_reason_cannot_add_headers() -> None:
    job = make_job(
        state=JobState.FAILED,
        subject="Hello\r\nBcc: victim@example.org",
        reason="busy\nX-Injected: yes",
    )
    message = reparse(notice(job))
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert message["Subject"] == "Fax to +49 30 123456 failed: busy X-Injected: yes (Re: Hello Bcc: victim@example.org)"


@pytest.mark.parametrize(
    "theirs",
    [
        "Angebot für Müller — 見積書",
        "Rechnung Nr. 2026-0042 für die Firma Müller & Söhne GmbH, Abteilung Einkauf, z. Hd. Frau Özdemir",
        "Quarterly report for the board of directors, second draft, with the appendices A to F attached",
        "Счёт на оплату № 17 от 2 марта",
    ],
)
@pytest.mark.parametrize("policy", [email.policy.default, email.policy.SMTP], ids=["default", "smtp"])
def test_long_and_non_ascii_subjects_keep_every_space(theirs: str, policy: email.policy.EmailPolicy) -> None:
    # CPython's folder drops the space between encoded words; the notice must not inherit that (aiosmtplib
    # serialises with email.policy.SMTP, the Maildir writer with the message's own policy).
    message = notice(make_job(subject=theirs))
    wire = message.as_bytes(policy=policy)
    assert wire.isascii()  # encoded words and quoted-printable: fine for relays without 8BITMIME
    assert all(len(line) <= 78 for line in wire.splitlines())
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert parsed["Subject"] == f"Fax to +49 30 123456 delivered — 3 pages (Re: {theirs})"
    # Long lines of the body are wrapped (at 72 characters), and the line ends are CRLF after SMTP's policy.
    assert theirs in " ".join(body_of(parsed).split())


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("<a.b@c.example>", "<a.b@c.example>"),
        ("a.b@c.example", "<a.b@c.example>"),
        ("  <a.b@c.example>\n", "<a.b@c.example>"),
        (None, None),
        ("", None),
        ("not an id", None),
        ("<a@b>\r\nBcc: x@y", None),
    ],
)
def test_in_reply_to_keeps_or_adds_angle_brackets(original: str | None, expected: str | None) -> None:
    message = reparse(notice(make_job(original_message_id=original)))
    assert message["In-Reply-To"] == expected
    assert message["References"] == expected
    assert message["Bcc"] is None


def test_long_sender_subjects_are_shortened_in_ours() -> None:
    subject = notice(make_job(subject="x" * 500))["Subject"]
    assert len(subject) < 200
    assert subject.endswith("…)")


@pytest.mark.parametrize("state", [JobState.RECEIVED, JobState.READY, JobState.CANCELLED])
def test_no_notice_for_other_states(state: JobState) -> None:
    with pytest.raises(ValueError, match=state.value):
        notice(make_job(state=state))


def test_a_fax_handed_to_a_service_without_status_is_never_called_delivered() -> None:
    message = notice(make_job(state=JobState.SUBMITTED, pages=2), service="VoipNow")
    assert str(message["Subject"]).startswith("Fax to +49 30 123456 handed to VoipNow — 2 pages")
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    text = str(body.get_content())
    assert "was handed to VoipNow" in text
    assert "ask the recipient" in text
    assert "delivered" not in text.lower().replace("whether faxes reach", "")


def test_a_notice_needs_recipients() -> None:
    with pytest.raises(ValueError, match="no recipients"):
        notice(make_job(), to=[])


def test_several_recipients_in_to() -> None:
    message = reparse(notice(make_job(), to=["alice@example.com", "boss@example.com"]))
    assert [address for _, address in email.utils.getaddresses(message.get_all("To", []))] == [
        "alice@example.com",
        "boss@example.com",
    ]


# -- languages, time zones and overrides -----------------------------------------------------------------


def account_settings(make_settings: SettingsFactory, **account: Any) -> Settings:
    """Settings whose one account, ``acme``, has the given fields (language, timezone, templates…)."""
    [demo] = default_config()["accounts"]
    return make_settings(accounts=[{**demo, "name": "acme", **account}])


def write_override(directory: Path, name: str, content: str) -> None:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def test_a_german_account_gets_a_german_notice_with_its_own_time(make_settings: SettingsFactory) -> None:
    settings = account_settings(make_settings, language="de", timezone="Europe/Berlin")
    account = settings.account("acme")
    message = reparse(
        notice(
            make_job(),
            document_notes=["report.pdf: 3 Seiten"],
            language=account.language,
            timezone=account.timezone,
            templates=load_templates(settings),
        )
    )

    assert message["Subject"] == "Fax an +49 30 123456 zugestellt — 3 Seiten (Re: Quarterly report)"
    body = body_of(message)
    assert body.startswith("Ihr Fax an +49 30 123456 wurde zugestellt.\n")
    # 09:00 and 09:04 UTC are 10:00 and 10:04 in Berlin (CET, winter time).
    assert re.search(r"^Eingegangen: +2\. März 2026 um 10:00 Uhr$", body, re.MULTILINE)
    assert re.search(r"^Zugestellt: +2\. März 2026 um 10:04 Uhr$", body, re.MULTILINE)
    assert "report.pdf: 3 Seiten" in body
    assert "UTC" not in body
    # The headers do not change with the language.
    assert message["In-Reply-To"] == "<orig-1@mail.example.com>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Faxbridge-State"] == "delivered"
    assert email.utils.parsedate_to_datetime(message["Date"]) == NOW


def test_the_time_zone_can_move_the_date() -> None:
    late = make_job(finished_at=dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC))
    body = body_of(notice(late, language="nl", timezone="Europe/Amsterdam", templates=load_templates()))
    assert "3 maart 2026 om 00:30" in body


def test_an_account_override_replaces_the_subject(make_settings: SettingsFactory, tmp_path: Path) -> None:
    write_override(
        tmp_path / "var" / "acme-templates",
        "en/delivered.toml",
        'subject = "[ACME] fax {job_id} to {to}: {status}"\ntext = "Delivered to {to} on {date}."\n',
    )
    # Relative to state_dir, as the configuration writes it.
    settings = account_settings(make_settings, templates="acme-templates")
    templates = load_templates(settings)
    assert load_templates(settings) is templates  # read once per process

    message = notice(make_job(), templates=templates)
    assert message["Subject"] == "[ACME] fax 01JOB000000000000000000001 to +49 30 123456: delivered"
    assert body_of(message) == "Delivered to +49 30 123456 on 2 March 2026.\n"
    assert message["In-Reply-To"] == "<orig-1@mail.example.com>"
    assert message["X-Faxbridge-Job"] == "01JOB000000000000000000001"
    # Only that account's notices, and only that template.
    assert notice(make_job(account="other"), templates=templates)["Subject"].startswith("Fax to +49 30 123456 ")
    failed = notice(make_job(state=JobState.FAILED, reason="busy"), templates=templates)
    assert failed["Subject"].startswith("Fax to +49 30 123456 failed: busy")


def test_an_unknown_placeholder_in_an_override_stops_the_start(make_settings: SettingsFactory, tmp_path: Path) -> None:
    directory = tmp_path / "var" / "broken"
    write_override(directory, "de/failed.toml", 'subject = "Fax an {to}: {grund}"\ntext = "{reason}"\n')
    settings = account_settings(make_settings, templates=str(directory))

    with pytest.raises(TemplateError, match=r"unknown placeholder \{grund\}") as caught:
        load_templates(settings)
    assert caught.value.placeholder == "grund"
    assert caught.value.template == "failed"
    assert str(directory / "de" / "failed.toml") in str(caught.value)


def test_the_new_key_mail_is_in_the_account_language(make_settings: SettingsFactory) -> None:
    settings = account_settings(
        make_settings, language="de", timezone="Europe/Berlin", secret_key_renew="daily", secret_key_grace_hours=12
    )
    message = compose_key_notice(
        settings.account("acme"),
        "ABCDEFGHJKMNPQRS",
        now=NOW,
        from_address=FROM,
        to=["boss@example.com"],
        hostname=HOST,
        templates=load_templates(settings),
    )
    assert "ABCDEFGHJKMNPQRS" not in str(message["Subject"])
    assert message["Auto-Submitted"] == "auto-generated"
    body = body_of(message)
    assert re.search(r"^    ABCDEFGHJKMNPQRS$", body, re.MULTILINE)
    assert "12 Stunden" in body
    assert "3. März 2026 um 10:30 Uhr" in body  # the next rotation, a day later, in Berlin


def test_an_incoming_fax_is_mailed_in_the_language_of_the_account_of_its_number(
    make_settings: SettingsFactory,
) -> None:
    settings = account_settings(make_settings, language="nl", timezone="Europe/Amsterdam", caller_id="+4930123456")
    account = account_for_incoming(settings, "+4930123456")
    assert account is not None
    assert account_for_incoming(settings, "+4930999999") is None
    ref = InboundRef("local", "fax1.pdf", "+31201234567", "+4930123456", NOW)
    page = Image.new("1", (1728, 2200), 1)
    message = compose_incoming(
        ref,
        FaxImages([page, page], b"%PDF-1.4", "pdf"),
        [InboundDestination(address="office@example.com", preview=False)],
        from_address=FROM,
        hostname=HOST,
        service="Local",
        now=NOW,
        language=account.language,
        timezone=account.timezone,
        account=account.name,
        templates=load_templates(settings),
    )
    assert message["Subject"] == "Fax van +31 20 123 4567 — 2 pagina's"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "2 maart 2026 om 10:30" in str(text.get_content())
    assert "2 maart 2026 om 10:30" in str(html.get_content())
    assert [part.get_filename() for part in message.iter_attachments()] == ["fax-20260302-093000-31201234567.pdf"]


def test_the_shipped_templates_are_read_once() -> None:
    assert load_templates() is load_templates()


# -- who gets a notice -----------------------------------------------------------------------------------


def test_recipients_are_the_sender_then_the_extras_lowercased_once() -> None:
    job = make_job(sender=" Alice@Example.COM ")
    extra = ["boss@example.com", "alice@example.com", "Audit@Example.com", "boss@example.com"]
    assert notice_recipients(job, extra) == ["alice@example.com", "boss@example.com", "audit@example.com"]


@pytest.mark.parametrize("sender", ["", "  ", "<>", "MAILER-DAEMON@mx.example.com", "mailer-daemon"])
def test_bounces_are_never_answered(sender: str) -> None:
    assert notice_recipients(make_job(sender=sender), ["boss@example.com"]) == []


# -- Maildir ---------------------------------------------------------------------------------------------


async def test_maildir_mailer_writes_a_durable_message_into_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "Maildir"
    message = notice(make_job())

    await MaildirMailer(path).deliver(message, ["alice@example.com", "boss@example.com"])

    files = list((path / "new").iterdir())
    assert len(files) == 1
    assert list((path / "tmp").iterdir()) == []
    box = mailbox.Maildir(path, factory=None, create=False)
    [key] = box.keys()
    assert box[key]["Message-ID"] == message["Message-ID"]
    stored = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
    assert stored["X-Original-To"] == "alice@example.com, boss@example.com"
    assert stored["Subject"] == message["Subject"]
    assert body_of(stored) == body_of(message)
    assert "X-Original-To" not in message  # the caller's message is left alone
    # The file's data before its rename, then the directory that holds the new name.
    assert synced[-2:] == [str(path / "tmp" / files[0].name), str(path / "new")]


async def test_maildir_mailer_gives_each_mail_its_own_file(tmp_path: Path) -> None:
    mailer = MaildirMailer(tmp_path / "box")
    await asyncio.gather(*(mailer.deliver(notice(make_job()), ["a@example.com"]) for _ in range(5)))
    assert len(list((tmp_path / "box" / "new").iterdir())) == 5


async def test_maildir_write_errors_are_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(NotificationError, match="cannot write to Maildir") as caught:
        await MaildirMailer(blocker / "Maildir").deliver(notice(make_job()), ["a@example.com"])
    assert caught.value.is_temporary


@pytest.mark.parametrize("recipients", [[], ["  "], ["a@example.com\r\nX-Evil: 1"]])
async def test_bad_recipient_lists_are_refused_for_good(tmp_path: Path, recipients: list[str]) -> None:
    with pytest.raises(NotificationError) as caught:
        await MaildirMailer(tmp_path / "box").deliver(notice(make_job()), recipients)
    assert not caught.value.is_temporary
    assert not (tmp_path / "box" / "new").exists() or not list((tmp_path / "box" / "new").iterdir())


# -- relay -----------------------------------------------------------------------------------------------


def relay_for(sink: RecordingSink, **changes: Any) -> RelayMailer:
    options: dict[str, Any] = {"host": sink.host, "port": sink.port, "starttls": "never", "timeout": 5}
    options.update(changes)
    return RelayMailer(RelaySettings(**options), local_hostname="client.faxbridge.test")


async def test_relay_delivers_to_exactly_the_given_recipients(sink: RecordingSink) -> None:
    message = notice(make_job(), to=["alice@example.com", "boss@example.com"])
    await relay_for(sink).deliver(message, ["alice@example.com", "boss@example.com", "audit@example.com"])

    [recorded] = await sink.wait_for(1)
    assert recorded.mail_from == "faxbridge@fax.example.com"
    assert recorded.rcpt_tos == ("alice@example.com", "boss@example.com", "audit@example.com")
    assert recorded.message["Message-ID"] == message["Message-ID"]
    assert recorded.message["Auto-Submitted"] == "auto-replied"
    assert "Bcc" not in recorded.message
    assert not recorded.tls


async def test_relay_carries_a_non_ascii_notice_intact(sink: RecordingSink) -> None:
    theirs = "Angebot für Müller — bitte bis Freitag unterschrieben zurückfaxen, danke!"
    message = notice(make_job(state=JobState.FAILED, reason="Leitung besetzt", subject=theirs))
    await relay_for(sink).deliver(message, ["alice@example.com"])
    [recorded] = await sink.wait_for(1)
    assert recorded.message["Subject"] == f"Fax to +49 30 123456 failed: Leitung besetzt (Re: {theirs})"
    assert "Reason: Leitung besetzt" in body_of(recorded.message)


async def test_relay_4xx_on_data_is_temporary_and_a_retry_delivers_once(sink: RecordingSink) -> None:
    mailer = relay_for(sink)
    message = notice(make_job())
    sink.fail_next("DATA", "451 4.3.0 try later")

    with pytest.raises(NotificationError, match=re.escape("refused the message: 451 4.3.0 try later")) as caught:
        await mailer.deliver(message, ["alice@example.com"])
    assert caught.value.is_temporary
    assert sink.messages == []

    await mailer.deliver(message, ["alice@example.com"])
    [recorded] = await sink.wait_for(1)
    assert recorded.message["Message-ID"] == message["Message-ID"]
    assert len(sink.messages) == 1


async def test_relay_5xx_on_data_is_permanent(sink: RecordingSink) -> None:
    sink.fail_next("DATA", "554 5.6.0 message refused")
    with pytest.raises(NotificationError, match=re.escape("554 5.6.0 message refused")) as caught:
        await relay_for(sink).deliver(notice(make_job()), ["alice@example.com"])
    assert not caught.value.is_temporary


async def test_relay_partial_refusal_delivers_to_the_others_and_names_the_refused(sink: RecordingSink) -> None:
    # The choice documented in bridge.mailer: the accepted recipient keeps its one copy, and the refusal is
    # permanent so that the worker does not send the whole notice again.
    sink.fail_next("RCPT", "550 5.1.1 no such user", match="bad@example.com")
    mailer = relay_for(sink)

    with pytest.raises(PartialDeliveryError) as caught:
        await mailer.deliver(notice(make_job()), ["alice@example.com", "bad@example.com"])

    error = caught.value
    assert isinstance(error, NotificationError)
    assert not error.is_temporary
    assert error.delivered == ("alice@example.com",)
    assert error.refused == {"bad@example.com": "550 5.1.1 no such user"}
    assert f"relay 127.0.0.1:{sink.port} refused recipient bad@example.com: 550 5.1.1 no such user" in str(error)
    [recorded] = await sink.wait_for(1)
    assert recorded.rcpt_tos == ("alice@example.com",)


@pytest.mark.parametrize(("reply", "temporary"), [("450 4.2.1 mailbox busy", True), ("550 5.1.1 unknown", False)])
async def test_relay_all_recipients_refused(sink: RecordingSink, reply: str, temporary: bool) -> None:
    sink.fail_next("RCPT", reply, times=2)
    with pytest.raises(NotificationError, match="refused recipients") as caught:
        await relay_for(sink).deliver(notice(make_job()), ["a@example.com", "b@example.com"])
    assert caught.value.is_temporary is temporary
    assert not isinstance(caught.value, PartialDeliveryError)
    assert "a@example.com" in str(caught.value)
    assert "b@example.com" in str(caught.value)
    assert sink.messages == []


@pytest.mark.parametrize(("reply", "temporary"), [("451 4.3.0 later", True), ("553 5.7.1 not yours", False)])
async def test_relay_sender_refused(sink: RecordingSink, reply: str, temporary: bool) -> None:
    sink.fail_next("MAIL", reply)
    with pytest.raises(NotificationError, match=re.escape("refused sender faxbridge@fax.example.com")) as caught:
        await relay_for(sink).deliver(notice(make_job()), ["alice@example.com"])
    assert caught.value.is_temporary is temporary


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_relay_connection_refused_is_temporary() -> None:
    settings = RelaySettings(host="127.0.0.1", port=closed_port(), starttls="never", timeout=5)
    with pytest.raises(NotificationError, match="unreachable") as caught:
        await RelayMailer(settings, local_hostname="client.test").deliver(notice(make_job()), ["a@example.com"])
    assert caught.value.is_temporary


async def test_relay_that_never_answers_times_out_temporarily() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # say nothing: no greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = RelaySettings(host="127.0.0.1", port=port, starttls="never", timeout=0.3)
        with pytest.raises(NotificationError, match="timed out") as caught:
            await RelayMailer(settings, local_hostname="client.test").deliver(notice(make_job()), ["a@x.example"])
        assert caught.value.is_temporary
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_relay_auto_starttls_without_offer_sends_in_clear(sink: RecordingSink) -> None:
    await relay_for(sink, starttls="auto").deliver(notice(make_job()), ["alice@example.com"])
    [recorded] = await sink.wait_for(1)
    assert not recorded.tls


async def test_relay_starttls_always_fails_temporarily_when_not_offered(sink: RecordingSink) -> None:
    with pytest.raises(NotificationError, match="STARTTLS") as caught:
        await relay_for(sink, starttls="always").deliver(notice(make_job()), ["alice@example.com"])
    assert caught.value.is_temporary
    assert sink.messages == []


def self_signed_context(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.faxbridge.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.mark.parametrize("mode", ["always", "auto"])
async def test_relay_starttls_upgrades_when_offered(tmp_path: Path, mode: str) -> None:
    async with start_sink(tls_context=self_signed_context(tmp_path)) as tls_sink:
        await relay_for(tls_sink, starttls=mode, validate_certs=False).deliver(
            notice(make_job()), ["alice@example.com"]
        )
        [recorded] = await tls_sink.wait_for(1)
    assert recorded.tls


async def test_relay_refuses_an_unverifiable_certificate_temporarily(tmp_path: Path) -> None:
    async with start_sink(tls_context=self_signed_context(tmp_path)) as tls_sink:
        with pytest.raises(NotificationError) as caught:
            await relay_for(tls_sink, starttls="always", validate_certs=True).deliver(
                notice(make_job()), ["alice@example.com"]
            )
        assert tls_sink.messages == []
    assert caught.value.is_temporary


async def test_relay_authenticates_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "relay-password"
    secret.write_text("s3cret\n")
    async with start_sink(credentials=("fax", "s3cret")) as auth_sink:
        await relay_for(auth_sink, username="fax", password_file=secret).deliver(
            notice(make_job()), ["alice@example.com"]
        )
        [recorded] = await auth_sink.wait_for(1)
    assert recorded.login == "fax"


async def test_relay_wrong_password_is_temporary_and_says_so() -> None:
    async with start_sink(credentials=("fax", "s3cret")) as auth_sink:
        mailer = relay_for(auth_sink, username="fax", password="wrong")
        with pytest.raises(NotificationError, match="refused our credentials for fax: 535") as caught:
            await mailer.deliver(notice(make_job()), ["alice@example.com"])
        assert auth_sink.messages == []
        assert auth_sink.auth_attempts
        assert not any(ok for _, ok in auth_sink.auth_attempts)
    # A wrong password is the administrator's to fix; the notices wait for it instead of being dropped.
    assert caught.value.is_temporary


async def test_relay_missing_password_file_is_temporary(tmp_path: Path, sink: RecordingSink) -> None:
    mailer = relay_for(sink, username="fax", password_file=tmp_path / "missing")
    with pytest.raises(NotificationError, match="cannot read the password") as caught:
        await mailer.deliver(notice(make_job()), ["alice@example.com"])
    assert caught.value.is_temporary


# -- building ----------------------------------------------------------------------------------------------


def test_build_mailer_resolves_paths(tmp_path: Path) -> None:
    resolve: Callable[[Path], Path] = lambda path: path if path.is_absolute() else tmp_path / path  # noqa: E731

    maildir = build_mailer(MailSettings(maildir=Path("outbox/Maildir")), resolve)
    assert isinstance(maildir, MaildirMailer)
    assert maildir.path == tmp_path / "outbox" / "Maildir"

    relay = build_mailer(
        MailSettings(relay=RelaySettings(host="mx.example.com", username="u", password_file=Path("pw"))),
        resolve,
    )
    assert isinstance(relay, RelayMailer)
    assert relay.settings.password_file == tmp_path / "pw"
    assert isinstance(relay, Mailer)
