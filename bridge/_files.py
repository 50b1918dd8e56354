"""Small file-system helpers for writes that must survive a crash."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory, so that a file just created or renamed in it is on disk under its name."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, exclusive: bool = False, sync_dir: bool = False) -> None:
    """Write ``data`` to ``path`` all or nothing: a temporary file, flushed to disk, then renamed.

    ``exclusive``: fail with ``FileExistsError`` when ``path`` exists (``link`` instead of ``rename``), so that a
    second writer is refused, never silently merged. ``sync_dir``: flush the directory too, so that the new
    name itself survives a crash.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if exclusive:
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink()
    else:
        tmp.replace(path)
    if sync_dir:
        fsync_dir(path.parent)
