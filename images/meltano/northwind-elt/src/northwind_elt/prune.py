"""Retention of the data tree: remove the days older than the newest N successfully loaded days.

A day is removed only when its load succeeded (its rows are in the warehouse, or were dropped
there by the same retention); the newest loaded day is never removed, nor any day whose load failed
or never ran. Every path comes from :class:`~northwind_elt.layout.DataTree`; folders are removed in
one place (:func:`remove_folder`): the day's commits first (readers then see nothing of the day),
then every attempt of its data and evidence, then its markers (a prune killed part-way is finished
by the next one, which still sees the day's load marker).

It removes files only: the warehouse keeps the full days ``NORTHWIND_KEEP_DAYS`` leaves it (at
each load) and the change-only history of every loaded day (:mod:`northwind_elt.history`), so a
pruned day is still there as ``history."<table>"(day)``. What each setting keeps:

- N >= 1: the files of the N newest loaded days (and every day not successfully loaded);
- 0: the files of the newest loaded day only (it is never removed: its markers say the warehouse
  holds it), while the warehouse keeps no full day at all (its history keeps every one).
"""

import datetime as dt
from pathlib import PurePosixPath

from northwind_elt import steps
from northwind_elt.commits import FOLDER_OF_STEP
from northwind_elt.layout import DataTree


def prunable_days(tree: DataTree, keep: int) -> list[dt.date]:
    """The days to remove to keep the ``keep`` newest successfully loaded days, oldest first."""
    loaded = [day for day in tree.status_days()
              if (marker := steps.read_marker(tree, steps.LOAD_WAREHOUSE, day)) is not None
              and marker.status == steps.SUCCESS]
    keep = max(keep, 1)  # the newest loaded day is never removed
    if len(loaded) <= keep:
        return []
    oldest_kept = loaded[-keep]
    return [day for day in loaded if day < oldest_kept]


def day_folders(tree: DataTree, day: dt.date) -> list[PurePosixPath]:
    """Every folder of ``day``: its commits, its data and evidence (all attempts), its markers."""
    folders = [tree.commit_file(steps.LOAD_WAREHOUSE, day).parent]
    folders += [folder for source in FOLDER_OF_STEP.values()
                for folder in tree.day_folders(source, day)]
    return folders + [tree.status_file(steps.LOAD_WAREHOUSE, day).parent]


def remove_folder(tree: DataTree, folder: PurePosixPath) -> None:
    """Remove ``folder`` with its contents, then its parents up to the data root while empty."""
    tree.fs.delete_tree(folder)
    tree.fs.remove_empty_folders(folder.parent, tree.root)


def prune(tree: DataTree, keep: int) -> list[dt.date]:
    """Remove every folder of the days :func:`prunable_days` names; return those days."""
    days = prunable_days(tree, keep)
    for day in days:
        for folder in day_folders(tree, day):
            remove_folder(tree, folder)
    return days
