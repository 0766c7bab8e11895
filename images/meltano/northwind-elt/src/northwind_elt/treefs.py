"""The storage under the data tree: a local folder or an S3-compatible bucket, through pyarrow.fs.

Both backends offer the same few operations. What differs is how one object is replaced whole:

* local: write a temporary file beside it, flush, rename (:mod:`northwind_elt.atomic`);
* S3: a PUT (or a completed multipart upload) makes an object appear whole or not at all, so
  objects are written in place; nothing depends on a rename. A set of objects becomes current all
  at once through one small object written last (the step's commit, :mod:`northwind_elt.commits`).

A step's larger files are written locally first (:class:`Outbox`): on S3 a thread uploads each one
while it is still being written, so the upload overlaps the writing instead of following it.

S3 settings come from the usual AWS variables (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
for an in-cluster store or another provider, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or any other credential source the AWS SDK
knows); the URL carries only the bucket and prefix.
"""

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from northwind_elt import atomic, logger
from northwind_elt.errors import SettingError, file_errors

S3_SCHEME = "s3://"
#: Objects are read and written in chunks of this size (one multipart part on S3).
CHUNK = 8 << 20
#: Bytes of one upload allowed in flight. pyarrow's S3 stream uploads parts in the background with
#: no limit, so a file read faster than the network takes it piles up in memory (measured on
#: SeaweedFS: a 600 MB upload peaked at 665 MB RSS); waiting for those parts (``flush``: it never
#: sends a partial part) every 64 MB held it at 173 MB, and was no slower. The report uploads its
#: two files while it writes them: 64 MB windows took that step to 385 MB, 32 MB ones to 330-360
#: MB, in the same time (scale 1000).
UPLOAD_WINDOW = 4 * CHUNK


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
        with file_errors("read", self.url(path), keep_missing=True), \
                self.fs.open_input_stream(str(path)) as stream:
            return stream.read()

    def write_bytes(self, path: PurePosixPath, data: bytes) -> None:
        """Replace the object at ``path`` by ``data``, whole."""
        if self.is_local:
            atomic.write_bytes(Path(path), data)
            return
        with file_errors("write", self.url(path)), self.fs.open_output_stream(str(path)) as out:
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
        with open(local, "rb") as source:
            try:
                self.upload(source, path, local.stat().st_size)
            except BaseException:
                self.discard_partial(path)
                raise
        local.unlink()

    def upload(self, source: BinaryIO, path: PurePosixPath, size: int | None = None) -> None:
        """Write what ``source`` reads, up to its end, to the object at ``path`` (S3 only).

        ``size``, when known, is what ``source`` holds: a small file then takes a buffer of its
        size, not a whole chunk (an extract publishes its partitions side by side, most small).
        The object appears when the stream closes: at the end, but also after a failure part-way,
        with what was sent (pyarrow completes an upload on every close; it cannot abort one).
        """
        with self.fs.open_output_stream(str(path)) as out:
            unsettled, left = 0, size
            while chunk := _next_chunk(source, CHUNK if left is None else min(CHUNK, left)):
                if left is not None:
                    left -= len(chunk)
                out.write(chunk)
                unsettled += len(chunk)
                if unsettled >= UPLOAD_WINDOW:
                    out.flush()  # wait for the parts in flight: memory stays bounded
                    unsettled = 0

    def discard_partial(self, path: PurePosixPath) -> None:
        """Delete what a failed :meth:`upload` left at ``path``, if it can (S3 only).

        The upload cannot be aborted (pyarrow completes it on close), so a failure part-way left a
        truncated object. Nobody trusts it meanwhile (a partition counts only under a manifest
        that matches it, a step's files only under its success marker, written after them all);
        deleting it keeps the bucket from showing it. The step fails with its own reason either
        way, so a failure to delete is only logged.
        """
        try:
            self.delete(path)
        except OSError as error:
            logger.warning("could not delete the partial object %s: %s", self.url(path), error)

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

    def delete_tree(self, folder: PurePosixPath) -> None:
        """Remove ``folder`` and everything under it, if it exists."""
        if self.is_local:
            shutil.rmtree(Path(folder), ignore_errors=True)
            return
        try:
            self.fs.delete_dir(str(folder))
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
        atomic.make_folders(local.parent)
        with self.fs.open_input_stream(str(path)) as stream, open(local, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()


def _next_chunk(source: BinaryIO, most: int) -> pa.Buffer | None:
    """The next ``most`` bytes of ``source`` (fewer at its end) in a new buffer; None at the end.

    pyarrow sends a write this large as a part of its own, without copying it, and holds it until
    sent: hence a new buffer each time. An Arrow buffer is read into directly (no copy through
    Python bytes) and freed by the upload threads without the interpreter lock.
    """
    if most <= 0:
        return None
    buffer = pa.allocate_buffer(most)
    count = source.readinto(memoryview(buffer))
    return buffer.slice(0, count) if count else None


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


class Staged:
    """A local file being written for an :class:`Outbox`, which other threads may read as it grows.

    The writer flushes and calls :meth:`grew` now and then (readers look again every tenth of a
    second anyway) and may drop the file with :meth:`abandon`; the outbox ends it with
    :meth:`finish` or :meth:`abandon`. Writers only append: what a reader has read never changes.
    """

    def __init__(self, path: Path):
        self.path = path
        #: True once the writer failed or dropped the file: readers stop, nothing is published.
        self.abandoned = False
        self._ended = False
        self._changed = threading.Condition()

    def grew(self) -> None:
        """More bytes were flushed to the file."""
        with self._changed:
            self._changed.notify_all()

    def finish(self) -> None:
        """The file is whole (flushed and closed): reads end at its end."""
        self._end()

    def abandon(self) -> None:
        """The writer failed, or the file turned out useless: reads end now, nothing is published."""
        self.abandoned = True
        self._end()

    def wait(self) -> bool:
        """Wait a little for more bytes; True once the writer has ended."""
        with self._changed:
            if not self._ended:
                self._changed.wait(0.1)
            return self._ended

    def _end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()


class GrowingFile(io.RawIOBase):
    """A reader of a :class:`Staged` file: a read waits for more bytes until the writer has ended."""

    def __init__(self, staged: Staged):
        super().__init__()
        self._staged = staged
        self._file = open(staged.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:  # noqa: D102 (io protocol)
        return True

    def readinto(self, buffer) -> int:
        """Fill ``buffer``, short only at the end of the file.

        An upload then sends whole chunks, and a reader woken for every flush does not take the
        interpreter lock from the writer as often.
        """
        view = memoryview(buffer).cast("B")
        filled, ended = 0, False
        while filled < len(view) and not self._staged.abandoned:
            count = self._file.readinto(view[filled:])
            filled += count
            if not count:
                if ended:  # everything was flushed before the end: this is the end
                    break
                ended = self._staged.wait()
        return filled

    def close(self) -> None:  # noqa: D102 (io protocol)
        self._file.close()
        super().close()


class Outbox:
    """Files published whole into one folder of the tree, each written locally first.

    Locally a file is written under a temporary name beside its final one and renamed into place
    once whole. On S3 it is written under ``staging`` while a thread uploads it as it grows, so
    the upload costs about the writing's time rather than its own after it; the object is
    completed once the file is whole.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     outbox = Outbox(LOCAL, Path(folder))
        ...     with outbox.file("a.txt") as staged:
        ...         _ = staged.path.write_text("whole")
        ...     print(outbox.published, sorted(p.name for p in Path(folder).iterdir()))
        ['a.txt'] ['a.txt']
    """

    def __init__(self, fs: TreeFS, folder: PurePosixPath, staging: Path | None = None):
        if staging is None and not fs.is_local:
            raise ValueError("an outbox on object storage needs a local staging folder")
        self.fs, self.folder, self.staging = fs, folder, staging
        #: The names published so far, in order.
        self.published: list[str] = []

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Staged]:
        """A local file to write ``name`` into, in the block; published when the block ends.

        Nothing is published if the block fails or abandons the file (:meth:`Staged.abandon`): the
        local file is removed and, on S3, so is the object the upload had begun.
        """
        path = self.folder / name
        local = Path(path) if self.fs.is_local else self.staging / name
        with file_errors("write", self.fs.url(path)), atomic.temporary_beside(local) as temporary:
            staged = Staged(temporary)
            publisher = _Rename(staged, path) if self.fs.is_local else _Upload(self.fs, staged, path)
            try:
                yield staged
                if not staged.abandoned:
                    staged.finish()
                    publisher.publish()
            except BaseException:
                staged.abandon()
                publisher.remove()
                raise
            if staged.abandoned:
                publisher.remove()
                return
        self.published.append(name)


class _Rename:
    """Publishes a :class:`Staged` file by renaming it into place (the local backend)."""

    def __init__(self, staged: Staged, path: PurePosixPath):
        self._staged, self._path = staged, path

    def publish(self) -> None:
        atomic.publish(self._staged.path, Path(self._path))

    def remove(self) -> None:
        self._staged.path.unlink(missing_ok=True)


class _Upload:
    """Publishes a :class:`Staged` file by uploading it while it is written (object storage)."""

    def __init__(self, fs: TreeFS, staged: Staged, path: PurePosixPath):
        self._fs, self._staged, self._path = fs, staged, path
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._sent = self._thread.submit(self._send)

    def _send(self) -> None:
        with GrowingFile(self._staged) as source:
            self._fs.upload(source, self._path)

    def publish(self) -> None:
        """Wait for the upload to take the whole file: the object is complete."""
        try:
            self._sent.result()
        finally:
            self._thread.shutdown()
        self._staged.path.unlink()

    def remove(self) -> None:
        """Wait for the upload to end, then delete the object it left."""
        self._sent.exception()  # reads ended with the file: the upload ends soon
        self._thread.shutdown()
        self._staged.path.unlink(missing_ok=True)
        self._fs.discard_partial(self._path)
