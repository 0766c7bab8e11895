"""Where extract-postgres's CPU goes: the tap in this process, the client's and the server's CPU.

``uv run --frozen python -m scripts.extract_cpu [--scale 1000] [--runs 3]`` builds the benchmark's
scaled source (:mod:`scripts.bench.source`) in a private server, then runs tap-pgcopy's data part
(no Meltano, no target) with each content digest method and without digests, and a raw
``COPY (FORMAT binary)`` of the same tables, printing medians of wall, client CPU (this process)
and server CPU (every backend, read from ``/proc``: live ones, and the postmaster's reaped
children). ``--compression`` also times each Parquet codec on the extract's tables, in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from scripts.bench.source import Server, build_source, public_tables

TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu(state: Path) -> float:
    """CPU seconds of the server so far: the postmaster, its live children and reaped ones."""
    postmaster = int((state / "postgres" / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for pid in [postmaster, *_children(postmaster)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15 if pid == postmaster else 13]) / TICK
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(state: Path, work: Callable[[], None]) -> tuple[float, float, float]:
    """(wall, client CPU, server CPU) seconds of ``work``."""
    server, client, started = _server_cpu(state), _client_cpu(), time.perf_counter()
    work()
    time.sleep(0.2)  # the backends' exit is counted once the postmaster reaps them
    return time.perf_counter() - started, _client_cpu() - client, _server_cpu(state) - server


def run_tap(server: Server, dbname: str, staging: Path, method: str, connections: int) -> None:
    """tap-pgcopy's sync of every public table (its messages discarded), digests per ``method``."""
    from tap_pgcopy.tap import TapPgCopy

    os.environ["NORTHWIND_CONTENT_DIGEST"] = "off" if method == "off" else "postgres"
    os.environ["NORTHWIND_DIGEST_METHOD"] = "text" if method == "off" else method
    shutil.rmtree(staging, ignore_errors=True)
    info = server.conninfo(dbname)
    config = {"host": info["host"], "dbname": dbname, "user": info["user"], "run_date": "2024-01-02",
              "data_root": str(staging / "tree"), "step": "extract-postgres",
              "connections": connections,
              "batch_config": {"encoding": {"format": "parquet"},
                               "storage": {"root": (staging / ".staging").as_uri()}}}
    with contextlib.redirect_stdout(io.StringIO()):
        TapPgCopy(config=config).sync_all()


def raw_copy(server: Server, dbname: str) -> None:
    """``COPY (FORMAT binary)`` of every public table to nowhere, on one connection."""
    with server.connect(dbname) as conn, conn.cursor() as cur:
        for table in public_tables(conn):
            with cur.copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(
                    sql.Identifier(table))) as copy:
                for _ in copy:
                    pass


def compression_table(staging: Path) -> list[str]:
    """CPU seconds to encode (and decode) the extract's files per codec and dictionary; sizes."""
    tables = [pq.read_table(p) for p in sorted(staging.rglob("*.parquet"))]
    lines = [f"{'codec':<22}{'write s':>9}{'read s':>9}{'MB':>8}"]
    for codec, level, dictionary in [
            (c, lv, d) for c, lv in [("zstd", 1), ("zstd", 3), ("snappy", None), ("lz4", None),
                                     ("none", None)] for d in (True, False)]:
        writes, reads, size = [], [], 0
        for _ in range(3):
            buffers, started = [], time.process_time()
            for table in tables:
                sink = pa.BufferOutputStream()
                pq.write_table(table, sink, compression=codec, compression_level=level,
                               use_dictionary=dictionary)
                buffers.append(sink.getvalue())
            writes.append(time.process_time() - started)
            started = time.process_time()
            for buffer in buffers:
                pq.read_table(pa.BufferReader(buffer))
            reads.append(time.process_time() - started)
            size = sum(b.size for b in buffers)
        name = codec + (f"({level})" if level else "") + ("" if dictionary else ", no dict")
        lines.append(f"{name:<22}{statistics.median(writes):>9.2f}{statistics.median(reads):>9.2f}"
                     f"{size / 1e6:>8.1f}")
    return lines


def main() -> None:
    """Build the source, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--methods", default="off,md5-64-sum/1,pghash64-chain-sum/1")
    parser.add_argument("--compression", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="extract-cpu-", dir="/tmp"))
    work.chmod(0o755)
    server = Server(work)
    try:
        build_source(server, "src", args.scale, work / "details.csv")
        server.checkpoint()
        methods = {"off": "off", "md5-64-sum/1": "text", "pghash64-chain-sum/1": "hash"}
        cases: dict[str, Callable[[], None]] = {"raw COPY (binary, 1 conn)": lambda: raw_copy(
            server, "src")}
        for method in args.methods.split(","):
            cases[f"tap, digest {method}"] = (
                lambda m=methods[method]: run_tap(server, "src", work / "x", m, args.connections))
        results = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved: a busy moment slows every case alike
            for name, case in cases.items():
                results[name].append(measure(server.state, case))
        print(f"scale {args.scale}, {args.connections} connections, medians of {args.runs}")
        print(f"{'':<40}{'wall s':>8}{'client s':>10}{'server s':>10}")
        for name, runs in results.items():
            wall, client, srv = (statistics.median(r[i] for r in runs) for i in range(3))
            print(f"{name:<40}{wall:>8.2f}{client:>10.2f}{srv:>10.2f}")
        if args.compression:
            print("\n".join(compression_table(work / "x")))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
