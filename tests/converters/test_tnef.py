"""unpack_tnef: Outlook's winmail.dat to message text, files and notes, within limits.

The corpus holds the real TNEF payloads of tnefparse's test suite (``email/tnefparse/``) and the same payloads
wrapped as ``winmail.dat`` attachments in MIME messages (``email/tnef-wrapped/``). Where the Debian ``tnef``
tool is installed it is run on the same file as an independent oracle for the file names and their bytes.
Hostile and edge cases are built at test time with a small TNEF writer (``_record`` and friends below).
"""

from __future__ import annotations

import email
import email.policy
import logging
import random
import re
import shutil
import struct
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

import bridge.converters.tnef as tnef_module
from bridge.converters.tnef import (
    MAX_NAME_LENGTH,
    TnefContents,
    TnefError,
    decompress_rtf,
    rtf_to_text,
    safe_name,
    tnef_refusal_reason,
    unpack_tnef,
)
from tests.corpus import corpus_dir, corpus_file

TNEF_TOOL = shutil.which("tnef")


# --- what each corpus payload holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    files: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # a substring of each note, in order
    body: str | None = None  # a substring of the body; None: no body at all


EXPECTED: dict[str, Expected] = {
    "IPM-DistList": Expected(
        skipped=("Untitled Attachment: attached e-mails cannot be faxed",),
        body="This is the first half of the list",
    ),
    "MAPI_ATTACH_DATA_OBJ": Expected(
        files=("VIA_Nytt_1402.doc", "VIA_Nytt_1402.pdf", "VIA_Nytt_14021.htm"), body="bodødamene"
    ),
    "MAPI_OBJECT": Expected(
        skipped=("Untitled_Attachment: embedded objects cannot be faxed",),
        body="October Discounted Price List",
    ),
    # The checksum does not match (tnefparse only logs it) and the Debian tool gives up on this file.
    "bad_checksum": Expected(
        skipped=("image001.png: pictures inside the message text are not faxed",),
        body="Come support second harvest",
    ),
    "body": Expected(body="THE BILL OF RIGHTS"),
    "data-before-name": Expected(
        files=("boot.ini",),
        skipped=("AUTOEXEC.BAT: the file is empty", "CONFIG.SYS: the file is empty"),
        body="asdf",
    ),
    "duplicate_filename": Expected(
        files=("file_abcdefgh.txt", "file_abcdefgh (2).txt", "VIA_Nytt_14021.htm"), body="bodødamene"
    ),
    # A read receipt followed by one stray byte: nothing to fax, but not an error.
    "garbage-at-end": Expected(),
    "long-filename": Expected(files=("allproductsmar2000.dat",), body="temp. license for QARun"),
    "minimal_attachment": Expected(files=("attachment 1",)),
    # Three of the four attachments have no 8.3 title, only the long file name property.
    "missing-filenames": Expected(
        files=("generpts.src", "TechlibDEC99.doc", "TechlibDEC99-JAN00.doc", "TechlibNOV99.doc"),
        body="Sue has encountered a Date problem",
    ),
    "multi-name-property": Expected(),
    "multi-value-attribute": Expected(
        files=("208225__5_seconds__Voice_Mail.mp3",), body="You received a voice mail from Curie Conf Room"
    ),
    "one-file": Expected(files=("AUTHORS",)),
    "rtf": Expected(body="Greg Allen"),
    "triples": Expected(body="Sample description"),
    "two-files": Expected(files=("AUTHORS", "README")),
    "umlaut": Expected(
        files=("TBZ PARIV GmbH.jpg", "UmlautAnhang-äüö.txt"),
        skipped=("image003.jpg: pictures inside the message text are not faxed",),
        body="TEST äöü +-*/~",
    ),
    "unicode-mapi-attr-name": Expected(
        files=("spaconsole2.cfg",),
        skipped=("image001.png: pictures", "image002.png: pictures", "image003.png: pictures"),
        body="Przesyłam poprawiony plik",
    ),
    "unicode-mapi-attr": Expected(files=("example.dat",), body="hello world"),
}


def _payloads() -> list[Path]:
    return sorted(corpus_dir().joinpath("email", "tnefparse").glob("*.tnef"))


