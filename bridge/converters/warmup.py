"""Imported by the conversion fork server only: one small conversion, so that every child starts warm.

A child forked for a mail inherits its parent's memory. Done once here, the work every first conversion in a
fresh process would repeat is already done: fpdf2 has parsed its fonts and measured their widths, pypdf has
built its tables, and PDFium has initialised itself and read the system's fonts (about 20 ms of a child's
life otherwise, more than converting a one-page letter). Importing this module anywhere else is harmless, but
pointless: the daemon never converts in its own process.
"""

from __future__ import annotations

import logging

from bridge.converters.pipeline import ConversionOptions, convert_message

_MAIL = (
    b"From: warm-up@faxbridge.invalid\r\nTo: warm-up@faxbridge.invalid\r\nSubject: warm-up\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Warm-up page: Latin \xc3\xa4\xc3\xb6\xc3\xbc, Cyrillic \xd0\x96, Greek \xce\xa9.\r\n"
)


def warm_up() -> None:
    """Convert one small mail in this process, with its preview; failures are logged, never raised."""
    try:
        convert_message(_MAIL, options=ConversionOptions(preview=True))
    except Exception:  # a cold child is slower, not wrong
        logging.getLogger(__name__).warning("the converters' warm-up failed", exc_info=True)


warm_up()
