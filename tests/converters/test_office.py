"""office_to_pdf and sniff_office: Word, Excel, OpenDocument and RTF through a headless LibreOffice.

The documents are built here, at test time: .docx, .xlsx and .odt by hand (zipfile and a few lines of XML),
.rtf as text, .doc and .xls by asking LibreOffice to save the hand-made ones in the old binary formats, and
an Outlook .msg as a minimal Compound File written byte by byte. The PDFs are checked for the words that
went in (pypdf's text extraction).

The contract of the command line (private temporary directory, fixed file name, own profile, HOME, closed
stdin, own session, the address-space limit, the process group killed on a timeout) is checked with a fake
``soffice`` shell script, so it holds even where LibreOffice is missing. Tests that need the real one skip
with the reason when it is not installed, except under CI (``CI=true``), where they fail.

Measured on the development machine (LibreOffice 7.4.7, 2 CPUs): each conversion about 1.0 s, the first as
fast as the next (each builds a fresh profile); see bridge/converters/office.py for memory.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from pypdf import PdfReader

import bridge.converters.office as office_module
from bridge.converters.office import (
    MIN_OFFICE_ADDRESS_SPACE,
    OFFICE_CONTENT_TYPES,
    OFFICE_EXTENSIONS,
    OfficeFailed,
    OfficeTimeout,
    OfficeUnavailable,
    find_soffice,
    office_refusal_reason,
    office_to_pdf,
    sniff_office,
)

HAS_PROC = Path("/proc/self/stat").exists()


# --- documents, built at test time ----------------------------------------------------------------------

_OOXML_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"'
    ' Target="{target}"/></Relationships>'
)


def _content_types(*overrides: tuple[str, str]) -> str:
    parts = "".join(f'<Override PartName="{name}" ContentType="{kind}"/>' for name, kind in overrides)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>{parts}</Types>'
    )


def _zip(members: dict[str, str], *, stored_first: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (name, text) in enumerate(members.items()):
            kind = zipfile.ZIP_STORED if stored_first and index == 0 else zipfile.ZIP_DEFLATED
            archive.writestr(name, text, compress_type=kind)
    return buffer.getvalue()


def make_docx(paragraphs: list[str]) -> bytes:
    body = "".join(f'<w:p><w:r><w:t xml:space="preserve">{escape(p)}</w:t></w:r></w:p>' for p in paragraphs)
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    return _zip(
        {
            "[Content_Types].xml": _content_types(("/word/document.xml", main)),
            "_rels/.rels": _OOXML_RELS.format(target="word/document.xml"),
            "word/document.xml": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            f"<w:body>{body}</w:body></w:document>",
        }
    )


def make_xlsx(cells: list[str]) -> bytes:
    row = "".join(f'<c r="{chr(65 + i)}1" t="inlineStr"><is><t>{escape(v)}</t></is></c>' for i, v in enumerate(cells))
    sheet_ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel_ns = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    return _zip(
        {
            "[Content_Types].xml": _content_types(
                ("/xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
                (
                    "/xl/worksheets/sheet1.xml",
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml",
                ),
            ),
            "_rels/.rels": _OOXML_RELS.format(target="xl/workbook.xml"),
            "xl/workbook.xml": f'<workbook xmlns="{sheet_ns}" xmlns:r="{rel_ns}">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
            "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel_ns}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
            "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{sheet_ns}">'
            f'<sheetData><row r="1">{row}</row></sheetData></worksheet>',
        }
    )


_ODF_MANIFEST = (
    '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
    '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
    "</manifest:manifest>"
)


def make_odf(paragraphs: list[str], mimetype: str = "application/vnd.oasis.opendocument.text") -> bytes:
    body = "".join(f"<text:p>{escape(p)}</text:p>" for p in paragraphs)
    return _zip(
        {
            # ODF: the first member is "mimetype", stored uncompressed, so that its bytes identify the file.
            "mimetype": mimetype,
            "META-INF/manifest.xml": _ODF_MANIFEST.format(mimetype=mimetype),
            "content.xml": '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
            ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
            f"<office:body><office:text>{body}</office:text></office:body></office:document-content>",
        },
        stored_first=True,
    )


def make_ods(cells: list[str]) -> bytes:
    row = "".join(
        f'<table:table-cell office:value-type="string"><text:p>{escape(c)}</text:p></table:table-cell>' for c in cells
    )
    mimetype = "application/vnd.oasis.opendocument.spreadsheet"
    return _zip(
        {
            "mimetype": mimetype,
            "META-INF/manifest.xml": _ODF_MANIFEST.format(mimetype=mimetype),
            "content.xml": '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
            ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
            ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">'
            '<office:body><office:spreadsheet><table:table table:name="Sheet1">'
            f"<table:table-row>{row}</table:table-row></table:table></office:spreadsheet></office:body>"
            "</office:document-content>",
        },
        stored_first=True,
    )


def make_rtf(paragraphs: list[str]) -> bytes:
    def encode(text: str) -> str:
        return "".join(ch if ord(ch) < 128 else f"\\u{ord(ch)}?" for ch in text)

    body = "".join(f"\\pard {encode(p)}\\par\n" for p in paragraphs)
    return ("{\\rtf1\\ansi\\ansicpg1252{\\fonttbl{\\f0\\fswiss Helvetica;}}\\f0\\fs24\n" + body + "}").encode("ascii")


_CFBF_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def make_cfbf(stream_names: list[str]) -> bytes:
    """A minimal valid Compound File (MS-CFB version 3) with empty streams: one FAT and one directory sector.

    With Outlook's stream names it is what ``file`` calls "CDFV2 Microsoft Outlook Message".
    """
    end_of_chain, fat_sector, no_stream = 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
    assert len(stream_names) <= 3  # one directory sector holds four entries, the root included
    header = bytearray(512)
    header[0:8] = _CFBF_MAGIC
    struct.pack_into("<HHHHH", header, 24, 0x003E, 0x0003, 0xFFFE, 9, 6)  # version 3.62, 512-byte sectors
    # directory sectors (0 in v3), FAT sectors, first directory sector, transaction, mini cutoff, mini FAT, DIFAT
    struct.pack_into("<IIIIIIIII", header, 40, 0, 1, 1, 0, 4096, end_of_chain, 0, end_of_chain, 0)
    struct.pack_into("<I", header, 76, 0)  # the FAT is sector 0
    header[80:512] = b"\xff" * 432
    fat = struct.pack("<II", fat_sector, end_of_chain) + b"\xff" * 504
    entries = [("Root Entry", 5), *((name, 2) for name in stream_names)]
    directory = bytearray()
    for index in range(4):
        entry = bytearray(128)
        struct.pack_into("<III", entry, 68, no_stream, no_stream, no_stream)
        if index < len(entries):
            name, kind = entries[index]
            encoded = name.encode("utf-16-le") + b"\x00\x00"
            entry[0 : len(encoded)] = encoded
            child = 1 if index == 0 and len(entries) > 1 else no_stream
            right = index + 1 if 0 < index < len(entries) - 1 else no_stream
            struct.pack_into("<HBBIII", entry, 64, len(encoded), kind, 1, no_stream, right, child)
            struct.pack_into("<II", entry, 116, end_of_chain, 0)
        directory += entry
    return bytes(header + fat + directory)


OUTLOOK_MSG = make_cfbf(["__substg1.0_0037001F", "__properties_version1.0"])
WORD_CFBF = make_cfbf(["WordDocument", "1Table"])
EXCEL_CFBF = make_cfbf(["Workbook"])


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


# --- sniff_office ---------------------------------------------------------------------------------------

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
OCTET = "application/octet-stream"
RTF = make_rtf(["Hello"])
PLAIN_ZIP = _zip({"notes.txt": "not an office file"})


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "expected"),
    [
        # Office Open XML: a zip, so the name or type decides.
        (make_docx(["x"]), "letter.docx", DOCX_TYPE, ".docx"),
        (make_docx(["x"]), "", DOCX_TYPE + "; name=letter", ".docx"),
        (make_docx(["x"]), "LETTER.DOCX", OCTET, ".docx"),
        (make_docx(["x"]), "letter.bin", OCTET, None),
        (make_xlsx(["x"]), "sheet.xlsx", OCTET, ".xlsx"),
        (PLAIN_ZIP, "archive.zip", "application/zip", None),
        (PLAIN_ZIP, "fake.docx", OCTET, ".docx"),  # LibreOffice will refuse it: OfficeFailed
        # OpenDocument says what it is in its first bytes, whatever the name.
        (make_odf(["x"]), "brief.odt", OCTET, ".odt"),
        (make_odf(["x"]), "brief.docx", DOCX_TYPE, ".odt"),
        (make_odf(["x"], "application/vnd.oasis.opendocument.spreadsheet"), "data", OCTET, ".ods"),
        (make_odf(["x"], "application/vnd.oasis.opendocument.presentation"), "slides.odt", OCTET, None),
        # RTF by its bytes, whatever the label (Word names RTF files .doc now and then).
        (RTF, "memo.rtf", "application/rtf", ".rtf"),
        (RTF, "memo.doc", "application/msword", ".rtf"),
        (RTF, "memo.txt", "text/plain", ".rtf"),
        (b"\xef\xbb\xbf\r\n " + RTF, "", OCTET, ".rtf"),
        # CFBF: Word or Excel by name, type or stream name; an Outlook message never.
        (WORD_CFBF, "letter.doc", "application/msword", ".doc"),
        (WORD_CFBF, "", OCTET, ".doc"),
        (EXCEL_CFBF, "budget.xls", OCTET, ".xls"),
        (EXCEL_CFBF, "", OCTET, ".xls"),
        (make_cfbf([]), "", "application/vnd.ms-excel", ".xls"),
        (make_cfbf([]), "protected.docx", DOCX_TYPE, ".doc"),  # an encrypted .docx is a CFBF file
        (make_cfbf(["PowerPoint Document"]), "deck.ppt", "application/vnd.ms-powerpoint", None),
        (OUTLOOK_MSG, "forwarded.msg", "application/vnd.ms-outlook", None),
        (OUTLOOK_MSG, "forwarded.msg", OCTET, None),
        (OUTLOOK_MSG, "disguised.doc", "application/msword", None),
        (OUTLOOK_MSG, "", OCTET, None),
        # Not office files at all.
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "report.docx", DOCX_TYPE, None),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "chart.xlsx", OCTET, None),
        (b"plain words", "notes.doc", "application/msword", None),
        (b"", "empty.docx", DOCX_TYPE, None),
        (random.Random(1).randbytes(2000), "random.docx", DOCX_TYPE, None),
    ],
)
def test_sniff_office(data: bytes, filename: str, content_type: str, expected: str | None) -> None:
    assert sniff_office(data[:4096], filename, content_type) == expected


def test_content_types_map_to_known_extensions() -> None:
    assert set(OFFICE_CONTENT_TYPES.values()) <= set(OFFICE_EXTENSIONS)
    assert set(OFFICE_EXTENSIONS) == {".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ods"}


# --- the command-line contract, with a fake soffice -----------------------------------------------------


def _fake_soffice(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-soffice"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


_FIND_OUTDIR = 'prev=""\nfor arg in "$@"; do [ "$prev" = "--outdir" ] && out="$arg"; prev="$arg"; done\n'

_RECORDING = """
out=""; prev=""; doc=""
for arg in "$@"; do
  if [ "$prev" = "--outdir" ]; then out="$arg"; fi
  prev="$arg"; doc="$arg"
