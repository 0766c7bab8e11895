"""What every step-running target shares: record the step's outcome in its marker, always.

A failure can surface in any message handler (a bad SCHEMA, an unreadable batch file) or at the
end of the input; each path marks the step ``failed`` with a one-line reason before re-raising,
so ``northwind status`` and the load's prerequisite check see it.
"""

import datetime as dt
import shutil
import time
import typing as t
from pathlib import Path
from urllib.parse import unquote, urlparse

from singer_sdk import Target
from singer_sdk.helpers._batch import BaseBatchFileEncoding
from singer_sdk.sinks import BatchSink

from northwind_elt import steps
from northwind_elt.errors import InputError, one_line
from northwind_elt.layout import DataTree
from northwind_elt.pgtypes import Column
from northwind_elt.protocol import Completion, parse_completion, parse_kept

#: Work files older than this are left over from killed runs and are removed at the next start.
STALE_STAGING_SECONDS = 24 * 3600


def remove_stale_staging(tree: DataTree, now: float | None = None) -> None:
    """Remove staging entries of runs that were killed long ago (Singer never deletes batch files)."""
    limit = (now or time.time()) - STALE_STAGING_SECONDS
    if not tree.staging.is_dir():
        return
    for entry in tree.staging.iterdir():
        try:
            if entry.stat().st_mtime >= limit:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another run removed it first


class StepTarget(Target):
    """A target that runs one step for one day and keeps that step's marker up to date."""

    step: str
    day: dt.date
    tree: DataTree
    #: The folders of the tap's batch files (see :meth:`remove_batch_folders`).
    batch_folders: set[Path]

    #: The marker of the day's earlier success that the tap kept (its only message), if it did.
    kept: dict | None = None
    #: This attempt's marker and lease (None until the attempt begins; a kept run has none).
    marker: steps.StepMarker | None = None
    heartbeat: steps.Heartbeat | None = None
    #: True once this attempt's commit is written: its files are then current, never removed.
    committed = False

    def listen(self, file_input: t.IO[str] | None = None) -> None:
        """Begin the step's run, then read the tap's messages.

        A constructor only reads and checks settings: markers, folders and connections are the
        run's (:meth:`begin_run`), so building a target changes nothing.
        """
        self.begin_run()
        super().listen(file_input)

    def begin_run(self) -> None:
        """Start the step's attempt before the first message (mark it running, connect...)."""
        raise NotImplementedError

    def start_step(self, tree: DataTree, step: str, day: dt.date, *, may_keep: bool = False
                   ) -> None:
        """Start the step's attempt, or wait for the tap to say whether it keeps the day.

        Mark the step running (replacing an older outcome), take its lease, tidy old files;
        ``self.marker.commit`` names this attempt (its folder in the tree, see
        :func:`northwind_elt.steps.start_attempt`). With ``may_keep`` (the day's extract
        succeeded and is not to be read again) the attempt begins only when the tap's first
        stream arrives: a tap that keeps the day sends none, and the day stays as it is.
        """
        self.tree, self.step, self.day = tree, step, day
        self.batch_folders = set()
        self._failed = False
        self._begun = False
        if not may_keep:
            self._begin()

    def _begin(self) -> None:
        try:
            remove_stale_staging(self.tree)
            self.marker, self.heartbeat = steps.start_attempt(self.tree, self.step, self.day)
        except BaseException as error:
            # No message handler runs yet: say why here (if even that fails, the attempt's
            # process is gone and ``status`` shows it dead).
            steps.record_failure(self.tree, self.step, self.day, one_line(error))
            raise
        self._begun = True

    def _begin_if_deferred(self) -> None:
        if not getattr(self, "_begun", True):
            self._begin()

    def fail_step(self, error: BaseException) -> None:
        """Mark the step failed with the reason, once (a reason the tap recorded first is kept)."""
        if getattr(self, "_failed", True):
            return
        self._failed = True
        reason = one_line(error)
        steps.record_failure(self.tree, self.step, self.day, reason)
        self.logger.error("%s for %s FAILED: %s", self.step, self.day, reason)

    def succeed_step(self, rows: dict[str, int], details: dict) -> None:
        """Mark the step successful with the rows per stream (after its commit)."""
        self.marker.rows = dict(rows)
        self.marker.details = details
        self.heartbeat.stop()
        steps.finish(self.tree, self.marker)
        self._failed = True  # nothing left to record
        self.logger.info("%s for %s succeeded: %d streams, %d rows", self.step, self.day,
                         len(rows), sum(rows.values()))

    def _guard(self, handler, message_dict: dict) -> None:
        try:
            handler(message_dict)
        except BaseException as error:
            self.fail_step(error)
            raise

    def _process_schema_message(self, message_dict: dict) -> None:
        self._begin_if_deferred()  # the tap reads the source: this attempt replaces the day
        self._guard(super()._process_schema_message, message_dict)

    def _process_record_message(self, message_dict: dict) -> None:
        self._guard(super()._process_record_message, message_dict)

    def _process_batch_message(self, message_dict: dict) -> None:
        self._guard(super()._process_batch_message, message_dict)

    #: The tap's completion message, once it arrived (see :mod:`northwind_elt.protocol`).
    completion: Completion | None = None

    def _process_state_message(self, message_dict: dict) -> None:
        completion = parse_completion(message_dict.get("value"))
        if completion is not None:
            self.completion = completion
        self.kept = parse_kept(message_dict.get("value")) or self.kept
        self._guard(super()._process_state_message, message_dict)

    def process_endofpipe(self) -> None:
        """Drain the sinks and finish the step; any failure marks it failed."""
        try:
            super().process_endofpipe()
            if self.kept is not None and self.completion is None:
                self.keep_step()
            else:
                self._begin_if_deferred()
                self.finish_step()
        except BaseException as error:
            # Work files first: the failure may be a full disk, and the marker needs room.
            self.discard_attempt()
            self.fail_step(error)
            raise
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.remove_batch_folders()
            # The tap has ended (its output did): the attempt's failure note served its purpose.
            steps.failure_note(self.tree, self.step, self.day).unlink(missing_ok=True)

    def keep_step(self) -> None:
        """The tap kept the day's earlier success: leave it, or put it back if this run began."""
        if self._begun:  # this target's start replaced the marker before the tap decided
            steps.write_marker(self.tree, steps.StepMarker(**self.kept))
        self._failed = True  # nothing of this run is recorded
        self.logger.info("%s for %s: kept the day's earlier extract", self.step, self.day)

    def discard_attempt(self) -> None:
        """Remove what a failed attempt wrote (never a committed attempt's files)."""
        self.remove_batch_folders()

    def remove_batch_folders(self) -> None:
        """Remove the tap's batch folders that lie in the staging folder (Singer leaves them).

        Only there: a local load is handed the published partitions themselves.
        """
        for folder in getattr(self, "batch_folders", ()):
            if folder.parent == self.tree.staging:
                shutil.rmtree(folder, ignore_errors=True)

    def finish_step(self) -> None:
        """Complete the step's work once the input has ended (publish, commit)."""
        raise NotImplementedError


