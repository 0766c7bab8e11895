"""The storage under the data tree: a local folder or an S3-compatible bucket, through pyarrow.fs.

Both backends offer the same few operations. What differs is how one object is replaced whole:

* local: write a temporary file beside it, flush, rename (:mod:`northwind_elt.atomic`);
* S3: a PUT (or a completed multipart upload) makes an object appear whole or not at all, so
  objects are written in place; nothing depends on a rename. What a set of objects means is decided
  by the order they are written in (data, then manifest, then the step's marker), not by atomicity.

S3 settings come from the usual AWS variables (``AWS_ENDPOINT_URL`` for an in-cluster store,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or any other credential source
the AWS SDK knows); the URL carries only the bucket and prefix.
"""

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from northwind_elt import atomic
from northwind_elt.errors import SettingError

S3_SCHEME = "s3://"
#: Objects are read and written in chunks of this size (one multipart part on S3).
CHUNK = 8 << 20
#: Bytes of one upload allowed in flight. pyarrow's S3 stream uploads parts in the background with
#: no limit, so a file read faster than the network takes it piles up in memory (measured on
#: SeaweedFS: a 600 MB upload peaked at 665 MB RSS); waiting for those parts (``flush``: it never
#: sends a partial part) every this many bytes held it at 173 MB, and was no slower.
UPLOAD_WINDOW = 8 * CHUNK


class TreeFS:
    """One backend of the data tree; paths are ``PurePosixPath`` inside :attr:`fs`."""

    def __init__(self, fs: pafs.FileSystem, url_prefix: str = ""):
        self.fs = fs
        #: Prepended to a path to show it to a person: ``""`` locally, ``s3://`` on a bucket.
        self.url_prefix = url_prefix

    @property
    def is_local(self) -> bool:
        """True for a local folder (renames are atomic, files are read in place)."""
        return not self.url_prefix

    def url(self, path: PurePosixPath) -> str:
        """``path`` as a person would type it (a local path or an ``s3://`` URL)."""
        return f"{self.url_prefix}{path}"

    def read_bytes(self, path: PurePosixPath) -> bytes:
        """The whole object; FileNotFoundError when it is absent."""
        if self.is_local:
            return Path(path).read_bytes()
        with self.fs.open_input_stream(str(path)) as stream:
            return stream.read()

    def write_bytes(self, path: PurePosixPath, data: bytes) -> None:
        """Replace the object at ``path`` by ``data``, whole."""
        if self.is_local:
            atomic.write_bytes(Path(path), data)
            return
        with self.fs.open_output_stream(str(path)) as out:
            out.write(data)

    def write_json(self, path: PurePosixPath, document: Any) -> None:
        """Write ``document`` as stable, sorted, indented JSON, whole."""
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        self.write_bytes(path, (text + "\n").encode())

    def put_file(self, local: Path, path: PurePosixPath) -> None:
        """Publish the local file ``local`` at ``path``; the local file is gone afterwards.

        Locally this is a rename (``local`` is staged on the same file system); on S3 an upload
        in parts that becomes visible only once complete.
        """
        if self.is_local:
            atomic.publish(local, Path(path))
            return
        with open(local, "rb") as source, self.fs.open_output_stream(str(path)) as out:
            sent = 0
            while chunk := source.read(CHUNK):
                out.write(chunk)
                sent += len(chunk)
                if sent % UPLOAD_WINDOW < len(chunk):
                    out.flush()  # wait for the parts in flight: memory stays bounded
        local.unlink()

    def size(self, path: PurePosixPath) -> int | None:
        """The object's size in bytes, or None when it is absent."""
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

    def remove_empty_folders(self, folder: PurePosixPath, root: PurePosixPath) -> None:
        """Remove ``folder`` and its parents up to ``root`` while empty (a bucket has no folders)."""
        if not self.is_local:
            return
        local = Path(folder)
        while local != Path(root) and local.is_dir() and not any(local.iterdir()):
            local.rmdir()
            local = local.parent

    def fetch(self, path: PurePosixPath, local: Path) -> str:
        """Copy the object to the local file ``local`` and return the SHA-256 of what was copied."""
        digest = hashlib.sha256()
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(str(path)) as stream, open(local, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()


#: The local backend (the default of a data tree built from a path).
LOCAL = TreeFS(pafs.LocalFileSystem())


def open_root(raw: str) -> tuple[TreeFS, PurePosixPath]:
    """The backend and root path of a data-root setting: a local path or ``s3://bucket/prefix``.

    Raises:
        SettingError: If an S3 URL lacks a bucket or the store cannot be configured.

    Example:
        >>> fs, root = open_root("/srv/data/../data")
        >>> fs.is_local, str(root)
        (True, '/srv/data')
    """
    if not raw.startswith(S3_SCHEME):
        return LOCAL, Path(raw).resolve()
    bucket_and_prefix = raw[len(S3_SCHEME):].strip("/")
    if not bucket_and_prefix or "?" in raw or any(p in ("", ".", "..")
                                                  for p in bucket_and_prefix.split("/")):
        raise SettingError(f"data root {raw!r}: expected s3://bucket/prefix (settings such as the "
                           "endpoint come from AWS_* variables, not the URL)")
    try:
        fs = pafs.S3FileSystem(**s3_options())
    except (OSError, ValueError) as error:
        raise SettingError(f"data root {raw}: cannot configure S3: {error}") from None
    return TreeFS(fs, S3_SCHEME), PurePosixPath(bucket_and_prefix)


def s3_options() -> dict[str, Any]:
    """S3FileSystem options from the AWS variables pyarrow's constructor does not read itself."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_override"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options