done
{
  echo "%PDF-1.4"
  for arg in "$@"; do echo "arg=$arg"; done
  echo "home=$HOME"
  echo "tmpdir=$TMPDIR"
  echo "cwd=$(pwd)"
  echo "stdin=$(cat | wc -c)"
  echo "ulimit_v=$(ulimit -v)"
  echo "pid=$$"
  echo "sid=$(cut -d' ' -f6 /proc/$$/stat)"
  echo "secret=${FAXBRIDGE_TEST_SECRET:-unset}"
  echo "docmode=$(stat -c %a "$doc")"
  echo "dirmode=$(stat -c %a "$(dirname "$doc")")"
  echo "content=$(cat "$doc")"
} > "$out/document.pdf"
"""


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], Path]:
    def install(body: str) -> Path:
        script = _fake_soffice(tmp_path, body)
        monkeypatch.setattr(office_module, "find_soffice", lambda: str(script))
        return script

    return install


def _fields(pdf: bytes) -> tuple[list[str], dict[str, str]]:
    lines = pdf.decode().splitlines()[1:]
    args = [line[4:] for line in lines if line.startswith("arg=")]
    values = dict(line.split("=", 1) for line in lines if not line.startswith("arg="))
    return args, values


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_command_line_environment_and_isolation(
    use_fake: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fake(_RECORDING)
    monkeypatch.setenv("FAXBRIDGE_TEST_SECRET", "s3cret")
    pdf = office_to_pdf(b"the document bytes", ".docx", memory_limit=MIN_OFFICE_ADDRESS_SPACE)
    args, values = _fields(pdf)
    root = Path(values["home"])
    assert root.name.startswith("faxbridge-office-")
    assert args == [
        "--headless",
        "--norestore",
        "--nolockcheck",
        "--nodefault",
        "--nologo",
        "--infilter=MS Word 2007 XML",
        "--convert-to",
        "pdf",
        "--outdir",
        str(root / "out"),
        f"-env:UserInstallation=file://{root}/profile",
        str(root / "document.docx"),
    ]
    assert values["tmpdir"] == str(root)
    assert values["cwd"] == str(root)
    assert values["stdin"].strip() == "0"  # stdin is /dev/null: nothing to read, nothing to wait for
    assert values["sid"] == values["pid"]  # its own session (and process group)
    assert values["secret"] == "unset"  # our environment is not passed on
    assert values["dirmode"] == "700"
    assert values["docmode"] == "600"
    assert values["content"] == "the document bytes"
    assert int(values["ulimit_v"]) * 1024 == MIN_OFFICE_ADDRESS_SPACE
    assert not root.exists(), "the private directory is removed after the conversion"


def test_no_memory_limit_means_no_rlimit(use_fake: Callable[[str], Path]) -> None:
    use_fake(_RECORDING)
    _args, values = _fields(office_to_pdf(b"x", ".rtf"))
    assert values["ulimit_v"] == "unlimited"


def test_memory_limit_below_the_minimum_is_a_configuration_error(use_fake: Callable[[str], Path]) -> None:
    use_fake(_RECORDING)
    with pytest.raises(ValueError, match="MIN_OFFICE_ADDRESS_SPACE"):
        office_to_pdf(b"x", ".docx", memory_limit=MIN_OFFICE_ADDRESS_SPACE - 1)


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(ValueError, match="not an office document extension"):
        office_to_pdf(b"x", ".pptx")


def test_no_output_is_office_failed(use_fake: Callable[[str], Path]) -> None:
    use_fake('echo "Error: source file could not be loaded"\nexit 0\n')
    with pytest.raises(OfficeFailed) as caught:
        office_to_pdf(b"x", ".docx")
    assert office_refusal_reason(caught.value) == "LibreOffice could not convert the document (it may be damaged)"


def test_output_that_is_not_a_pdf_is_office_failed(use_fake: Callable[[str], Path]) -> None:
    use_fake(_FIND_OUTDIR + 'echo "not a PDF" > "$out/document.pdf"\n')
    with pytest.raises(OfficeFailed):
        office_to_pdf(b"x", ".docx")


def test_empty_document_is_refused_without_running_libreoffice(use_fake: Callable[[str], Path], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    use_fake(f"touch {marker}\n")
    with pytest.raises(OfficeFailed, match="empty"):
        office_to_pdf(b"", ".docx")
    assert not marker.exists()


def _state(pid: int) -> str | None:
    """The process state letter ("R", "S", "Z"...) or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _group_members(pgid: int) -> list[tuple[int, str]]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            members.append((int(entry.name), fields[0]))
    return members


