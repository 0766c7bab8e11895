"""The data tree in a local folder: a file is replaced whole by writing beside it, then a rename."""

import shutil
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs

from northwind_elt import atomic
from northwind_elt.outbox import Publisher, RenameWhenWhole, Staged
from northwind_elt.tree_backend import TreeFS


class LocalTree(TreeFS):
    """A folder of the local file system (see :mod:`northwind_elt.atomic`)."""

    is_local = True
    url_prefix = ""

    def __init__(self):
        super().__init__(pafs.LocalFileSystem())

    def read_bytes(self, path: PurePosixPath) -> bytes:  # noqa: D102 (TreeFS)
        return Path(path).read_bytes()

    def write_bytes(self, path: PurePosixPath, data: bytes) -> None:  # noqa: D102 (TreeFS)
        atomic.write_bytes(Path(path), data)

    def put_file(self, local: Path, path: PurePosixPath) -> None:
        """Rename ``local`` into place (it is staged on the same file system)."""
        atomic.publish(local, Path(path))

    def delete_tree(self, folder: PurePosixPath) -> None:  # noqa: D102 (TreeFS)
        shutil.rmtree(Path(folder), ignore_errors=True)

    def remove_empty_folders(self, folder: PurePosixPath, root: PurePosixPath) -> None:  # noqa: D102
        local = Path(folder)
        while local != Path(root) and local.is_dir() and not any(local.iterdir()):
            local.rmdir()
            local = local.parent

    def work_folder(self, folder: PurePosixPath, staging: Path | None) -> Path:
        """``folder`` itself: a file is written beside its final name, then renamed."""
        return Path(folder)

    def publisher(self, staged: Staged, path: PurePosixPath) -> Publisher:  # noqa: D102 (TreeFS)
        return RenameWhenWhole(staged, Path(path))


#: The local backend (the default of a data tree built from a path).
LOCAL = LocalTree()
