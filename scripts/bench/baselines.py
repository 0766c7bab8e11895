r"""The raw ``COPY (FORMAT binary)`` baselines each step's data part is compared with (psql ``\copy``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from northwind_elt.report import report_query
from psycopg import sql

from .measure import Measurement, measure, median_of
from .settings import RAW_IN_SCHEMA, RAW_RUNS, RUN_DATE
from .source import Server


def _copy_script(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path



def raw_copy_out(server: Server, dbname: str, tables: dict[str, str], folder: Path, rows: int,
                 name: str, runs: int = RAW_RUNS) -> Measurement:
    r"""``\copy (SELECT * FROM <table>) TO <file> (FORMAT binary)`` for every ``tables`` item.

    Args:
        server: The server.
        dbname: The database.
        tables: File stem -> schema-qualified table.
        folder: Where the binary files go.
        rows: The rows those tables hold (for rows/s).
        name: The measurement's name.
        runs: The runs, median taken.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # Table names come from the catalog; psql meta-commands take no bind parameters.
    script = _copy_script(folder / f"{name}.sql", (
        f"\\copy (SELECT * FROM {qualified}) TO '{folder / stem}.bin' WITH (FORMAT binary)"  # noqa: S608
        for stem, qualified in tables.items()))
    return median_of([measure(name, server.psql_command(dbname, script), rows,
                              folder / f"{name}.log") for _ in range(runs)])



def raw_copy_in(server: Server, dbname: str, tables: dict[str, str], folder: Path, rows: int,
                name: str, runs: int = RAW_RUNS) -> Measurement:
    r"""``\copy raw_in.<stem> FROM <file> (FORMAT binary)`` for every file, in one transaction.

    The target tables are created empty first (untimed) as ``LIKE <table> INCLUDING ALL``, so
    they have the same columns, defaults and primary keys as the source tables. The median of
    ``runs``.
    """
    script = _copy_script(folder / f"{name}.sql", (
        f"\\copy {RAW_IN_SCHEMA}.{stem} FROM '{folder / stem}.bin' WITH (FORMAT binary)"
        for stem in tables))
    found = []
    for _ in range(runs):
        with server.connect(dbname) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}").format(
                s=sql.Identifier(RAW_IN_SCHEMA)))
            for stem, qualified in tables.items():
                conn.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(RAW_IN_SCHEMA), sql.Identifier(stem), sql.SQL(qualified)))
        server.checkpoint()
        found.append(measure(name, server.psql_command(dbname, script, single_transaction=True),
                             rows, folder / f"{name}.log"))
    return median_of(found)



def raw_report_out(server: Server, warehouse: str, folder: Path, rows: int) -> Measurement:
    """The report's query as ``COPY (...) TO <file> (FORMAT binary)`` (median of RAW_RUNS)."""
    with server.connect(warehouse) as conn, conn.cursor() as cur:
        query = report_query(cur, dt.date.fromisoformat(RUN_DATE)).as_string(conn)
    script = _copy_script(folder / "raw-report.sql", [
        f"\\copy ({' '.join(query.split())}) TO '{folder / 'report'}.bin' WITH (FORMAT binary)"])
    return median_of([measure("raw report query out", server.psql_command(warehouse, script),
                              rows, folder / "raw-report.log") for _ in range(RAW_RUNS)])
