"""Publish files all-or-nothing: write under a temporary name, flush to disk, rename into place."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from northwind_elt.errors import file_errors

#: Published files: readable by every uid that shares the data tree, written only by renames.
PUBLISHED_FILE_MODE = 0o644


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries, so a rename survives a crash of the machine."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary: Path, final: Path) -> None:
    """Flush ``temporary`` and rename it to ``final``, replacing any older file."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    # mkstemp makes 0600: other uids sharing the tree (layout.SHARED_TREE_UMASK) must read it.
    os.chmod(temporary, PUBLISHED_FILE_MODE)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, final)
    fsync_folder(final.parent)


@contextlib.contextmanager
def temporary_beside(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary path in ``final``'s folder; remove it if the block fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    path = Path(name)
    try:
        yield path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically; a refusal of the disk names ``final``."""
    with file_errors("write", final), temporary_beside(final) as temporary:
        temporary.write_bytes(data)
        publish(temporary, final)


def write_json(final: Path, document: Any) -> None:
    """Write ``document`` as stable, sorted, indented JSON to ``final`` atomically."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    write_bytes(final, (text + "\n").encode())
