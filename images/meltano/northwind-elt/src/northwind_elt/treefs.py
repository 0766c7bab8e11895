"""The storage under the data tree: a local folder or an S3-compatible bucket, through pyarrow.fs.

:func:`open_root` picks the backend from the data-root setting. Both backends offer the same
operations (:class:`~northwind_elt.tree_backend.TreeFS`): :mod:`northwind_elt.tree_local`
replaces a file by a rename, :mod:`northwind_elt.tree_s3` by a PUT. A step's larger files go
through an :class:`~northwind_elt.outbox.Outbox`: written locally first, and on S3 uploaded while
they grow. The names callers use are importable from here.
"""

from pathlib import Path, PurePosixPath

from northwind_elt.outbox import GrowingFile, Outbox, Staged
from northwind_elt.tree_backend import CHUNK, TreeFS
from northwind_elt.tree_local import LOCAL
from northwind_elt.tree_s3 import S3_SCHEME, UPLOAD_WINDOW, open_bucket, s3_options

__all__ = ["CHUNK", "LOCAL", "S3_SCHEME", "UPLOAD_WINDOW", "GrowingFile", "Outbox", "Staged",
           "TreeFS", "open_root", "s3_options"]


def open_root(raw: str) -> tuple[TreeFS, PurePosixPath]:
    """The backend and root path of a data-root setting: a local path or ``s3://bucket/prefix``.

    Raises:
        SettingError: If an S3 URL lacks a bucket or the store cannot be configured.

    Example:
        >>> fs, root = open_root("/srv/data/../data")
        >>> fs.is_local, str(root)
        (True, '/srv/data')
    """
    if raw.startswith(S3_SCHEME):
        return open_bucket(raw)
    return LOCAL, Path(raw).resolve()
