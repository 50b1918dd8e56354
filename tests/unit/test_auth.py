"""Password hashes for SMTP AUTH: format, round trip, tampering, constant-time comparison, the hash command."""

from __future__ import annotations

import base64
import hmac
import io
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import auth
from bridge.auth import hash_password, parse_hash, verify_password

REPO = Path(__file__).resolve().parents[2]
# Cheap parameters keep the suite fast; the default parameters are checked once below.
N = 2**10


def test_round_trip_with_the_default_parameters() -> None:
    encoded = hash_password("correct horse battery staple")

    assert encoded.startswith("scrypt$n=16384,r=8,p=1$")
    assert verify_password("correct horse battery staple", encoded)
    assert verify_password(b"correct horse battery staple", encoded)


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same", n=N), hash_password("same", n=N)

    assert first != second
    assert parse_hash(first).salt != parse_hash(second).salt
    assert len(parse_hash(first).salt) == auth.SALT_BYTES


def test_a_wrong_password_does_not_verify() -> None:
    encoded = hash_password("secret", n=N)

    assert not verify_password("Secret", encoded)
    assert not verify_password("", encoded)
    assert not verify_password("secret ", encoded)


def test_a_tampered_hash_does_not_verify() -> None:
    parsed = parse_hash(hash_password("secret", n=N))
    flipped = bytes([parsed.digest[0] ^ 1]) + parsed.digest[1:]
    other_salt = bytes([parsed.salt[0] ^ 1]) + parsed.salt[1:]

    for tampered in (
        auth.PasswordHash(parsed.n, parsed.r, parsed.p, parsed.salt, flipped),
        auth.PasswordHash(parsed.n, parsed.r, parsed.p, other_salt, parsed.digest),
        auth.PasswordHash(parsed.n * 2, parsed.r, parsed.p, parsed.salt, parsed.digest),
    ):
        assert not verify_password("secret", tampered.encode())


@pytest.mark.parametrize(
    "encoded",
    [
        "secret",
        "",
        "scrypt$n=16384,r=8,p=1$c2FsdA==",
        "bcrypt$n=16384,r=8,p=1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"h" * 32).decode(),
        "scrypt$n=1000,r=8,p=1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"h" * 32).decode(),
        "scrypt$n=16384,r=8,p=1$" + base64.b64encode(b"s" * 16).decode() + "$" + base64.b64encode(b"h" * 4).decode(),
        "scrypt$n=16384,r=8,p=1$!!notbase64$" + base64.b64encode(b"h" * 32).decode(),
        "scrypt$n=16777216,r=64,p=1$"
        + base64.b64encode(b"s" * 16).decode()
        + "$"
        + base64.b64encode(b"h" * 32).decode(),
    ],
    ids=["clear", "empty", "no-hash", "other-scheme", "n-not-power-of-two", "short-hash", "bad-base64", "huge"],
)
def test_a_malformed_hash_is_refused(encoded: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the fault
        parse_hash(encoded)
    with pytest.raises(ValueError):  # noqa: PT011
        verify_password("secret", encoded)


def test_digests_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    encoded = hash_password("secret", n=N)

    assert verify_password("secret", encoded)
    assert not verify_password("wrong", encoded)
    assert len(calls) == 2
    assert calls[0][1] == parse_hash(encoded).digest


def test_the_hash_command_reads_stdin_and_prints_a_hash() -> None:
    out = io.StringIO()

    assert auth.main(["hash"], stdin=io.StringIO("pass word \n"), stdout=out) == 0

    line = out.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert verify_password("pass word ", line.strip())


def test_the_hash_command_refuses_an_empty_password() -> None:
    assert auth.main(["hash"], stdin=io.StringIO("\n"), stdout=io.StringIO()) == 2


def test_python_dash_m_bridge_auth_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge.auth", "hash"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=60,
    )

    assert "s3cret" not in done.stdout
    assert verify_password("s3cret", done.stdout.strip())
