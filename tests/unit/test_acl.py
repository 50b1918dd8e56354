"""Mail2Fax ACL rules in Sipwise's shape: every field a rule sets must match; one rule must admit."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.routing import acl_admits

RULES = [
    {"from_email": "*@example.com", "received_from": "192.0.2.0/24", "destination": "+49*"},
    {"from_email": "boss@example.com", "destination": r"^\+?(31|32)[0-9]+$", "use_regex": True},
    {"received_from": "2001:db8::/32"},
]


@pytest.fixture
def account(make_settings: Any) -> Any:
    base = {"name": "demo", "provider": "local", "allowed_senders": ["*@example.com"]}
    return make_settings(accounts=[{**base, "acl": RULES}]).accounts[0]


@pytest.mark.parametrize(
    ("sender", "client", "number", "admitted"),
    [
        ("clerk@example.com", "192.0.2.7", "+4930123456", True),
        ("Clerk@Example.com", "192.0.2.7", "+4930123456", True),
        ("clerk@example.com", "198.51.100.7", "+4930123456", False),
        ("clerk@example.com", "192.0.2.7", "+31201234567", False),
        ("boss@example.com", "198.51.100.7", "+31201234567", True),
        ("boss@example.com", "198.51.100.7", "+4930123456", False),
        ("anyone@example.com", "2001:db8::25", "+18005550100", True),
        ("anyone@example.com", None, "+18005550100", False),
        ("anyone@example.com", "not-an-ip", "+18005550100", False),
    ],
)
def test_one_rule_must_admit_on_every_field_it_sets(
    account: Any, sender: str, client: str | None, number: str, admitted: bool
) -> None:
    assert acl_admits(account, sender=sender, client=client, number=number) is admitted


def test_no_rules_admit_everything(make_settings: Any) -> None:
    account = make_settings().accounts[0]
    assert acl_admits(account, sender="demo@example.com", client=None, number="+4930123456")


def test_a_bad_regex_is_a_configuration_error(make_settings: Any) -> None:
    base = {"name": "demo", "provider": "local", "allowed_senders": ["*@example.com"]}
    with pytest.raises(ConfigError, match=r"accounts\.0\.acl\.0.*destination is not a regular expression"):
        make_settings(accounts=[{**base, "acl": [{"destination": "(", "use_regex": True}]}])
