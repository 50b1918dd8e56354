"""Turn an accepted email into one fax-ready PDF, or refuse it with a reason the sender understands.

``pipeline`` holds the steps (read the mail, count pages, cover page, check limits, convert, assemble,
preview); ``sandbox`` runs them in a child process with CPU, memory and time limits, which is how the
daemon always calls them. The modules named after formats (``pdf``, ``image``, ``text``, ``office``,
``tnef``, ``mime``) each read one kind of input.

Errors, all from ``bridge.errors``, each carrying ``notes`` (one line per part of the mail):

* ``UnsupportedContent`` when nothing in the mail can be faxed;
* ``ConversionError`` when a part the sender meant to fax cannot be (damaged, password-protected, an archive,
  an unknown format, over a resource limit), naming the part; one such part refuses the whole fax, because a
  fax with a document silently missing is worse than no fax;
* ``TooLarge`` when the fax would have more than ``max_pages`` pages.
"""

from __future__ import annotations

from bridge.converters.pipeline import ConversionOptions, ConversionResult, CoverInfo, CoverStyle, convert_message

__all__ = ["ConversionOptions", "ConversionResult", "CoverInfo", "CoverStyle", "convert_message"]
