"""Recipient addresses to E.164 numbers, and senders to accounts."""

from __future__ import annotations

import pytest

from bridge.errors import RecipientRejected, SenderNotAuthorized
from bridge.routing import Router, format_number, parse_number, split_address
from bridge.settings import Settings


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("+4930123456", "+4930123456"),
        ("004930123456", "+4930123456"),
        ("030123456", "+4930123456"),
        ("030-123-456", "+4930123456"),
        ("030.123.456", "+4930123456"),
        ("(030) 123 456", "+4930123456"),
        ("+31201234567", "+31201234567"),
        ("0031201234567", "+31201234567"),
    ],
)
def test_numbers_people_write_become_e164(local: str, expected: str) -> None:
    assert parse_number(local, "DE") == expected


def test_national_number_is_read_with_the_accounts_country() -> None:
    assert parse_number("0201234567", "NL") == "+31201234567"
    assert parse_number("0201234567", "DE") != "+31201234567"


@pytest.mark.parametrize(
    "local",
    [
        "",
        "abc",
        "030123456+tag",
        '"030123456"',
        "030%123456",
        "+49３0123456",  # full-width digit
        "+٤٩30123456",  # Arabic-Indic digits
        "12",
        "+49",
        "+999123456789",  # no such country code
        "0000000",
        "030/123456",
    ],
)
def test_anything_but_a_valid_number_is_refused(local: str) -> None:
    with pytest.raises(RecipientRejected):
        parse_number(local, "DE")


def test_split_address_normalises_the_domain() -> None:
    assert split_address("+4930123456@FAX.LocalHost.") == ("+4930123456", "fax.localhost")
    assert split_address("no-at-sign") == ("no-at-sign", "")


def test_format_number_for_people() -> None:
    assert format_number("+4930123456") == "+49 30 123456"


def test_fax_domains_and_relaying(make_settings: object) -> None:
    settings: Settings = make_settings()  # type: ignore[operator]
    router = Router(settings)
    assert router.is_fax_address("+4930123456@fax.localhost")
    assert router.is_fax_address("+4930123456@FAX.LOCALHOST.")
    assert not router.is_fax_address("someone@example.com")
    assert not router.is_fax_address("+4930123456@fax.localhost.evil.example")


def test_senders_exact_and_by_domain(make_settings: object) -> None:
    settings: Settings = make_settings(  # type: ignore[operator]
        accounts=[
            {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]},
            {"name": "acme", "provider": "local", "country": "NL", "allowed_senders": ["*@acme.example"]},
        ]
    )
    router = Router(settings)
    demo = router.account_for("Demo@Example.com")
    assert demo is not None
    assert demo.name == "demo"
    acme = router.account_for("anyone@acme.example")
    assert acme is not None
    assert acme.name == "acme"
    assert router.account_for("other@example.com") is None
    assert router.account_for("") is None
    assert router.account_for("anyone@sub.acme.example") is None


def test_from_header_must_belong_to_the_same_account(make_settings: object) -> None:
    settings: Settings = make_settings(  # type: ignore[operator]
        accounts=[
            {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]},
            {"name": "acme", "provider": "local", "allowed_senders": ["*@acme.example"]},
        ]
    )
    router = Router(settings)
    demo = settings.account("demo")
    router.check_from_header(demo, ['"Demo User" <demo@example.com>'])
    with pytest.raises(SenderNotAuthorized):
        router.check_from_header(demo, ["boss@acme.example"])
    with pytest.raises(SenderNotAuthorized):
        router.check_from_header(demo, ["stranger@example.org"])
    with pytest.raises(SenderNotAuthorized):
        router.check_from_header(demo, [])
    with pytest.raises(SenderNotAuthorized):
        router.check_from_header(demo, ["demo@example.com, stranger@example.org"])
