"""The interface of the data tree's storage, and what both backends do the same way.

:mod:`northwind_elt.tree_local` and :mod:`northwind_elt.tree_s3` implement it;
:func:`northwind_elt.treefs.open_root` picks one from the data-root setting. What differs is how
one file is replaced whole: a rename locally, a PUT on S3 (an object appears whole or not at all).
"""

import abc
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from northwind_elt import atomic
from northwind_elt.errors import file_errors

if TYPE_CHECKING:
    from northwind_elt.outbox import Publisher, Staged

#: Objects are read and written in chunks of this size (one multipart part on S3).
CHUNK = 8 << 20


class TreeFS(abc.ABC):
    """One backend of the data tree; paths are ``PurePosixPath`` inside :attr:`fs`."""

    #: True for a local folder (renames are atomic, files are read in place).
    is_local: bool
    #: Prepended to a path to show it to a person: ``""`` locally, ``s3://`` on a bucket.
    url_prefix: str

    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs

    def url(self, path: PurePosixPath) -> str:
        """``path`` as a person would type it (a local path or an ``s3://`` URL)."""
        return f"{self.url_prefix}{path}"

    @abc.abstractmethod
    def read_bytes(self, path: PurePosixPath) -> bytes:
        """The whole object; FileNotFoundError when it is absent."""

    @abc.abstractmethod
    def write_bytes(self, path: PurePosixPath, data: bytes) -> None:
        """Replace the object at ``path`` by ``data``, whole."""

    def write_json(self, path: PurePosixPath, document: Any) -> None:
        """Write ``document`` as stable, sorted, indented JSON, whole."""
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        self.write_bytes(path, (text + "\n").encode())

    @abc.abstractmethod
    def put_file(self, local: Path, path: PurePosixPath) -> None:
        """Publish the local file ``local`` at ``path``; the local file is gone afterwards."""

    @abc.abstractmethod
    def delete_tree(self, folder: PurePosixPath) -> None:
        """Remove ``folder`` and everything under it, if it exists."""

    @abc.abstractmethod
    def remove_empty_folders(self, folder: PurePosixPath, root: PurePosixPath) -> None:
        """Remove ``folder`` and its parents up to ``root`` while empty, where folders exist."""

    @abc.abstractmethod
    def work_folder(self, folder: PurePosixPath, staging: Path | None) -> Path:
        """The local folder where files bound for ``folder`` are written before they are published.

        Raises:
            ValueError: If the backend needs a local ``staging`` folder and got none.
        """

    @abc.abstractmethod
    def publisher(self, staged: "Staged", path: PurePosixPath) -> "Publisher":
        """What publishes ``staged`` at ``path`` once whole (started now: it may follow the writes)."""

    def size(self, path: PurePosixPath) -> int | None:
        """The object's size in bytes, or None when it is absent."""
        with file_errors("read", self.url(path)):
            info = self.fs.get_file_info(str(path))
        return info.size if info.type == pafs.FileType.File else None

    def delete(self, path: PurePosixPath) -> None:
        """Remove the object if it exists."""
        try:
            self.fs.delete_file(str(path))
        except FileNotFoundError:
            pass

    def children(self, folder: PurePosixPath) -> list[str]:
        """Names directly under ``folder`` (files and folders), sorted; empty when absent."""
        selector = pafs.FileSelector(str(folder), allow_not_found=True, recursive=False)
        return sorted(PurePosixPath(info.path).name for info in self.fs.get_file_info(selector))

    def fetch(self, path: PurePosixPath, local: Path) -> str:
        """Copy the object to the local file ``local`` and return the SHA-256 of what was copied."""
        digest = hashlib.sha256()
        atomic.make_folders(local.parent)
        with self.fs.open_input_stream(str(path)) as stream, open(local, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()
