"""The whole shared corpus through the sandboxed pipeline, as the daemon runs it.

Every email as it is, and every PDF, image and winmail.dat of the corpus as an attachment to a mail, goes
through ``Sandbox.convert`` — a child process per mail, under the production limits. Each must end as a
fax-ready PDF (every page portrait A4, as many pages as reported, a preview of page 1) or as a refusal that
names what could not be faxed. None may run into the time limit or crash its child, and this process — the
daemon's stand-in — converts a plain mail afterwards as if nothing happened. The counts are printed.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path

import pytest
from pypdf import PdfReader

from bridge.converters import ConversionOptions, ConversionResult
from bridge.converters.sandbox import Limits, Sandbox
from bridge.errors import ConversionError, TooLarge, UnsupportedContent
from tests.corpus import corpus_dir

pytestmark = pytest.mark.timeout(900)

A4_POINTS = (595, 842)
# Signs of a conversion that the limits, not the document's own content, ended.
ABNORMAL = ("took longer than the limit", "crashed the converter", "the converter failed", "killed twice")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def as_attachment(path: Path, maintype: str, subtype: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "jane@example.com"
    msg["To"] = "+4930123456@fax.example.com"
    msg["Subject"] = f"corpus {path.name}"
    msg.set_content("")
    msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return msg.as_bytes()


def corpus_inputs(root: Path) -> Iterable[tuple[str, bytes]]:
    email = root / "email"
    for path in sorted([*email.glob("ruby-mail/**/*.eml"), *email.glob("tnef-wrapped/*.eml")]):
        yield f"mail {path.relative_to(root)}", path.read_bytes()
    for path in sorted(email.glob("cpython-test_email/msg_*.txt")):
        yield f"mail {path.relative_to(root)}", path.read_bytes()
    for path in sorted(p for p in (email / "tnefparse").rglob("*") if p.is_file()):
        yield f"winmail.dat {path.relative_to(root)}", as_attachment(path, "application", "ms-tnef")
    for path in sorted(p for p in (root / "pdf").rglob("*") if p.is_file() and p.suffix.lower() == ".pdf"):
        yield f"pdf {path.relative_to(root)}", as_attachment(path, "application", "pdf")
    for path in sorted(p for p in (root / "images").rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield f"image {path.relative_to(root)}", as_attachment(path, "application", "octet-stream")


def check_fax(label: str, result: ConversionResult) -> None:
    reader = PdfReader(io.BytesIO(result.document))
    assert len(reader.pages) == result.pages, label
    for page in reader.pages:
        size = (round(float(page.mediabox.width)), round(float(page.mediabox.height)))
        assert size == A4_POINTS, f"{label}: page of {size}"
    assert result.preview is not None, label
    assert result.preview.startswith(b"\x89PNG"), label


async def test_every_corpus_input_ends_as_a_fax_or_a_named_refusal() -> None:
    root = corpus_dir()
    inputs = list(corpus_inputs(root))
    assert len(inputs) > 900
    box = Sandbox(Limits(cpu_seconds=30, timeout_seconds=60), concurrency=2)
    options = ConversionOptions(max_pages=500)
    counts: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    abnormal: list[str] = []
    unexplained: list[str] = []

    async def one(label: str, raw: bytes) -> None:
        kind = label.split(" ", 1)[0]
        try:
            result = await box.convert(raw, options)
        except (ConversionError, TooLarge, UnsupportedContent) as exc:
            refusal = exc
        else:
            check_fax(label, result)
            counts["fax"] += 1
            by_kind[f"{kind} faxed"] += 1
            return
        text = str(refusal)
        if not text or not (refusal.notes or isinstance(refusal, UnsupportedContent)):
            unexplained.append(label)
        if any(sign in text for sign in ABNORMAL):
            abnormal.append(f"{label}: {text}")
        counts[type(refusal).__name__] += 1
        by_kind[f"{kind} refused"] += 1

    try:
        await asyncio.gather(*(one(label, raw) for label, raw in inputs))
        # This process, the daemon's stand-in, is unharmed.
        after = await box.convert(as_attachment(Path(__file__), "text", "plain"), ConversionOptions())
    finally:
        box.close()
    assert after.pages >= 1

    print(f"\ncorpus sweep: {len(inputs)} inputs -> {dict(counts)}")
    print("by kind: " + ", ".join(f"{key} {value}" for key, value in sorted(by_kind.items())))
    assert abnormal == []
    assert unexplained == []
    assert sum(counts.values()) == len(inputs)
    # A regression that refuses everything must not pass: most of the corpus is ordinary, faxable input.
    assert counts["fax"] >= 0.6 * len(inputs)
