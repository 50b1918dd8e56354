"""Mail2Fax secret keys: a word in the subject that proves a mail comes from someone the account told.

Sipwise C5 calls it the subscriber's secret key. Here, per account (``secret_key_required``):

* the current key must appear anywhere in the subject as a word of its own, exactly (case and all: the key
  is random, so a near miss is a guess); the key that preceded it is still accepted for
  ``secret_key_grace_hours`` after a rotation;
* the key is removed from the subject before anything uses it: the stored message, the job, the cover page,
  the notices and the logs never see it;
* keys are stored as SHA-256 digests, never in clear. A key is 16 characters drawn at random from 31
  (about 79 bits), so a digest cannot be reversed by guessing; a slow password hash would only make every
  word of every subject cost milliseconds;
* renewal ``never`` / ``daily`` / ``weekly`` / ``monthly`` runs from an APScheduler timer in the daemon
  (``KeyRotation.rotate_due``); each new key is mailed to the account's ``secret_key_notify`` list (or
  ``notify_extra``). An account that requires a key and has none gets one at start-up, mailed the same way.
  ``faxbridge secrets rotate ACCOUNT`` makes one by hand and prints it.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Final

from bridge.errors import BridgeError, SenderNotAuthorized
from bridge.mailer import Mailer
from bridge.models import StoredKey
from bridge.notify import load_templates, subject_header
from bridge.settings import AccountSettings, Settings
from bridge.stores.base import JobStore
from bridge.templates import Templates

__all__ = [
    "KEY_ALPHABET",
    "KeyRotation",
    "KeyState",
    "SecretKeyMissing",
    "find_key",
    "generate_key",
    "hash_key",
    "next_rotation",
    "rewrite_subject",
    "strip_key",
]

log = logging.getLogger(__name__)

# Upper-case letters and digits without the ones people confuse when they copy a key by eye (0/O, 1/I/L).
KEY_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
KEY_LENGTH: Final = 16
# A word of the subject, as keys are made: ASCII letters and digits only. Full-width or other look-alike
# characters therefore never form a key, and a key glued to other letters is not a word of its own.
_WORD: Final = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]+(?![A-Za-z0-9])")


class SecretKeyMissing(SenderNotAuthorized):
    """The account requires a secret key and the subject holds no valid one. Never says which part failed."""


def generate_key() -> str:
    """A new random key."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(key: str) -> str:
    """The digest the store keeps instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def find_key(subject: str, digests: Iterable[str]) -> str | None:
    """The word of ``subject`` whose digest is one of ``digests``, or ``None``.

    Every word is compared with every digest in constant time, so timing tells nothing about how close a
    guess was.
    """
    wanted = list(digests)
    found: str | None = None
    for word in _WORD.findall(subject):
        if len(word) != KEY_LENGTH:
            continue
        digest = hash_key(word)
        for candidate in wanted:
            if hmac.compare_digest(digest, candidate):
                found = word
    return found


def strip_key(subject: str, key: str) -> str:
    """``subject`` without the word ``key`` (every occurrence), and without the spaces it leaves."""
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])")
    cleaned = pattern.sub("", subject)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_SUBJECT_FIELD: Final = re.compile(rb"(?im)^subject:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*(\r?\n)")


def rewrite_subject(raw: bytes, subject: str) -> bytes:
    """``raw`` with every ``Subject:`` field of the header replaced by one carrying ``subject``.

    Used to keep the key out of the stored message: the field is written anew (RFC 2047-encoded when it is
    not ASCII), whatever encoded words or folding the original had.
    """
    end = _HEADER_END.search(raw)
    head_end = end.start() if end else len(raw)
    newline = b"\r\n" if b"\r\n" in raw[: head_end + 2] else b"\n"
    message = EmailMessage(policy=SMTP_POLICY.clone(linesep=newline.decode()))
    message["Subject"] = subject
    field = message.as_bytes().split(newline + newline, 1)[0] + newline
    out: list[bytes] = []
    position = 0
    replaced = False
    for match in _SUBJECT_FIELD.finditer(raw, 0, head_end + len(newline)):
        out.append(raw[position : match.start()])
        if not replaced:
            out.append(field)
            replaced = True
        position = match.end()
    out.append(raw[position:])
    return b"".join(out)


# -- renewal --------------------------------------------------------------------------------------------

_PERIODS: Final = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


def next_rotation(renew: str, last: datetime) -> datetime | None:
    """When a key made at ``last`` is due for renewal; ``None`` for ``never``."""
    if renew == "never":
        return None
    if renew == "monthly":
        # The same day of the next month, or its last day when that month is shorter (31 January → 28/29
        # February).
        year, month = (last.year + 1, 1) if last.month == 12 else (last.year, last.month + 1)
        for day in (last.day, 30, 29, 28):
            try:
                return last.replace(year=year, month=month, day=min(last.day, day))
            except ValueError:
                continue
        raise AssertionError("unreachable")  # pragma: no cover
    return last + _PERIODS[renew]


@dataclass(frozen=True, slots=True)
class KeyState:
    """What ``faxbridge secrets show`` prints: never the key."""

    account: str
    required: bool
    renew: str
    current_since: datetime | None
    previous_until: datetime | None
    """Until when the key before the current one is still accepted, if that is still in the future."""
    next_rotation: datetime | None


class KeyRotation:
    """Checks keys in mail, and makes, stores and announces new ones."""

    def __init__(self, settings: Settings, store: JobStore, mailer: Mailer) -> None:
        self._settings = settings
        self._store = store
        self._mailer = mailer

    async def valid_digests(self, account: AccountSettings, now: datetime) -> list[str]:
        """The digests a subject may match now: the current key's and, within the grace period, the previous."""
        grace = timedelta(hours=account.secret_key_grace_hours)
        keys = await self._store.secret_keys(account.name)
        return [key.key_hash for key in keys if key.retired_at is None or key.retired_at + grace > now]

    async def state(self, account: AccountSettings, now: datetime) -> KeyState:
        keys = await self._store.secret_keys(account.name)
        current = _current(keys)
        retired = [key for key in keys if key.retired_at is not None]
        grace = timedelta(hours=account.secret_key_grace_hours)
        previous_until = None
        if retired and retired[0].retired_at is not None and retired[0].retired_at + grace > now:
            previous_until = retired[0].retired_at + grace
        due = next_rotation(account.secret_key_renew, current.created_at) if current else None
        return KeyState(
            account=account.name,
            required=account.secret_key_required,
            renew=account.secret_key_renew,
            current_since=current.created_at if current else None,
            previous_until=previous_until,
            next_rotation=due,
        )

    async def rotate(self, account: AccountSettings, now: datetime, *, replaces: str | None = None) -> str | None:
        """Make a new key, store its digest, and mail it to the account's notify list.

        ``replaces`` is the digest of the key this rotation expects to retire (``None``: read it now). Returns
        the new key, or ``None`` when another instance rotated first.
        """
        if replaces is None:
            current = _current(await self._store.secret_keys(account.name))
            replaces = current.key_hash if current else None
        key = generate_key()
        if not await self._store.rotate_secret_key(account.name, hash_key(key), now, replaces=replaces):
            log.info("account %s: another instance renewed the secret key first", account.name)
            return None
        log.info("account %s: new secret key made", account.name)
        await self._announce(account, key, now)
        return key

    async def rotate_due(self, now: datetime | None = None) -> list[str]:
        """Renew every key that is due, and make the first key of accounts that require one and have none.

        Returns the names of the accounts whose key changed. Run by the daemon's timer; errors are logged per
        account and never stop the others.
        """
        moment = now or datetime.now(UTC)
        changed: list[str] = []
        for account in self._settings.accounts:
            if not account.secret_key_required and account.secret_key_renew == "never":
                continue
            try:
                current = _current(await self._store.secret_keys(account.name))
                if current is None:
                    if not account.secret_key_required:
                        continue
                elif not _due(account.secret_key_renew, current.created_at, moment):
                    continue
                key = await self.rotate(account, moment, replaces=current.key_hash if current else None)
            except BridgeError as exc:
                log.error("account %s: the secret key could not be renewed: %s", account.name, exc)
                continue
            if key is not None:
                changed.append(account.name)
        return changed

    async def _announce(self, account: AccountSettings, key: str, now: datetime) -> None:
        recipients = _notify_list(account)
        if not recipients:
            log.warning(
                "account %s: a new secret key was made but nobody is told it (secret_key_notify and notify_extra "
                "are empty); run 'faxbridge secrets rotate %s' to see one",
                account.name,
                account.name,
            )
            return
        message = compose_key_notice(
            account,
            key,
            now=now,
            from_address=self._settings.mail.from_address,
            to=recipients,
            hostname=self._settings.smtp.hostname,
            templates=load_templates(self._settings),
        )
        try:
            await self._mailer.deliver(message, recipients)
        except BridgeError as exc:
            log.error("account %s: the new secret key could not be mailed to %s: %s", account.name, recipients, exc)
            return
        log.info("account %s: the new secret key was mailed to %s", account.name, ", ".join(recipients))