class StepSink(BatchSink):
    """A sink of a :class:`StepTarget`: typed columns from the SCHEMA, Parquet files from BATCH."""

    #: RECORD messages (stock taps) are converted to Arrow in batches of this many rows.
    MAX_SIZE_DEFAULT = 50_000

    def __init__(self, target: StepTarget, *args, **kwargs):
        self.owner = target
        super().__init__(target, *args, **kwargs)

    def schema_columns(self) -> list[Column]:
        """The stream's columns with their types, from its SCHEMA message."""
        return [Column.from_json_schema(name, prop)
                for name, prop in self.schema.get("properties", {}).items()]

    def batch_file_paths(self, encoding: BaseBatchFileEncoding, files: t.Sequence[str]) -> list[Path]:
        """The local paths of a BATCH message's Parquet files, or an error naming the stream."""
        if encoding.format != "parquet":
            raise InputError(f"stream {self.stream_name}: BATCH format {encoding.format!r} is not "
                             "supported (use parquet)")
        paths = []
        for url in files:
            parsed = urlparse(url)
            if parsed.scheme != "file":
                raise InputError(f"stream {self.stream_name}: batch file {url} is not a file:// URL")
            paths.append(Path(unquote(parsed.path)))  # as_uri() quoted the %-encoded segments
        self.owner.batch_folders.update(path.parent for path in paths)
        return paths
