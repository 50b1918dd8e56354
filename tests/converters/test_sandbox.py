"""The conversion sandbox: each mail converted in a child process under CPU, memory and time limits.

These are fault tests through the production seam: real mails that really take long, really need memory, and
children really killed with signals. What must hold: the test process (standing in for the daemon) is never
harmed, every fault ends as a refusal that names the attachment or as a clean retry, and no child outlives its
conversion.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from bridge.converters import ConversionOptions
from bridge.converters.office import find_soffice
from bridge.converters.sandbox import Limits, Sandbox
from bridge.errors import ConversionError, UnsupportedContent
from tests.converters.test_office import _wait_until_no_live_members as wait_until_no_live_members
from tests.converters.test_office import make_docx

pytestmark = pytest.mark.timeout(120)


def mail(body: str = "Hello", attachments: list[tuple[bytes, str, str, str]] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "jane@example.com"
    msg["To"] = "+4930123456@fax.example.com"
    msg["Subject"] = "sandbox"
    msg.set_content(body)
    for data, maintype, subtype, name in attachments or []:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def long_text_mail(pages: int) -> bytes:
    """A mail whose text attachment takes a good while to typeset: real work, not a sleep.

    Measured in-process: 400 "pages" (636 typeset) take about 0.7 s of CPU, 1500 (2381 typeset) about 2.4 s.
    """
    words = ["fax", "bridge", "document", "limit", "sandbox", "process", "memory", "time"]
    rng = random.Random(7)
    line_count = pages * 48
    text = "\n".join(" ".join(rng.choice(words) for _ in range(14)) for _ in range(line_count))
    return mail("see the attachment", [(text.encode(), "text", "plain", "long.txt")])


def flat_png(width: int, height: int) -> bytes:
    """A picture that is small on the wire and large in memory, as decompression bombs are."""
    image = Image.new("RGBA", (width, height), (200, 180, 160, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Events:
    """Records the sandbox's child events and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: str, pid: int, detail: str) -> None:
        self.seen.append((event, pid, detail))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, event: str, detail_prefix: str = "", count: int = 1) -> tuple[str, int, str]:
        def matches() -> list[tuple[str, int, str]]:
            return [e for e in self.seen if e[0] == event and e[2].startswith(detail_prefix)]

        async with self._changed:
            await self._changed.wait_for(lambda: len(matches()) >= count)
        return matches()[count - 1]

    def pids(self, event: str = "started") -> list[int]:
        return [pid for name, pid, _ in self.seen if name == event]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); the fork server reaps its children, so look at the state as well.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def events() -> Events:
    return Events()


_boxes: list[Sandbox] = []


@pytest.fixture(autouse=True)
def _stop_conversion_servers() -> Iterator[None]:
    yield
    while _boxes:
        _boxes.pop().close()


def sandbox(events: Events, **limits: float) -> Sandbox:
    box = Sandbox(Limits(**limits), concurrency=2)  # type: ignore[arg-type]
    box.add_listener(events)
    _boxes.append(box)
    return box


async def test_a_mail_is_converted_in_a_child_process(events: Events) -> None:
    box = sandbox(events)
    result = await box.convert(mail("Dear Sir or Madam,\n\nthe contract.\n"), ConversionOptions())
    assert result.pages == 1
    assert "contract" in PdfReader(io.BytesIO(result.document)).pages[0].extract_text()
    assert result.preview is not None
    assert result.preview.startswith(b"\x89PNG")
    await events.wait_for("ended")
    (pid,) = events.pids()
    assert pid != os.getpid()
    assert not alive(pid)


async def test_each_mail_gets_a_fresh_child(events: Events) -> None:
    box = sandbox(events)
    await asyncio.gather(*(box.convert(mail(f"mail {n}"), ConversionOptions()) for n in range(4)))
    await events.wait_for("ended", count=4)
    assert len(set(events.pids())) == 4


async def test_a_refusal_crosses_the_process_boundary_with_its_notes(events: Events) -> None:
    box = sandbox(events)
    raw = mail("", [(b"PK\x03\x04" + b"\x00" * 40, "application", "zip", "bundle.zip")])
    with pytest.raises(ConversionError) as refused:
        await box.convert(raw, ConversionOptions())
    assert "bundle.zip" in str(refused.value)
    assert any(note.startswith("bundle.zip: zip archives cannot be faxed") for note in refused.value.notes)


