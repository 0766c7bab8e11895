"""The commit of a step's day: one small object, written last, that makes one attempt current.

Every attempt of a step writes its day's files under a folder of its own, ``<day>/<attempt>/``
(:func:`~northwind_elt.layout.new_attempt`), in every folder it writes (one per table for
``extract-postgres``). Nothing there is read until the step writes its commit object,
``_commits/<day>/<step>.json``: one rename locally, one PUT on S3, naming the attempt, its streams
or files and what it read. Readers (the load, ``status``, ``prune``, whoever reads the evidence)
resolve the commit and read that attempt only, so a day's output changes all at once, on both
backends; a kill before the commit leaves the previous commit, and its files, as they were.
Attempts that are not current are removed when the step next starts and once it has committed.
"""

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from northwind_elt import logger
from northwind_elt.errors import PartitionError, PipelineError, StorageError
from northwind_elt.layout import REPORTS, DataTree, Partition, is_attempt
from northwind_elt.step_names import EXTRACT_CSV, EXTRACT_POSTGRES, PUBLISH_REPORT

#: The folder (a source of the tree, or the evidence) each publishing step writes its attempts in.
FOLDER_OF_STEP = {EXTRACT_POSTGRES: "postgres", EXTRACT_CSV: "csv", PUBLISH_REPORT: REPORTS}

#: Reads of an object another process is replacing at that moment: an S3-compatible store
#: (SeaweedFS here) can serve such a read torn; a moment later it is whole.
TORN_READ_RETRIES = 20
TORN_READ_PAUSE_S = 0.05


def read_document(tree: DataTree, path: PurePosixPath, what: str) -> dict[str, Any] | None:
    """Read the small JSON object at ``path``; None when absent.

    Raises:
        PipelineError: naming ``what`` and the object, when it stays unreadable.
    """
    for _ in range(TORN_READ_RETRIES):
        try:
            document = json.loads(tree.fs.read_bytes(path))
        except FileNotFoundError:
            return None
        except ValueError:  # JSON or UTF-8 of a torn read
            time.sleep(TORN_READ_PAUSE_S)
            continue
        if isinstance(document, dict):
            return document
        break
    raise PipelineError(f"{what} {tree.fs.url(path)} is not valid JSON: remove it and rerun")


class Superseded(PipelineError):
    """A later attempt of the step committed first: this one publishes nothing, and says so."""


@dataclass
class Commit:
    """Which attempt of ``step`` is current on ``run_date``, and what it holds."""

    step: str
    run_date: str
    #: The attempt folder (or, for the load, the id recorded in ``northwind.loads``).
    attempt: str
    committed_at: str
    rows: dict[str, int] = field(default_factory=dict)
    #: ``source`` and ``streams`` of an extract, ``files`` of the evidence.
    details: dict[str, Any] = field(default_factory=dict)
    #: The commit of each step this attempt read: ``{step: attempt}``.
    inputs: dict[str, str] = field(default_factory=dict)


def read_commit(tree: DataTree, step: str, day: dt.date) -> Commit | None:
    """The commit of ``step`` on ``day``, or None when no attempt of it was ever committed."""
    path = tree.commit_file(step, day)
    document = read_document(tree, path, "commit")
    if document is None:
        return None
    try:
        return Commit(**document)
    except TypeError:
        raise PipelineError(f"commit {tree.fs.url(path)} is not a commit: remove it and rerun"
                            ) from None


def write_commit(tree: DataTree, commit: Commit) -> None:
    """Make ``commit.attempt`` current: one object, replaced whole (the step's last publish).

    Raises:
        Superseded: if a later attempt of the step committed meanwhile (two attempts ran at
            once): this one then publishes nothing, and the later one's outcome stands.
    """
    day = dt.date.fromisoformat(commit.run_date)
    current = read_commit(tree, commit.step, day)
    if current is not None and current.attempt > commit.attempt:
        raise Superseded(f"{commit.step} for {day}: attempt {current.attempt} started later and "
                         f"committed first; this attempt ({commit.attempt}) publishes nothing")
    tree.fs.write_json(tree.commit_file(commit.step, day), asdict(commit))


