"""Mail2Fax secret keys: finding the key in a subject, taking it out, and when keys fall due."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.header import Header
from email.policy import default

import pytest

from bridge.secret_keys import (
    KEY_ALPHABET,
    KEY_LENGTH,
    find_key,
    generate_key,
    hash_key,
    next_rotation,
    rewrite_subject,
    strip_key,
)

KEY = "K7MW3QZP9RT2XH4N"
DIGESTS = [hash_key(KEY)]


def test_keys_are_random_words_of_the_unambiguous_alphabet() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert len(key) == KEY_LENGTH
        assert set(key) <= set(KEY_ALPHABET)
    assert not set("01OIL") & set(KEY_ALPHABET)


def test_the_digest_is_not_the_key() -> None:
    digest = hash_key(KEY)
    assert KEY not in digest
    assert len(digest) == 64


@pytest.mark.parametrize(
    "subject",
    [
        KEY,
        f"Invoice 4711 {KEY}",
        f"{KEY}: invoice",
        f"Invoice ({KEY})",
        f"Re: Fwd: order {KEY} urgent",
        f"Order\t{KEY}",
    ],
)
def test_the_key_is_found_as_a_word_anywhere_in_the_subject(subject: str) -> None:
    assert find_key(subject, DIGESTS) == KEY


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("", "absent"),
        ("Invoice 4711", "absent"),
        (KEY.lower(), "differs only by case"),
        (f"X{KEY}", "glued to another letter"),
        (f"{KEY}9", "glued to a digit"),
        (KEY[:-1], "one character short"),
        (KEY[:-1] + "A", "one character wrong"),
        ("".join(chr(ord(c) + 0xFEE0) for c in KEY), "full-width look-alikes"),
        (KEY.replace("K", "\u039a"), "a Greek capital kappa for the K"),
        (KEY[:8] + " " + KEY[8:], "split by a space"),
    ],
)
def test_anything_but_the_exact_key_as_a_word_is_no_key(subject: str, why: str) -> None:
    assert find_key(subject, DIGESTS) is None, why


def test_the_previous_key_is_found_among_several_digests() -> None:
    old = "Q2W3E4R5T6Y7U8P9"
    assert find_key(f"fax {old}", [hash_key(KEY), hash_key(old)]) == old


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (f"Invoice 4711 {KEY}", "Invoice 4711"),
        (f"{KEY} Invoice", "Invoice"),
        (f"Invoice {KEY} 4711", "Invoice 4711"),
        (f"Invoice ({KEY})", "Invoice ()"),
        (f"{KEY} {KEY}", ""),
    ],
)
def test_the_key_is_stripped_from_the_subject(subject: str, expected: str) -> None:
    assert strip_key(subject, KEY) == expected


def parse_subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=default)["Subject"])


def test_the_stored_message_gets_the_cleaned_subject_and_keeps_everything_else() -> None:
    raw = (
        b"From: jane@example.com\r\nSubject: Invoice 4711\r\n " + KEY.encode() + b" urgent\r\n"
        b"Message-ID: <1@example.com>\r\n\r\nbody mentions Subject: nothing\r\n"
    )
    rewritten = rewrite_subject(raw, "Invoice 4711 urgent")
    assert KEY.encode() not in rewritten
    assert parse_subject(rewritten) == "Invoice 4711 urgent"
    assert rewritten.endswith(b"Message-ID: <1@example.com>\r\n\r\nbody mentions Subject: nothing\r\n")
    assert rewritten.startswith(b"From: jane@example.com\r\n")


def test_an_encoded_subject_is_rewritten_without_the_key_in_any_encoding() -> None:
    header = Header(f"Grüße, Rechnung {KEY}", "utf-8").encode()
    raw = f"From: jane@example.com\nSubject: {header}\n\nbody\n".encode()
    decoded = parse_subject(raw)
    assert find_key(decoded, DIGESTS) == KEY
    rewritten = rewrite_subject(raw, strip_key(decoded, KEY))
    assert parse_subject(rewritten) == "Grüße, Rechnung"
    assert KEY.encode() not in rewritten
    assert b"\r\n" not in rewritten  # the message's own line endings are kept


def test_a_key_split_across_two_encoded_words_is_the_key_the_sender_typed() -> None:
    # RFC 2047: the space between two adjacent encoded words is not part of the text.
    raw = f"Subject: =?utf-8?q?Rechnung_{KEY[:6]}?= =?utf-8?q?{KEY[6:]}?=\r\n\r\nbody\r\n".encode()
    assert find_key(parse_subject(raw), DIGESTS) == KEY


def test_every_subject_field_is_replaced_by_one() -> None:
    raw = f"Subject: a {KEY}\r\nSubject: b {KEY}\r\nTo: x@example.com\r\n\r\nbody\r\n".encode()
    rewritten = rewrite_subject(raw, "a")
    assert KEY.encode() not in rewritten
    assert rewritten.count(b"Subject:") == 1


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("renew", "made", "due"),
    [
        ("daily", "2026-12-01T10:00", "2026-12-02T10:00"),
        ("weekly", "2026-12-01T10:00", "2026-12-08T10:00"),
        ("monthly", "2026-12-15T10:00", "2027-01-15T10:00"),
        ("monthly", "2027-01-31T10:00", "2027-02-28T10:00"),
        ("monthly", "2028-01-31T10:00", "2028-02-29T10:00"),
        ("monthly", "2027-03-31T10:00", "2027-04-30T10:00"),
    ],
)
def test_keys_fall_due_on_schedule(renew: str, made: str, due: str) -> None:
    assert next_rotation(renew, at(made)) == at(due)


def test_a_key_that_never_renews_is_never_due() -> None:
    assert next_rotation("never", at("2026-12-01T10:00")) is None
