"""From an SMTP envelope to who is faxing what where: recipient → E.164 number, sender → account.

Numbers are parsed and validated by ``phonenumbers``; the only rules written here are the ones about the
address itself: the local part may hold ASCII digits, one leading ``+`` and the separators people type
(``-``, ``.``, spaces, parentheses). Anything else (Unicode digits, letters, ``%``, quotes, plus-tags) is
refused, because a number that is only almost what the sender wrote must not be dialled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

import phonenumbers

from bridge.errors import RecipientRejected, SenderNotAuthorized
from bridge.settings import AccountSettings, Settings

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
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def format_number(e164: str) -> str:
    """Format an E.164 number for people: ``+49 30 123456``."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def header_addresses(values: Iterable[str]) -> list[str]:
    """Return the lower-cased addresses in ``From:``-style header values."""
    return [addr.strip().lower() for _name, addr in getaddresses(list(values)) if addr.strip()]


class Router:
    """Answers the questions the SMTP session asks about addresses, from the configuration."""

    def __init__(self, settings: Settings) -> None:
        self._fax_domains = frozenset(settings.fax_domains)
        self._exact: dict[str, AccountSettings] = {}
        self._domains: dict[str, AccountSettings] = {}
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

    def recipient(self, address: str, account: AccountSettings) -> Recipient:
        """Parse a fax-domain address for ``account``; raises ``RecipientRejected``."""
        local, _domain = split_address(address)
        return Recipient(address=address, number=parse_number(local, account.country))

    def check_from_header(self, account: AccountSettings, from_values: Sequence[str]) -> None:
        """Every ``From:`` address must belong to the same account as the envelope sender."""
        addresses = header_addresses(from_values)
        if not addresses:
            raise SenderNotAuthorized("the message has no From: address")
        for address in addresses:
            owner = self.account_for(address)
            if owner is None or owner.name != account.name:
                raise SenderNotAuthorized(f"From: {address} is not an allowed sender of account {account.name}")