def committed_partitions(tree: DataTree, step: str, day: dt.date) -> tuple[Commit, list[Partition]]:
    """The commit of extract ``step`` on ``day`` and the partitions it made current.

    Raises:
        PartitionError: when the step has no commit that day.
    """
    commit = read_commit(tree, step, day)
    if commit is None:
        raise PartitionError(f"{step} has no committed output for {day} (no "
                             f"{tree.fs.url(tree.commit_file(step, day))}): rerun {step}")
    source = commit.details.get("source") or FOLDER_OF_STEP[step]
    return commit, [tree.partition(source, stream, day, commit.attempt)
                    for stream in commit.details.get("streams", [])]


def vouched_partitions(tree: DataTree, marker: Any, day: dt.date) -> list[Partition]:
    """The partitions of the commit that an extract's success ``marker`` (a StepMarker) names.

    Raises:
        PartitionError: if the step's current commit is not the attempt its marker names (an
            attempt committed and was killed before its marker, or two ran at once).
    """
    commit, partitions = committed_partitions(tree, marker.step, day)
    if commit.attempt != marker.commit:
        raise PartitionError(f"{marker.step} for {day}: its marker vouches for attempt "
                             f"{marker.commit}, its commit names {commit.attempt}: rerun "
                             f"{marker.step}")
    return partitions


def committed_files(tree: DataTree, step: str, day: dt.date) -> list[PurePosixPath]:
    """Every file ``step``'s current attempt published on ``day`` (none without a commit)."""
    commit = read_commit(tree, step, day)
    if commit is None:
        return []
    if step == PUBLISH_REPORT:
        folder = tree.report_folder(day, commit.attempt)
        return [folder / name for name in commit.details.get("files", [])]
    return [path for partition in committed_partitions(tree, step, day)[1]
            for path in (partition.data_file, partition.manifest_file)]


def remove_stale_attempts(tree: DataTree, step: str, day: dt.date, keep: set[str],
                          older_than: str | None = None) -> list[PurePosixPath]:
    """Remove the attempt folders of ``step`` on ``day`` but ``keep``; return what was removed.

    Args:
        tree: The data tree.
        step: A publishing step (:data:`FOLDER_OF_STEP`).
        day: The day.
        keep: Attempts to leave alone (the committed one, a live one, this one).
        older_than: Only remove attempts that started before this one (those that started
            after it may be running).
    """
    removed = []
    for folder in tree.day_folders(FOLDER_OF_STEP[step], day):
        for name in tree.fs.children(folder):
            if name in keep or (older_than is not None and name >= older_than):
                continue
            # Anything else in a day's folder is an attempt that is not current (or a file of
            # the layout before attempts): never read, so removed.
            path = folder / name
            if is_attempt(name) or tree.fs.size(path) is None:
                tree.fs.delete_tree(path)
            else:
                tree.fs.delete(path)
            removed.append(path)
        tree.fs.remove_empty_folders(folder, tree.root)
    return removed


def remove_attempt(tree: DataTree, step: str, day: dt.date, attempt: str) -> None:
    """Remove the folders of one attempt of ``step`` on ``day`` (a failed, uncommitted one)."""
    for folder in tree.day_folders(FOLDER_OF_STEP[step], day):
        tree.fs.delete_tree(folder / attempt)
        tree.fs.remove_empty_folders(folder, tree.root)


def remove_superseded(tree: DataTree, step: str, day: dt.date, attempt: str) -> None:
    """After ``attempt`` committed: remove the attempts that started before it.

    Those that started after it may be running and are left alone. A failure is only logged:
    the commit stands, and the next start removes what is left.
    """
    try:
        remove_stale_attempts(tree, step, day, keep={attempt}, older_than=attempt)
    except (OSError, StorageError) as error:
        logger.warning("%s for %s: could not remove earlier attempts: %s", step, day, error)
