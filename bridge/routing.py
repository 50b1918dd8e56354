"""From an SMTP envelope to who is faxing what where: recipient → E.164 number, sender → account.

Numbers are parsed and validated by ``phonenumbers``; the only rules written here are the ones about the
address itself: the local part may hold ASCII digits, one leading ``+`` and the separators people type
(``-``, ``.``, spaces, parentheses). Anything else (Unicode digits, letters, ``%``, quotes, plus-tags) is
refused, because a number that is only almost what the sender wrote must not be dialled.

A valid number then meets the account's destination policy (toll fraud, reliability.md §3): an ordered list
of small rules, ``DESTINATION_RULES``, each of which admits, refuses or has no opinion; the first opinion
decides, and a number no rule refuses is admitted. A refusal is ``DestinationDenied`` (``550 5.7.1``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from ipaddress import ip_address

import phonenumbers

from bridge.errors import DestinationDenied, RecipientRejected, SenderNotAuthorized
from bridge.settings import DEFAULT_DENIED_NUMBER_TYPES, AccountSettings, AuthUser, Settings

_SEPARATORS = re.compile(r"[-. ()]")
# Deliberately [0-9], not \d: str.isdigit() and \d accept Arabic-Indic and full-width digits.
_DIALLABLE = re.compile(r"\+?[0-9]{3,20}")


@dataclass(frozen=True, slots=True)
class Recipient:
    """A fax recipient as the client wrote it and as we will dial it."""

    address: str
    number: str
    """E.164, e.g. ``+4930123456``."""


def split_address(address: str) -> tuple[str, str]:
    """Split ``local@domain`` at the last ``@``; the domain is lower-cased without a trailing dot."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return address.strip(), ""
    return local, domain.rstrip(".").lower()


def parse_number(local_part: str, region: str) -> str:
    """Return the E.164 form of the fax number in ``local_part``, read with the account's ``region``.

    Raises ``RecipientRejected`` when it is not a valid number.
    """
    return phonenumbers.format_number(_parse(local_part, region), phonenumbers.PhoneNumberFormat.E164)


