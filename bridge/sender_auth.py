"""Trusting an upstream mail server's verdict on the sender: ``Authentication-Results`` (RFC 8601).

The bridge does not check SPF, DKIM or DMARC itself; the mail server in front of it does, and records the result
in an ``Authentication-Results`` header stamped with its own authserv-id. Only headers carrying the configured
authserv-id count; any other (a sender can write whatever headers it likes) is ignored. Of those, the sender is
authenticated when one of these holds for the ``From:`` domain:

* ``dmarc=pass`` for that ``header.from``;
* ``dkim=pass`` with a signing domain ``header.d`` aligned with it, and no ``l=`` body-length limit in that
  domain's ``DKIM-Signature`` (with ``l=``, anyone may append a part, say another attachment, under a valid
  signature — RFC 6376 §8.2);
* ``spf=pass`` with an envelope domain ``smtp.mailfrom`` aligned with it.

Alignment is relaxed: one domain equals the other or is a subdomain of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.message import Message

import authres

from bridge.errors import SenderNotAuthenticated


def _domain(value: str) -> str:
    return value.rpartition("@")[2].strip().strip(".").lower()


def aligned(a: str, b: str) -> bool:
    """Relaxed alignment: equal, or one a subdomain of the other (and never a bare top-level domain)."""
    a, b = _domain(a), _domain(b)
    if not a or not b or "." not in a or "." not in b:
        return False
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _dkim_tags(value: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, _, tag_value = part.partition("=")
        if name.strip():
            tags[name.strip().lower()] = "".join(tag_value.split())
    return tags


def _length_limited(signatures: Iterable[str], domain: str) -> bool:
    return any("l" in tags and tags.get("d", "").lower() == domain.lower() for tags in map(_dkim_tags, signatures))


def check_sender(headers: Message, *, authserv_id: str, from_address: str) -> None:
    """Raise ``SenderNotAuthenticated`` unless the trusted server's verdict authenticates ``from_address``."""
    from_domain = _domain(from_address)
    signatures = [str(value) for value in headers.get_all("DKIM-Signature", [])]
    for value in headers.get_all("Authentication-Results", []):
        try:
            # Folded over several lines in the raw header; authres wants one.
            parsed = authres.AuthenticationResultsHeader.parse(
                "Authentication-Results: " + " ".join(str(value).split())
            )
        except (authres.AuthResError, ValueError, IndexError):
            continue
        if str(parsed.authserv_id).lower() != authserv_id.lower():
            continue
        for result in parsed.results:
            method, outcome = str(result.method).lower(), str(result.result).lower()
            if outcome != "pass":
                continue
            props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
            if method == "dmarc" and _domain(props.get("header.from", "")) == from_domain:
                return
            signer = props.get("header.d", "")
            if method == "dkim" and aligned(signer, from_domain) and not _length_limited(signatures, signer):
                return
            if method == "spf" and aligned(props.get("smtp.mailfrom", ""), from_domain):
                return
    raise SenderNotAuthenticated(f"no passing, aligned verdict from {authserv_id} for {from_address}")
