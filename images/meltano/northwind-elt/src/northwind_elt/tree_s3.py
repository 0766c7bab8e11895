"""The data tree in an S3-compatible bucket, through pyarrow's S3 client.

A PUT (or a completed multipart upload) makes an object appear whole or not at all, so objects are
written in place; nothing depends on a rename. A set of objects becomes current all at once
through one small object written last (the step's commit, :mod:`northwind_elt.commits`).

Settings come from the usual AWS variables (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for an
in-cluster store or another provider, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``AWS_CA_BUNDLE``
for a store whose certificate a private CA signed, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` or any other credential source the AWS SDK knows); the URL carries only
the bucket and prefix.
"""

import os
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from northwind_elt import logger
from northwind_elt.errors import SettingError, file_errors
from northwind_elt.outbox import Publisher, Staged, UploadWhileWritten
from northwind_elt.tree_backend import CHUNK, TreeFS

S3_SCHEME = "s3://"
#: Bytes of one upload allowed in flight. pyarrow's S3 stream uploads parts in the background with
#: no limit, so a file read faster than the network takes it piles up in memory; waiting for those
#: parts (``flush``: it never sends a partial part) every window bounds it, and was no slower.
#: Smaller windows also keep the report (two files uploaded while written) smaller, in the same
#: time (docs/benchmark.md).
UPLOAD_WINDOW = 4 * CHUNK


class S3Tree(TreeFS):
    """A bucket of an S3-compatible store; paths are ``bucket/key``."""

    is_local = False
    url_prefix = S3_SCHEME

    def read_bytes(self, path: PurePosixPath) -> bytes:  # noqa: D102 (TreeFS)
        with file_errors("read", self.url(path), keep_missing=True), \
                self.fs.open_input_stream(str(path)) as stream:
            return stream.read()

    def write_bytes(self, path: PurePosixPath, data: bytes) -> None:  # noqa: D102 (TreeFS)
        with file_errors("write", self.url(path)), self.fs.open_output_stream(str(path)) as out:
            out.write(data)

    def put_file(self, local: Path, path: PurePosixPath) -> None:
        """Upload ``local`` in parts; the object becomes visible only once complete."""
        with open(local, "rb") as source:
            try:
                self.upload(source, path, local.stat().st_size)
            except BaseException:
                self.discard_partial(path)
                raise
        local.unlink()

    def upload(self, source: BinaryIO, path: PurePosixPath, size: int | None = None) -> None:
        """Write what ``source`` reads, up to its end, to the object at ``path``.

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
        """Delete what a failed :meth:`upload` left at ``path``, if it can.

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

    def delete_tree(self, folder: PurePosixPath) -> None:  # noqa: D102 (TreeFS)
        try:
            self.fs.delete_dir(str(folder))
        except FileNotFoundError:
            pass

    def remove_empty_folders(self, folder: PurePosixPath, root: PurePosixPath) -> None:
        """Nothing: a bucket has no folders."""

    def work_folder(self, folder: PurePosixPath, staging: Path | None) -> Path:
        """``staging``: files are written on local disk and uploaded as they grow."""
        if staging is None:
            raise ValueError("an outbox on object storage needs a local staging folder")
        return staging

    def publisher(self, staged: Staged, path: PurePosixPath) -> Publisher:  # noqa: D102 (TreeFS)
        return UploadWhileWritten(self, staged, path)


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


def open_bucket(raw: str) -> tuple[S3Tree, PurePosixPath]:
    """The backend and root of an ``s3://bucket/prefix`` data root, configured from ``AWS_*``.

    Raises:
        SettingError: If the URL lacks a bucket or the store cannot be configured.
    """
    bucket_and_prefix = raw[len(S3_SCHEME):].strip("/")
    if not bucket_and_prefix or "?" in raw or any(p in ("", ".", "..")
                                                  for p in bucket_and_prefix.split("/")):
        raise SettingError(f"data root {raw!r}: expected s3://bucket/prefix (settings such as the "
                           "endpoint come from AWS_* variables, not the URL)")
    try:
        fs = pafs.S3FileSystem(**s3_options())
    except (OSError, ValueError) as error:
        raise SettingError(f"data root {raw}: cannot configure S3: {error}") from None
    return S3Tree(fs), PurePosixPath(bucket_and_prefix)


def s3_options() -> dict[str, Any]:
    """S3FileSystem options from the AWS variables pyarrow's constructor does not read itself.

    Raises:
        SettingError: If ``AWS_CA_BUNDLE`` names no file.
    """
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_override"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    # The AWS SDKs' name for a private CA's bundle; pyarrow's S3 client takes it only as an option.
    ca_bundle = os.environ.get("AWS_CA_BUNDLE")
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise SettingError(f"AWS_CA_BUNDLE={ca_bundle}: no such file (the CA certificate that "
                               "signed the S3 endpoint's)")
        options["tls_ca_file_path"] = ca_bundle
    return options
