"""html_to_text: HTML mail bodies as readable plain text, whatever the markup (or the lack of it)."""

from __future__ import annotations

import re

import pytest

from bridge.converters import html as html_module
from bridge.converters.html import html_to_text, strip_tags, tidy


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_paragraphs_and_line_breaks() -> None:
    text = html_to_text("<p>Dear Jane,</p><p>the plan:<br>first line<br/>second line</p><div>Bye</div>")
    assert text == "Dear Jane,\n\nthe plan:\nfirst line\nsecond line\n\nBye"


def test_lists_have_bullets_and_numbers() -> None:
    text = html_to_text(
        "<ul><li>apples</li><li>pears<ul><li>conference</li></ul></li></ul><ol><li>first</li><li>second</li></ol>"
    )
    assert lines(text) == ["  • apples", "  • pears", "      - conference", " 1. first", " 2. second"]


def test_table_rows_stay_on_their_lines_with_aligned_columns() -> None:
    text = html_to_text(
        "<table><tr><th>Item</th><th>Qty</th><th>Price</th></tr>"
        "<tr><td>Apples</td><td>3</td><td>1.20</td></tr>"
        "<tr><td>Conference pears</td><td>12</td><td>4.80</td></tr></table>"
    )
    rows = lines(text)
    assert [row.split() for row in rows] == [
        ["Item", "Qty", "Price"],
        ["Apples", "3", "1.20"],
        ["Conference", "pears", "12", "4.80"],
    ]
    # Columns line up: each column starts at the same position in every row.
    assert len({row.index(cell) for row, cell in zip(rows, ("Qty", "3", "12"), strict=True)}) == 1
    assert len({row.index(cell) for row, cell in zip(rows, ("Price", "1.20", "4.80"), strict=True)}) == 1


def test_scripts_styles_head_and_comments_are_dropped() -> None:
    text = html_to_text(
        "<html><head><title>Newsletter title</title><meta charset='utf-8'>"
        "<style>p { color: red }</style><script>alert('x')</script></head>"
        "<body><!-- a comment --><p>Visible</p><script type='text/javascript'>var y = 1;</script>"
        "<noscript></noscript><style>.x{}</style></body></html>"
    )
    assert text == "Visible"


def test_entities_are_decoded_and_non_breaking_spaces_become_spaces() -> None:
    text = html_to_text("<p>Fish &amp; chips &lt;b&gt; caf&eacute; &#x263A; &#8364;5&nbsp;net</p>")
    assert text == "Fish & chips <b> café ☺ €5 net"


def test_image_alt_text_is_kept_when_it_says_something() -> None:
    text = html_to_text(
        '<p>Logo: <img src="cid:image001.png@01D" alt="ACME Corporation"> '
        '<img src="a.png" alt="image001.png"><img src="b.png" alt=""><img src="c.png">'
        '<img src="cid:x" alt="cid:image002.jpg@01D"> end</p>'
    )
    assert text == "Logo: [ACME Corporation] end"


def test_quoted_replies_are_indented() -> None:
    text = html_to_text("<p>My answer</p><blockquote><p>Your question</p><blockquote>Older</blockquote></blockquote>")
    assert lines(text) == ["My answer", "", "    Your question", "", "        Older"]


def test_preformatted_text_keeps_its_spaces() -> None:
    assert html_to_text("<pre>a  b\n  c</pre><p>x   y</p>") == "a  b\n  c\n\nx y"


def test_whitespace_is_tidy() -> None:
    text = html_to_text("<div>a</div><br><br><br><br><br><p>b   </p><p></p><p></p>\n\n<div>  c  </div>")
    assert text == "a\n\nb\n\nc"
    assert "\n\n\n" not in text
    assert not [line for line in lines(text) if line != line.rstrip()]


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("<p>unclosed <b>bold <i>italic", "unclosed bold italic"),
        ("</div></p>stray closing tags<p>", "stray closing tags"),
        ("<table><tr><td>cell<td>next</table>", "cell  next"),
        ("a < b and c > d <3", "a < b and c > d <3"),
        ("<p attr='unterminated>text</p>", "text"),
        ("<<<>>>text</<", "<<<>>>text"),
        ("\x00<p>nul\x00 bytes</p>", "nul bytes"),
        ("<?xml version='1.0'?><html><body>xhtml</body></html>", "xhtml"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_broken_html_never_raises_and_keeps_the_text(broken: str, expected: str) -> None:
    assert html_to_text(broken) == expected


def test_nesting_deeper_than_lxml_allows_falls_back_to_stripping() -> None:
    # lxml silently returns an empty tree past its depth limit; the text must not vanish.
    assert html_to_text("<div>" * 100_000 + "deep text" + "</div>" * 100_000) == "deep text"


def test_a_failing_inscriptis_falls_back_to_stripping(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(html_module, "get_text", explode)
    text = html_to_text("<p>Hello&nbsp;there,</p><ul><li>first</li></ul><script>x()</script>")
    assert text.split() == ["Hello", "there,", "•", "first"]


def test_five_megabytes_of_html_complete_quickly() -> None:
    paragraph = "<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit &amp; more.</p>\n"
    count = 5_000_000 // len(paragraph) + 1
    document = "<html><body>" + paragraph * count + "<p>THE END</p></body></html>"
    assert len(document) >= 5_000_000
    text = html_to_text(document)
    assert text.endswith("THE END")
    assert text.count("consectetur") == count


def test_a_five_megabyte_table_completes_quickly() -> None:
    row = "<tr><td>cell a</td><td>cell <b>b</b> &amp; more</td></tr>"
    document = "<table>" + row * (5_000_000 // len(row)) + "</table><p>THE END</p>"
    text = html_to_text(document)
    assert text.endswith("THE END")
    assert "<td>" not in text


@pytest.mark.parametrize(
    "hostile",
    ["<!--" * 1_000_000 + "x", "<script" * 500_000, "<" * 5_000_000, "<p" * 1_000_000, "<a " * 1_000_000],
    ids=["comments", "scripts", "angles", "open-tags", "attributes"],
)
def test_the_tag_stripper_finishes_on_hostile_input(hostile: str) -> None:
    # A quadratic stripper would run for hours on these; the test's timeout is the guard, not a clock.
    assert len(strip_tags(hostile)) <= len(hostile)
    assert len(html_to_text(hostile)) <= len(hostile)


def test_strip_tags_keeps_text_and_block_breaks() -> None:
    text = tidy(
        strip_tags(
            "<head><title>T</title><style>x{}</style></head><body><p>One<br>two</p><!-- c --><ul><li>a</li></ul>"
            "<script>y()</script><table><tr><td>c1</td><td>c2</td></tr></table>&eacute;</body>"
        )
    )
    assert re.sub(r"\s+", " ", text) == "One two • a c1 c2 é"
    assert lines(text)[:2] == ["One", "two"]