def _parse(local_part: str, region: str) -> phonenumbers.PhoneNumber:
    compact = _SEPARATORS.sub("", local_part)
    if not _DIALLABLE.fullmatch(compact):
        raise RecipientRejected(f"{local_part!r} is not a fax number")
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        parsed = phonenumbers.parse(compact, None if compact.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise RecipientRejected(f"{local_part!r} is not a fax number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise RecipientRejected(f"{local_part!r} is not a valid number")
    return parsed


def format_number(e164: str) -> str:
    """Format an E.164 number for people: ``+49 30 123456``."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


# Destination policy.

_TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(phonenumbers.PhoneNumberType).items() if isinstance(value, int)
}
_TYPE_VALUES = {name: value for value, name in _TYPE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Destination:
    """A valid number as the destination rules see it."""

    number: str
    """E.164, e.g. ``+499001234567``."""
    region: str
    """ISO 3166 region, or ``001`` for numbers of no country (``+800``, ``+881``…)."""
    number_type: int
    """A ``phonenumbers.PhoneNumberType`` value."""

    @classmethod
    def of(cls, parsed: phonenumbers.PhoneNumber) -> Destination:
        """Describe a parsed, valid number."""
        return cls(
            number=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
            region=phonenumbers.region_code_for_number(parsed) or phonenumbers.UNKNOWN_REGION,
            number_type=phonenumbers.number_type(parsed),
        )

    @property
    def type_name(self) -> str:
        """The number type's name, such as ``PREMIUM_RATE``."""
        return _TYPE_NAMES.get(self.number_type, str(self.number_type))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's opinion on a destination: admitted or refused, and why (for the log)."""

    admitted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """One account's destination settings, prepared once for the rules."""

    account: str
    allowed_countries: frozenset[str]
    allowed_prefixes: tuple[str, ...]
    """Longest first, so that a refusal or admission names the most specific prefix."""
    denied_prefixes: tuple[str, ...]
    denied_types: frozenset[int]
    source: AccountSettings | None = field(default=None, compare=False, repr=False)
    """The settings this was built from; the router rebuilds the policy for any other object."""

    @classmethod
    def for_account(cls, account: AccountSettings) -> DestinationPolicy:
        """Prepare ``account``'s policy."""
        allowed_types = set(account.allowed_number_types)
        return cls(
            account=account.name,
            allowed_countries=frozenset(account.allowed_countries),
            allowed_prefixes=_longest_first(account.allowed_prefixes),
            denied_prefixes=_longest_first(account.denied_prefixes),
            denied_types=frozenset(
                _TYPE_VALUES[name] for name in DEFAULT_DENIED_NUMBER_TYPES if name not in allowed_types
            ),
            source=account,
        )

    def check(self, destination: Destination) -> None:
        """Run ``DESTINATION_RULES`` in order; raise ``DestinationDenied`` if the first opinion is a refusal."""
        for rule in DESTINATION_RULES:
            verdict = rule(self, destination)
            if verdict is None:
                continue
            if verdict.admitted:
                return
            raise DestinationDenied(
                f"{format_number(destination.number)} is not allowed for account {self.account}: {verdict.reason}"
            )


def _longest_first(prefixes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(prefixes), key=lambda prefix: (-len(prefix), prefix)))


def _matching(number: str, prefixes: tuple[str, ...]) -> str | None:
    return next((prefix for prefix in prefixes if number.startswith(prefix)), None)


DestinationRule = Callable[[DestinationPolicy, Destination], Verdict | None]


def denied_prefix_rule(policy: DestinationPolicy, destination: Destination) -> Verdict | None:
    """Refuse a number under one of ``denied_prefixes``. It runs first: nothing admits a denied prefix."""
    prefix = _matching(destination.number, policy.denied_prefixes)
    return None if prefix is None else Verdict(False, f"prefix {prefix} is in denied_prefixes")


def allowed_prefix_rule(policy: DestinationPolicy, destination: Destination) -> Verdict | None:
    """Admit a number under one of ``allowed_prefixes``: the administrator's explicit exception to the
    country and number-type rules after it."""
    prefix = _matching(destination.number, policy.allowed_prefixes)
    return None if prefix is None else Verdict(True, f"prefix {prefix} is in allowed_prefixes")


def country_rule(policy: DestinationPolicy, destination: Destination) -> Verdict | None:
    """Refuse a number of no country, and, when ``allowed_countries`` is set, of any country not listed.

    Numbers of no country (international freephone, satellite phones, international networks) are where
    revenue share fraud lives and are not a place anyone's fax machine is; an allowed prefix can admit them.
    """
    if destination.region not in phonenumbers.SUPPORTED_REGIONS:
        return Verdict(False, "the number belongs to no country (allow it with allowed_prefixes)")
    if policy.allowed_countries and destination.region not in policy.allowed_countries:
        return Verdict(False, f"country {destination.region} is not in allowed_countries")
    return None


def number_type_rule(policy: DestinationPolicy, destination: Destination) -> Verdict | None:
    """Refuse the number types denied by default (premium rate, shared cost…) that the account did not allow."""
    if destination.number_type in policy.denied_types:
        return Verdict(False, f"number type {destination.type_name} is denied (allow it with allowed_number_types)")
    return None


DESTINATION_RULES: tuple[DestinationRule, ...] = (
    denied_prefix_rule,
    allowed_prefix_rule,
    country_rule,
    number_type_rule,
)
"""The destination rules in the order they run; the first that has an opinion decides."""


def header_addresses(values: Iterable[str]) -> list[str]:
    """Return the lower-cased addresses in ``From:``-style header values."""
    return [addr.strip().lower() for _name, addr in getaddresses(list(values)) if addr.strip()]


class Router:
    """Answers the questions the SMTP session asks about addresses, from the configuration."""

    def __init__(self, settings: Settings) -> None:
        self._fax_domains = frozenset(settings.fax_domains)
        self._policies = {account.name: DestinationPolicy.for_account(account) for account in settings.accounts}
        self._exact: dict[str, AccountSettings] = {}
        self._domains: dict[str, AccountSettings] = {}
        # Usernames are unique across accounts (checked in Settings).
        self._users: dict[str, tuple[AuthUser, AccountSettings]] = {
            user.username: (user, account) for account in settings.accounts for user in account.auth_users
        }
        # The first account that lists a sender wins, so the order in the file decides overlaps.
        for account in settings.accounts:
            for pattern in account.allowed_senders:
                if pattern.startswith("*@"):
                    self._domains.setdefault(pattern[2:], account)
                else:
                    self._exact.setdefault(pattern, account)

    @property
    def fax_domains(self) -> frozenset[str]:
        """The domains whose addresses are fax numbers."""
        return self._fax_domains

    def is_fax_address(self, address: str) -> bool:
        """Whether ``address`` is in one of our fax domains (anything else would be relaying)."""
        return split_address(address)[1] in self._fax_domains

    def account_for(self, sender: str) -> AccountSettings | None:
        """The account whose allowed senders include ``sender`` (exact address first, then ``*@domain``)."""
        sender = sender.strip().lower()
        if not sender or "@" not in sender:
            return None
        exact = self._exact.get(sender)
        if exact is not None:
            return exact
        return self._domains.get(split_address(sender)[1])

    def auth_user(self, username: str) -> AuthUser | None:
        """The SMTP AUTH user called ``username`` (exact, case-sensitive), if any account lists it."""
        found = self._users.get(username)
        return None if found is None else found[0]

    def account_for_user(self, username: str) -> AccountSettings | None:
        """The account that lists the SMTP AUTH user ``username``."""
        found = self._users.get(username)
        return None if found is None else found[1]

    def recipient(self, address: str, account: AccountSettings) -> Recipient:
        """Parse a fax-domain address for ``account`` and apply its destination policy.

        Raises ``RecipientRejected`` for a number that is not valid, ``DestinationDenied`` for a valid number
        the account may not fax to.
        """
        local, _domain = split_address(address)
        destination = Destination.of(_parse(local, account.country))
        self.policy_for(account).check(destination)
        return Recipient(address=address, number=destination.number)

    def policy_for(self, account: AccountSettings) -> DestinationPolicy:
        """``account``'s destination policy, prepared when the router was built."""
        policy = self._policies.get(account.name)
        if policy is None or policy.source is not account:
            # An account object the router was not built from (a test's, a changed copy): judge it by its own
            # settings rather than by a namesake's.
            policy = DestinationPolicy.for_account(account)
        return policy

    def check_from_header(self, account: AccountSettings, from_values: Sequence[str]) -> None:
        """Every ``From:`` address must belong to the same account as the envelope sender."""
        addresses = header_addresses(from_values)
        if not addresses:
            raise SenderNotAuthorized("the message has no From: address")
        for address in addresses:
            owner = self.account_for(address)
            if owner is None or owner.name != account.name:
                raise SenderNotAuthorized(f"From: {address} is not an allowed sender of account {account.name}")


def _matches(pattern: str, value: str, use_regex: bool) -> bool:
    if not pattern:
        return True
    if use_regex:
        return re.fullmatch(pattern, value, flags=re.IGNORECASE) is not None
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def acl_admits(account: AccountSettings, *, sender: str, client: str | None, number: str) -> bool:
    """Whether the account's Mail2Fax ACL admits ``sender`` from ``client`` faxing ``number``.

    An account without rules admits everything its other settings admit; with rules, one rule must match on
    every field it sets.
    """
    if not account.acl:
        return True
    try:
        client_ip = ip_address(client) if client else None
    except ValueError:
        client_ip = None
    for rule in account.acl:
        if not _matches(rule.from_email, sender.strip().lower(), rule.use_regex):
            continue
        if rule.received_from is not None and (client_ip is None or client_ip not in rule.received_from):
            continue
        if rule.destination and not any(
            _matches(rule.destination, form, rule.use_regex) for form in (number, number.lstrip("+"))
        ):
            continue
        return True
    return False
