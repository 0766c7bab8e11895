r"""The history's figures (issue 24): storage, load, out-of-order load and as-of, beside raw COPY.

One table shaped like ``orders`` (key, text, dates, numeric; ``--rows`` rows) changes 1% a day
(updates 0.5%, deletes 0.25%, inserts 0.25%). Each day is loaded as target-pgcopy loads it, in
one transaction: COPY (binary) into a fresh table, swap it in as the day's partition, splice the
history (:func:`northwind_elt.history.record_day`). The same day's bytes are also COPYed into an
empty keyed table (raw COPY). Days are loaded every other date, so a day can be spliced between
two loaded days later. Printed:

* storage: ``history.<table>`` (table + index, after VACUUM) over one day's partition;
* load: COPY + swap + history over raw COPY of the same bytes, and the history part alone; also
  as the server's CPU time (its backend's, from ``/proc``, when the server runs here), which other
  work on a shared machine disturbs far less than the elapsed time;
* first day: the same for the first day, whose versions are inserted in bulk
  (:func:`northwind_elt.history.bulk_first_day`);
* out of order: a new day between the two middle loaded days over a new day after the newest
  (both rolled back: the history is unchanged between them), taking turns;
* as-of: reading ``history.<table>(day)`` whole over reading that day's partition whole, taking
  turns. The last two also as the server's CPU time.

Usage (standalone, a private server in /tmp): ``uv run python scripts/bench_history.py --rows
300000 --days 30``; ``scripts.bench`` calls :func:`history_lines` in its run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from northwind_elt import history, history_sql, localdb, warehouse
from northwind_elt.pgtypes import Column
from psycopg import sql

TABLE = "orders_history_bench"
COLUMNS = [Column("order_id", "integer", "int4"), Column("customer_id", "text"),
           Column("employee_id", "smallint", "int2"), Column("order_date", "date", "date"),
           Column("shipped", "timestamp without time zone", "timestamp"),
           Column("freight", "numeric(10,2)", "numeric", (10 << 16 | 2) + 4),
           Column("ship_name", "character varying(40)", "varchar", 44),
           Column("ship_address", "text"), Column("ship_country", "text")]
NAMES = sql.SQL(", ").join(sql.Identifier(c.name) for c in COLUMNS)
SOURCE = sql.SQL("history_bench_source")
START = dt.date(2024, 1, 1)


def build_source(conn: psycopg.Connection, rows: int) -> None:
    """The table the days are taken from."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {s}; CREATE TABLE {s} ({cols}, PRIMARY KEY "
                         "(order_id))").format(s=SOURCE, cols=sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in COLUMNS)))
    conn.execute(sql.SQL(
        "INSERT INTO {} SELECT g, 'CUST' || g %% 9000, g %% 9, DATE '2020-01-01' + g %% 1500, "
        "TIMESTAMP '2020-01-05' + g * INTERVAL '1 minute', (g %% 100000) / 100.0, "
        "'Ship ' || g %% 777, g || ' Obere Str. ' || g %% 57, 'Country ' || g %% 21 "
        "FROM generate_series(1, %s::integer) g").format(SOURCE), (rows,))
    conn.commit()


def change(conn: psycopg.Connection, rows: int, seed: int) -> None:
    """Change 1% of the rows: 0.5% updated, 0.25% deleted, 0.25% inserted."""
    step = 200
    conn.execute(sql.SQL("UPDATE {} SET freight = freight + 1, ship_name = 'moved ' || %s "
                         "WHERE order_id %% %s = %s").format(SOURCE), (seed, step, seed % step))
    conn.execute(sql.SQL("DELETE FROM {} WHERE order_id %% %s = %s").format(SOURCE),
                 (step * 2, (seed * 7 + 1) % (step * 2)))
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, 'NEW', 1, DATE '2024-01-01', NULL, 1.00, 'new', "
                         "'here', 'Country 1' FROM generate_series(%s::integer, %s::integer) g"
                         ).format(SOURCE), (rows + seed * rows // 400 + 1, rows + (seed + 1) * rows // 400))
    conn.commit()


def day_bytes(conn: psycopg.Connection) -> bytes:
    """The source's rows in COPY's binary format."""
    data = bytearray()
    with conn.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
            NAMES, SOURCE)) as copy:
        for chunk in copy:
            data += chunk
    return bytes(data)


def server_cpu(conn: psycopg.Connection) -> float:
    """CPU seconds the connection's server process has used (NaN when it runs elsewhere)."""
    try:
        fields = Path(f"/proc/{conn.info.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def raw_copy(conn: psycopg.Connection, data: bytes) -> float:
    """Seconds to COPY ``data`` into an empty keyed table (rolled back)."""
    start = time.perf_counter()
    conn.execute(sql.SQL("CREATE TABLE raw_in (LIKE {} INCLUDING ALL)").format(SOURCE))
    with conn.cursor().copy("COPY raw_in FROM STDIN (FORMAT binary, FREEZE)") as copy:
        copy.write(data)
    seconds = time.perf_counter() - start
    conn.rollback()
    return seconds


def load(conn: psycopg.Connection, day: dt.date, data: bytes, commit: bool = True
         ) -> tuple[float, float]:
    """Load ``day`` as target-pgcopy does; return (whole load, history part) in seconds."""
    start = time.perf_counter()
    with conn.cursor() as cur:
        warehouse.begin_load(cur)
        warehouse.prepare_table(cur, TABLE, COLUMNS, ["order_id"], day)
        fresh = warehouse.start_day(cur, TABLE, day)
        with cur.copy(sql.SQL("COPY snapshot_days.{} ({}) FROM STDIN (FORMAT binary, FREEZE)"
                              ).format(sql.Identifier(fresh), NAMES)) as copy:
            copy.write(data)
        warehouse.swap_in(cur, TABLE, day, fresh)
        spliced = time.perf_counter()
        history.record_day(cur, day)
        done = time.perf_counter()
        warehouse.record_load(cur, day, {TABLE: 0})
    if commit:
        conn.commit()
    else:
        conn.rollback()
    return done - start, done - spliced


def read_seconds(conn: psycopg.Connection, query: sql.Composable) -> float:
    """Seconds to read every row of ``query`` (COPY to the client)."""
    start = time.perf_counter()
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)) as copy:
        for _ in copy:
            pass
    return time.perf_counter() - start


