"""Destination policy per account (toll fraud): which valid numbers an account may fax to, and the settings."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from bridge.errors import ConfigError, DestinationDenied, MessageRejected, RecipientRejected
from bridge.routing import (
    DESTINATION_RULES,
    Router,
    allowed_prefix_rule,
    country_rule,
    denied_prefix_rule,
    number_type_rule,
)
from bridge.settings import DEFAULT_DENIED_NUMBER_TYPES, AccountSettings, Settings
from tests.conftest import SettingsFactory

DOMAIN = "fax.localhost"

# phonenumbers' own example numbers: the library that decides a number's type also says what a typical
# number of each type looks like, so these tests follow its metadata instead of hand-picked ranges.
REGIONS = ["DE", "FR", "GB", "NL", "AT", "CH", "IT", "ES", "BE", "PL", "SE", "US", "AU", "JP", "IN", "BR"]


def _example(region: str, type_name: str) -> str | None:
    example = phonenumbers.example_number_for_type(region, getattr(PhoneNumberType, type_name))
    if example is None:
        return None
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


DENIED_EXAMPLES = [
    pytest.param(region, type_name, number, id=f"{region}-{type_name}")
    for region in REGIONS
    for type_name in DEFAULT_DENIED_NUMBER_TYPES
    if (number := _example(region, type_name)) is not None
]


def account(**policy: Any) -> AccountSettings:
    """An account of the default ``demo`` shape with the given destination settings."""
    fields: dict[str, Any] = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]}
    return AccountSettings(**(fields | policy))


@pytest.fixture
def router(settings: Settings) -> Router:
    return Router(settings)


def fax(router: Router, local_part: str, acct: AccountSettings | None = None) -> str:
    """The E.164 number ``local_part`` is faxed to, or the exception the router raises."""
    return router.recipient(f"{local_part}@{DOMAIN}", acct or account()).number


def test_the_examples_cover_at_least_ten_countries() -> None:
    regions = {param.values[0] for param in DENIED_EXAMPLES}

    assert len(regions) >= 10, regions
    # Every denied type has an example somewhere, so each one is tested at least once.
    assert {param.values[1] for param in DENIED_EXAMPLES} == set(DEFAULT_DENIED_NUMBER_TYPES)


@pytest.mark.parametrize(("region", "type_name", "number"), DENIED_EXAMPLES)
def test_denied_number_types_are_refused_by_default(router: Router, region: str, type_name: str, number: str) -> None:
    with pytest.raises(DestinationDenied) as refused:
        fax(router, number)

    assert f"number type {type_name} is denied" in str(refused.value)
    assert "account demo" in str(refused.value)


@pytest.mark.parametrize("region", REGIONS)
def test_fixed_line_examples_are_admitted(router: Router, region: str) -> None:
    number = _example(region, "FIXED_LINE")
    assert number is not None

    assert fax(router, number) == number


@pytest.mark.parametrize(("region", "type_name", "number"), DENIED_EXAMPLES)
def test_allowed_number_types_lift_the_default_denial(router: Router, region: str, type_name: str, number: str) -> None:
    assert fax(router, number, account(allowed_number_types=[type_name])) == number


def test_allowing_one_type_leaves_the_others_denied(router: Router) -> None:
    premium_allowed = account(allowed_number_types=["PREMIUM_RATE"])

    assert fax(router, "+499001234567", premium_allowed) == "+499001234567"
    with pytest.raises(DestinationDenied, match="SHARED_COST"):
        fax(router, "+4918012345", premium_allowed)
    with pytest.raises(DestinationDenied, match="VOIP"):
        fax(router, "+445612345678", premium_allowed)


def test_ordinary_types_are_admitted(router: Router) -> None:
    assert fax(router, "+4915123456789") == "+4915123456789"  # mobile
    assert fax(router, "+498001234567") == "+498001234567"  # toll free
    assert fax(router, "+12015550123") == "+12015550123"  # fixed line or mobile (NANP)


def test_us_900_premium_range_is_refused(router: Router) -> None:
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, "+19002345678")
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, "9002345678", account(country="US"))
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, "1-900-234-5678", account(country="US"))


def test_caribbean_plus_one_countries_follow_allowed_countries(router: Router) -> None:
    jamaica, dominican_republic = "+18762345678", "+18092345678"
    puerto_rico, new_jersey = "+17872345678", "+12015550123"
    # They are other countries sharing +1: without a country restriction they are ordinary numbers.
    assert fax(router, jamaica) == jamaica
    assert fax(router, dominican_republic) == dominican_republic

    north_america = account(country="US", allowed_countries=["US", "CA"])
    with pytest.raises(DestinationDenied, match="country JM is not in allowed_countries"):
        fax(router, jamaica, north_america)
    with pytest.raises(DestinationDenied, match="country DO is not in allowed_countries"):
        fax(router, dominican_republic, north_america)
    with pytest.raises(DestinationDenied, match="country JM"):
        fax(router, "8762345678", north_america)  # dialled as a national +1 number
    with pytest.raises(DestinationDenied, match="country PR"):
        fax(router, puerto_rico, north_america)
    assert fax(router, new_jersey, north_america) == new_jersey

    with_puerto_rico = account(country="US", allowed_countries=["US", "CA", "PR"])
    assert fax(router, puerto_rico, with_puerto_rico) == puerto_rico
    with pytest.raises(DestinationDenied, match="country JM"):
        fax(router, jamaica, with_puerto_rico)


@pytest.mark.parametrize(
    ("local_part", "acct"),
    [
        pytest.param("00499001234567", account(), id="00-from-DE"),
        pytest.param("00 49 900 123 4567", account(), id="00-with-spaces"),
        pytest.param("09001234567", account(), id="national-DE"),
        pytest.param("011499001234567", account(country="US"), id="011-from-US"),
        pytest.param("0019002345678", account(), id="00-1-900"),
    ],
)
def test_international_and_national_prefixes_are_normalised_before_the_check(
    router: Router, local_part: str, acct: AccountSettings
) -> None:
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, local_part, acct)


def test_denied_prefixes_refuse_ordinary_numbers(router: Router) -> None:
    acct = account(denied_prefixes=["+4940", "+1900"])

    with pytest.raises(DestinationDenied, match=r"prefix \+4940 is in denied_prefixes"):
        fax(router, "004940123456", acct)
    assert fax(router, "+4930123456", acct) == "+4930123456"


def test_denied_prefixes_win_over_everything(router: Router) -> None:
    acct = account(
        denied_prefixes=["+49900"],
        allowed_prefixes=["+4990012"],
        allowed_number_types=["PREMIUM_RATE"],
        allowed_countries=["DE"],
    )

    with pytest.raises(DestinationDenied, match=r"prefix \+49900 is in denied_prefixes"):
        fax(router, "+499001234567", acct)


def test_allowed_prefixes_override_type_and_country(router: Router) -> None:
    acct = account(allowed_prefixes=["+49900123", "+33"], allowed_countries=["DE"])

    assert fax(router, "+499001234567", acct) == "+499001234567"
    assert fax(router, "+33891123456", acct) == "+33891123456"  # French premium rate, France not allowed
    # Only under the prefix: the next premium number and other countries are still judged by the rules.
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, "+499003234567", acct)
    with pytest.raises(DestinationDenied, match="country NL"):
        fax(router, "+31101234567", acct)


def test_allowed_prefixes_are_exceptions_not_a_restriction(router: Router) -> None:
    acct = account(allowed_prefixes=["+4930"])

    assert fax(router, "+4940123456", acct) == "+4940123456"


def test_country_restriction(router: Router) -> None:
    acct = account(allowed_countries=["de", " at "])

    assert acct.allowed_countries == ["DE", "AT"]
    assert fax(router, "+4930123456", acct) == "+4930123456"
    assert fax(router, "+431234567890", acct) == "+431234567890"
    with pytest.raises(DestinationDenied, match="country FR is not in allowed_countries"):
        fax(router, "+33123456789", acct)
    # An allowed country does not lift the number-type rule.
    with pytest.raises(DestinationDenied, match="PREMIUM_RATE"):
        fax(router, "+43900123456", acct)


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("+80012345678", id="800-international-freephone"),
        pytest.param("+881612345678", id="881-satellite"),
        pytest.param("+8823421234", id="882-international-networks"),
        pytest.param("+883510012345", id="883-international-networks"),
    ],
)
def test_numbers_of_no_country_need_an_allowed_prefix(router: Router, number: str) -> None:
    with pytest.raises(DestinationDenied, match="belongs to no country"):
        fax(router, number)

    assert fax(router, number, account(allowed_prefixes=[number[:4]])) == number


def test_invalid_numbers_are_still_bad_addresses_not_denials(router: Router) -> None:
    with pytest.raises(RecipientRejected) as rejected:
        fax(router, "+4990012")

    assert not isinstance(rejected.value, DestinationDenied)


def test_a_denial_is_an_authorization_refusal() -> None:
    assert issubclass(DestinationDenied, MessageRejected)
    assert not issubclass(DestinationDenied, RecipientRejected)
    assert DestinationDenied.smtp_reply == "550 5.7.1 Delivery not authorized: destination not allowed"


def test_the_rules_run_in_their_documented_order() -> None:
    rules = list(DESTINATION_RULES)

    assert rules == [denied_prefix_rule, allowed_prefix_rule, country_rule, number_type_rule]


def test_defaults_admit_every_country_and_deny_the_risky_types() -> None:
    acct = account()

    assert acct.allowed_countries == []
    assert acct.allowed_prefixes == []
    assert acct.denied_prefixes == []
    assert acct.allowed_number_types == []
    assert set(DEFAULT_DENIED_NUMBER_TYPES) == {
        "PREMIUM_RATE",
        "SHARED_COST",
        "UAN",
        "PERSONAL_NUMBER",
        "PAGER",
        "VOIP",
    }


def test_router_prepares_each_accounts_policy_once(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        accounts=[
            {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"]},
            {
                "name": "open",
                "provider": "local",
                "allowed_senders": ["*@acme.example"],
                "allowed_number_types": ["premium_rate"],
            },
        ]
    )
    router = Router(settings)
    demo, open_account = settings.account("demo"), settings.account("open")

    assert router.policy_for(demo) is router.policy_for(demo)
    assert open_account.allowed_number_types == ["PREMIUM_RATE"]
    assert fax(router, "+499001234567", open_account) == "+499001234567"
    with pytest.raises(DestinationDenied):
        fax(router, "+499001234567", demo)
    # A changed copy of an account is judged by its own settings, not by the namesake the router knows.
    changed = demo.model_copy(update={"allowed_number_types": ["PREMIUM_RATE"]})
    assert fax(router, "+499001234567", changed) == "+499001234567"


@pytest.mark.parametrize(
    ("key", "value", "location"),
    [
        ("denied_prefixes", ["4930"], "accounts.0.denied_prefixes.0"),
        ("denied_prefixes", ["+1900", "+1 976"], "accounts.0.denied_prefixes.1"),
        ("allowed_prefixes", ["0049"], "accounts.0.allowed_prefixes.0"),
        ("allowed_prefixes", ["+"], "accounts.0.allowed_prefixes.0"),
        ("allowed_countries", ["DE", "XX"], "accounts.0.allowed_countries.1"),
        ("allowed_number_types", ["FIXED_LINE"], "accounts.0.allowed_number_types.0"),
        ("allowed_number_types", ["PREMIUM"], "accounts.0.allowed_number_types.0"),
    ],
)
def test_invalid_policy_settings_name_the_key(
    make_settings: SettingsFactory, key: str, value: list[str], location: str
) -> None:
    acct = {"name": "demo", "provider": "local", "allowed_senders": ["demo@example.com"], key: value}

    with pytest.raises(ConfigError) as error:
        make_settings(accounts=[acct])

    assert f"  {location}: " in str(error.value)
    assert "faxbridge.toml" in str(error.value)


def test_valid_policy_settings_are_normalised(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        accounts=[
            {
                "name": "demo",
                "provider": "local",
                "allowed_senders": ["demo@example.com"],
                "allowed_countries": ["de", "Pr"],
                "allowed_prefixes": [" +4930 "],
                "denied_prefixes": ["+1900"],
                "allowed_number_types": ["voip"],
            }
        ]
    )
    [acct] = settings.accounts

    assert acct.allowed_countries == ["DE", "PR"]
    assert acct.allowed_prefixes == ["+4930"]
    assert acct.denied_prefixes == ["+1900"]
    assert acct.allowed_number_types == ["VOIP"]
