"""Document conversion: faxbridge's ``convert_message`` against Ghostscript on the same documents, same run.

Documents (made at bench time, deterministic, except the corpus book and scan):

* ``text``: a 10-page A4 PDF of dense text (60 lines of 10 pt Helvetica per page with boxed rows), fpdf2;
* ``book``: the 117-page pdfTeX book of the corpus (``pdf/py-pdf-sample-files/009-pdflatex-geotopo``);
* ``photo``: a 12-megapixel photo, 4000×3000 JPEG (gradients, discs, noise, blur), Pillow;
* ``fax``: a 5-page G4 TIFF, 1728×2292 (a received fine fax: text lines and boxes), Pillow;
* ``scan``: the corpus's 3-page G4 TIFF at 400 dpi (``images/pillow-tests/g4-multi.tiff``), if present.

Pipelines, each run as a fresh child process pinned to CPU 1 (this process sits on CPU 0):

* ``bridge``: a new ``python`` that imports ``bridge.converters`` and calls
  ``convert_message(raw, paper="a4", max_pages=500)`` on a mail (``EmailMessage``) with the document as
  its only attachment, then writes the PDF. Two times: *wall* (the whole child: interpreter start-up and
  imports included, about 0.3 s) and *convert* (the call alone, timed inside the child): the daemon's
  sandbox forks its children from a fork server with the converters already imported, so *convert* is
  what a fax costs there. Peak RSS is the child's either way, imports included.
* ``gs pdfwrite``: PDF normalisation, ``gs -q -dNOPAUSE -dBATCH -dSAFER -sDEVICE=pdfwrite -sPAPERSIZE=a4
  -dFIXEDMEDIA -dPDFFitPage -sOutputFile=out.pdf in.pdf``.
* ``gs tiffg4``: rasterising as HylaFAX does, ``gs -q -dNOPAUSE -dBATCH -dSAFER -sDEVICE=tiffg4 -r204x196
  -sPAPERSIZE=a4 -dFIXEDMEDIA -dPDFFitPage -sOutputFile=out.tif in.pdf``.

Ghostscript reads PDF only, so the images are first wrapped as a PDF, outside the timed region: the JPEG
embedded as it is (fpdf2, 300 dpi), the TIFF's G4 pages by Pillow at the TIFF's resolution.

Measured per run: wall time (``time.perf_counter`` around the child), pages/s, peak RSS (``ru_maxrss``
from ``os.wait4``), output bytes per page. Afterwards, outside the timing, every PDF output is rasterised
with the ``gs tiffg4`` command above and its G4 bytes per page summed from the TIFF's ``StripByteCounts``:
what the fax line would carry, compared in one coding. ``--rounds`` (3) timed rounds after ``--warmup`` (1),
the order of the pipelines rotating from round to round; medians (min–max), and ratios taken within a round.

Aims: bridge time ≤ 0.5× gs pdfwrite on PDFs; bridge peak RSS ≤ 256 MiB on every input; scanned and
bilevel pages no larger than gs's G4 TIFF pages.

Run: ``.venv/bin/python bench/convert.py`` (about 2 minutes); ``--rounds 5``, ``--documents text,book``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from _common import MIB, REPO, machine_description, pin_client, server_argv, spread, table, text_lines

GS_COMMON = ("-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sPAPERSIZE=a4", "-dFIXEDMEDIA", "-dPDFFitPage")
GS_PDFWRITE = ("-sDEVICE=pdfwrite",)
GS_TIFFG4 = ("-sDEVICE=tiffg4", "-r204x196")
CORPUS_BOOK = "pdf/py-pdf-sample-files/009-pdflatex-geotopo/GeoTopo-komprimiert.pdf"
CORPUS_SCAN = "images/pillow-tests/g4-multi.tiff"
DOCUMENTS = ("text", "book", "photo", "fax", "scan", "greyscan")
PIPELINES = ("bridge", "gs pdfwrite", "gs tiffg4")

AIM_PDF_RATIO = 0.5
AIM_RSS_MIB = 256

# The child that converts one mail. It imports first and times the call alone, so that the parent can
# report both the fresh-interpreter cost and the conversion a pre-imported sandbox child does.
BRIDGE_CHILD = """\
import json, sys, time
started = time.perf_counter()
from bridge.converters import convert_message
imported = time.perf_counter()
with open(sys.argv[1], "rb") as handle:
    raw = handle.read()