def _wait_until_no_live_members(pgid: int, seconds: float = 5.0) -> list[tuple[int, str]]:
    """Wait for SIGKILL to take effect; zombies waiting for init to reap them are dead, not running."""
    deadline = time.monotonic() + seconds
    while True:
        live = [(pid, state) for pid, state in _group_members(pgid) if state != "Z"]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.02)


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_timeout_kills_the_whole_process_group(use_fake: Callable[[str], Path], tmp_path: Path) -> None:
    # Like soffice -> oosplash -> soffice.bin: the process we start is not the one doing the work.
    pids = tmp_path / "pids"
    use_fake(f"sleep 300 &\necho $! > {pids}\necho $$ >> {pids}\nwait\n")
    started = time.monotonic()
    with pytest.raises(OfficeTimeout) as caught:
        office_to_pdf(b"x", ".docx", timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert office_refusal_reason(caught.value) == "the document took too long to convert"
    grandchild, child = (int(line) for line in pids.read_text().split())
    assert _wait_until_no_live_members(child) == []
    assert _state(grandchild) in (None, "Z")


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_helpers_left_behind_after_a_normal_exit_are_killed(use_fake: Callable[[str], Path], tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    use_fake(_RECORDING + f"sleep 300 &\necho $! > {pids}\n")
    office_to_pdf(b"x", ".odt")
    straggler = int(pids.read_text())
    deadline = time.monotonic() + 5
    while _state(straggler) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(straggler) in (None, "Z")


# --- LibreOffice missing --------------------------------------------------------------------------------


@pytest.fixture
def fresh_finder() -> Iterator[None]:
    find_soffice.cache_clear()
    yield
    find_soffice.cache_clear()


def test_unavailable_when_the_finder_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(office_module, "find_soffice", lambda: None)
    with pytest.raises(OfficeUnavailable) as caught:
        office_to_pdf(make_docx(["x"]), ".docx")
    assert office_refusal_reason(caught.value) == (
        "Word documents cannot be faxed here because LibreOffice is not installed on the server; please send a PDF"
    )


def test_unavailable_when_the_launcher_has_gone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(office_module, "find_soffice", lambda: str(tmp_path / "uninstalled" / "soffice"))
    with pytest.raises(OfficeUnavailable):
        office_to_pdf(make_docx(["x"]), ".docx")


@pytest.mark.usefixtures("fresh_finder")
def test_unavailable_without_soffice_on_path_or_in_the_usual_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(office_module, "_COMMON_PATHS", (str(tmp_path / "nowhere" / "soffice"),))
    assert find_soffice() is None
    with pytest.raises(OfficeUnavailable) as caught:
        office_to_pdf(make_xlsx(["x"]), ".xlsx")
    assert office_refusal_reason(caught.value).startswith("Excel spreadsheets cannot be faxed here because LibreOffice")


@pytest.mark.usefixtures("fresh_finder")
def test_finder_looks_on_path_then_in_the_usual_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    on_path = _fake_soffice(tmp_path, "exit 0\n").rename(tmp_path / "libreoffice")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_soffice() == str(on_path)
    find_soffice.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    install = tmp_path / "opt" / "libreoffice24.8" / "program"
    install.mkdir(parents=True)
    installed = _fake_soffice(tmp_path, "exit 0\n").rename(install / "soffice")
    monkeypatch.setattr(
        office_module, "_COMMON_PATHS", (str(tmp_path / "opt" / "libreoffice*" / "program" / "soffice"),)
    )
    assert find_soffice() == str(installed)


def test_refusal_reasons() -> None:
    assert office_refusal_reason(OfficeUnavailable(".odt")).startswith("OpenDocument text documents cannot be faxed")
    assert office_refusal_reason(OfficeUnavailable()).startswith("office documents cannot be faxed here")
    assert office_refusal_reason(OfficeTimeout()) == "the document took too long to convert"
    assert office_refusal_reason(RuntimeError()) == "the document could not be converted"


# --- the real LibreOffice -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def soffice() -> str:
    found = find_soffice()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("LibreOffice (soffice) is not installed, and CI must run the office tests")
        pytest.skip("LibreOffice (soffice) is not installed (Debian: libreoffice-writer-nogui, libreoffice-calc-nogui)")
    return found


def _save_as(soffice: str, data: bytes, source_ext: str, target: str, tmp: Path) -> bytes:
    """Have LibreOffice save a document in another format (to make .doc and .xls files for the tests)."""
    source = tmp / f"source{source_ext}"
    source.write_bytes(data)
    subprocess.run(
        [
            soffice,
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(tmp / "out"),
            f"-env:UserInstallation={(tmp / 'profile').as_uri()}",
            str(source),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=True,
        env={**os.environ, "HOME": str(tmp)},
    )
    extension = target.split(":", 1)[0]
    return (tmp / "out" / f"source.{extension}").read_bytes()


@pytest.fixture(scope="module")
def binary_documents(soffice: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    words = make_rtf(["Legacy binary Word", "Zweite Zeile"])
    sheet = make_xlsx(["Legacy", "Excel", "Workbook"])
    made = {
        ".doc": _save_as(soffice, words, ".rtf", "doc:MS Word 97", tmp_path_factory.mktemp("doc")),
        ".xls": _save_as(soffice, sheet, ".xlsx", "xls:MS Excel 97", tmp_path_factory.mktemp("xls")),
    }
    assert made[".doc"].startswith(_CFBF_MAGIC)
    assert made[".xls"].startswith(_CFBF_MAGIC)
    return made


CONVERSIONS = [
    pytest.param(".docx", ["Hello faxbridge", "Grüße aus Köln"], make_docx, id="docx"),
    pytest.param(".xlsx", ["Alpha", "Beta", "Gamma"], make_xlsx, id="xlsx"),
    pytest.param(".odt", ["OpenDocument text", "zweiter Absatz"], make_odf, id="odt"),
    pytest.param(".ods", ["Kalkulation", "Tabelle"], make_ods, id="ods"),
    pytest.param(".rtf", ["Rich text here", "Ünïcödé"], make_rtf, id="rtf"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("extension", "words", "build"), CONVERSIONS)
def test_converts_built_documents(
    soffice: str, extension: str, words: list[str], build: Callable[[list[str]], bytes]
) -> None:
    data = build(words)
    assert sniff_office(data[:4096], f"attachment{extension}", OCTET) == extension
    started = time.monotonic()
    pdf = office_to_pdf(data, extension)
    elapsed = time.monotonic() - started
    print(f"{extension}: {len(data)} bytes -> {len(pdf)} bytes of PDF in {elapsed:.2f} s")
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for word in words:
        assert word in text


@pytest.mark.slow
@pytest.mark.parametrize("extension", [".doc", ".xls"])
def test_converts_legacy_binary_documents(soffice: str, binary_documents: dict[str, bytes], extension: str) -> None:
    data = binary_documents[extension]
    assert sniff_office(data[:4096], f"old{extension}", OCTET) == extension
    text = pdf_text(office_to_pdf(data, extension))
    expected = {".doc": ["Legacy binary Word", "Zweite Zeile"], ".xls": ["Legacy", "Excel", "Workbook"]}[extension]
    for word in expected:
        assert word in text


@pytest.mark.slow
def test_converts_within_the_minimum_address_space(soffice: str) -> None:
    pdf = office_to_pdf(make_docx(["Within the limit"]), ".docx", memory_limit=MIN_OFFICE_ADDRESS_SPACE)
    assert "Within the limit" in pdf_text(pdf)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "data", "extension"),
    [
        ("random bytes called .docx", random.Random(7).randbytes(5000), ".docx"),
        ("random bytes after a CFBF signature", _CFBF_MAGIC + random.Random(8).randbytes(5000), ".doc"),
        ("a truncated .docx", make_docx(["cut short"])[:400], ".docx"),
        ("a plain zip called .docx", PLAIN_ZIP, ".docx"),
        ("a PDF called .xlsx", b"%PDF-1.4\n%junk\n", ".xlsx"),
        ("an Outlook message forced through the Word filter", OUTLOOK_MSG, ".doc"),
    ],
)
def test_damaged_documents_fail_cleanly(soffice: str, label: str, data: bytes, extension: str) -> None:
    # LibreOffice's own type detection would typeset unknown bytes as text (a page of garbage); with the
    # import filter named it refuses them. Measured: every case here ends in OfficeFailed, no PDF.
    with pytest.raises(OfficeFailed):
        office_to_pdf(data, extension)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
@pytest.mark.parametrize("timeout", [0.01, 0.5])
def test_real_timeout_leaves_no_libreoffice_running(
    soffice: str, monkeypatch: pytest.MonkeyPatch, timeout: float
) -> None:
    started: list[subprocess.Popen[Any]] = []
    original = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        process = original(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(subprocess, "Popen", recording)  # the module office.py calls it through
    with pytest.raises(OfficeTimeout):
        office_to_pdf(make_docx(["never finished"]), ".docx", timeout=timeout)
    assert len(started) == 1
    process = started[0]
    assert process.returncode is not None, "the child was reaped"
    assert _wait_until_no_live_members(process.pid) == []
    assert isinstance(process.args, list)
    assert not Path(process.args[-1]).parent.exists(), "the private directory is removed"
