"""The manifest beside every partition: what the file holds and how to check it is whole."""

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from northwind_elt.arrow_io import sha256_of
from northwind_elt.errors import PartitionError
from northwind_elt.layout import Partition
from northwind_elt.pgtypes import Column, columns_of

FORMAT_VERSION = 1


@dataclass
class Manifest:
    """Row count, schema with source types, checksum and provenance of one partition."""

    source: str
    stream: str
    run_date: str
    file: str
    rows: int
    bytes: int
    sha256: str
    #: Column name, exact source type (``format_type()``), Arrow type, nullability, in order.
    columns: list[dict[str, Any]]
    key_properties: list[str]
    producer: str
    extracted_at: str
    #: The Singer SCHEMA of the stream, as the tap sent it.
    schema: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: The rows' content digest (:mod:`northwind_elt.content_digest`); None in older manifests
    #: and for extracts NORTHWIND_CONTENT_DIGEST leaves out: the load then checks the row count only.
    content_digest: dict[str, Any] | None = None
    #: What the extract read: the source snapshot (time, ``pg_current_snapshot()``, WAL position,
    #: server version) or the file (path, size, time), and whether it is a past day's state.
    provenance: dict[str, Any] = field(default_factory=dict)


def stream_provenance(provenance: dict[str, Any], stream: str) -> dict[str, Any]:
    """A run's provenance for one stream: the run's entries and the stream's own (a file's)."""
    own = provenance.get("streams", {}).get(stream, {})
    return {k: v for k, v in provenance.items() if k != "streams"} | own


def past_day_note(day: dt.date, extracted_at: str) -> str | None:
    """For a day older than yesterday, say the extract holds the source's state when it ran.

    Example:
        >>> past_day_note(dt.date(2024, 1, 2), "2026-12-07T18:00:00+00:00")[:50]
        "the extract for 2024-01-02 holds the source's stat"
        >>> past_day_note(dt.date(2026, 12, 6), "2026-12-07T18:00:00+00:00") is None
        True
    """
    if day >= dt.datetime.fromisoformat(extracted_at).date() - dt.timedelta(days=1):
        return None
    return (f"the extract for {day} holds the source's state at {extracted_at} (when it ran), "
            "not that day's")


def describe_columns(columns: list[Column]) -> list[dict[str, Any]]:
    """The manifest's view of a table's columns."""
    return [{"name": c.name, "sql_type": c.sql_type, "arrow_type": str(c.arrow_type),
             "nullable": c.nullable} for c in columns]


def write_manifest(partition: Partition, manifest: Manifest) -> None:
    """Write the manifest of ``partition`` whole (after its data file is in place)."""
    partition.fs.write_json(partition.manifest_file, asdict(manifest))


def read_manifest(partition: Partition) -> Manifest:
    """Read the manifest of ``partition`` or raise an error naming the missing or bad file."""
    path = partition.fs.url(partition.manifest_file)
    try:
        return Manifest(**json.loads(partition.fs.read_bytes(partition.manifest_file)))
    except FileNotFoundError:
        raise PartitionError(f"manifest {path} is missing") from None
    except (TypeError, ValueError) as error:
        raise PartitionError(f"manifest {path} is unreadable: {error}") from None


def verify_partition(partition: Partition, copy_folder: Path | None = None
                     ) -> tuple[Manifest, list[Column], Path]:
    """Check a partition's file against its manifest: present, same size, checksum and rows.

    A local partition is checked in place. On object storage the object is first copied into
    ``copy_folder`` and the copy is checked: the loader then reads exactly the bytes that passed,
    even if the object is replaced meanwhile.

    Returns:
        The manifest, the columns (with source types) read from the Parquet file, and the local
        file that was checked (the partition's own file, or the copy).

    Raises:
        PartitionError: naming the file and what is wrong with it.
    """
    manifest = read_manifest(partition)
    fs, name = partition.fs, partition.fs.url(partition.data_file)
    size = fs.size(partition.data_file)
    if size is None:
        raise PartitionError(f"partition file {name} is missing (its manifest is there)")
    if size != manifest.bytes:
        raise PartitionError(f"partition file {name} has {size} bytes, its manifest says "
                             f"{manifest.bytes}: it was truncated or changed after the extract")
    if fs.is_local:
        local = Path(partition.data_file)
        checksum = sha256_of(local)
    else:
        if copy_folder is None:
            raise ValueError("a partition on object storage is checked on a local copy")
        local = copy_folder / partition.data_file.name
        try:
            checksum = fs.fetch(partition.data_file, local)
        except FileNotFoundError:
            raise PartitionError(f"partition file {name} vanished while it was read") from None
    if checksum != manifest.sha256:
        raise PartitionError(f"partition file {name} fails its checksum: it was changed or "
                             "corrupted after the extract")
    try:
        metadata = pq.read_metadata(local)
        columns = columns_of(pq.read_schema(local))
    except Exception as error:  # noqa: BLE001 (Arrow raises several types for a bad file)
        raise PartitionError(f"partition file {name} is not readable Parquet: {error}") from None
    if metadata.num_rows != manifest.rows:
        raise PartitionError(f"partition file {name} holds {metadata.num_rows} rows, its manifest "
                             f"says {manifest.rows}")
    return manifest, columns, local
