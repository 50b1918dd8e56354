"""Turn an HTML mail body into plain text for typesetting.

inscriptis does the work: it lays out paragraphs, line breaks, lists (with bullets and numbers) and tables
(columns aligned with spaces) the way a browser's "save as text" would, and drops ``<head>``, ``<script>``
and ``<style>``. We use its strict CSS profile (no indentation invented for ``<div>``), with three
changes for paper:

* bullets are "•" (then "-" and "·" for nested lists) instead of "*", all in Windows-1252, so a typical
  mail still takes the fast Helvetica path of ``render_text``;
* quoted replies (``<blockquote>``) are indented, so a reader sees where the quote starts and ends;
* images are not faxed from HTML, but their ``alt`` text is kept in brackets ("[Company logo]") when it
  says something; empty alt text and alt text that is only a file name or a ``cid:`` reference are dropped.

Very large documents (more than ``MAX_INSCRIPTIS_TAGS`` tags; inscriptis needs about 7 s for a 5 MB table)
and anything inscriptis or lxml fails on (broken markup it cannot recover, nesting deeper than lxml's
limit) go through a simple linear-time tag stripper instead, which keeps the text and line breaks.
"""

from __future__ import annotations

import html as html_entities
import logging
import re
from collections.abc import Callable
from typing import Any, Final

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_properties import Display
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_element import HtmlElement
from inscriptis.model.tag import CustomHtmlTagHandlerMapping

log = logging.getLogger(__name__)

# inscriptis walks the tree in Python: about 3 µs per tag for paragraphs, 14 µs per table cell. Past this
# many tags the tag stripper (C-speed regular expressions) is used; the text of such a document exceeds any
# sensible fax length anyway, so table alignment no longer matters.
MAX_INSCRIPTIS_TAGS: Final = 100_000

_BULLETS: Final = ("• ", "- ", "· ")
_BLOCKQUOTE_INDENT: Final = 4
_IMAGE_FILE_NAME: Final = re.compile(r"(?i)^(cid:|.*\.(png|jpe?g|gif|bmp|webp|svg|tiff?)$)")


def html_to_text(html: str) -> str:
    """Plain text of an HTML document: readable paragraphs, lists and tables; never raises.

    At most one blank line in a row, no trailing spaces, no blank lines at either end, and
    non-breaking spaces as ordinary spaces.
    """
    # lxml turns NUL bytes into U+FFFD; they are garbage from a broken mail program, not text.
    html = html.replace("\x00", "")
    text = ""
    if html.count("<") <= MAX_INSCRIPTIS_TAGS:
        try:
            text = get_text(html, _config())
        except Exception:  # lxml and inscriptis on hostile input: any failure means "use the stripper"
            log.info("inscriptis could not convert the HTML body; stripping tags instead", exc_info=True)
            text = ""
    if not text.strip():
        # Also the answer when lxml silently gives up (nesting deeper than its limit yields an empty tree).
        text = strip_tags(html)
    return tidy(text)


def tidy(text: str) -> str:
    """Unix newlines, no trailing spaces, no runs of blank lines, no blank lines at either end."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


# --- inscriptis configuration -------------------------------------------------------------------------

_Handler = Callable[[Any, dict[str, str]], None]


def _ul_start(state: Any, _attrs: dict[str, str]) -> None:
    state.li_counter.append(_BULLETS[len(state.li_counter) % len(_BULLETS)])


def _img_start(state: Any, attrs: dict[str, str]) -> None:
    alt = " ".join((attrs.get("alt") or attrs.get("title") or "").split())
    if alt and not _IMAGE_FILE_NAME.match(alt):
        state.tags[-1].write(f"[{alt}]")


def _config() -> ParserConfig:
    # A fresh CSS dictionary per call: inscriptis keeps per-document state on the elements it derives from
    # the profile, and conversions run concurrently in worker threads.
    css = CSS_PROFILES["strict"].copy()
    css["blockquote"] = HtmlElement(
        display=Display.block, margin_before=1, margin_after=1, padding_inline=_BLOCKQUOTE_INDENT
    )
    start: dict[str, _Handler] = {"ul": _ul_start, "img": _img_start}
    return ParserConfig(
        css=css,
        display_images=False,  # our own <img> handler decides which alt texts are worth printing
        display_links=False,
        custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(start_tag_mapping=start, end_tag_mapping={}),
    )


# --- the fallback: a linear-time tag stripper ---------------------------------------------------------

# Elements whose content is never text for the reader (not <head>: its end tag is optional in HTML, and
# everything after an unclosed one would vanish). Their end is searched from their start, so an
# unterminated one costs one scan to the end of the document, not one per occurrence.
_HIDDEN_START: Final = re.compile(r"(?i)<(script|style|title|template)\b")
_COMMENT_START: Final = "<!--"
# Tag patterns exclude "<" inside the tag, so a stray "<" without ">" never makes the scan quadratic.
_BREAK_TAG: Final = re.compile(r"(?i)<(?:br|/?(?:p|div|tr|h[1-6]|ul|ol|table|blockquote|pre)|hr)\b[^<>]*>")
_ITEM_TAG: Final = re.compile(r"(?i)<li\b[^<>]*>")
_CELL_TAG: Final = re.compile(r"(?i)<t[dh]\b[^<>]*>")
_ANY_TAG: Final = re.compile(r"<[a-zA-Z/!?][^<>]*>")
_SPACES: Final = re.compile(r"[ \t\f\v]+")


def strip_tags(html: str) -> str:
    """Text of ``html`` without tags, comments, scripts and styles; block ends become line breaks.

    Runs in linear time on any input, which is its whole point.
    """
    visible = _drop_hidden(html)
    # Source line breaks are just spaces in HTML; only tags make lines.
    visible = visible.replace("\r", " ").replace("\n", " ")
    visible = _BREAK_TAG.sub("\n", visible)
    visible = _ITEM_TAG.sub("\n• ", visible)
    visible = _CELL_TAG.sub("  ", visible)
    visible = _ANY_TAG.sub("", visible)
    visible = html_entities.unescape(visible)
    return "\n".join(_SPACES.sub(" ", line).strip() for line in visible.split("\n"))


def _drop_hidden(html: str) -> str:
    kept: list[str] = []
    pos = 0
    # The next comment and the next hidden element are found once and reused until passed: searching again
    # on every step would rescan the rest of the document each time (quadratic on many comments).
    comment = html.find(_COMMENT_START)
    hidden = _HIDDEN_START.search(html)
    while comment >= 0 or hidden is not None:
        if hidden is None or 0 <= comment < hidden.start():
            kept.append(html[pos:comment])
            end = html.find("-->", comment + len(_COMMENT_START))
            pos = len(html) if end < 0 else end + 3
        else:
            kept.append(html[pos : hidden.start()])
            closing = re.compile(rf"(?i)</{hidden.group(1)}\s*>").search(html, hidden.end())
            pos = len(html) if closing is None else closing.end()
        if 0 <= comment < pos:
            comment = html.find(_COMMENT_START, pos)
        if hidden is not None and hidden.start() < pos:
            hidden = _HIDDEN_START.search(html, pos)
    kept.append(html[pos:])
    return "".join(kept)