def _check(name: str, contents: TnefContents) -> None:
    expected = EXPECTED[name]
    assert tuple(f.name for f in contents.files) == expected.files
    assert all(f.data for f in contents.files), "a file without data must be skipped, not returned"
    assert len(contents.skipped) == len(expected.skipped), contents.skipped
    for note, fragment in zip(contents.skipped, expected.skipped, strict=True):
        assert fragment in note
    if expected.body is None:
        assert contents.body is None
    else:
        assert contents.body is not None
        assert expected.body in contents.body
        assert "\x00" not in contents.body
        assert contents.body == contents.body.strip("\n")


def test_every_corpus_payload_has_an_expectation() -> None:
    names = {path.stem for path in _payloads()}
    assert names == set(EXPECTED), "a new corpus file needs an entry in EXPECTED"


def test_corpus_payloads_unpack_as_expected() -> None:
    files = skipped = bodies = 0
    for path in _payloads():
        contents = unpack_tnef(path.read_bytes())
        _check(path.stem, contents)
        files += len(contents.files)
        skipped += len(contents.skipped)
        bodies += contents.body is not None
        print(
            f"{path.name}: {len(contents.files)} files {[f.name for f in contents.files]}, "
            f"{len(contents.skipped)} skipped, body {'yes' if contents.body else 'no'}"
        )
    print(f"{len(EXPECTED)} payloads: {files} files, {skipped} skipped, {bodies} bodies")


def test_wrapped_messages_carry_the_same_payloads() -> None:
    wrapped = sorted(corpus_dir().joinpath("email", "tnef-wrapped").glob("*.eml"))
    assert len(wrapped) >= 8
    for path in wrapped:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        parts = [p for p in msg.walk() if p.get_content_type() == "application/ms-tnef"]
        assert len(parts) == 1, path.name
        assert parts[0].get_filename() == "winmail.dat"
        payload = parts[0].get_payload(decode=True)
        assert isinstance(payload, bytes)
        raw = corpus_file(f"email/tnefparse/{path.stem}.tnef").read_bytes()
        assert payload == raw, path.name
        _check(path.stem, unpack_tnef(payload))
    print(f"{len(wrapped)} wrapped messages unpacked")