begun = time.perf_counter()
result = convert_message(raw, paper="a4", max_pages=500)
done = time.perf_counter()
with open(sys.argv[2], "wb") as handle:
    handle.write(result.document)
print(json.dumps({"imports": imported - started, "convert": done - begun, "pages": result.pages,
                  "notes": list(result.notes)}))
"""


# -- documents -------------------------------------------------------------------------------------------


@dataclass
class Document:
    """One input: the mail the bridge gets and the PDF Ghostscript gets (the same document)."""

    key: str
    title: str
    mail: Path
    pdf: Path
    wrapped: bool
    """True when ``pdf`` is an image wrapped as PDF for Ghostscript (outside the timing)."""


def corpus_root() -> Path | None:
    configured = os.environ.get("FAXBRIDGE_CORPUS")
    path = Path(configured) if configured else REPO.parent / "shared" / "corpus"
    return path if path.is_dir() else None


def write_mail(path: Path, data: bytes, maintype: str, subtype: str, filename: str) -> None:
    """A mail with the document as its only part (no text body, so no extra page)."""
    msg = EmailMessage()
    msg["From"] = "Bench Sender <demo@example.com>"
    msg["To"] = "+4930123456@fax.localhost"
    msg["Subject"] = "bench document"
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    path.write_bytes(msg.as_bytes())


def text_pdf(pages: int = 10) -> bytes:
    """Dense A4 text pages, as in the anchors: 60 lines of 10 pt Helvetica, each row in a box."""
    from fpdf import FPDF

    pdf = FPDF(unit="mm", format="a4")
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=10)
    lines = text_lines(pages * 60, seed=7)
    for page in range(pages):
        pdf.add_page()
        for row in range(60):
            y = 15 + row * 4.45
            pdf.rect(12, y - 3.4, 186, 4.45)
            pdf.text(14, y, lines[page * 60 + row])
    return bytes(pdf.output())


def photo_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP photo-like JPEG: colour gradients, soft discs, sensor noise and a little blur (no numpy)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(12)
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ),
    )
    draw = ImageDraw.Draw(base)
    for _ in range(40):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(60, 600)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    photo = Image.blend(base, noise, 0.18).filter(ImageFilter.GaussianBlur(1.2))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=90)
    return out.getvalue()


def fax_tiff(pages: int = 5) -> bytes:
    """A received fine fax: 1728×2292 bilevel pages of text lines and boxes, G4, 204×196 dpi."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=26)
    frames = []
    lines = text_lines(pages * 55, seed=5)
    for page in range(pages):
        frame = Image.new("1", (1728, 2292), 1)
        draw = ImageDraw.Draw(frame)
        draw.rectangle((90, 90, 1638, 2202), outline=0, width=3)
        for row in range(55):
            y = 130 + row * 37
            draw.text((120, y), lines[page * 55 + row], fill=0, font=font)
        frames.append(frame)
    out = io.BytesIO()
    frames[0].save(out, "TIFF", compression="group4", save_all=True, append_images=frames[1:], dpi=(204, 196))
    return out.getvalue()


