"""target-datatree: publish a run's streams into the data tree, all of them or none.

Every stream is staged in the tree's local staging folder; only when the tap's completion message
has arrived and every stream holds the announced rows are the files published into this
attempt's folder of each partition (``<day>/<attempt>/``: renamed locally, uploaded to object
storage; the partitions side by side), each followed by its manifest. Then one commit object
makes the attempt current for every stream at once (:mod:`northwind_elt.commits`), and the
step's marker says ``success``. A kill before the commit leaves the previous commit current;
the load checks every partition against its manifest. Any failure marks the step ``failed``.
"""

import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from northwind_elt import atomic, faults, steps
from northwind_elt.arrow_io import sha256_of
from northwind_elt.commits import (
    Commit,
    Superseded,
    remove_attempt,
    remove_superseded,
    write_commit,
)
from northwind_elt.errors import PartitionError
from northwind_elt.layout import DataTree, Partition, check_source
from northwind_elt.manifest import (
    Manifest,
    describe_columns,
    past_day_note,
    stream_provenance,
    write_manifest,
)
from northwind_elt.pgtypes import Column
from northwind_elt.protocol import Completion
from northwind_elt.run_date import parse_run_date
from northwind_elt.step_target import StepTarget
from singer_sdk import typing as th

from target_datatree.sinks import PartitionSink
from target_datatree.staging import StagedPartition

#: Partitions published at once (threads: the work is I/O, and hashing releases the GIL). Each
#: thread costs a fixed amount of memory whatever the partition's size (the S3 client's own):
#: measured in docs/benchmark.md, "Figures behind the code".
PUBLISH_THREADS = 8


