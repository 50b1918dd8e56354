"""Word, Excel, OpenDocument and RTF attachments to PDF with a headless LibreOffice.

LibreOffice is a large C++ program reading hostile input, so it is run the cautious way:

* the caller (the sandboxed conversion child) passes bytes; they are written to a fresh private temporary
  directory as ``document<ext>``; the sender's file name never reaches the file system or a command line;
* every conversion gets its own throw-away user profile (``-env:UserInstallation``) and ``HOME``, so one
  document cannot leave macros, settings or a lock file behind for the next, and two conversions never
  share a profile (LibreOffice refuses to run twice on one profile);
* the process runs in its own session, with stdin closed and a minimal environment (no database URL or
  API key of ours is inherited); on a timeout, and after every run, the whole process group is killed
  with SIGKILL, because ``soffice`` is a shell script that starts ``oosplash``, which starts
  ``soffice.bin``: killing only the direct child would leave the real converter running;
* the import filter is named (``--infilter``) rather than detected, so bytes that are not really a Word
  file are refused instead of being typeset as text;
* an optional address-space limit (``RLIMIT_AS``) caps what a document bomb can allocate.

Measured on the development machine (LibreOffice 7.4.7, Debian *-nogui packages, 2 CPUs, warm page cache):
converting a one-page .docx, .xlsx or .odt takes about 1.0 s on an idle machine, the first time in a process
(1.1 s) and every time after, because each run builds a new profile: there is nothing to warm up. With other
work on both CPUs it was 1.4-2.6 s. 3,000 paragraphs take 1.3 s, an 11 MB RTF with a large picture 2.1 s.
soffice.bin peaks at about 210 MB resident and 455 MB of address space (VmPeak); see
``MIN_OFFICE_ADDRESS_SPACE`` for the limit.

Macros: a fresh profile has LibreOffice's default macro security (only macros signed by a trusted source
run, and the profile trusts none), so document macros do not run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

# Extension given to soffice -> the kind of document, as a sender would call it ("Word documents cannot ...").
OFFICE_EXTENSIONS: Final = {
    ".doc": "Word document",
    ".docx": "Word document",
    ".odt": "OpenDocument text document",
    ".rtf": "RTF document",
    ".xls": "Excel spreadsheet",
    ".xlsx": "Excel spreadsheet",
    ".ods": "OpenDocument spreadsheet",
}

# Declared MIME types -> extension. Only used together with the bytes (see sniff_office): a declared type is
# a hint, the magic bytes decide.
OFFICE_CONTENT_TYPES: Final[dict[str, str]] = {
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/rtf": ".rtf",
    "application/x-rtf": ".rtf",
    "text/rtf": ".rtf",
    "text/richtext": ".rtf",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
}

# The import filter is named on the command line instead of left to LibreOffice's type detection: detection
# falls back to the plain-text filter for anything it does not recognise, so random bytes called .docx come
# out as a page of garbage glyphs (measured). With the filter forced, such a file fails cleanly. The cost:
# Word 6/95 files (very rare today) are refused by the Word 97 filter.
_INPUT_FILTERS: Final = {
    ".doc": "MS Word 97",
    ".docx": "MS Word 2007 XML",
    ".odt": "writer8",
    ".rtf": "Rich Text Format",
    ".xls": "MS Excel 97",
    ".xlsx": "Calc MS Excel 2007 XML",
    ".ods": "calc8",
}

# soffice.bin maps its libraries and reserves heaps up front. Measured on LibreOffice 7.4 (x86-64): VmPeak is
# about 455 MB whatever the document (one line, 3,000 paragraphs, an 11 MB picture); with RLIMIT_AS at 450 MB
# it aborts at start (SIGABRT, exit 134), at 500 MB it converts. Below this minimum every conversion would
# fail, so office_to_pdf refuses such a limit outright (it is a configuration error). Give it 1-2 GiB in
# production (settings default: 4 GiB): documents with many large pictures need more. Resident memory stays
# far lower (about 210 MB).
MIN_OFFICE_ADDRESS_SPACE: Final = 512 * 1024 * 1024

_OLE2_MAGIC: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC: Final = b"PK\x03\x04"
_RTF_MAGIC: Final = b"{\\rtf"
_PDF_FILE: Final = b"%PDF-"

# Stream names in a CFBF directory are UTF-16LE. An Outlook .msg (MS-OXMSG) is a CFBF file too: its streams
# are called __substg1.0_<8 hex digits> and __properties_version1.0; Word's main stream is WordDocument, Excel's
# Workbook (BIFF8) or Book (BIFF5). The directory is not always inside the head, so these are only hints.
_MSG_STREAMS: Final = ("__substg1.0_".encode("utf-16-le"), "__properties_version1.0".encode("utf-16-le"))
_WORD_STREAM: Final = "WordDocument".encode("utf-16-le")
_EXCEL_STREAMS: Final = ("Workbook".encode("utf-16-le"), "Book\x00".encode("utf-16-le"))
_OUTLOOK_TYPES: Final = frozenset({"application/vnd.ms-outlook", "application/x-msg"})

_WORD_FAMILY: Final = frozenset({".doc", ".docx", ".rtf", ".odt"})
_EXCEL_FAMILY: Final = frozenset({".xls", ".xlsx", ".ods"})

# An ODF package starts with an uncompressed member called "mimetype" holding the document's MIME type
# (ODF 1.2 part 3, 3.3): local header (30 bytes), the name (8 bytes), any extra field, then the type itself.
_ODF_MIMETYPE_NAME: Final = b"mimetype"
_ODF_TYPES: Final = {
    b"application/vnd.oasis.opendocument.text": ".odt",
    b"application/vnd.oasis.opendocument.spreadsheet": ".ods",
}

# Where LibreOffice lives when it is not on PATH: Debian/Ubuntu, the upstream .deb/.rpm (/opt), snap, macOS.
_COMMON_PATHS: tuple[str, ...] = (
    "/usr/bin/soffice",
    "/usr/lib/libreoffice/program/soffice",
    "/usr/lib64/libreoffice/program/soffice",
    "/opt/libreoffice*/program/soffice",
    "/snap/bin/libreoffice",
    "/Applications/LibreOffice.app/Contents/MacOS/soffice",
)

# Locale variables are passed through: LibreOffice picks the default paper size and the sort of dates it
# prints from them (a document without a page size comes out Letter under en_US, A4 elsewhere).
_PASSED_ENV: Final = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_PAPER", "LC_NUMERIC", "LC_TIME", "TZ")
_POLL_INTERVAL: Final = 0.02
_DIAGNOSTIC_BYTES: Final = 2000


class OfficeUnavailable(Exception):
    """LibreOffice is not installed (or not found) on this server."""

    def __init__(self, extension: str | None = None) -> None:
        self.extension = extension
        super().__init__(f"LibreOffice (soffice) not found; cannot convert {extension or 'office documents'}")


class OfficeTimeout(Exception):
    """The conversion did not finish in time; LibreOffice was killed."""


class OfficeFailed(Exception):
    """LibreOffice ran but produced no PDF (a damaged or unsupported document, or it crashed)."""


def sniff_office(head: bytes, filename: str, content_type: str) -> str | None:
    """Return the extension to give soffice for an office attachment, or ``None`` when it is not one.

    ``head`` is the start of the attachment (a few kilobytes is plenty), ``filename`` its (sanitised) name
    and ``content_type`` the declared type. The bytes decide the family; the name or type only tells
    apart what the magic cannot (a CFBF file may be a Word or an Excel file, or an Outlook message, which
    is refused). A zip is never opened here: only its first member's local header is looked at.
    """
    declared = _declared_extension(filename, content_type)
    name_ext = _extension(filename)
    if head.startswith(_OLE2_MAGIC):
        return _sniff_cfbf(head, declared, name_ext, content_type)
    if head.startswith(_ZIP_MAGIC):
        return _sniff_zip(head, declared)
    # Word writes RTF files with a .doc name now and then, and mail programs send RTF as octet-stream or
    # text/plain: whatever the label, bytes that start like RTF are an RTF document.
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_RTF_MAGIC):
        return ".rtf"
    return None


def _sniff_cfbf(head: bytes, declared: str | None, name_ext: str, content_type: str) -> str | None:
    if name_ext == ".msg" or _mime_type(content_type) in _OUTLOOK_TYPES or any(s in head for s in _MSG_STREAMS):
        return None
    # An encrypted .docx/.xlsx is a CFBF container too; LibreOffice detects it by content and will fail on
    # it (no password), which is reported as OfficeFailed. Give it the binary format's extension.
    if declared in _WORD_FAMILY:
        return ".doc"
    if declared in _EXCEL_FAMILY:
        return ".xls"
    if _WORD_STREAM in head:
        return ".doc"
    if any(s in head for s in _EXCEL_STREAMS):
        return ".xls"
    # PowerPoint, Visio, Outlook items whose directory lies beyond the head, MSI packages...: not ours.
    return None


def _sniff_zip(head: bytes, declared: str | None) -> str | None:
    if len(head) >= 30:
        # Local file header: compressed size at 18, name length at 26, extra length at 28, name at 30.
        size, name_length, extra_length = struct.unpack_from("<I4xHH", head, 18)
        if head[30 : 30 + name_length] == _ODF_MIMETYPE_NAME:
            # An ODF package says what it is (the member is stored, so its size is the text's length); a
            # presentation, a drawing or a template is not converted.
            start = 30 + name_length + extra_length
            if size:
                return _ODF_TYPES.get(head[start : start + size])
            # Sizes deferred to a data descriptor: the type is followed by the descriptor's or next header's "PK".
            for mimetype, extension in _ODF_TYPES.items():
                if head[start : start + len(mimetype) + 2] == mimetype + b"PK":
                    return extension
            return None
    # Office Open XML has no signature in its first bytes ([Content_Types].xml usually comes first, but not
    # always), so the name or type must say it is a Word or Excel file; a plain .zip is an archive, which is
    # never expanded.
    if declared in (".docx", ".xlsx", ".odt", ".ods"):
        return declared
    return None


def _mime_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _extension(filename: str) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().lower()
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def _declared_extension(filename: str, content_type: str) -> str | None:
    extension = _extension(filename)
    if extension in OFFICE_EXTENSIONS:
        return extension
    return OFFICE_CONTENT_TYPES.get(_mime_type(content_type))


@functools.cache
def find_soffice() -> str | None:
    """Return the path of LibreOffice's ``soffice`` launcher, or ``None`` when it is not installed.

    Cached: installing LibreOffice while the bridge runs needs a restart (or ``find_soffice.cache_clear()``).
    """
    for name in ("soffice", "libreoffice"):
        found = shutil.which(name)
        if found:
            return found
    for pattern in _COMMON_PATHS:
        # Several /opt/libreofficeX.Y side by side: any one will do; sorted so that the choice is stable.
        for candidate in sorted(Path("/").glob(pattern.lstrip("/"))):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def office_to_pdf(
    data: bytes,
    extension: str,
    *,
    timeout: float = 60.0,
    memory_limit: int | None = None,
    on_process: Callable[[int, bool], None] | None = None,
) -> bytes:
    """Convert one office document to PDF with LibreOffice and return the PDF's bytes.

    ``extension`` is what :func:`sniff_office` returned. ``timeout`` bounds the whole run (wall clock,
    including LibreOffice's start, which is 1-2 s). ``memory_limit`` is an address-space limit in bytes
    for the LibreOffice processes, at least :data:`MIN_OFFICE_ADDRESS_SPACE` (soffice.bin cannot start with
    much less). Blocking; meant for a single-threaded sandbox child (``preexec_fn`` is not
    safe in a threaded process). ``on_process(group, running)`` is told the process group of LibreOffice when
    it starts (``True``) and once it is gone (``False``): LibreOffice runs in a session of its own, so whoever
    may kill the caller must kill that group too, or a hung LibreOffice outlives it.

    Raises:
        ValueError: ``extension`` is not one of :data:`OFFICE_EXTENSIONS`, or ``memory_limit`` is too low.
        OfficeUnavailable: LibreOffice is not installed.
        OfficeTimeout: the conversion took longer than ``timeout``; every LibreOffice process was killed.
        OfficeFailed: LibreOffice did not produce a PDF.
    """
    if extension not in OFFICE_EXTENSIONS:
        raise ValueError(f"not an office document extension: {extension!r}")
    if memory_limit is not None and memory_limit < MIN_OFFICE_ADDRESS_SPACE:
        raise ValueError(f"memory_limit {memory_limit} is below MIN_OFFICE_ADDRESS_SPACE; LibreOffice would not start")
    soffice = find_soffice()
    if soffice is None:
        raise OfficeUnavailable(extension)
    if not data:
        # LibreOffice opens an empty file as a new, blank document and "converts" it to an empty page.
        raise OfficeFailed("the document is empty")
    # ignore_cleanup_errors: a process killed on a timeout may still be leaving the directory for a moment;
    # the reason for the refusal must not be replaced by an error about a temporary file.
    with tempfile.TemporaryDirectory(prefix="faxbridge-office-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        root.chmod(0o700)  # mkdtemp already creates it 0700; say so explicitly, the documents are private
        document = root / f"document{extension}"
        fd = os.open(document, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        outdir = root / "out"
        outdir.mkdir(mode=0o700)
        command = [
            soffice,
            "--headless",
            "--norestore",
            "--nolockcheck",
            "--nodefault",
            "--nologo",
            f"--infilter={_INPUT_FILTERS[extension]}",
            "--convert-to",
            "pdf",
            "--outdir",
            str(outdir),
            f"-env:UserInstallation={(root / 'profile').as_uri()}",
            str(document),
        ]
        returncode, output = _run(
            command, root, extension=extension, timeout=timeout, memory_limit=memory_limit, on_process=on_process
        )
        pdf_path = outdir / "document.pdf"
        pdf = pdf_path.read_bytes() if pdf_path.is_file() else b""
        if not pdf.startswith(_PDF_FILE):
            logger.info(
                "LibreOffice produced no PDF for a %s document (exit %s): %s",
                extension,
                returncode,
                output.decode("utf-8", "replace").strip(),
            )
            raise OfficeFailed(f"LibreOffice produced no PDF (exit status {returncode})")
        return pdf


def _run(
    command: list[str],
    root: Path,
    *,
    extension: str,
    timeout: float,
    memory_limit: int | None,
    on_process: Callable[[int, bool], None] | None = None,
) -> tuple[int, bytes]:
    """Run soffice in its own session; return its exit status and the tail of its output."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    # The profile, caches and LibreOffice's temporary files all land in the private directory and vanish
    # with it.
    env.update(HOME=str(root), TMPDIR=str(root), XDG_CONFIG_HOME=str(root), XDG_CACHE_HOME=str(root))
    log_path = root / "soffice.log"
    with log_path.open("wb") as log:
        # Output goes to a file, not a pipe: nothing can block on a full pipe, and no descendant keeps a
        # pipe open after the process group is gone.
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_limit_address_space(memory_limit) if memory_limit is not None else None,
            )
        except (FileNotFoundError, PermissionError) as exc:  # the launcher found earlier is gone or not executable
            raise OfficeUnavailable(extension) from exc
        if on_process is not None:
            on_process(proc.pid, True)
        try:
            finished = _wait_unreaped(proc, timeout)
        finally:
            # Kill the whole group while the leader is not yet reaped: its process-group id cannot have been
            # reused by then. After a normal exit this removes any helper LibreOffice left behind.
            _kill_group(proc.pid)
            returncode = proc.wait()
            if on_process is not None:
                on_process(proc.pid, False)
    output = log_path.read_bytes()[-_DIAGNOSTIC_BYTES:]
    if not finished:
        raise OfficeTimeout(f"LibreOffice did not finish within {timeout:g} s")
    return returncode, output


def _wait_unreaped(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the child exits, without reaping it; ``False`` on timeout."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # pragma: no cover - macOS before Python 3.13; the group id reuse race is accepted
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while True:
        # WNOWAIT leaves the child a zombie, so its pid (= our process-group id) stays ours until wait().
        if waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(_POLL_INTERVAL, remaining))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _limit_address_space(memory_limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Runs in the child between fork and exec: only the soft limit is set (LibreOffice inherits it) and
        # it never exceeds the hard limit the sandbox may already impose, which would make setrlimit fail.
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    return apply


def office_refusal_reason(exc: BaseException) -> str:
    """Complete "<attachment>: skipped, ..." / "cannot be faxed: ..." for an office conversion failure."""
    if isinstance(exc, OfficeUnavailable):
        kind = OFFICE_EXTENSIONS.get(exc.extension or "", "office document")
        return f"{kind}s cannot be faxed here because LibreOffice is not installed on the server; please send a PDF"
    if isinstance(exc, OfficeTimeout):
        return "the document took too long to convert"
    if isinstance(exc, OfficeFailed):
        return "LibreOffice could not convert the document (it may be damaged)"
    return "the document could not be converted"
