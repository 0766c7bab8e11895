"""Files published whole into one folder of the data tree, each written locally first.

Locally a file is written under a temporary name beside its final one and renamed into place once
whole. On S3 a thread uploads it while it is still being written, so the upload overlaps the
writing instead of following it; the object is completed once the file is whole.
"""

import concurrent.futures
import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from northwind_elt import atomic
from northwind_elt.errors import file_errors

if TYPE_CHECKING:
    from northwind_elt.tree_backend import TreeFS
    from northwind_elt.tree_s3 import S3Tree


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


class Publisher(Protocol):
    """Publishes one :class:`Staged` file once whole, or removes every trace of it."""

    def publish(self) -> None:
        """The file is whole: make it visible at its final place."""

    def remove(self) -> None:
        """The file is abandoned: remove it, and whatever was begun with it."""


class Outbox:
    """Files published whole into one folder of the tree, each written locally first.

    The backend says where a file is written (:meth:`TreeFS.work_folder`) and how it is published
    (:meth:`TreeFS.publisher`): renamed into place, or uploaded as it grows.

    Example:
        >>> import tempfile
        >>> from northwind_elt.treefs import LOCAL
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     outbox = Outbox(LOCAL, Path(folder))
        ...     with outbox.file("a.txt") as staged:
        ...         _ = staged.path.write_text("whole")
        ...     print(outbox.published, sorted(p.name for p in Path(folder).iterdir()))
        ['a.txt'] ['a.txt']
    """

    def __init__(self, fs: "TreeFS", folder: PurePosixPath, staging: Path | None = None):
        self.fs, self.folder = fs, folder
        self._work = fs.work_folder(folder, staging)
        #: The names published so far, in order.
        self.published: list[str] = []

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Staged]:
        """A local file to write ``name`` into, in the block; published when the block ends.

        Nothing is published if the block fails or abandons the file (:meth:`Staged.abandon`): the
        local file is removed and, on S3, so is the object the upload had begun.
        """
        path = self.folder / name
        with file_errors("write", self.fs.url(path)), \
                atomic.temporary_beside(self._work / name) as temporary:
            staged = Staged(temporary)
            publisher = self.fs.publisher(staged, path)
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


class RenameWhenWhole:
    """Publishes a :class:`Staged` file by renaming it into place (the local backend)."""

    def __init__(self, staged: Staged, path: Path):
        self._staged, self._path = staged, path

    def publish(self) -> None:  # noqa: D102 (Publisher)
        atomic.publish(self._staged.path, self._path)

    def remove(self) -> None:  # noqa: D102 (Publisher)
        self._staged.path.unlink(missing_ok=True)


class UploadWhileWritten:
    """Publishes a :class:`Staged` file by uploading it, in a thread, while it is written."""

    def __init__(self, fs: "S3Tree", staged: Staged, path: PurePosixPath):
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