def _oracle_list(path: Path) -> list[str] | None:
    """File names the Debian tool lists, or None when it cannot read the file."""
    assert TNEF_TOOL is not None
    done = subprocess.run(
        [TNEF_TOOL, "--ignore-checksum", "--ignore-cruft", "--list", "-f", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return None
    names = []
    for line in done.stdout.splitlines():
        raw = line.split(b"\t|\t")[0]
        # The tool prints names as they are stored: UTF-8 from Unicode properties, else Windows-1252.
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            names.append(raw.decode("cp1252"))
    return names


def _oracle_extract(path: Path, into: Path) -> dict[str, bytes]:
    """The files the Debian tool extracts; a second file of the same name becomes "name.1"."""
    assert TNEF_TOOL is not None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [TNEF_TOOL, "--ignore-checksum", "--ignore-cruft", "--number-backups", "-C", str(into), "-f", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    found: dict[str, bytes] = {}
    for entry in into.iterdir():
        raw = bytes(entry.name, "utf-8", "surrogateescape")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("cp1252")
        found[name] = entry.read_bytes()
    return found


@pytest.mark.parametrize("stem", ["one-file", "two-files"])
def test_one_and_two_files_match_the_tnef_tool(stem: str, tmp_path: Path) -> None:
    path = corpus_file(f"email/tnefparse/{stem}.tnef")
    contents = unpack_tnef(path.read_bytes())
    if TNEF_TOOL is None:
        # Without the oracle: the names its listing gave when this test was written.
        known = {"one-file": ["AUTHORS"], "two-files": ["AUTHORS", "README"]}[stem]
        assert [f.name for f in contents.files] == known
        assert all(len(f.data) > 100 for f in contents.files)
        return
    assert [f.name for f in contents.files] == _oracle_list(path)
    extracted = _oracle_extract(path, tmp_path)
    for item in contents.files:
        assert item.data, item.name
        assert item.data == extracted[item.name]


_PLACEHOLDER = re.compile(r"^attachment \d+$")
_SUFFIX = re.compile(r" \(\d+\)(?=\.[^.]*$|$)")


@pytest.mark.skipif(TNEF_TOOL is None, reason="the Debian tnef tool (the oracle) is not installed")
def test_every_name_and_byte_matches_the_tnef_tool(tmp_path: Path) -> None:
    """Every file the tool lists is returned or noted as skipped, and returned files have its bytes."""
    compared = files = 0
    for path in _payloads():
        listed = _oracle_list(path)
        if listed is None:
            print(f"{path.name}: the tnef tool cannot read it")
            continue
        contents = unpack_tnef(path.read_bytes())
        ours = [f.name for f in contents.files] + [note.split(": ", 1)[0] for note in contents.skipped]
        # Our placeholder for a nameless file is "attachment N", the tool's "tnef-tmp"; duplicates get
        # " (2)" here and nothing in the listing.
        normal = Counter(None if _PLACEHOLDER.match(n) else _SUFFIX.sub("", n) for n in ours)
        theirs = Counter(None if n == "tnef-tmp" else n for n in listed)
        assert normal == theirs, path.name
        extracted = _oracle_extract(path, tmp_path / path.stem)
        for item in contents.files:
            if item.name in extracted:  # not the renamed duplicates nor the placeholder
                assert item.data == extracted[item.name], f"{path.name}: {item.name}"
                files += 1
        compared += 1
    print(f"tnef tool agrees on {compared} payloads, {files} files byte for byte")
    assert compared >= 18


def test_files_stored_as_a_mapi_property_keep_their_trailing_nul_bytes() -> None:
    # tnefparse strips trailing NULs from binary properties; a CFBF .doc must stay a whole number of sectors.
    contents = unpack_tnef(corpus_file("email/tnefparse/MAPI_ATTACH_DATA_OBJ.tnef").read_bytes())
    document = contents.files[0]
    assert document.name == "VIA_Nytt_1402.doc"
    assert document.data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")
    assert len(document.data) == 61952
    assert len(document.data) % 512 == 0


def test_checksum_warnings_are_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    data = corpus_file("email/tnefparse/IPM-DistList.tnef").read_bytes()
    with caplog.at_level(logging.DEBUG):
        unpack_tnef(data)
    assert not [r for r in caplog.records if r.name.startswith("tnefparse")]
    summary = [r.getMessage() for r in caplog.records if r.name == tnef_module.__name__]
    assert summary == ["winmail.dat: ignored 5 checksum mismatches and 0 other tnefparse warnings"]
    # The filter is gone afterwards: tnefparse's logger is left as it was found.
    assert not logging.getLogger("tnefparse").filters


# --- a TNEF writer for the cases the corpus lacks -------------------------------------------------------

_SIGNATURE = 0x223E9F78
_IMESSAGE = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"


def _record(level: int, name: int, kind: int, data: bytes) -> bytes:
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def _tnef(*records: bytes) -> bytes:
    header = _record(1, 0x9006, 8, struct.pack("<I", 0x10000)) + _record(1, 0x9007, 6, struct.pack("<II", 1252, 0))
    return struct.pack("<IH", _SIGNATURE, 1) + header + b"".join(records)


def _string(tag: int, text: str) -> bytes:
    try:
        value, kind = text.encode("cp1252") + b"\x00", 0x001E
    except UnicodeEncodeError:
        value, kind = text.encode("utf-16-le") + b"\x00\x00", 0x001F
    return struct.pack("<HHII", kind, tag, 1, len(value)) + value + b"\x00" * (-len(value) % 4)


def _binary(tag: int, value: bytes, kind: int = 0x0102) -> bytes:
    return struct.pack("<HHII", kind, tag, 1, len(value)) + value + b"\x00" * (-len(value) % 4)


def _props(*props: bytes) -> bytes:
    return struct.pack("<I", len(props)) + b"".join(props)


def _attachment(
    data: bytes,
    *,
    title: bytes | None = None,
    long_name: str | None = None,
    method: int = 1,
    hidden: bool = False,
    data_object: bytes | None = None,
) -> bytes:
    records = [_record(2, 0x9002, 6, b"\x01\x00\xff\xff\xff\xff" + bytes(8))]
    if title is not None:
        records.append(_record(2, 0x8010, 1, title + b"\x00"))
    if data:
        records.append(_record(2, 0x800F, 6, data))
    props = [struct.pack("<HHi", 0x0003, 0x3705, method)]
    if long_name is not None:
        props.append(_string(0x3707, long_name))
    if hidden:
        props.append(struct.pack("<HHHxx", 0x000B, 0x7FFE, 1))
    if data_object is not None:
        props.append(_binary(0x3701, data_object))
    records.append(_record(2, 0x9005, 6, _props(*props)))
    return b"".join(records)


def _embedded_attachment(message: bytes) -> bytes:
    """An attached e-mail (ATTACH_EMBEDDED_MSG): a whole TNEF stream in PR_ATTACH_DATA_OBJ."""
    method = struct.pack("<HHi", 0x0003, 0x3705, 5)
    return _record(2, 0x9002, 6, b"\x01\x00\xff\xff\xff\xff" + bytes(8)) + _record(
        2, 0x9005, 6, _props(method, _binary(0x3701, _IMESSAGE + message, 0x000D))
    )


def _message_props(*props: bytes) -> bytes:
    return _record(1, 0x9003, 6, _props(*props))


def _names(data: bytes) -> list[str]:
    return [f.name for f in unpack_tnef(data).files]


def test_names_are_sanitised() -> None:
    data = _tnef(
        _attachment(b"1", long_name="..\\..\\Windows\\System32\\evil.exe"),
        _attachment(b"2", long_name="/etc/passwd"),
        _attachment(b"3", long_name="bad\x00name\x07.txt"),
        _attachment(b"4", long_name="invoice\u202efdp.exe"),  # right-to-left override: shows as "exe.pdf"
        _attachment(b"5", long_name="tab\tand\r\nnewline.txt"),
        _attachment(b"6", long_name="x" * 300 + ".docx"),
        _attachment(b"7", long_name="y" * 300),
        _attachment(b"8", long_name=" ... "),
        _attachment(b"9"),
        _attachment(b"10", title="Bericht über Äpfel.txt".encode("cp1252")),  # 8-bit title, not UTF-8
        _attachment(b"11", long_name="Caf\u0065\u0301.txt"),  # decomposed é
    )
    names = _names(data)
    print(names)
    assert names[:5] == ["evil.exe", "passwd", "badname.txt", "invoicefdp.exe", "tab and newline.txt"]
    assert len(names[5]) == MAX_NAME_LENGTH
    assert names[5].endswith("x\u2026.docx")
    assert len(names[6]) == MAX_NAME_LENGTH
    assert names[6].endswith("...")
    assert names[7:] == ["attachment 8", "attachment 9", "Bericht über Äpfel.txt", "Café.txt"]
    for name in names:
        assert name
        assert "/" not in name
        assert "\\" not in name
        assert not any(ord(ch) < 32 for ch in name)


def test_duplicate_names_are_numbered_case_insensitively() -> None:
    data = _tnef(
        _attachment(b"a", long_name="Report.pdf"),
        _attachment(b"b", long_name="report.PDF"),
        _attachment(b"c", long_name="Report.pdf"),
        _attachment(b"d", long_name="README"),
        _attachment(b"e", long_name="README"),
        _attachment(b"f", long_name="Report (2).pdf"),  # already taken by the renaming above
    )
    assert _names(data) == [
        "Report.pdf",
        "report (2).PDF",
        "Report (3).pdf",
        "README",
        "README (2)",
        "Report (2) (2).pdf",
    ]


def test_embedded_hidden_linked_and_empty_attachments_are_skipped() -> None:
    inner = _tnef(_attachment(b"inner file", long_name="inner.txt"))
    data = _tnef(
        _embedded_attachment(inner),
        _attachment(b"logo", long_name="logo.png", hidden=True),
        _attachment(b"", long_name="on-the-share.doc", method=2),
        _attachment(b"", long_name="empty.txt"),
        _attachment(b"ole", long_name="Chart", method=6),
        _attachment(b"real", long_name="real.txt"),
    )
    contents = unpack_tnef(data)
    assert [f.name for f in contents.files] == ["real.txt"]
    assert contents.skipped == (
        "embedded message: attached e-mails cannot be faxed",
        "logo.png: pictures inside the message text are not faxed",
        "on-the-share.doc: the file is only linked, not attached",
        "empty.txt: the file is empty",
        "Chart: embedded objects cannot be faxed; please attach a file",
    )


def test_data_stored_as_a_property_is_returned_whole() -> None:
    document = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"data" + bytes(500)  # ends in NULs, like a CFBF sector
    contents = unpack_tnef(_tnef(_attachment(b"", long_name="old.doc", data_object=document)))
    assert contents.files[0].data == document


def test_file_count_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus_file("email/tnefparse/two-files.tnef").read_bytes()
    assert len(unpack_tnef(data).files) == 2
    monkeypatch.setattr(tnef_module, "MAX_TNEF_FILES", 1)
    with pytest.raises(TnefError) as caught:
        unpack_tnef(data)
    assert tnef_refusal_reason(caught.value) == "the winmail.dat file holds too many files (more than 1)"


def test_file_count_cap_at_the_real_limit() -> None:
    limit = tnef_module.MAX_TNEF_FILES
    at_limit = _tnef(*(_attachment(b"x", long_name=f"f{i}.txt") for i in range(limit)))
    assert len(unpack_tnef(at_limit).files) == limit
    over = _tnef(*(_attachment(b"x", long_name=f"f{i}.txt") for i in range(limit + 1)))
    with pytest.raises(TnefError, match="more than 50 attachments"):
        unpack_tnef(over)


def test_byte_cap_on_attachment_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tnef_module, "MAX_TNEF_BYTES", 1000)
    exactly = _tnef(_attachment(bytes(600), long_name="a"), _attachment(bytes(400), long_name="b"))
    assert len(unpack_tnef(exactly).files) == 2
    with pytest.raises(TnefError) as caught:
        unpack_tnef(_tnef(_attachment(bytes(600), long_name="a"), _attachment(bytes(401), long_name="b")))
    assert tnef_refusal_reason(caught.value).startswith("the winmail.dat file is too large")


def test_byte_cap_on_data_stored_as_a_property(monkeypatch: pytest.MonkeyPatch) -> None:
    # Data in PR_ATTACH_DATA_OBJ is not an attachment record: the cap is checked again on the result.
    monkeypatch.setattr(tnef_module, "MAX_TNEF_BYTES", 1000)
    with pytest.raises(TnefError) as caught:
        unpack_tnef(_tnef(_attachment(b"", long_name="big.doc", data_object=b"x" * 1001)))
    assert "too large" in tnef_refusal_reason(caught.value)


@pytest.mark.parametrize(
    ("label", "data"),
    [
        ("four billion properties", _tnef(_record(1, 0x9003, 6, struct.pack("<I", 0xFFFFFFFF)))),
        ("properties missing", _tnef(_record(1, 0x9003, 6, struct.pack("<I", 5000) + bytes(8000)))),
        ("four billion 16-bit values", _tnef(_record(1, 0x9003, 6, struct.pack("<IHHI", 1, 0x1002, 1, 0xFFFFFFFF)))),
        ("four billion strings", _tnef(_record(1, 0x9003, 6, struct.pack("<IHHI", 1, 0x001E, 0x37, 0xFFFFFFFF)))),
        ("four billion recipients", _tnef(_record(1, 0x9004, 6, struct.pack("<I", 0xFFFFFFFF)))),
        ("a hundred thousand records", _tnef(*[_record(1, 0x8004, 1, b"x")] * 100_000)),
        ("attachment data before any attachment", _tnef(_record(2, 0x800F, 6, b"data"))),
        ("truncated record header", _tnef(_record(1, 0x9003, 6, b"\x01\x00"))),
        ("wrong signature", b"\x00" * 64),
        ("empty", b""),
        ("a PDF", b"%PDF-1.4\n" + bytes(100)),
    ],
)
def test_hostile_structures_are_refused_quickly(label: str, data: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(TnefError) as caught:
        unpack_tnef(data)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"{label}: {elapsed:.2f} s"
    assert tnef_refusal_reason(caught.value) == "the winmail.dat file is damaged"


def _embed(message: bytes) -> bytes:
    return _tnef(_embedded_attachment(message))


def test_embedded_messages_nested_too_deeply_are_refused() -> None:
    message = _tnef(_attachment(b"x", long_name="x.txt"))
    for _ in range(tnef_module.MAX_TNEF_DEPTH):
        message = _embed(message)
    assert unpack_tnef(message).skipped == ("embedded message: attached e-mails cannot be faxed",)
    with pytest.raises(TnefError, match="nested too deeply"):
        unpack_tnef(_embed(message))


def test_trailing_bytes_are_tolerated() -> None:
    data = corpus_file("email/tnefparse/two-files.tnef").read_bytes()
    for garbage in (b"\x00", b"junk" * 2, bytes(11)):
        assert [f.name for f in unpack_tnef(data + garbage).files] == ["AUTHORS", "README"]


def test_mutated_corpus_files_fail_only_with_tnef_error() -> None:
    """A quick deterministic fuzz: flipped bytes, huge counts, truncation. Never another exception, never slow."""
    rng = random.Random(20240601)
    samples = [p.read_bytes() for p in _payloads() if p.stat().st_size < 100_000]
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for _ in range(600):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at] = rng.randrange(256)
            else:
                data[at : at + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1_000_000, 65536, 0]))
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        started = time.monotonic()
        try:
            unpack_tnef(bytes(data))
            outcomes["unpacked"] += 1
        except TnefError:
            outcomes["refused"] += 1
        slowest = max(slowest, time.monotonic() - started)
    print(f"600 mutations: {dict(outcomes)}, slowest {slowest:.3f} s")
    assert slowest < 2.0


