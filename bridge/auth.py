"""Password hashes for SMTP AUTH users: scrypt from the standard library, in a self-describing string.

A hash looks like ``scrypt$n=16384,r=8,p=1$<salt base64>$<hash base64>``: the parameters travel with the hash,
so they can be raised later without invalidating the hashes already in configuration files. Make one with::

    python -m bridge.auth hash

which reads the password from the terminal without echo (or one line from a pipe) and prints the hash line.
The password never appears on a command line, where ``ps`` and the shell history would show it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import getpass
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from typing import TextIO

SCHEME = "scrypt"
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Bounds on what a configuration may ask for: a hash with absurd parameters would let one AUTH attempt take
# all memory or minutes of CPU.
_MAX_MEMORY = 256 * 1024 * 1024
_MAX_P = 16
_MIN_SALT_BYTES = 8
_MIN_HASH_BYTES = 16

_FORMAT = re.compile(r"scrypt\$n=(\d{1,8}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)")


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed password hash."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        """The string form, as written in the configuration."""
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${salt}${digest}"


def _derive(password: bytes, *, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses above its default 32 MiB unless maxmem says more; scrypt needs about 128 * n * r bytes.
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=128 * n * r * 2 + 2**20)


def parse_hash(encoded: str) -> PasswordHash:
    """Parse and check a hash string; raise ``ValueError`` saying what is wrong with it."""
    match = _FORMAT.fullmatch(encoded.strip())
    if match is None:
        raise ValueError("expected scrypt$n=<N>,r=<r>,p=<p>$<salt base64>$<hash base64>")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2 or n & (n - 1):
        raise ValueError(f"n={n} is not a power of two above 1")
    if r < 1 or not 1 <= p <= _MAX_P or 128 * n * r > _MAX_MEMORY:
        raise ValueError(f"parameters n={n}, r={r}, p={p} are out of range")
    try:
        salt = base64.b64decode(match.group(4), validate=True)
        digest = base64.b64decode(match.group(5), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None
    if len(salt) < _MIN_SALT_BYTES or len(digest) < _MIN_HASH_BYTES:
        raise ValueError("salt or hash is too short")
    return PasswordHash(n=n, r=r, p=p, salt=salt, digest=digest)


def hash_password(password: str | bytes, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """Hash ``password`` with a fresh random salt; return the string for ``password_hash``."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(secret, salt=salt, n=n, r=r, p=p, length=HASH_BYTES)
    return PasswordHash(n=n, r=r, p=p, salt=salt, digest=digest).encode()


def verify_password(password: str | bytes, encoded: str | PasswordHash) -> bool:
    """Whether ``password`` matches the hash; the digests are compared in constant time.

    Raises ``ValueError`` for a malformed hash string.
    """
    parsed = parse_hash(encoded) if isinstance(encoded, str) else encoded
    secret = password.encode("utf-8") if isinstance(password, str) else password
    candidate = _derive(secret, salt=parsed.salt, n=parsed.n, r=parsed.r, p=parsed.p, length=len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


@functools.cache
def _dummy_hash() -> PasswordHash:
    return parse_hash(hash_password(secrets.token_bytes(16)))


def burn_verification(password: str | bytes) -> None:
    """Spend the time of a real verification, for an unknown user.

    Without it an unknown username would be answered faster than a wrong password, telling a guesser which
    usernames exist.
    """
    verify_password(password, _dummy_hash())


def _read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise SystemExit("the passwords differ")
        return first
    # From a pipe: one line, without its line ending (a password may well end in spaces).
    return stdin.readline().rstrip("\r\n")


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """``python -m bridge.auth hash``: read a password from stdin, print its hash."""
    parser = argparse.ArgumentParser(prog="python -m bridge.auth", description="Password hashes for SMTP AUTH users.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("hash", help="read a password from stdin (no echo) and print its password_hash")
    parser.parse_args(argv)
    password = _read_password(stdin or sys.stdin)
    if not password:
        sys.stderr.write("an empty password is not allowed\n")
        return 2
    (stdout or sys.stdout).write(hash_password(password) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