def ratio(part: float, whole: float) -> str:
    """``1.23x``, or ``n/a`` where ``whole`` was not measured (no CPU seconds at a tiny size)."""
    return f"{part / whole:.2f}x" if whole > 0 else "n/a"


def paired(conn: psycopg.Connection, times: int, first: Callable[[], float],
           second: Callable[[], float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (elapsed, server CPU) seconds of ``first`` and ``second``, run in turns.

    Each callable returns its own elapsed seconds; taking turns lets a drift of a shared machine
    move both alike.
    """
    runs: list[list[tuple[float, float]]] = [[], []]
    for _ in range(times):
        for side, action in enumerate((first, second)):
            cpu = server_cpu(conn)
            elapsed = action()
            runs[side].append((elapsed, server_cpu(conn) - cpu))
    return tuple((statistics.median(r[0] for r in side), statistics.median(r[1] for r in side))
                 for side in runs)


def history_lines(conn: psycopg.Connection, rows: int, days: int) -> list[str]:
    """Load ``days`` days of ``rows`` rows changing 1% a day; return the printed figures."""
    build_source(conn, rows)
    loads, parts, raws, data, middle_data = [], [], [], b"", b""
    cpu_raws, cpu_loads = [], []
    for n in range(days):
        if n:
            change(conn, rows, n)
        data = day_bytes(conn)
        if n == days // 2:  # spliced in later the day before: 1% changed from its previous day
            middle_data = data
        cpu = server_cpu(conn)
        raws.append(raw_copy(conn, data))
        cpu_raws.append(server_cpu(conn) - cpu)
        whole, part = load(conn, START + dt.timedelta(days=2 * n), data)
        cpu_loads.append(server_cpu(conn) - cpu - cpu_raws[-1])
        loads.append(whole)
        parts.append(part)
    conn.autocommit = True
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(history_sql.history_table(TABLE)))
    conn.autocommit = False
    # Before the rolled-back loads below, whose dead rows are no part of the history.
    sizes = conn.execute(
        "SELECT pg_total_relation_size(%s::regclass), pg_total_relation_size(format("
        "'snapshot_days.%%I', %s::text)::regclass)",
        (f'history."{TABLE}"', warehouse.partition_name(TABLE, START))).fetchone()
    day = START + dt.timedelta(days=2 * (days // 2))
    as_of, scan = paired(conn, 5, lambda: read_seconds(conn, sql.SQL("SELECT * FROM {}({})").format(
        history_sql.history_table(TABLE), sql.Literal(day))), lambda: read_seconds(conn, sql.SQL(
            "SELECT * FROM snapshot_days.{}").format(sql.Identifier(
                warehouse.partition_name(TABLE, day)))))
    middle = START + dt.timedelta(days=2 * (days // 2) - 1)
    change(conn, rows, days)
    data = day_bytes(conn)
    in_middle, at_end = paired(conn, 3, lambda: load(conn, middle, middle_data, False)[0],
                               lambda: load(conn, START + dt.timedelta(days=2 * days), data,
                                            False)[0])
    raw, whole, part, cpu_raw, cpu_load = (statistics.median(x[1:]) for x in (
        raws, loads, parts, cpu_raws, cpu_loads))
    return [
        f"History ({days} loaded days of {rows:,} rows, 1% changed a day; medians of days 2..):",
        f"  storage: history {sizes[0] / 2**20:.1f} MB = {sizes[0] / sizes[1]:.2f}x one day's "
        f"partition ({sizes[1] / 2**20:.1f} MB); full copies: {days}x",
        f"  load: raw COPY {raw:.2f} s; load with history {whole:.2f} s = {whole / raw:.2f}x "
        f"(history part {part:.2f} s = {part / raw:.2f}x); server CPU {cpu_raw:.2f} s and "
        f"{cpu_load:.2f} s = {ratio(cpu_load, cpu_raw)}",
        f"  first day: load {loads[0]:.2f} s = {loads[0] / raws[0]:.2f}x raw COPY (history part "
        f"{parts[0]:.2f} s = {parts[0] / raws[0]:.2f}x: the table's first versions, in bulk)",
        f"  out of order: a day between loaded days {in_middle[0]:.2f} s, at the end "
        f"{at_end[0]:.2f} s = {in_middle[0] / at_end[0]:.2f}x; server CPU "
        f"{ratio(in_middle[1], at_end[1])}",
        f"  as-of: reading history.{TABLE}(day) {as_of[0]:.2f} s, the day's partition "
        f"{scan[0]:.2f} s = {as_of[0] / scan[0]:.2f}x; server CPU {ratio(as_of[1], scan[1])}",
    ]


def main() -> None:
    """Run the figures on a private server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="northwind-bench-history-", dir="/tmp"))
    workdir.chmod(0o755)
    socket_dir = localdb.start_server(workdir / "pg")
    try:
        with psycopg.connect(host=str(socket_dir), dbname="postgres",
                             user=localdb.SUPERUSER) as conn:
            print("\n".join(history_lines(conn, args.rows, args.days)))
    finally:
        localdb.stop_server(workdir / "pg")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