def grey_scan_jpeg(pages_text_seed: int = 9) -> bytes:
    """A letter scanned in grey as an office scanner or a phone app sends it: A4 at 200 dpi, JPEG.

    Black text on slightly grey, slightly noisy paper: what a plain threshold turns into a clean page and what
    a halftoning rasteriser turns into a page of grey dots.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    width, height = 1654, 2339
    paper = Image.new("L", (width, height), 236)
    noise = Image.effect_noise((width, height), 10)
    page = Image.blend(paper, noise, 0.12)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=30)
    for row, line in enumerate(text_lines(52, seed=pages_text_seed)):
        draw.text((150, 160 + row * 40), line, fill=25, font=font)
    page = page.filter(ImageFilter.GaussianBlur(0.6))
    out = io.BytesIO()
    page.save(out, "JPEG", quality=85, dpi=(200, 200))
    return out.getvalue()


def jpeg_as_pdf(data: bytes, path: Path, dpi: float = 300.0) -> None:
    """The JPEG on one page of its own size at ``dpi``, embedded as it is (DCTDecode, no re-encoding)."""
    from fpdf import FPDF
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    w_pt, h_pt = width / dpi * 72, height / dpi * 72
    pdf = FPDF(unit="pt", format=(w_pt, h_pt))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.image(io.BytesIO(data), x=0, y=0, w=w_pt, h=h_pt)
    path.write_bytes(bytes(pdf.output()))


def tiff_as_pdf(data: bytes, path: Path) -> None:
    """Every page of a bilevel TIFF on a PDF page of its size (Pillow writes 1-bit images as CCITT G4)."""
    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(data)) as im:
        dpi = im.info.get("dpi", (204, 196))
        frames = [frame.copy() for frame in ImageSequence.Iterator(im)]
    frames[0].save(path, "PDF", save_all=True, append_images=frames[1:], dpi=tuple(float(v) for v in dpi))


def make_documents(workdir: Path, keys: Sequence[str]) -> list[Document]:
    corpus = corpus_root()
    documents = []
    for key in keys:
        mail, pdf = workdir / f"{key}.eml", workdir / f"{key}.pdf"
        if key == "text":
            data = text_pdf()
            pdf.write_bytes(data)
            write_mail(mail, data, "application", "pdf", "text.pdf")
            documents.append(Document(key, "10-page text PDF (fpdf2)", mail, pdf, wrapped=False))
        elif key == "book":
            if corpus is None or not (corpus / CORPUS_BOOK).is_file():
                print(f"warning: {CORPUS_BOOK} not found (set FAXBRIDGE_CORPUS); skipping the book", file=sys.stderr)
                continue
            source = corpus / CORPUS_BOOK  # read in place, never copied into the repository
            write_mail(mail, source.read_bytes(), "application", "pdf", source.name)
            documents.append(Document(key, "117-page book (corpus, pdfTeX)", mail, source, wrapped=False))
        elif key == "photo":
            data = photo_jpeg()
            jpeg_as_pdf(data, pdf)
            write_mail(mail, data, "image", "jpeg", "photo.jpg")
            size = f"{len(data) / MIB:.1f} MiB"
            documents.append(Document(key, f"12 MP photo, 4000×3000 JPEG ({size})", mail, pdf, wrapped=True))
        elif key == "fax":
            data = fax_tiff()
            tiff_as_pdf(data, pdf)
            write_mail(mail, data, "image", "tiff", "fax.tif")
            documents.append(Document(key, "5-page G4 TIFF, 1728 wide (generated)", mail, pdf, wrapped=True))
        elif key == "scan":
            if corpus is None or not (corpus / CORPUS_SCAN).is_file():
                print(f"warning: {CORPUS_SCAN} not found; skipping the scan", file=sys.stderr)
                continue
            data = (corpus / CORPUS_SCAN).read_bytes()
            tiff_as_pdf(data, pdf)
            write_mail(mail, data, "image", "tiff", "g4-multi.tiff")
            documents.append(Document(key, "3-page G4 TIFF, 400 dpi (corpus)", mail, pdf, wrapped=True))
        elif key == "greyscan":
            data = grey_scan_jpeg()
            jpeg_as_pdf(data, pdf, dpi=200.0)
            write_mail(mail, data, "image", "jpeg", "letter-scan.jpg")
            documents.append(Document(key, "a letter scanned in grey, A4 at 200 dpi, JPEG", mail, pdf, wrapped=True))
        else:
            raise SystemExit(f"unknown document {key!r}; choose from {', '.join(DOCUMENTS)}")
    return documents


# -- running a child -------------------------------------------------------------------------------------

# ru_maxrss is not simply the child's own peak. At exec, Linux folds the peak RSS of the address space being
# replaced into the new program's ru_maxrss; a child started from this process (vfork or fork) therefore
# starts with *this* process's peak, which reaches ~300 MiB while the 12 MP photo is made. So every child
# is started by a small spawner (a fresh ``python -S`` with a handful of standard modules):
# what a child inherits is then only the spawner's own peak, reported as the floor under every figure.
SPAWNER = """\
import json, os, signal, sys, time
def expired(signum, frame):
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
signal.signal(signal.SIGALRM, expired)
for line in sys.stdin:
    job = json.loads(line)
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
               (os.POSIX_SPAWN_OPEN, 2, job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
    os.chdir(job["cwd"])
    started = time.perf_counter()
    child = os.posix_spawnp(job["argv"][0], job["argv"], os.environ, file_actions=actions)
    signal.setitimer(signal.ITIMER_REAL, job["timeout"])  # SIGKILL by pid if it runs too long
    while True:
        try:
            _, status, usage = os.wait4(child, 0)
            break
        except InterruptedError:
            continue
    signal.setitimer(signal.ITIMER_REAL, 0)
    wall = time.perf_counter() - started
    # What a child inherits at exec is this address space's peak (VmHWM), not this process's ru_maxrss,
    # which itself holds the peak of the process that started the spawner.
    with open("/proc/self/status") as status_file:
        floor = next(int(entry.split()[1]) for entry in status_file if entry.startswith("VmHWM:"))
    print(json.dumps({"wall": wall, "maxrss": usage.ru_maxrss, "status": os.waitstatus_to_exitcode(status),
                      "floor": floor}), flush=True)
"""


@dataclass
class ChildRun:
    """One finished child: wall seconds, peak RSS, exit status, what it printed."""

    wall: float
    maxrss_kib: int
    floor_kib: int
    status: int
    stdout: bytes
    stderr: bytes


class Spawner:
    """Runs each child from a small fresh process, so that the child's ru_maxrss is its own (see SPAWNER).

    Children are pinned to CPU 1 (``taskset``, which execs, so the pid and the rusage stay the child's),
    reaped with ``os.wait4`` (whose rusage is that child's alone) and killed by pid after their timeout.
    The spawner itself stays on this process's CPU.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", SPAWNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str], workdir: Path, *, timeout: float) -> ChildRun:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        out_path, err_path = workdir / "child.out", workdir / "child.err"
        job = {
            "argv": server_argv(argv),
            "cwd": str(REPO),
            "stdout": str(out_path),
            "stderr": str(err_path),
            "timeout": timeout,
        }
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the spawner exited")
        done = json.loads(line)
        return ChildRun(
            done["wall"], done["maxrss"], done["floor"], done["status"], out_path.read_bytes(), err_path.read_bytes()
        )

    def close(self) -> None:
        """Close its input (it exits at end of input) and wait for it; kill it by pid if it hangs."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# -- measuring -------------------------------------------------------------------------------------------


@dataclass
class Measure:
    """One pipeline on one document, one round."""

    wall: float
    rss_mib: float
    pages: int
    out_bytes: int
    floor_mib: float  # the spawner's own peak: ru_maxrss cannot read lower than this
    image_bytes: float  # compressed raster data per page (image XObjects in a PDF, strips in a TIFF)
    convert: float | None = None  # bridge: the call alone
    imports: float | None = None  # bridge: interpreter imports


@dataclass
class Cell:
    """All rounds of one pipeline on one document, and the output of the last round."""

    runs: list[Measure] = field(default_factory=list)
    output: Path | None = None
    notes: list[str] = field(default_factory=list)


def tiff_page_bytes(path: Path) -> list[int]:
    """Compressed bytes of each page of a TIFF: the sum of its ``StripByteCounts`` (tag 279)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [sum(frame.tag_v2[279]) for frame in ImageSequence.Iterator(im)]


def pdf_image_bytes(path: Path) -> list[int]:
    """Compressed bytes of the images each page of a PDF draws, images inside form XObjects included."""
    from pypdf import PdfReader
    from pypdf.generic import DictionaryObject, StreamObject

    def walk(resources: object, seen: set[int]) -> int:
        resources = resources.get_object() if hasattr(resources, "get_object") else resources
        if not isinstance(resources, DictionaryObject):
            return 0
        xobjects = resources.get("/XObject")
        xobjects = xobjects.get_object() if xobjects is not None else None
        total = 0
        for ref in (xobjects or {}).values():
            obj = ref.get_object()
            if not isinstance(obj, StreamObject) or id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.get("/Subtype") == "/Image":
                # The stored (compressed) bytes; pypdf drops /Length once it has read the stream.
                total += len(obj._data)
            elif obj.get("/Subtype") == "/Form":
                total += walk(obj.get("/Resources"), seen)
        return total

    return [walk(page.get("/Resources"), set()) for page in PdfReader(path).pages]


def measure(
    pipeline: str, document: Document, workdir: Path, spawner: Spawner, *, timeout: float, gs: str
) -> tuple[Measure, Path, list[str]]:
    if pipeline == "bridge":
        output = workdir / f"{document.key}.bridge.pdf"
        child = spawner.run(
            [sys.executable, "-c", BRIDGE_CHILD, str(document.mail), str(output)], workdir, timeout=timeout
        )
        _check(child, pipeline, document)
        report = json.loads(child.stdout)
        result = Measure(
            child.wall,
            child.maxrss_kib / 1024,
            int(report["pages"]),
            output.stat().st_size,
            child.floor_kib / 1024,
            statistics.fmean(pdf_image_bytes(output)),
            convert=float(report["convert"]),
            imports=float(report["imports"]),
        )
        return result, output, list(report["notes"])
    device = GS_PDFWRITE if pipeline == "gs pdfwrite" else GS_TIFFG4
    suffix = "pdf" if pipeline == "gs pdfwrite" else "tif"
    output = workdir / f"{document.key}.{pipeline.replace(' ', '-')}.{suffix}"
    child = spawner.run(
        [gs, *GS_COMMON, *device, f"-sOutputFile={output}", str(document.pdf)], workdir, timeout=timeout
    )
    _check(child, pipeline, document)
    images = pdf_image_bytes(output) if suffix == "pdf" else tiff_page_bytes(output)
    pages = len(images)
    image_bytes = statistics.fmean(images) if images else math.nan
    measured = Measure(
        child.wall, child.maxrss_kib / 1024, pages, output.stat().st_size, child.floor_kib / 1024, image_bytes
    )
    return measured, output, []


def _check(child: ChildRun, pipeline: str, document: Document) -> None:
    if child.status != 0:
        detail = child.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{pipeline} failed on {document.key} (exit status {child.status}):\n{detail}")


def line_bytes_per_page(output: Path, workdir: Path, spawner: Spawner, *, gs: str, timeout: float) -> float:
    """Mean G4 bytes per page of ``output`` rasterised at 204×196 on A4 (a TIFF is measured as it is)."""
    if output.suffix == ".tif":
        sizes = tiff_page_bytes(output)
    else:
        tiff = workdir / f"{output.stem}.line.tif"
        child = spawner.run([gs, *GS_COMMON, *GS_TIFFG4, f"-sOutputFile={tiff}", str(output)], workdir, timeout=timeout)
        if child.status != 0:
            return math.nan
        sizes = tiff_page_bytes(tiff)
    return statistics.fmean(sizes) if sizes else math.nan


# -- reporting -------------------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratios(cells: dict[str, Cell], top: str, bottom: str, key: Callable[[Measure], float | None]) -> list[float]:
    """``key(top) ÷ bottom's wall time``, taken within each round."""
    values = []
    for a, b in zip(cells[top].runs, cells[bottom].runs, strict=True):
        value = key(a)
        if value is not None and b.wall > 0:
            values.append(value / b.wall)
    return values


def report(
    documents: list[Document], results: dict[str, dict[str, Cell]], line_bytes: dict[tuple[str, str], float]
) -> tuple[str, list[tuple[str, bool, str]]]:
    """The Markdown tables (measurements, ratios, aims) and the aims as (name, met, measured)."""
    rows = []
    for document in documents:
        for pipeline in PIPELINES:
            cell = results[document.key][pipeline]
            walls = [m.wall for m in cell.runs]
            pages = cell.runs[-1].pages
            convert = [m.convert for m in cell.runs if m.convert is not None]
            rows.append(
                [
                    document.key,
                    pipeline,
                    str(pages),
                    spread(walls, "{:.2f}"),
                    spread(convert, "{:.3f}") if convert else "—",
                    f"{pages / med(walls):.1f}",
                    f"{pages / med(convert):.1f}" if convert else "—",
                    f"{max(m.rss_mib for m in cell.runs):.0f}",
                    f"{med([m.out_bytes for m in cell.runs]) / max(1, pages):,.0f}",
                    f"{med([m.image_bytes for m in cell.runs]):,.0f}",
                    f"{line_bytes.get((document.key, pipeline), math.nan):,.0f}",
                ]
            )
    main = table(
        [
            "document",
            "pipeline",
            "pages",
            "wall s",
            "convert s",
            "pages/s (wall)",
            "pages/s (convert)",
            "peak RSS MiB",
            "output bytes/page",
            "raster bytes/page",
            "G4 bytes/page, rasterised by gs",
        ],
        rows,
    )
    ratio_rows = []
    for document in documents:
        cells = results[document.key]
        ratio_rows.append(
            [
                document.key,
                spread(ratios(cells, "bridge", "gs pdfwrite", lambda m: m.convert), "{:.2f}"),
                spread(ratios(cells, "bridge", "gs pdfwrite", lambda m: m.wall), "{:.2f}"),
                spread(ratios(cells, "bridge", "gs tiffg4", lambda m: m.convert), "{:.2f}"),
                spread(ratios(cells, "bridge", "gs tiffg4", lambda m: m.wall), "{:.2f}"),
            ]
        )
    ratio_table = table(
        [
            "document",
            "bridge convert ÷ gs pdfwrite",
            "bridge wall ÷ gs pdfwrite",
            "bridge convert ÷ gs tiffg4",
            "bridge wall ÷ gs tiffg4",
        ],
        ratio_rows,
    )

    aims: list[tuple[str, bool, str]] = []
    for document in documents:
        cells = results[document.key]
        bridge = cells["bridge"]
        if not document.wrapped:
            convert = med(ratios(cells, "bridge", "gs pdfwrite", lambda m: m.convert))
            wall = med(ratios(cells, "bridge", "gs pdfwrite", lambda m: m.wall))
            aims.append(
                (
                    f"{document.key}: bridge ≤ {AIM_PDF_RATIO}× gs pdfwrite",
                    convert <= AIM_PDF_RATIO,
                    f"convert {convert:.2f}× (wall, fresh interpreter: {wall:.2f}×)",
                )
            )
        rss = max(m.rss_mib for m in bridge.runs)
        aims.append((f"{document.key}: bridge peak RSS ≤ {AIM_RSS_MIB} MiB", rss <= AIM_RSS_MIB, f"{rss:.0f} MiB"))
        if document.wrapped:
            ours = med([m.image_bytes for m in bridge.runs])
            theirs = med([m.image_bytes for m in cells["gs tiffg4"].runs])
            aims.append(
                (
                    f"{document.key}: bridge raster bytes/page ≤ gs G4 TIFF",
                    ours <= theirs,
                    f"{ours:,.0f} against {theirs:,.0f} ({ours / theirs:.2f}×)",
                )
            )
    aim_table = table(["aim", "met", "measured"], [[name, "yes" if ok else "**no**", text] for name, ok, text in aims])
    return "\n\n".join([main, ratio_table, aim_table]), aims


# -- main ------------------------------------------------------------------------------------------------


def main() -> None:
    """Measure the bridge and Ghostscript on each document, alternating, and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--documents", default=",".join(DOCUMENTS), help=f"comma-separated: {','.join(DOCUMENTS)}")
    parser.add_argument("--gs", default=shutil.which("gs") or "/usr/bin/gs", help="the Ghostscript binary")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per child before it is killed")
    parser.add_argument("--tmp", type=Path, default=None, help="directory for the inputs and outputs")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    keys = [key.strip() for key in args.documents.split(",") if key.strip()]

    pinned = pin_client()
    gs_version = subprocess.run([args.gs, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    spawner = Spawner()
    try:
        with tempfile.TemporaryDirectory(prefix="faxbridge-convert-bench-", dir=args.tmp) as tmp:
            workdir = Path(tmp)
            documents = make_documents(workdir, keys)
            if not documents:
                raise SystemExit("no documents to measure")
            results = run_rounds(documents, workdir, spawner, args)
            line_bytes = {
                (d.key, p): line_bytes_per_page(output, workdir, spawner, gs=args.gs, timeout=args.timeout)
                for d in documents
                for p in PIPELINES
                if (output := results[d.key][p].output) is not None
            }
            text, aims = report(documents, results, line_bytes)
    finally:
        spawner.close()

    bridge_runs = [m for d in documents for m in results[d.key]["bridge"].runs]
    floor = max(m.floor_mib for d in documents for cell in results[d.key].values() for m in cell.runs)
    print("# Conversion: faxbridge against Ghostscript\n")
    for line in machine_description():
        print(f"- {line}")
    print(
        f"- Ghostscript {gs_version}, pypdfium2 {_version('pypdfium2')}; client {'pinned' if pinned else 'not pinned'}"
    )
    print(f"- {args.rounds} timed rounds after {args.warmup} warm-up, pipelines alternating; medians (min–max)")
    imports = [m.imports for m in bridge_runs if m.imports is not None]
    print(f"- bridge child: interpreter start-up + imports {spread(imports, '{:.2f}')} s, included in *wall* only")
    print(f"- peak RSS from wait4; a child cannot read below the spawner's own peak, {floor:.0f} MiB")
    print("- images (photo, fax, scan) were wrapped as PDF for Ghostscript outside the timed region")
    print("- raster bytes/page: compressed image data per page (PDF image streams; TIFF strips), no container")
    print()
    for document in documents:
        notes = "; ".join(results[document.key]["bridge"].notes)
        print(f"- `{document.key}`: {document.title}; bridge notes: {notes}")
    print()
    print(text)
    missed = [name for name, ok, _ in aims if not ok]
    print(f"\naims missed: {', '.join(missed)}" if missed else "\nall aims met")


def run_rounds(
    documents: list[Document], workdir: Path, spawner: Spawner, args: argparse.Namespace
) -> dict[str, dict[str, Cell]]:
    """Warm-up and timed rounds; within a round every document runs through every pipeline, order rotating."""
    results: dict[str, dict[str, Cell]] = {d.key: {p: Cell() for p in PIPELINES} for d in documents}
    for round_number in range(args.warmup + args.rounds):
        timed = round_number >= args.warmup
        label = f"round {round_number - args.warmup + 1}/{args.rounds}" if timed else "warm-up"
        shift = round_number % len(PIPELINES)
        order = PIPELINES[shift:] + PIPELINES[:shift]
        for document in documents:
            for pipeline in order:
                result, output, notes = measure(pipeline, document, workdir, spawner, timeout=args.timeout, gs=args.gs)
                convert = f" (convert {result.convert:.3f} s)" if result.convert is not None else ""
                print(
                    f"{label}: {document.key:6} {pipeline:12} {result.wall:7.2f} s{convert:22}"
                    f" {result.pages:4} pages {result.rss_mib:6.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
                if timed:
                    cell = results[document.key][pipeline]
                    cell.runs.append(result)
                    cell.output, cell.notes = output, notes
    return results


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
