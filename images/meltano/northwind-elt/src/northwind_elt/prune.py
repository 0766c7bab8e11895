"""Retention of the data tree: remove the days older than the newest N successfully loaded days.

A day is removed only when its load succeeded (its rows are in the warehouse, or were dropped
there by the same retention); the newest loaded day is never removed, nor any day whose load failed
or never ran. Every path comes from :class:`~northwind_elt.layout.DataTree`; files are removed in
one place (:func:`remove_file`).
"""

import datetime as dt
from pathlib import PurePosixPath

from northwind_elt import steps
from northwind_elt.layout import DataTree
from northwind_elt.report import REPORT_NAME


def prunable_days(tree: DataTree, keep: int) -> list[dt.date]:
    """The days to remove to keep the ``keep`` newest successfully loaded days, oldest first."""
    loaded = [day for day in tree.status_days()
              if (marker := steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)) is not None
              and marker.status == steps.SUCCESS]
    if len(loaded) <= keep:
        return []
    oldest_kept = loaded[-keep]
    return [day for day in loaded if day < oldest_kept]


def day_files(tree: DataTree, day: dt.date) -> list[PurePosixPath]:
    """Every file of ``day``: partitions and manifests, evidence, then the step markers (last)."""
    files = [path for source in steps.SOURCE_OF_STEP.values()
             for partition in tree.partitions_on(source, day)
             for path in (partition.data_file, partition.manifest_file)]
    files += [tree.report_folder(day) / f"{REPORT_NAME}.{ext}" for ext in ("csv", "json")]
    return files + [tree.status_file(step, day) for step in steps.STEPS]


def remove_file(tree: DataTree, path: PurePosixPath) -> None:
    """Remove ``path`` and then its folders up to the data root while they are empty."""
    tree.fs.delete(path)
    tree.fs.remove_empty_folders(path.parent, tree.root)


def prune(tree: DataTree, keep: int) -> list[dt.date]:
    """Remove every file of the days :func:`prunable_days` names; return those days."""
    days = prunable_days(tree, keep)
    for day in days:
        for path in day_files(tree, day):
            remove_file(tree, path)
    return days
