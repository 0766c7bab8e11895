"""The exceptions of the pipeline, and the one line each failure is reported as.

One root, so callers can catch everything we raise; :func:`one_line` also words the failures the
machine causes (a full disk, a server gone) with the path or database they concern.
"""

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import PurePath


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose (bad input, bad settings, bad state)."""


class SettingError(PipelineError):
    """A setting (environment variable or plugin config) is missing or malformed."""


class InputError(PipelineError):
    """Source data is malformed; the message names the file or table, line and column."""


class PartitionError(PipelineError):
    """A partition of the data tree is missing, incomplete or corrupt."""


class PrerequisiteError(PipelineError):
    """A step was asked to run before the steps it depends on succeeded for that date."""


class StorageError(PipelineError):
    """The machine refused a file operation (disk full, no permission, read-only); names the path."""


class ServerError(PipelineError):
    """A database server failed or dropped the connection mid-step; names the database."""


#: Arrow's I/O errors carry the errno only in their text: ``... [errno 28] No space left ...``.
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def os_error_code(error: OSError) -> int | None:
    """The errno of ``error``, also when only its text holds it (Arrow's file writers)."""
    if error.errno:
        return error.errno
    found = _ERRNO_IN_TEXT.search(str(error))
    return int(found.group(1)) if found else None


#: How Arrow's S3 errors start (``When reading information for key 'k' in bucket 'b': ...``): the
#: caller names the object as a URL already.
_ARROW_WHERE = re.compile(r"^When [^:]*'[^']*'[^:]*: ")


def os_reason(error: OSError) -> str:
    """Why the system refused: ``no space left on device``, ``permission denied``..."""
    code = os_error_code(error)
    if code:
        return os.strerror(code).lower()
    text = single_line(error.strerror or str(error))
    return _ARROW_WHERE.sub("", text) or type(error).__name__


@contextlib.contextmanager
def file_errors(action: str, path: str | PurePath, keep_missing: bool = False) -> Iterator[None]:
    """Raise an OSError of the block as a StorageError: ``cannot <action> <path>: <reason>``.

    Where the path is known, the reason gets it: Arrow's writers and a ``write`` on a full disk
    say only ``No space left on device``, an object store only its bucket and key.

    Args:
        action: The verb (``write``, ``read``).
        path: The file's path or the object's URL.
        keep_missing: Let a FileNotFoundError through unchanged (a caller that expects it).
    """
    try:
        yield
    except FileNotFoundError:
        if keep_missing:
            raise
        raise StorageError(f"cannot {action} {path}: no such file or directory") from None
    except OSError as error:
        raise StorageError(f"cannot {action} {path}: {os_reason(error)}") from error


def is_machine_error(error: BaseException) -> bool:
    """An OSError: the disk, the permissions, the network or an object store refused, not our code.

    Arrow's I/O errors (an S3 store gone, a full disk) are OSErrors too, often without an errno.
    """
    return isinstance(error, OSError)


def one_line(error: BaseException) -> str:
    """A failure as one line: our errors speak for themselves, a server's names its database.

    A failure raised while another was being handled (recording a failure on a full disk) leads
    with the first one, its cause.

    Example:
        >>> try:
        ...     open("/nonexistent/order_details.csv")
        ... except OSError as error:
        ...     print(one_line(error))
        cannot use /nonexistent/order_details.csv: no such file or directory
        >>> try:
        ...     with file_errors("write", "/data/_status/x.json"):
        ...         raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] ...")
        ... except StorageError as error:
        ...     print(one_line(error))
        cannot write /data/_status/x.json: no space left on device
    """
    line = _own_line(error)
    first = _first_failure(error)
    if first is None:
        return line
    cause = _own_line(first)
    # A bare "no space left on device" that the last error repeats with its path says nothing new.
    return line if line.endswith(cause) else f"{cause}; then: {line}"


def _first_failure(error: BaseException) -> BaseException | None:
    """The failure that ``error`` was, in the end, raised while handling; None if none.

    ``raise A from B`` translates B (the same failure); an implicit context is an earlier one,
    and the earliest of all is where things went wrong first. A file found missing or existing
    is left out: code handles those on purpose (``mkdir(parents=True)``, a marker not there yet).
    """
    first = None
    seen: BaseException | None = error
    while seen is not None:
        context = seen.__context__
        if context is not None and context is not seen.__cause__ and not seen.__suppress_context__:
            if not isinstance(context, FileNotFoundError | FileExistsError):
                first = context
            seen = context
        else:
            seen = seen.__cause__
    return first


def _own_line(error: BaseException) -> str:
    if isinstance(error, PipelineError):
        return single_line(" ".join(str(error).split("\n"))) or type(error).__name__
    psycopg = sys.modules.get("psycopg")  # only loaded when the process talks to a database
    if psycopg is not None and isinstance(error, psycopg.Error):
        from northwind_elt.pgconn import server_failure

        return server_failure(error)
    if is_machine_error(error):
        names = [str(n) for n in (error.filename, error.filename2) if n is not None]
        where = f"cannot use {' -> '.join(names)}: " if names else ""
        return f"{where}{os_reason(error)}"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def single_line(text: str) -> str:
    r"""``text`` with its whitespace (newlines, tabs) collapsed to single spaces.

    Example:
        >>> single_line("table orders:\n  line 2\tcolumn x")
        'table orders: line 2 column x'
    """
    return " ".join(text.split())
