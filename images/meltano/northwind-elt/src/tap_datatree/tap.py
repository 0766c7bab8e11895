"""tap-datatree: hand one day's verified partitions to a loader, after the day's extracts succeeded.

The streams of a day are exactly those the extract steps' commits list, read from the committed
attempt each success marker names (never another attempt's files); each partition is checked
against its manifest (size, SHA-256, rows) before anything is sent, so a loader never sees a
half-written, truncated or changed file. Local partitions are sent in place; partitions on object
storage are copied to the local staging folder first and the copy is what is checked and sent.
"""

import shutil
import typing as t
from pathlib import Path

from northwind_elt import steps
from northwind_elt.commits import vouched_partitions
from northwind_elt.errors import PartitionError
from northwind_elt.layout import DataTree, Partition
from northwind_elt.manifest import verify_partition
from northwind_elt.pgtypes import Column
from northwind_elt.run_date import parse_run_date
from northwind_elt.step_tap import BatchStream, BatchTap
from singer_sdk import typing as th
from singer_sdk.helpers._batch import (
    BaseBatchFileEncoding,
    BatchConfig,
    ParquetEncoding,
    StorageTarget,
)
from singer_sdk.helpers.capabilities import PluginCapabilities


class PartitionStream(BatchStream):
    """One verified partition, sent as-is (the file is read in place, never moved)."""

    def __init__(self, tap: "TapDataTree", partition: Partition, local: Path,
                 columns: list[Column], keys: list[str], rows: int,
                 content_digest: dict | None = None, sha256: str | None = None):
        self.partition = partition
        #: The file's SHA-256, as its manifest says and the check found.
        self.sha256 = sha256
        #: The manifest's content digest, which the loader checks the loaded rows against.
        self.content_digest = content_digest
        #: The verified local file: the partition's own, or its checked copy.
        self.local = local
        schema = {"type": "object", "properties": {c.name: c.json_schema() for c in columns}}
        super().__init__(tap, schema=schema, name=partition.stream)
        self.primary_keys = keys
        self.rows_written = rows

    def get_batch_config(self, config: t.Mapping) -> BatchConfig:
        """Partitions are already Parquet files: no batch settings are needed."""
        return BatchConfig(encoding=ParquetEncoding(), storage=StorageTarget(root="file:///"))

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Yield the partition's own file."""
        self._tap.report_progress(self.name, self.rows_written)  # type: ignore[attr-defined]
        yield batch_config.encoding, [self.local.as_uri()]


class TapDataTree(BatchTap):
    """Replay the partitions a step's prerequisites published for one day."""

    name = "tap-datatree"
    package_name = "northwind-elt"
    capabilities = (PluginCapabilities.BATCH, PluginCapabilities.ABOUT)
    config_jsonschema = th.PropertiesList(
        th.Property("data_root", th.StringType, required=True, description="Root of the data tree"),
        th.Property("run_date", th.StringType,
                    description="Day to replay"),
        th.Property("step", th.StringType, required=True,
                    description="The step being fed; its prerequisites' partitions are replayed"),
    ).to_dict()

    def discover_streams(self) -> list[PartitionStream]:
        """The day's partitions, each verified against its manifest."""
        day = parse_run_date(self.config.get("run_date"))
        tree = DataTree.from_setting(self.config.get("data_root"))
        step = self.config.get("step") or steps.LOAD_WAREHOUSE
        streams: dict[str, PartitionStream] = {}
        # Copies of partitions on object storage; the loader removes the folder when done.
        copies = tree.staging / f"{self.name}-{self.run_id}"
        try:
            self._verified_streams(tree, step, day, copies, streams)
        except BaseException:
            shutil.rmtree(copies, ignore_errors=True)
            raise
        self.logger.info("replaying %d verified partitions of %s", len(streams), day)
        return list(streams.values())

    def _verified_streams(self, tree: DataTree, step: str, day, copies: Path,
                          streams: dict[str, PartitionStream]) -> None:
        for marker in steps.require_prerequisites(tree, step, day):
            for partition in vouched_partitions(tree, marker, day):
                name = partition.stream
                if name in streams:
                    raise PartitionError(f"stream {name} is published by both "
                                         f"{streams[name].partition.source} and "
                                         f"{partition.source}")
                manifest, columns, local = verify_partition(partition, copies)
                streams[name] = PartitionStream(self, partition, local, columns,
                                                manifest.key_properties, manifest.rows,
                                                manifest.content_digest, manifest.sha256)

    def content_digests(self) -> dict[str, dict]:
        """The manifests' content digests, passed on to the loader to check the loaded rows."""
        return {name: stream.content_digest for name, stream in self.streams.items()
                if getattr(stream, "content_digest", None)}

    def file_checksums(self) -> dict[str, str]:
        """The verified files' SHA-256: the loader skips the history of a day it already holds."""
        return {name: stream.sha256 for name, stream in self.streams.items()
                if getattr(stream, "sha256", None)}


if __name__ == "__main__":
    TapDataTree.cli()
