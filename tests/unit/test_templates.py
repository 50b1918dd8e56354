"""Mail templates (``bridge.templates``): the shipped texts in every language, overrides, and their safety."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.templates import (
    LANGUAGES,
    PLACEHOLDERS,
    TEMPLATE_NAMES,
    Rendered,
    TemplateError,
    Templates,
    default_templates_dir,
    format_date,
    format_datetime,
    format_hours,
    format_period,
    format_time,
    pages_text,
)

REPO = Path(__file__).resolve().parents[2]
BERLIN = "Europe/Berlin"
# 2026-12-01 23:30 UTC is 2 December, 00:30 in Berlin; the mail came in an hour and a half earlier.
FINISHED = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC)
RECEIVED = dt.datetime(2026, 12, 1, 22, 5, tzinfo=dt.UTC)
NUMBER = "+49 30 123456"
THEIR_SUBJECT = "Angebot für Müller"

# What each language must say, read back from the rendered mails.
EXPECTED: dict[str, dict[str, str]] = {
    "en": {
        "fax_to": "Fax to",
        "report_for": "Fax report for",
        "pages": "3 pages",
        "finished_date": "2 December 2026",
        "received": "1 December 2026 at 23:05",
        "unknown_caller": "unknown number",
        "grace": "24 hours",
        "period": "November 2026",
        "next_rotation": "1 January 2027 at 01:00",
        "accepted": "accepted",
        "delivered": "delivered",
        "failed": "failed",
        "rejected": "not sent",
        "uncertain": "delivery uncertain",
        "handed_over": "handed to",
        "incoming": "Fax from",
        "secret_rotated": "New fax secret key",
        "report": "Fax report",
        "advice_heading": "What you can do:",
        "documents_heading": "What was in your email:",
        "reason_label": "Reason: ",
    },
    "de": {
        "fax_to": "Fax an",
        "report_for": "Fax-Bericht für",
        "pages": "3 Seiten",
        "finished_date": "2. Dezember 2026",
        "received": "1. Dezember 2026 um 23:05 Uhr",
        "unknown_caller": "unbekannt",
        "grace": "24 Stunden",
        "period": "November 2026",
        "next_rotation": "1. Januar 2027 um 01:00 Uhr",
        "accepted": "angenommen",
        "delivered": "zugestellt",
        "failed": "fehlgeschlagen",
        "rejected": "nicht gesendet",
        "uncertain": "Zustellung ungewiss",
        "handed_over": "übergeben",
        "incoming": "Fax von",
        "secret_rotated": "Neuer Fax-Geheimschlüssel",
        "report": "Fax-Bericht",
        "advice_heading": "Was Sie tun können:",
        "documents_heading": "Inhalt Ihrer E-Mail:",
        "reason_label": "Grund: ",
    },
    "nl": {
        "fax_to": "Fax naar",
        "report_for": "Faxoverzicht voor",
        "pages": "3 pagina's",
        "finished_date": "2 december 2026",
        "received": "1 december 2026 om 23:05",
        "unknown_caller": "onbekend nummer",
        "grace": "24 uur",
        "period": "november 2026",
        "next_rotation": "1 januari 2027 om 01:00",
        "accepted": "in behandeling",
        "delivered": "afgeleverd",
        "failed": "mislukt",
        "rejected": "niet verzonden",
        "uncertain": "aflevering onzeker",
        "handed_over": "overgedragen aan",
        "incoming": "Fax van",
        "secret_rotated": "Nieuwe geheime faxsleutel",
        "report": "Faxoverzicht",
        "advice_heading": "Wat u kunt doen:",
        "documents_heading": "Wat er in uw e-mail zat:",
        "reason_label": "Reden: ",
    },
}

NOTICES = ("accepted", "delivered", "failed", "rejected", "uncertain", "handed_over")


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates.load()


def notice_values(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "to": NUMBER,
        "pages": 3,
        "reason": "The line was busy",
        "code": "486",
        "job_id": "01JOB000000000000000000001",
        "subject": THEIR_SUBJECT,
        "received": RECEIVED,
        "attempts": 3,
        "documents": ["report.pdf: 3 pages", "logo.png: not faxed (an inline image)"],
        "advice": "Your account may send 50 pages per fax.",
        "service": "Retarus",
        "preview": "fax-page-1.png",
    }
    values.update(changes)
    return values


def render_notice(templates: Templates, name: str, language: str, **changes: object) -> Rendered:
    return templates.render(name, language, notice_values(**changes), tz=BERLIN, when=FINISHED, account="acme")


def shipped_copy(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), target)
    return target


def override_dir(tmp_path: Path, files: Mapping[str, str]) -> Path:
    directory = tmp_path / "override"
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return directory


# The shipped templates.


def test_the_shipped_templates_are_found_in_config_templates_and_cover_every_language() -> None:
    assert default_templates_dir() == REPO / "config" / "templates"
    found = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "config" / "templates").rglob("*.toml"))
    assert found == sorted(f"config/templates/{lang}/{name}.toml" for lang in LANGUAGES for name in TEMPLATE_NAMES)
    loaded = Templates.load()
    assert loaded.source("delivered", "de") == REPO / "config" / "templates" / "de" / "delivered.toml"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", NOTICES)
def test_every_notice_reads_back_its_facts(templates: Templates, name: str, language: str) -> None:
    words = EXPECTED[language]
    rendered = render_notice(templates, name, language)

    assert rendered.html is None
    assert rendered.subject.startswith(words["fax_to"])
    assert NUMBER in rendered.subject
    assert words[name] in rendered.subject
    # The sender's own subject closes ours.
    assert rendered.subject.endswith(f" (Re: {THEIR_SUBJECT})")
    text = rendered.text
    assert text.endswith("\n")
    assert NUMBER in text
    assert THEIR_SUBJECT in text
    assert "01JOB000000000000000000001" in text
    assert words["received"] in text
    assert words["documents_heading"] in text
    assert "  report.pdf: 3 pages\n  logo.png: not faxed (an inline image)\n" in text
    assert "\n-- \n" in text
    assert "{" not in text
    assert "}" not in text
    assert all(len(line) <= 72 for line in text.splitlines())
    if name in ("delivered", "failed", "rejected", "handed_over"):
        # The moment of the outcome, in Berlin: past midnight, so the next day.
        assert f"{words['finished_date']} " in text
        assert "00:30" in text
        assert "23:30" not in text
    if name in ("accepted", "delivered", "handed_over"):
        assert rendered.subject.startswith(f"{rendered.subject.split(' — ')[0]} — {words['pages']} (Re: ")
    if name in ("failed", "rejected"):
        assert ": The line was busy (Re: " in rendered.subject
        assert f"{words['reason_label']}The line was busy" in text
        assert "486" in text
    else:
        assert "The line was busy" not in text
    if name in ("failed", "rejected", "uncertain"):
        heading = text.index(words["advice_heading"])
        assert text.index("- Your account may send 50 pages per fax.") > heading
    if name == "handed_over":
        assert "Retarus" in rendered.subject
        assert text.count("Retarus") >= 2
    if name in ("delivered", "failed", "uncertain", "handed_over"):
        assert "(fax-page-1.png)" in text
    else:
        assert "fax-page-1.png" not in text


def test_the_english_delivered_notice_reads_as_a_whole(templates: Templates) -> None:
    rendered = render_notice(templates, "delivered", "en", documents="report.pdf: 3 pages", preview=None)
    assert rendered.subject == f"Fax to {NUMBER} delivered — 3 pages (Re: {THEIR_SUBJECT})"
    assert rendered.text == (
        f"Your fax to {NUMBER} was delivered.\n"
        "\n"
        f"Number:       {NUMBER}\n"
        "Pages:        3\n"
        f"Your subject: {THEIR_SUBJECT}\n"
        "Job:          01JOB000000000000000000001\n"
        "Received:     1 December 2026 at 23:05\n"
        "Delivered:    2 December 2026 at 00:30\n"
        "\n"
        "What was in your email:\n"
        "  report.pdf: 3 pages\n"
        "\n"
        "-- \n"
        "This message was sent automatically by the fax gateway; replies are not\n"
        "read. If you need help, ask your administrator and quote the job\n"
        "01JOB000000000000000000001.\n"
    )


def test_the_german_failed_subject_and_details(templates: Templates) -> None:
    rendered = render_notice(templates, "failed", "de")
    assert rendered.subject == f"Fax an {NUMBER} fehlgeschlagen: The line was busy (Re: {THEIR_SUBJECT})"
    assert "Abgeschlossen:  2. Dezember 2026 um 00:30 Uhr\n" in rendered.text
    assert "Versuche:       3\n" in rendered.text
    assert "Code des Faxdienstes: 486\n" in rendered.text


def test_the_dutch_delivered_subject(templates: Templates) -> None:
    rendered = render_notice(templates, "delivered", "nl")
    assert rendered.subject == f"Fax naar {NUMBER} afgeleverd — 3 pagina's (Re: {THEIR_SUBJECT})"
    assert "Afgeleverd:     2 december 2026 om 00:30\n" in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_empty_values_leave_out_their_lines_and_headings(templates: Templates, language: str) -> None:
    words = EXPECTED[language]
    rendered = templates.render(
        "failed", language, {"to": NUMBER, "job_id": "J-1"}, tz=BERLIN, when=FINISHED, account="acme"
    )
    # No reason, no sender's subject, no pages: the subject has no dangling separators.
    assert rendered.subject == f"{words['fax_to']} {NUMBER} {words['failed']}"
    text = rendered.text
    assert words["reason_label"] not in text
    assert "486" not in text
    assert words["documents_heading"] not in text
    assert ".png" not in text
    assert "\n- \n" not in text
    # The literal advice stays when there is no extra advice.
    assert words["advice_heading"] in text
    assert "\n\n\n" not in text
    assert not text.startswith("\n")


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_incoming_fax_mail_in_text_and_html(templates: Templates, language: str) -> None:
    words = EXPECTED[language]
    values = {
        "caller": "+49 89 987654",
        "called": "+49 30 5550100",
        "pages": 2,
        "fax_id": "RX-<17>&co",
        "service": "Sipwise",
        "job_id": "01IN0000000000000000000001",
    }
    rendered = templates.render("incoming", language, values, tz=BERLIN, when=FINISHED, account="acme")
    two_pages = words["pages"].replace("3", "2")
    assert rendered.subject == f"{words['incoming']} +49 89 987654 — {two_pages}"
    for fact in ("+49 89 987654", "+49 30 5550100", "RX-<17>&co", "Sipwise", words["finished_date"], "00:30"):
        assert fact in rendered.text
    html = rendered.html
    assert html is not None
    assert f'<html lang="{language}">' in html
    assert "RX-&lt;17&gt;&amp;co" in html
    assert "RX-<17>" not in html
    assert words["finished_date"] in html
    assert "00:30" in html
    assert "+49 30 5550100" in html


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_incoming_fax_from_a_withheld_number(templates: Templates, language: str) -> None:
    rendered = templates.render("incoming", language, {"called": "+49 30 5550100"}, when=FINISHED)
    unknown = EXPECTED[language]["unknown_caller"]
    assert rendered.subject == f"{EXPECTED[language]['incoming']} {unknown}"
    assert unknown in rendered.text
    # No fax id and no page count: their lines are gone, in the text and in the HTML.
    assert rendered.html is not None
    assert "Fax ID" not in rendered.text
    assert "Fax-ID" not in rendered.text
    assert "Fax-ID" not in rendered.html
    assert "Fax ID" not in rendered.html
    assert "<td></td>" not in rendered.html
    assert "UTC" not in rendered.text
    assert "23:30" in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_secret_key_notice(templates: Templates, language: str) -> None:
    words = EXPECTED[language]
    key = "kX7-q2Rm9"
    values = {"key": key, "grace": 24, "next_rotation": dt.datetime(2027, 1, 1, 0, 0, tzinfo=dt.UTC)}
    rendered = templates.render("secret_rotated", language, values, account="acme", tz=BERLIN, when=FINISHED)
    assert words["secret_rotated"] in rendered.subject
    assert "acme" in rendered.subject
    assert key not in rendered.subject
    assert f"\n    {key}\n" in rendered.text
    assert rendered.text.count(key) == 2
    assert words["grace"] in rendered.text
    assert words["next_rotation"] in rendered.text

    bare = templates.render("secret_rotated", language, {"key": key, "grace": 0}, account="acme", when=FINISHED)
    assert words["grace"] not in bare.text
    assert "2027" not in bare.text
    assert key in bare.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_periodic_report(templates: Templates, language: str) -> None:
    summary = ["Faxes sent:     42 (97 pages)", "Faxes received: 17 (30 pages)", "", "Failed: 3", "  busy: 2"]
    values = {"period": (dt.date(2026, 11, 1), dt.date(2026, 11, 30)), "summary": summary}
    rendered = templates.render("report", language, values, account="acme", tz=BERLIN, when=FINISHED)
    words = EXPECTED[language]
    assert rendered.subject == f"{words['report_for']} acme: {words['period']}"
    assert "Faxes sent:     42 (97 pages)\nFaxes received: 17 (30 pages)\n\nFailed: 3\n  busy: 2\n" in rendered.text
    assert words["period"] in rendered.text
    assert words["finished_date"] in rendered.text


def test_every_template_renders_in_every_language_with_its_required_values(templates: Templates) -> None:
    required: dict[str, dict[str, object]] = {
        **{name: {"to": NUMBER, "service": "VoipNow"} for name in NOTICES},
        "incoming": {},
        "secret_rotated": {"key": "k"},
        "report": {"summary": "nothing"},
    }
    for language in LANGUAGES:
        for name in TEMPLATE_NAMES:
            rendered = templates.render(name, language, required[name], when=FINISHED)
            assert rendered.subject.strip() == rendered.subject != ""
            assert "{" not in rendered.subject + rendered.text
            assert (rendered.html is not None) == (name == "incoming")


# Dates, numbers and words.


@pytest.mark.parametrize(
    ("language", "expected"), [("en", "1 December 2026"), ("de", "1. Dezember 2026"), ("nl", "1 december 2026")]
)
def test_format_date_per_language(language: str, expected: str) -> None:
    assert format_date(dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC), language, "UTC") == expected
    assert format_date(dt.date(2026, 12, 1), language) == expected


def test_dates_and_times_follow_the_time_zone() -> None:
    assert format_date(FINISHED, "de", BERLIN) == "2. Dezember 2026"
    assert format_time(FINISHED, "de", BERLIN) == "00:30"
    assert format_date(FINISHED, "de", "UTC") == "1. Dezember 2026"
    assert format_time(FINISHED, "de", "UTC") == "23:30"
    # Summer time in Berlin is two hours ahead; New York is behind.
    summer = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    assert format_time(summer, "en", BERLIN) == "14:00"
    assert format_datetime(FINISHED, "en", "America/New_York") == "1 December 2026 at 18:30"
    # A naive time is UTC, not this machine's local time.
    assert format_time(dt.datetime(2026, 12, 1, 23, 30), "nl", BERLIN) == "00:30"
    assert format_datetime(FINISHED, "de", BERLIN) == "2. Dezember 2026 um 00:30 Uhr"
    assert format_datetime(FINISHED, "nl", BERLIN) == "2 december 2026 om 00:30"


def test_every_month_has_its_name() -> None:
    names = [format_date(dt.date(2026, month, 5), "de") for month in range(1, 13)]
    assert names[2] == "5. März 2026"
    assert len({name.split()[1] for name in names}) == 12
    assert format_date(dt.date(2026, 3, 5), "nl") == "5 maart 2026"
    assert format_date(dt.date(2026, 5, 31), "en") == "31 May 2026"


def test_an_unknown_time_zone_or_language_is_refused(templates: Templates) -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        format_date(FINISHED, "en", "Mars/Olympus")
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        templates.render("delivered", "en", {"to": NUMBER}, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="'fr'"):
        templates.render("delivered", "fr", {"to": NUMBER})
    with pytest.raises(ValueError, match="'fr'"):
        pages_text(3, "fr")
    with pytest.raises(ValueError, match="'delivery'"):
        templates.render("delivery", "en", {"to": NUMBER})


def test_pages_text_is_pluralised_and_grouped() -> None:
    assert [pages_text(n, "en") for n in (1, 3)] == ["1 page", "3 pages"]
    assert [pages_text(n, "de") for n in (1, 3)] == ["1 Seite", "3 Seiten"]
    assert [pages_text(n, "nl") for n in (1, 3)] == ["1 pagina", "3 pagina's"]
    assert pages_text(1234, "en") == "1,234 pages"
    assert pages_text(1234, "de") == "1.234 Seiten"


def test_one_page_and_unknown_pages_in_a_subject(templates: Templates) -> None:
    assert render_notice(templates, "delivered", "de", pages=1).subject.startswith(
        f"Fax an {NUMBER} zugestellt — 1 Seite ("
    )
    for unknown in (None, 0):
        rendered = render_notice(templates, "delivered", "en", pages=unknown)
        assert rendered.subject == f"Fax to {NUMBER} delivered (Re: {THEIR_SUBJECT})"
        assert "Pages:" not in rendered.text


def test_format_hours_and_period() -> None:
    assert format_hours(1, "en") == "1 hour"
    assert format_hours(1.5, "de") == "1,5 Stunden"
    assert format_hours(dt.timedelta(hours=48), "nl") == "48 uur"
    assert format_period(dt.date(2026, 12, 1), dt.date(2026, 12, 31), "de") == "Dezember 2026"
    assert format_period(dt.date(2026, 12, 1), dt.date(2026, 12, 7), "de") == "1.–7. Dezember 2026"
    assert format_period(dt.date(2026, 12, 1), dt.date(2026, 12, 7), "en") == "1–7 December 2026"
    assert format_period(dt.date(2026, 11, 28), dt.date(2026, 12, 4), "nl") == "28 november – 4 december 2026"
    assert format_period(dt.date(2026, 12, 28), dt.date(2027, 1, 3), "en") == "28 December 2026 – 3 January 2027"
    assert format_period(dt.date(2026, 1, 1), dt.date(2026, 12, 31), "en") == "2026"
    assert format_period(dt.date(2026, 2, 3), dt.date(2026, 2, 3), "nl") == "3 februari 2026"
    with pytest.raises(ValueError, match="before"):
        format_period(dt.date(2026, 2, 3), dt.date(2026, 2, 1), "en")


# Subjects are headers.


@pytest.mark.parametrize(
    "hostile",
    [
        "Invoice\r\nBcc: victim@example.org",
        "Invoice\nBcc: victim@example.org",
        "Invoice\rBcc: victim@example.org",
        "Invoice\u2028Bcc: victim@example.org\x85X-Evil: 1\x00",
    ],
)
def test_line_breaks_in_values_cannot_add_headers(templates: Templates, hostile: str) -> None:
    rendered = render_notice(templates, "failed", "en", subject=hostile, reason=hostile, to=f"{NUMBER}\r\nCc: x@y.z")
    assert not any(char in rendered.subject for char in "\r\n\x00\x85\u2028")
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["To"] = "alice@example.com"
    message.set_content(rendered.text)
    parsed = email.message_from_bytes(message.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert parsed["Cc"] is None
    assert parsed["X-Evil"] is None
    assert len(parsed.get_all("Subject") or []) == 1
    assert "Invoice Bcc: victim@example.org" in str(parsed["Subject"])
    # In the body the values are single lines too.
    assert "\nBcc:" not in rendered.text
    assert "\rBcc" not in rendered.text


def test_a_long_sender_subject_is_shortened_and_the_suffix_stays_readable(templates: Templates) -> None:
    theirs = "Quarterly figures " + "and more figures " * 40
    rendered = render_notice(templates, "delivered", "en", subject=theirs)
    assert len(rendered.subject) <= 200
    assert rendered.subject.startswith(f"Fax to {NUMBER} delivered — 3 pages (Re: Quarterly figures and more")
    assert rendered.subject.endswith("…)")
    # The body keeps the sender's subject whole.
    assert "and more figures" in rendered.text

    long_reason = "The remote fax machine hung up " * 20
    huge = render_notice(templates, "failed", "en", subject=theirs, reason=long_reason)
    assert len(huge.subject) <= 200
    assert huge.subject.startswith(f"Fax to {NUMBER} failed: The remote fax machine")
    assert "(Re: Quarterly" in huge.subject
    assert huge.subject.endswith(")")


# Overrides and checks at load.


DELIVERED_OVERRIDE = """
subject = "Zugestellt: {subject} an {to}"
text = '''
Zugestellt am {date} um {time} Uhr.
'''
"""


def test_an_account_override_replaces_only_that_template(tmp_path: Path) -> None:
    directory = override_dir(tmp_path, {"de/delivered.toml": DELIVERED_OVERRIDE, "README.txt": "notes"})
    loaded = Templates.load(overrides={"acme": directory})
    values = notice_values()

    mine = loaded.render("delivered", "de", values, account="acme", tz=BERLIN, when=FINISHED)
    assert mine == Rendered(
        subject=f"Zugestellt: {THEIR_SUBJECT} an {NUMBER}",
        text="Zugestellt am 2. Dezember 2026 um 00:30 Uhr.\n",
        html=None,
    )
    assert loaded.source("delivered", "de", account="acme") == directory / "de" / "delivered.toml"
    # The same account's other templates and languages, and other accounts, keep the shipped texts.
    shipped = Templates.load()
    for name, language, account in (
        ("failed", "de", "acme"),
        ("delivered", "en", "acme"),
        ("delivered", "nl", "acme"),
        ("delivered", "de", "other"),
        ("delivered", "de", None),
    ):
        got = loaded.render(name, language, values, account=account, tz=BERLIN, when=FINISHED)
        assert got == shipped.render(name, language, values, account=account, tz=BERLIN, when=FINISHED)
    assert "Ihr Fax an" in loaded.render("delivered", "de", values, account="other", when=FINISHED).text


def test_an_unknown_placeholder_in_an_override_names_file_template_and_placeholder(tmp_path: Path) -> None:
    bad = 'subject = "Fax an {recipient} zugestellt"\ntext = "ok"\n'
    directory = override_dir(tmp_path, {"de/delivered.toml": bad})
    with pytest.raises(TemplateError) as caught:
        Templates.load(overrides={"acme": directory})
    error = caught.value
    message = str(error)
    assert str(directory / "de" / "delivered.toml") in message
    assert "'delivered'" in message
    assert "unknown placeholder {recipient} in subject" in message
    assert "allowed: {account}" in message
    assert "{to}" in message
    assert error.path == directory / "de" / "delivered.toml"
    assert (error.template, error.language, error.placeholder) == ("delivered", "de", "recipient")
    assert isinstance(error, ConfigError)


def test_an_unknown_placeholder_in_a_shipped_file_names_its_line(tmp_path: Path) -> None:
    base = shipped_copy(tmp_path)
    path = base / "nl" / "failed.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("Reden: {reason}", "Reden: {why}"), encoding="utf-8")
    with pytest.raises(
        TemplateError, match=r"nl/failed\.toml: template 'failed' \(nl\): unknown placeholder \{why\} in text, line 3"
    ):
        Templates.load(base)


def test_a_missing_template_file_is_an_error(tmp_path: Path) -> None:
    base = shipped_copy(tmp_path)
    (base / "nl" / "report.toml").unlink()
    with pytest.raises(TemplateError) as caught:
        Templates.load(base)
    assert caught.value.path == base / "nl" / "report.toml"
    assert "missing" in str(caught.value)
    assert "'report'" in str(caught.value)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        Templates.load(tmp_path / "nowhere")
    with pytest.raises(TemplateError, match="account 'acme'"):
        Templates.load(overrides={"acme": tmp_path / "nowhere"})


@pytest.mark.parametrize(
    ("placeholder", "problem"),
    [
        ("{to.__class__}", "attribute and index access are not allowed"),
        ("{to.__class__.__mro__[1].__subclasses__}", "attribute and index access are not allowed"),
        ("{to[0]}", "attribute and index access are not allowed"),
        ("{subject!r}", "format specs and conversions are not supported"),
        ("{pages:>999999999}", "format specs and conversions are not supported"),
        ("{0}", "a placeholder is a lower-case name"),
        ("{}", "a placeholder is a lower-case name"),
        ("{To}", "a placeholder is a lower-case name"),
        ("{to", "unmatched '{'"),
        ("to}", "unmatched '}'"),
    ],
)
def test_anything_but_a_plain_name_is_refused(tmp_path: Path, placeholder: str, problem: str) -> None:
    content = f'subject = "Fax {placeholder}"\ntext = "Your fax."\n'
    directory = override_dir(tmp_path, {"en/delivered.toml": content})
    with pytest.raises(TemplateError, match=r"en/delivered\.toml: template 'delivered'") as caught:
        Templates.load(overrides={"acme": directory})
    assert problem in str(caught.value)


def test_doubled_braces_are_literal_and_never_substituted(tmp_path: Path) -> None:
    content = "subject = \"Fax {{to}} {to}\"\ntext = '''\n{{\"job\": \"{job_id}\"}} {{to.__class__}}\n'''\n"
    directory = override_dir(tmp_path, {"en/delivered.toml": content})
    loaded = Templates.load(overrides={"acme": directory})
    rendered = loaded.render("delivered", "en", {"to": NUMBER, "job_id": "J-1"}, account="acme")
    assert rendered.subject == f"Fax {{to}} {NUMBER}"
    assert rendered.text == '{"job": "J-1"} {to.__class__}\n'


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"en/delivered.toml": 'subject = "x"\ntext = "y\n'}, "not valid TOML"),
        ({"en/delivered.toml": 'subject = "x"\n'}, "has no text"),
        ({"en/delivered.toml": 'subject = "x"\ntext = "y"\nfooter = "z"\n'}, "unknown key(s) footer"),
        ({"en/delivered.toml": 'subject = "x"\ntext = 3\n'}, "text must be a string"),
        ({"en/delivered.toml": 'subject = "   "\ntext = "y"\n'}, "the subject is empty"),
        ({"en/delivered.toml": 'subject = "a\\nBcc: x@y.z"\ntext = "y"\n'}, "one line without control characters"),
        ({"en/delivered.toml": 'subject = "x {documents}"\ntext = "y"\n'}, "cannot go into the subject"),
        ({"en/deliverd.toml": 'subject = "x"\ntext = "y"\n'}, "unknown template 'deliverd'"),
        ({"fr/delivered.toml": 'subject = "x"\ntext = "y"\n'}, "unknown language folder"),
        ({"delivered.toml": 'subject = "x"\ntext = "y"\n'}, "belongs in a language folder"),
        ({"en/secret_rotated.toml": 'subject = "Key"\ntext = "A new key was made."\n'}, "must contain {key}"),
        ({"en/secret_rotated.toml": 'subject = "Key {key}"\ntext = "{key}"\n'}, "must not appear in the subject"),
        ({"en/report.toml": 'subject = "R"\ntext = "{period}"\n'}, "must contain {summary}"),
        ({"en/delivered.toml": 'subject = "x"\ntext = "a\\u0000b"\n'}, "the text holds a control character"),
        ({"en/incoming.toml": 'subject = "Fax {to}"\ntext = "x"\n'}, "unknown placeholder {to}"),
        ({"en/incoming.toml": 'subject = "Fax"\ntext = "x"\nhtml = "<p>{reason}</p>"\n'}, "{reason} in html"),
    ],
)
def test_invalid_override_files_are_refused_at_load(tmp_path: Path, files: Mapping[str, str], problem: str) -> None:
    directory = override_dir(tmp_path, files)
    with pytest.raises(TemplateError) as caught:
        Templates.load(overrides={"acme": directory})
    assert problem in str(caught.value)
    assert str(directory) in str(caught.value)


def test_the_placeholder_table_matches_the_templates() -> None:
    assert set(PLACEHOLDERS) == set(TEMPLATE_NAMES)
    assert "key" in PLACEHOLDERS["secret_rotated"]
    assert "key" not in PLACEHOLDERS["delivered"]
    for name in NOTICES:
        assert {"to", "pages", "pages_text", "status", "reason", "code", "job_id", "subject", "subject_suffix"} <= (
            PLACEHOLDERS[name]
        )
        assert {"date", "time", "service", "account", "documents", "advice"} <= PLACEHOLDERS[name]
    assert {"caller", "called", "pages", "date", "time", "fax_id"} <= PLACEHOLDERS["incoming"]
    assert {"period", "summary"} <= PLACEHOLDERS["report"]


# Values.


def test_status_account_and_blocks(tmp_path: Path) -> None:
    content = (
        'subject = "[{account}] {status}: {to}"\n'
        "text = '''\n"
        "Status: {status}\n"
        "Notes: {documents}\n"
        "  {documents}\n"
        "* {advice}\n"
        "'''\n"
    )
    directory = override_dir(tmp_path, {"de/failed.toml": content, "nl/failed.toml": content})
    loaded = Templates.load(overrides={"acme": directory})
    values = {"to": NUMBER, "documents": "a.pdf\r\nb.pdf", "advice": ("one", "two")}
    rendered = loaded.render("failed", "de", values, account="acme")
    assert rendered.subject == f"[acme] fehlgeschlagen: {NUMBER}"
    assert rendered.text == "Status: fehlgeschlagen\nNotes: a.pdf\nb.pdf\n  a.pdf\n  b.pdf\n* one\n* two\n"
    given = loaded.render("failed", "nl", {**values, "status": "kapot", "account": "Acme BV"}, account="acme")
    assert given.subject == f"[Acme BV] kapot: {NUMBER}"


def test_bad_values_are_refused(templates: Templates) -> None:
    with pytest.raises(ValueError, match="computed"):
        templates.render("delivered", "en", {"to": NUMBER, "pages_text": "3 pages"})
    with pytest.raises(ValueError, match="no placeholder of template 'delivered'"):
        templates.render("delivered", "en", {"to": NUMBER, "recipient": "x"})
    with pytest.raises(ValueError, match=r"needs a value for \{to\}"):
        templates.render("delivered", "en", {"to": "  "})
    with pytest.raises(ValueError, match=r"needs a value for \{service\}"):
        templates.render("handed_over", "en", {"to": NUMBER})
    with pytest.raises(ValueError, match=r"needs a value for \{key\}"):
        templates.render("secret_rotated", "en", {"grace": 24})
    with pytest.raises(TypeError, match="pages"):
        templates.render("delivered", "en", {"to": NUMBER, "pages": "3"})
    with pytest.raises(TypeError, match="to"):
        templates.render("delivered", "en", {"to": object()})
    with pytest.raises(TypeError, match="documents"):
        templates.render("delivered", "en", {"to": NUMBER, "documents": [1, 2]})


def test_when_defaults_to_now_and_a_naive_when_is_utc(templates: Templates) -> None:
    naive = templates.render("incoming", "en", {}, tz=BERLIN, when=dt.datetime(2026, 12, 1, 23, 30))
    assert "2 December 2026 at 00:30" in naive.text
    before = dt.datetime.now(dt.UTC)
    now = templates.render("incoming", "en", {}, tz="UTC")
    after = dt.datetime.now(dt.UTC)
    assert any(format_date(moment, "en") in now.text for moment in (before, after))


def test_long_lines_wrap_without_splitting_a_number_or_a_date(tmp_path: Path) -> None:
    content = (
        'subject = "x"\n'
        "text = '''\n"
        "The quick brown fox jumps over the lazy dog and then quickly faxes {to} on {date} at {time}.\n"
        "- A bullet that is long enough to wrap onto a second line, so that its hanging indent shows: {reason}\n"
        "'''\n"
    )
    directory = override_dir(tmp_path, {"en/delivered.toml": content})
    loaded = Templates.load(overrides={"acme": directory})
    values = {"to": NUMBER, "reason": "done"}
    rendered = loaded.render("delivered", "en", values, account="acme", tz=BERLIN, when=FINISHED)
    assert rendered.text == (
        "The quick brown fox jumps over the lazy dog and then quickly faxes\n"
        f"{NUMBER} on 2 December 2026 at 00:30.\n"
        "- A bullet that is long enough to wrap onto a second line, so that its\n"
        "  hanging indent shows: done\n"
    )