async def test_nothing_to_fax_stays_unsupported_content(events: Events) -> None:
    box = sandbox(events)
    with pytest.raises(UnsupportedContent):
        await box.convert(mail("   "), ConversionOptions())


async def test_a_conversion_over_the_wall_clock_limit_is_killed_and_refused(events: Events) -> None:
    box = sandbox(events, timeout_seconds=0.5, cpu_seconds=60)
    with pytest.raises(ConversionError) as refused:
        await box.convert(long_text_mail(1500), ConversionOptions(max_pages=10000))
    assert str(refused.value) == "long.txt: converting it took longer than the limit of 0.5 seconds"
    assert refused.value.notes == (str(refused.value),)
    await events.wait_for("ended")
    assert not alive(events.pids()[0])


async def test_a_conversion_over_the_cpu_limit_is_stopped_by_the_kernel(events: Events) -> None:
    box = sandbox(events, timeout_seconds=100, cpu_seconds=1)
    with pytest.raises(ConversionError) as refused:
        await box.convert(long_text_mail(1500), ConversionOptions(max_pages=10000))
    assert str(refused.value) == "long.txt: converting it needed more than 1 seconds of processor time"
    ended = await events.wait_for("ended")
    assert ended[2] == str(-signal.SIGXCPU)


async def test_a_document_over_the_memory_limit_is_refused_naming_it(events: Events) -> None:
    # 49 megapixels in a few hundred kilobytes: under the pixel cap, but decoding it needs 196 MB that the
    # child's address space does not have.
    box = sandbox(events, memory_bytes=256 * 1024 * 1024)
    raw = mail("photo attached", [(flat_png(7000, 7000), "image", "png", "huge.png")])
    with pytest.raises(ConversionError) as refused:
        await box.convert(raw, ConversionOptions())
    assert str(refused.value) == "huge.png: the image needs too much memory to process"


async def test_a_child_killed_from_outside_once_is_converted_again(events: Events) -> None:
    box = sandbox(events)
    task = asyncio.create_task(box.convert(long_text_mail(400), ConversionOptions(max_pages=1000)))
    _, pid, _ = await events.wait_for("step", "count-pages:long.txt")
    os.kill(pid, signal.SIGKILL)
    result = await task
    assert result.pages >= 400
    first, second = events.pids()
    assert first == pid
    assert second != pid


async def test_a_child_killed_twice_refuses_the_mail_naming_the_attachment(events: Events) -> None:
    box = sandbox(events)
    task = asyncio.create_task(box.convert(long_text_mail(400), ConversionOptions(max_pages=1000)))
    for attempt in (1, 2):
        _, pid, _ = await events.wait_for("step", "count-pages:long.txt", count=attempt)
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ConversionError) as refused:
        await task
    assert str(refused.value).startswith("long.txt: the converter was killed twice")


async def test_cancelling_a_conversion_kills_its_child(events: Events) -> None:
    box = sandbox(events)
    task = asyncio.create_task(box.convert(long_text_mail(1500), ConversionOptions(max_pages=10000)))
    _, pid, _ = await events.wait_for("step", "count-pages:long.txt")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await events.wait_for("ended")
    assert not alive(pid)


async def test_the_parent_survives_and_converts_again_after_every_fault(events: Events) -> None:
    box = sandbox(events, timeout_seconds=0.5)
    with pytest.raises(ConversionError):
        await box.convert(long_text_mail(1500), ConversionOptions(max_pages=10000))
    result = await box.convert(mail("still here"), ConversionOptions())
    assert result.pages == 1


@pytest.mark.skipif(find_soffice() is None and os.environ.get("CI") != "true", reason="LibreOffice is not installed")
async def test_a_conversion_waiting_on_libreoffice_is_ended_with_libreoffice(events: Events) -> None:
    # The child blocks on LibreOffice, using no processor time of its own: only the wall clock ends this.
    # LibreOffice runs in a session of its own, so the sandbox must kill its process group too.
    box = sandbox(events, timeout_seconds=0.4)
    raw = mail("minutes attached", [(make_docx(["Minutes of the meeting"]), "application", "msword", "minutes.docx")])
    with pytest.raises(ConversionError) as refused:
        await box.convert(raw, ConversionOptions())
    assert str(refused.value) == "minutes.docx: converting it took longer than the limit of 0.4 seconds"
    _, _, group = await events.wait_for("helper")
    await events.wait_for("ended")
    # Checked at once (LibreOffice alone would run on for most of a second more): it was killed, not finished.
    assert wait_until_no_live_members(int(group), seconds=0.3) == []
