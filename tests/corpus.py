"""Find the shared test corpus (real files nobody on this project wrote; see its MANIFEST.md).

Tests reference corpus files in place and never copy them into the repository. Where the corpus is absent a
test skips with the reason; with ``FAXBRIDGE_REQUIRE_CORPUS=1`` (CI) it fails instead, so that a broken
checkout cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    """Return the corpus directory: ``$FAXBRIDGE_CORPUS``, else ``<repo>/../shared/corpus``.

    Skips the calling test when the directory does not exist, or fails it when
    ``FAXBRIDGE_REQUIRE_CORPUS=1``.
    """
    configured = os.environ.get("FAXBRIDGE_CORPUS")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"
    if path.is_dir():
        return path
    source = "FAXBRIDGE_CORPUS" if configured else "the default location"
    reason = f"test corpus not found at {path} ({source}); set FAXBRIDGE_CORPUS to its directory"
    if os.environ.get("FAXBRIDGE_REQUIRE_CORPUS") == "1":
        pytest.fail(f"{reason} (FAXBRIDGE_REQUIRE_CORPUS=1)")
    pytest.skip(reason)


def corpus_file(relative: str) -> Path:
    """Return one file of the corpus, skipping (or failing, as ``corpus_dir``) when it is missing."""
    path = corpus_dir() / relative
    if path.is_file():
        return path
    reason = f"corpus file {relative} not found under {path.parent}"
    if os.environ.get("FAXBRIDGE_REQUIRE_CORPUS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