class TargetDataTree(StepTarget):
    """Publish Singer streams as ``<root>/<source>/.../<date>`` Parquet partitions."""

    name = "target-datatree"
    package_name = "northwind-elt"
    default_sink_class = PartitionSink
    config_jsonschema = th.PropertiesList(
        th.Property("data_root", th.StringType, required=True, description="Root of the data tree"),
        th.Property("run_date", th.StringType,
                    description="Logical date (YYYY-MM-DD) that names the partitions"),
        th.Property("source", th.StringType, required=True,
                    description="Source name: the first folder under the root (postgres, csv)"),
        th.Property("step", th.StringType, required=True,
                    description="Step name, for the marker under _status/<date>/"),
        th.Property("reextract", th.StringType,
                    description="Replace a day whose extract already succeeded (true/1; default: "
                                "keep it, as the tap does)"),
        th.Property("require_completion", th.BooleanType, default=True,
                    description="Publish only after the tap's completion message (our taps send "
                                "it). Set false for stock Singer taps, which cannot: the end of "
                                "their input is then taken as success, so a tap that dies "
                                "mid-stream without an error exit would publish partial data."),
    ).to_dict()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Every setting is checked here; nothing is read or written before the run.
        self.day = parse_run_date(self.config.get("run_date"))
        self.source = check_source(self.config["source"])
        self.tree = DataTree.from_setting(self.config.get("data_root"))
        self.reextract = steps.parse_flag(self.config.get("reextract"), "reextract")
        self.max_parallelism = 1
        self.staged: dict[str, StagedPartition] = {}
        self.schemas: dict[str, dict] = {}
        self._published_count = 0
        self._count_lock = threading.Lock()

    def begin_run(self) -> None:
        """Start the step's attempt (or wait for the tap to keep the day) and its staging folder."""
        step = self.config["step"]
        kept = steps.kept_extract(self.tree, step, self.day, reextract=self.reextract)
        self.start_step(self.tree, step, self.day, may_keep=kept is not None)
        self.staging = self.tree.staging / f"{self.step}-{self.day}-{uuid.uuid4().hex}"
        atomic.make_folders(self.staging)  # a fresh name: never there before
        self.logger.info("%s for %s: staging in %s", self.step, self.day, self.staging)

    def stage(self, stream: str, columns: list[Column], keys: list[str], schema: dict
              ) -> StagedPartition:
        """Start (or restart, on a new SCHEMA) the staged partition of ``stream``."""
        staged = StagedPartition(self.staging, stream, columns, keys)
        self.staged[stream] = staged
        self.schemas[stream] = schema
        return staged

    def process_endofpipe(self) -> None:
        """Publish (or not), then always remove the run's work folder."""
        try:
            super().process_endofpipe()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def discard_attempt(self) -> None:
        """Remove the work files and, unless committed, what this attempt published."""
        super().discard_attempt()
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.marker is not None and not self.committed:
            remove_attempt(self.tree, self.step, self.day, self.marker.commit)

    def finish_step(self) -> None:
        """Check the run is complete, publish every staged partition, commit, mark the step done.

        Partitions are published side by side into this attempt's folders: each is a few
        requests on object storage, independent of the others, so their latencies overlap
        (docs/benchmark.md, "Figures behind the code"); the commit waits for them all and makes
        them current at once. A failed one fails
        the step, and the attempt's files are removed; the previous commit stays current.
        """
        self._check_complete()
        extracted_at = steps.now()
        if note := past_day_note(self.day, extracted_at):
            self.logger.warning("%s", note)
            self.completion.provenance["past_day"] = note
        streams = sorted(self.staged)
        with ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish") as pool:
            published = [pool.submit(self._publish, stream, extracted_at) for stream in streams]
        rows = {}
        for stream, future in zip(streams, published, strict=True):
            partition = future.result()  # the first failed stream's error, in stream order
            rows[stream] = self.staged[stream].rows
            self.logger.info("published %s: %d rows -> %s", stream, rows[stream],
                             self.tree.fs.url(partition.data_file))
        faults.point("before-commit")
        details = {**self.completion.details, "source": self.source, "streams": streams}
        attempt = self.marker.commit
        try:
            write_commit(self.tree, Commit(step=self.step, run_date=self.day.isoformat(),
                                           attempt=attempt, committed_at=steps.now(),
                                           rows=rows, details=details))
        except Superseded as superseded:
            # Two runs at once: the later one's commit and marker stand; this one leaves no trace.
            self.logger.warning("%s", superseded)
            remove_attempt(self.tree, self.step, self.day, attempt)
            self._failed = True  # nothing to record
            return
        self.committed = True
        self.logger.info("committed attempt %s of %s for %s", attempt, self.step, self.day)
        faults.point("after-commit")
        self.succeed_step(rows, details)
        remove_superseded(self.tree, self.step, self.day, attempt)

    def _publish(self, stream: str, extracted_at: str) -> Partition:
        """Publish ``stream``'s staged file into its partition: the data, then its manifest."""
        staged = self.staged[stream]
        staged.close()
        partition = self.tree.partition(self.source, stream, self.day, self.marker.commit)
        manifest = Manifest(
            source=self.source, stream=stream, run_date=self.day.isoformat(),
            file=partition.data_file.name, rows=staged.rows,
            bytes=staged.path.stat().st_size, sha256=sha256_of(staged.path),
            columns=describe_columns(staged.columns), key_properties=staged.key_properties,
            producer=self.completion.producer, extracted_at=extracted_at,
            schema=self.schemas[stream],
            content_digest=self.completion.digests.get(stream),
            provenance=stream_provenance(self.completion.provenance, stream),
        )
        self.tree.fs.put_file(staged.path, partition.data_file)
        write_manifest(partition, manifest)
        with self._count_lock:
            self._published_count += 1
            first = self._published_count == 1 and len(self.staged) > 1
        if first:
            faults.point("between-partitions")
        return partition

    def _check_complete(self) -> None:
        if self.completion is None and not self.config.get("require_completion", True):
            self.logger.warning("no completion message (stock tap): publishing what arrived")
            self.completion = Completion("stock tap", {s: p.rows for s, p in self.staged.items()})
        if self.completion is None:
            raise PartitionError(
                "the extractor ended without its completion message (it failed or was stopped "
                "before finishing): nothing was published"
            )
        announced = self.completion.rows
        if not announced:
            raise PartitionError("the extractor announced no stream: an extract of nothing is "
                                 "never published")
        missing = sorted(set(announced) - set(self.staged))
        if missing:
            raise PartitionError(f"streams announced but not received: {', '.join(missing)}")
        wrong = [f"{s}: received {self.staged[s].rows}, announced {n}"
                 for s, n in sorted(announced.items()) if self.staged[s].rows != n]
        if wrong:
            raise PartitionError("row counts differ from the extractor's: " + "; ".join(wrong))


if __name__ == "__main__":
    TargetDataTree.cli()