def compose_key_notice(
    account: AccountSettings,
    key: str,
    *,
    now: datetime,
    from_address: str,
    to: Sequence[str],
    hostname: str,
    templates: Templates | None = None,
) -> EmailMessage:
    """The mail that tells an account's people its new key.

    Its subject and text are the ``secret_rotated`` template in the account's language and time zone, from
    ``templates`` (default: the shipped ones), with the account's override where it has one. The key is in
    the text only, never in the subject: subjects are logged by every mail server on the way.
    """
    rendered = (templates or load_templates()).render(
        "secret_rotated",
        account.language,
        {
            "key": key,
            "grace": account.secret_key_grace_hours,
            "next_rotation": next_rotation(account.secret_key_renew, now),
        },
        account=account.name,
        tz=account.timezone,
        when=now,
    )
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = ", ".join(to)
    message["Subject"] = subject_header(rendered.subject)
    message["Date"] = email.utils.format_datetime(now)
    message["Message-ID"] = email.utils.make_msgid(domain=hostname.strip().rstrip(".") or "faxbridge.invalid")
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Loop"] = email.utils.parseaddr(from_address)[1] or from_address
    body = rendered.text
    message.set_content(body, charset="utf-8", cte=None if body.isascii() else "quoted-printable")
    if rendered.html is not None:
        message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message


def _notify_list(account: AccountSettings) -> list[str]:
    seen: list[str] = []
    for address in account.secret_key_notify or account.notify_extra:
        cleaned = address.strip().lower()
        if cleaned and cleaned not in seen:
            seen.append(cleaned)
    return seen


def _current(keys: Sequence[StoredKey]) -> StoredKey | None:
    return next((key for key in keys if key.retired_at is None), None)


def _due(renew: str, created: datetime, now: datetime) -> bool:
    due = next_rotation(renew, created)
    return due is not None and due <= now
