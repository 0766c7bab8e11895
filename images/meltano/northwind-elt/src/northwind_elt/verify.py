"""Check loaded rows against the content digests of their manifests (and the source's rows).

Two users: the load, which checks each fresh partition inside its transaction before swapping it
in (a mismatch rolls the day back, naming the tables), and ``northwind verify --date D``, which
re-checks a loaded day later and, with ``--source``, compares the live source with the day's
extract to report drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from northwind_elt import steps, warehouse
from northwind_elt.commits import vouched_partitions
from northwind_elt.content_digest import (
    Digest,
    source_expression,
    table_digest,
    warehouse_expression,
)
from northwind_elt.errors import PartitionError, SettingError
from northwind_elt.history_sql import day_relation
from northwind_elt.layout import DataTree
from northwind_elt.manifest import Manifest, read_manifest
from northwind_elt.pgtypes import Column
from northwind_elt.warehouse_layout import SNAPSHOT_DATE, partition_table


def check_loaded(cur: psycopg.Cursor, expected: Mapping[str, dict], tables: Mapping[str, str],
                 columns: Mapping[str, Sequence[Column]]) -> list[str]:
    """Digest each fresh partition (``tables[stream]``) and compare with ``expected``.

    Returns:
        The streams without a digest to check (older manifests, digests off): counted only.

    Raises:
        PartitionError: naming every table whose content differs from its extract.
    """
    unchecked, wrong = [], []
    for stream, table in sorted(tables.items()):
        wanted = Digest.from_json(expected.get(stream))
        if wanted is None:
            unchecked.append(stream)
            continue
        found = table_digest(cur, partition_table(table),
                             [warehouse_expression(c) for c in columns[stream]],
                             method=wanted.method, columns=columns[stream])
        if found != wanted:
            wrong.append(f"{stream} (loaded {found}; extracted {wanted})")
    if wrong:
        raise PartitionError("content differs from the extract's manifest, the load was rolled "
                             "back: " + "; ".join(wrong))
    return unchecked


@dataclass(frozen=True)
class Finding:
    """One table's outcome: ``ok``, ``unchecked`` (no digest), ``mismatch`` or ``drift``."""

    stream: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.stream:<28} {self.status:<10} {self.detail}"


def _manifest_columns(manifest: Manifest) -> list[Column]:
    """The columns of a manifest (names and source types) as the digest reads them."""
    result = []
    for described in manifest.columns:
        props = (manifest.schema.get("properties", {}).get(described["name"], {})
                 .get("x-sql-datatype-properties", {}))
        result.append(Column(described["name"], described["sql_type"],
                             props.get("typname", "text")))
    return result


def day_manifests(tree: DataTree, day: dt.date) -> dict[str, Manifest]:
    """The manifests of every partition the day's successful extracts committed."""
    manifests = {}
    for step in steps.PREREQUISITES[steps.LOAD_WAREHOUSE]:
        marker = steps.read_marker(tree, step, day)
        if marker is None or marker.status != steps.SUCCESS:
            raise SettingError(f"{step} has not succeeded for {day}: nothing to verify")
        for partition in vouched_partitions(tree, marker, day):
            manifests[partition.stream] = read_manifest(partition)
    return manifests


def verify_day(tree: DataTree, day: dt.date, conn: psycopg.Connection,
               source: psycopg.Connection | None = None) -> list[Finding]:
    """Compare the warehouse's partitions of ``day`` (and the live source) with the manifests."""
    findings = []
    with conn.cursor() as cur:
        loaded = warehouse.loaded_days(cur).get(day)
        if loaded is None:
            raise SettingError(f"{day} is not loaded in the warehouse: nothing to verify")
        for stream, manifest in sorted(day_manifests(tree, day).items()):
            wanted = Digest.from_json(manifest.content_digest)
            columns = _manifest_columns(manifest)
            if wanted is None:
                count = loaded.get(stream)
                status = "ok" if count == manifest.rows else "mismatch"
                findings.append(Finding(stream, "unchecked" if status == "ok" else status,
                                        f"no content digest in its manifest; rows {count} "
                                        f"loaded, {manifest.rows} extracted"))
                continue
            found = table_digest(cur, day_relation(cur, stream, day),
                                 [warehouse_expression(c) for c in columns],
                                 sql.SQL("{} = {}").format(sql.Identifier(SNAPSHOT_DATE),
                                                           sql.Literal(day)),
                                 method=wanted.method, columns=columns)
            findings.append(Finding(stream, "ok", f"{wanted}") if found == wanted else Finding(
                stream, "mismatch", f"warehouse {found}; manifest {wanted}"))
            if source is not None and manifest.source == "postgres":
                findings.append(_drift(source, stream, manifest, columns, wanted))
    conn.rollback()
    return findings


def _drift(source: psycopg.Connection, stream: str, manifest: Manifest, columns: list[Column],
           wanted: Digest) -> Finding:
    schema, _, name = stream.rpartition(".")  # manifests before provenance: the stream's name
    table = sql.SQL("{}.{}").format(
        sql.Identifier(manifest.provenance.get("schema") or schema or "public"),
        sql.Identifier(manifest.provenance.get("table") or name))
    try:
        with source.cursor() as cur:
            now = table_digest(cur, table, [source_expression(c) for c in columns],
                               method=wanted.method, columns=columns)
    except psycopg.Error as error:
        source.rollback()
        return Finding(stream, "drift", f"the source cannot be read as extracted: "
                                        f"{str(error).strip().splitlines()[0]}")
    source.rollback()
    if now == wanted:
        return Finding(stream, "same", "the live source still holds the extracted rows")
    return Finding(stream, "drift", f"the live source has {now}; extracted "
                                    f"{manifest.extracted_at}: {wanted}")