# --- the message text -----------------------------------------------------------------------------------


def _mela(rtf: bytes) -> bytes:
    """An uncompressed ("MELA") PR_RTF_COMPRESSED value."""
    return struct.pack("<IIII", len(rtf) + 12, len(rtf), 0x414C454D, 0) + rtf


def test_body_prefers_plain_text_then_html_then_rtf() -> None:
    plain = _string(0x1000, "Plain body")
    html = _binary(0x1013, b"<html><body><p>HTML body</p></body></html>")
    rtf = _binary(0x1009, _mela(rb"{\rtf1\ansi RTF body\par}"))
    assert unpack_tnef(_tnef(_message_props(plain, html, rtf))).body == "Plain body"
    assert unpack_tnef(_tnef(_message_props(html, rtf))).body == "HTML body"
    assert unpack_tnef(_tnef(_message_props(rtf))).body == "RTF body"
    assert unpack_tnef(_tnef(_message_props(_string(0x1000, " \r\n"), rtf))).body == "RTF body"
    assert unpack_tnef(_tnef(_message_props(_string(0x1000, "  ")))).body is None


@pytest.mark.skipif(TNEF_TOOL is None, reason="the Debian tnef tool (the oracle) is not installed")
@pytest.mark.parametrize("stem", ["rtf", "umlaut", "data-before-name", "IPM-DistList", "MAPI_OBJECT"])
def test_rtf_decompression_matches_the_tnef_tool(stem: str, tmp_path: Path) -> None:
    from tnefparse import TNEF

    path = corpus_file(f"email/tnefparse/{stem}.tnef")
    assert TNEF_TOOL is not None
    subprocess.run(
        [TNEF_TOOL, "-K", "--ignore-cruft", "-C", str(tmp_path), "-f", str(path), "--save-body=body", "--body-pref=R"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    expected = (tmp_path / "body.rtf").read_bytes()
    with tnef_module._quiet_tnefparse():
        compressed = TNEF(path.read_bytes())._rtfbody
    assert decompress_rtf(compressed) == expected


def test_decompress_rtf_reads_the_corpus_body() -> None:
    # Checked byte for byte against the tnef tool above; this keeps a check where the tool is missing.
    from tnefparse import TNEF

    data = corpus_file("email/tnefparse/rtf.tnef").read_bytes()
    with tnef_module._quiet_tnefparse():
        compressed = TNEF(data)._rtfbody
    rtf = decompress_rtf(compressed)
    assert len(rtf) == 593
    assert rtf.startswith(b"{\\rtf1\\ansi")
    assert b"Greg Allen" in rtf


def test_decompress_rtf_refuses_unknown_headers_and_caps_output() -> None:
    with pytest.raises(ValueError, match="shorter"):
        decompress_rtf(b"short")
    with pytest.raises(ValueError, match="unknown RTF compression"):
        decompress_rtf(struct.pack("<IIII", 12, 0, 0x12345678, 0))
    assert decompress_rtf(_mela(b"{\\rtf1 " + b"x" * 100 + b"}"), limit=10) == b"{\\rtf1 xxx"


@pytest.mark.parametrize(
    ("rtf", "text"),
    [
        (rb"{\rtf1\ansi{\fonttbl{\f0 Arial;}}{\colortbl;\red0\green0\blue0;}\f0 Hello\par World}", "Hello\nWorld"),
        (rb"{\rtf1\ansi\ansicpg1252 Gr\'fc\'dfe}", "Grüße"),
        (rb"{\rtf1\ansi\ansicpg1251 \'cf\'f0\'e8\'e2\'e5\'f2}", "Привет"),
        (rb"{\rtf1\ansi\uc1 Smile \u9786?, euro \u8364\'80}", "Smile ☺, euro €"),
        (rb"{\rtf1\ansi\uc1 Face \u-10179?\u-8704?}", "Face 😀"),
        (rb"{\rtf1{\*\generator Riched20;}{\*\unknowndest hidden}visible}", "visible"),
        (rb"{\rtf1 a\tab b\line c \{braces\} and \\ backslash}", "a\tb\nc {braces} and \\ backslash"),
        (rb"{\rtf1 before{\pict\pngblip 89504e47}after}", "beforeafter"),
        (rb"{\rtf1 x\bin3 {}\y}", "xy"),
        (rb"{\rtf1 \ldblquote quoted\rdblquote \emdash  done}", "\u201cquoted\u201d\u2014 done"),
        (rb"{\rtf1 {\field{\*\fldinst HYPERLINK http://x}{\fldrslt link text}}}", "link text"),
        (rb"{\rtf1 unbalanced {group", "unbalanced group"),
        (b"{\\rtf1 trailing backslash \\", "trailing backslash "),
        # Plain text wrapped in RTF: the \htmlrtf parts are RTF-only.
        (
            rb"{\rtf1\ansi\fromtext line one\par {\*\htmltag <br>}\htmlrtf extra\htmlrtf0 line two}",
            "line one\nline two",
        ),
    ],
)
def test_rtf_to_text(rtf: bytes, text: str) -> None:
    assert rtf_to_text(rtf) == text


def test_rtf_wrapped_html_is_unwrapped_and_converted() -> None:
    rtf = (
        rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss Arial;}}"
        rb"{\*\htmltag19 <html>}{\*\htmltag34 <head><style>p\{color:red\}</style></head>}"
        rb"{\*\htmltag50 <body>}{\*\htmltag64 <p>}\htmlrtf {\htmlrtf0 First paragraph "
        rb"\'e4{\*\htmltag84 &amp;}\htmlrtf &\htmlrtf0  more\htmlrtf\par}\htmlrtf0"
        rb"{\*\htmltag72 </p>}{\*\htmltag64 <p>}Second{\*\htmltag116 <br>}\htmlrtf \line\htmlrtf0 line"
        rb"{\*\htmltag72 </p>}{\*\htmltag58 </body>}{\*\htmltag27 </html>}}"
    )
    assert rtf_to_text(rtf) == "First paragraph ä& more\n\nSecond\nline"


# --- names and reasons ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("../../etc/shadow", "shadow"),
        ("\x00", ""),
        ("..", ""),
        ("  spaced   out  .txt ", "spaced out .txt"),
        ("a" * 90 + ".tar.gz", "a" * 90 + ".tar.gz"),
        ("b" * 120 + ".pdf", "b" * 95 + "\u2026.pdf"),
        ("a" * 120 + ".verylongextension", "a" * 97 + "..."),
    ],
)
def test_safe_name(raw: str, name: str) -> None:
    assert safe_name(raw) == name
    assert len(safe_name(raw)) <= MAX_NAME_LENGTH


def test_refusal_reasons() -> None:
    assert tnef_refusal_reason(TnefError("x")) == "the winmail.dat file is damaged"
    assert tnef_refusal_reason(ValueError("x")) == "the winmail.dat file is damaged"
