"""Publish files all-or-nothing: write under a temporary name, flush to disk, rename into place."""

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from northwind_elt.errors import file_errors

#: Folders of the local tree: the owner and the tree's group (the step pods' fsGroup and the host
#: user, docs/kubernetes.md) read and write them, nobody else. Set explicitly, whatever the umask:
#: a umask of 022 would leave the group unable to write, and no library changes the process umask.
FOLDER_MODE = 0o770
#: Published files: read and replaced by the owner and the tree's group, nobody else.
PUBLISHED_FILE_MODE = 0o660


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each :data:`FOLDER_MODE`, whatever the umask.

    A folder keeps the setgid bit it inherits from a shared tree's top folder (``make up`` makes
    it ``2770``), so every entry below takes the tree's group. A folder another process of this
    uid creates meanwhile gets the mode too; another uid's is left as it made it.
    """
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            pass
        info = path.stat()
        if info.st_uid == os.geteuid():
            os.chmod(path, FOLDER_MODE | (info.st_mode & stat.S_ISGID))


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
    # mkstemp makes 0600: the other uids of the tree's group must read and replace it.
    os.chmod(temporary, PUBLISHED_FILE_MODE)
    make_folders(final.parent)
    os.replace(temporary, final)
    fsync_folder(final.parent)


@contextlib.contextmanager
def temporary_beside(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary path in ``final``'s folder; remove it if the block fails."""
    make_folders(final.parent)
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
