"""Hostile input: malformed CSV files, hostile table names and dates that are not dates.

A CSV file either loads exactly (when it is valid CSV) or fails with a message naming the file, the
line and, where one is to blame, the column, and publishes nothing. The CSV cases run tap-csvtyped and
target-datatree in this process (the messages of one fed to the other), which is what the
extract-csv step does without Meltano's 5 s start; hostile table names run the real steps.
"""

import contextlib
import datetime as dt
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from northwind_elt.errors import PartitionError, PipelineError, SettingError
from northwind_elt.layout import DataTree, new_attempt, path_segment
from pipeline import assert_ok, committed, run_step
from psycopg import sql
from settings import SOURCE_ROWS
from tap_csvtyped.tap import TapCsvTyped
from tap_datatree.tap import TapDataTree
from tap_pgcopy.tap import TapPgCopy
from target_datatree.target import TargetDataTree
from target_pgcopy.target import TargetPgCopy

DAY = "2024-01-02"

#: The declared file of these tests: a NOT NULL key, a smallint, a real and free text.
SPEC = {
    "stream": "notes",
    "key_properties": ["id"],
    "columns": [
        {"name": "id", "type": "smallint", "nullable": False},
        {"name": "qty", "type": "smallint"},
        {"name": "price", "type": "real"},
        {"name": "note", "type": "text"},
    ],
}
HEADER = b"id,qty,price,note\n"


@dataclass
class CsvExtract:
    """What one extract-csv run left: the input, the errors, the data tree."""

    source: Path
    root: Path
    tap_error: PipelineError | None
    target_error: PipelineError | None

    @property
    def files(self) -> list[str]:
        """Every file but the attempts' leases (bookkeeping of running steps)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p.is_file() and not p.name.endswith(".lease.json"))

    @property
    def marker(self) -> dict:
        return json.loads((self.root / "_status" / DAY / "extract-csv.json").read_text())

    @property
    def partition(self) -> Path:
        return committed(self.root, "csv", DAY, "notes.parquet")


def tap_config(source: Path, root: Path, **spec) -> dict:
    return {"files": [{**SPEC, "path": str(source), **spec}], "step": "extract-csv",
            "run_date": DAY, "data_root": str(root),
            "batch_config": {"encoding": {"format": "parquet"},
                             "storage": {"root": (root / ".staging").as_uri()}}}


def target_config(root: Path, day: str = DAY) -> dict:
    return {"data_root": str(root), "run_date": day, "source": "csv", "step": "extract-csv"}


def extract_csv(tmp_path: Path, content: bytes, **spec) -> CsvExtract:
    """Run tap-csvtyped on ``content``, then feed everything it wrote to target-datatree."""
    source, root = tmp_path / "input.csv", tmp_path / "data"
    source.write_bytes(content)
    messages = io.StringIO()
    tap_error = target_error = None
    with contextlib.redirect_stdout(messages):
        try:
            TapCsvTyped(config=tap_config(source, root, **spec)).sync_all()
        except PipelineError as error:
            tap_error = error
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            TargetDataTree(config=target_config(root)).listen(io.StringIO(messages.getvalue()))
        except PipelineError as error:
            target_error = error
    return CsvExtract(source, root, tap_error, target_error)


BAD_CSV = {
    "wrong header": (HEADER.replace(b"qty", b"quantity") + b"1,2,3.5,x\n",
                     "line 1: the header is ['id', 'quantity', 'price', 'note'], expected"),
    "extra column": (HEADER + b"1,2,3.5,x\n2,3,4.5,y,surplus\n",
                     "line 3: expected 4 columns (id, qty, price, note), got 5"),
    "missing column": (HEADER + b"1,2,3.5,x\n2,3,4.5\n",
                       "line 3: expected 4 columns (id, qty, price, note), got 3"),
    "non-numeric": (HEADER + b"1,2,3.5,x\n2,two,4.5,y\n",
                    "line 3, column qty: 'two' is not an integer"),
    "smallint overflow": (HEADER + b"1,32767,3.5,x\n2,32768,4.5,y\n",
                          "line 3, column qty: 32768 is out of range for smallint"),
    "smallint underflow": (HEADER + b"1,-32769,3.5,x\n",
                           "line 2, column qty: -32769 is out of range for smallint"),
    "real overflow": (HEADER + b"1,2,1e39,x\n", "line 2, column price: 1e39 is not a finite real"),
    "not a number": (HEADER + b"1,2,NaN,x\n", "line 2, column price: NaN is not a finite real"),
    "empty file": (b"", "the file is empty; expected a header line 'id,qty,price,note'"),
    "header only": (HEADER, "the file has a header but no rows (set allow_empty"),
    "invalid UTF-8": (HEADER + b"1,2,3.5,ok\n2,3,4.5,caf\xe9\n",
                      "line 3, column note: not valid UTF-8 (byte 0xe9 at character 4)"),
    "duplicate key": (HEADER + b"1,2,3.5,x\n2,2,3.5,y\n1,5,1,z\n",
                      "duplicate key (id=1) on lines 2, 4"),
    "empty NOT NULL key": (HEADER + b"1,2,3.5,x\n,3,4.5,y\n",
                           "line 3, column id: is empty, but the column is NOT NULL"),
    "trailing garbage line": (HEADER + b"1,2,3.5,x\ngarbage\n",
                              "line 3: expected 4 columns (id, qty, price, note), got 1: 'garbage'"),
    "trailing NUL bytes": (HEADER + b"1,2,3.5,x\n\x00\x00\x00\n",
                           "line 3: expected 4 columns (id, qty, price, note), got 1"),
    "garbage after a number": (HEADER + b"1,2abc,3.5,x\n",
                               "line 2, column qty: '2abc' is not an integer"),
    # The line of a record is where it starts, even after a value holding a newline.
    "bad value after a quoted newline": (HEADER + b'1,2,3.5,"two\nlines"\n2,x,4.5,y\n',
                                         "line 4, column qty: 'x' is not an integer"),
    "empty key after quoted newlines": (HEADER + b'1,2,3.5,"a\nb\nc"\n,3,4.5,y\n',
                                        "line 5, column id: is empty, but the column is NOT NULL"),
    "infinite real after a quoted newline": (HEADER + b'1,2,3.5,"a\nb"\n2,3,1e39,y\n',
                                             "line 4, column price: 1e39 is not a finite real"),
    "blank line": (HEADER + b"1,2,3.5,x\n\n2,3,4.5,y\n",
                   "line 3: expected 4 columns (id, qty, price, note), got 0"),
    # Arrow refuses what PostgreSQL would trim; its message gave a 0-based column and no line.
    "quoted newline in an integer": (HEADER + b'1,2,3.5,x\n2,"10\n",4.5,y\n',
                                     "line 3, column qty: '10\\n' is not a valid smallint"),
}


@pytest.mark.parametrize("content, message", BAD_CSV.values(), ids=BAD_CSV.keys())
def test_malformed_csv_fails_naming_line_and_column_and_publishes_nothing(tmp_path, content,
                                                                          message):
    run = extract_csv(tmp_path, content)
    assert isinstance(run.tap_error, PipelineError), run.tap_error
    assert str(run.tap_error).startswith(f"{run.source}: ")
    assert message in str(run.tap_error)
    # The target saw no completion: nothing published, only the failed marker with the tap's reason.
    assert isinstance(run.target_error, PartitionError)
    assert "nothing was published" in str(run.target_error)
    assert run.files == [f"_status/{DAY}/extract-csv.json"]
    assert run.marker["status"] == "failed"
    assert run.marker["error"] == str(run.tap_error)


LENIENT_CSV = {
    # Arrow's parser takes text after a closing quote as part of the value ("x"junk -> xjunk).
    "garbage after a closing quote": HEADER + b'1,2,3.5,"x"junk\n',
    # An unterminated quote swallows the rest of the file into one value.
    "unterminated quote": HEADER + b'1,2,3.5,"open\n2,3,4.5,y\n',
}


@pytest.mark.parametrize("content", LENIENT_CSV.values(), ids=LENIENT_CSV.keys())
def test_malformed_quoting_fails(tmp_path, content):
    run = extract_csv(tmp_path, content)
    assert run.tap_error is not None and "line 2" in str(run.tap_error)
    assert run.files == [f"_status/{DAY}/extract-csv.json"]


GOOD_CSV = {
    "byte order mark": (b"\xef\xbb\xbf" + HEADER + b"1,2,3.5,x\n", [(1, 2, 3.5, "x")]),
    "CRLF line ends": (HEADER.replace(b"\n", b"\r\n") + b"1,2,3.5,x\r\n2,,,\r\n",
                       [(1, 2, 3.5, "x"), (2, None, None, None)]),
    "quoted commas, quotes and newlines": (
        HEADER + b'1,2,3.5,"a, ""b"", c"\n2,3,4.5,"two\r\nlines"\n3,4,0.25,""\n4,5,1,\n',
        [(1, 2, 3.5, 'a, "b", c'), (2, 3, 4.5, "two\r\nlines"), (3, 4, 0.25, ""),
         (4, 5, 1.0, None)]),
    "no newline at the end": (HEADER + b"1,-32768,-0.5,z", [(1, -32768, -0.5, "z")]),
    "non-ASCII text": (HEADER + "1,32767,1.25e-1,Königlich Essen ✓\n".encode(),
                       [(1, 32767, 0.125, "Königlich Essen ✓")]),
    # Past the record-by-record reader's default field limit (128 KiB), quoted and not.
    "10 MB fields": (HEADER + b'1,2,3.5,"' + b"q" * (10 << 20) + b'"\n2,3,4.5,' + b"u" * (10 << 20)
                     + b"\n", [(1, 2, 3.5, "q" * (10 << 20)), (2, 3, 4.5, "u" * (10 << 20))]),
}


@pytest.mark.parametrize("content, rows", GOOD_CSV.values(), ids=GOOD_CSV.keys())
def test_valid_csv_loads_exactly(tmp_path, content, rows):
    run = extract_csv(tmp_path, content)
    assert run.tap_error is None and run.target_error is None
    assert run.marker["status"] == "success" and run.marker["rows"] == {"notes": len(rows)}
    table = pq.read_table(run.partition)
    assert [tuple(r.values()) for r in table.to_pylist()] == rows
    assert table.schema.field("qty").type == "int16" and table.schema.field("price").type == "float"


def test_header_only_loads_when_allowed(tmp_path):
    run = extract_csv(tmp_path, HEADER, allow_empty=True)
    assert run.tap_error is None and run.target_error is None
    assert pq.read_metadata(run.partition).num_rows == 0
    assert run.marker["rows"] == {"notes": 0}


def test_a_malformed_file_fails_the_plugins_with_a_nonzero_exit(tmp_path):
    """The real executables: a bad file stops both with a non-zero exit and the reason on stderr."""
    source, root = tmp_path / "input.csv", tmp_path / "data"
    source.write_bytes(HEADER + b"1,2,3.5,x\n2,70000,4.5,y\n")
    (tmp_path / "tap.json").write_text(json.dumps(tap_config(source, root)))
    (tmp_path / "target.json").write_text(json.dumps(target_config(root)))
    bin_dir = Path(sys.executable).parent
    tap = subprocess.Popen([bin_dir / "tap-csvtyped", "--config", tmp_path / "tap.json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = subprocess.run([bin_dir / "target-datatree", "--config", tmp_path / "target.json"],
                            stdin=tap.stdout, capture_output=True, text=True, timeout=60)
    tap.stdout.close()
    tap_stderr = tap.stderr.read().decode()
    assert tap.wait(timeout=60) != 0 and target.returncode != 0
    assert "line 3, column qty: 70000 is out of range for smallint" in tap_stderr
    assert "nothing was published" in target.stderr
    assert not (root / "csv").exists()


# --- Dates ---------------------------------------------------------------------------------------

BAD_DATES = {
    "not a real day": ("2024-02-30", "is not a real day"),
    "month 13": ("2024-13-01", "is not a real day"),
    "year 0": ("0000-01-01", "is not a real day"),
    "escapes the root": ("../../etc", "is not a date of the form YYYY-MM-DD"),
    "a date then a path": ("2024-01-02/../../../tmp", "is not a date of the form YYYY-MM-DD"),
    "absolute path": ("/etc/passwd", "is not a date of the form YYYY-MM-DD"),
    "trailing newline": ("2024-01-02\n", "is not a date of the form YYYY-MM-DD"),
    "non-ASCII digits": ("٢٠٢٤-٠١-٠٢", "is not a real day"),
    "empty": ("", "RUN_DATE is not set"),
}


@pytest.mark.parametrize("value, message", BAD_DATES.values(), ids=BAD_DATES.keys())
def test_every_plugin_refuses_a_date_that_is_not_a_day(databases, tmp_path, value, message):
    env, root = databases.env, databases.data_root
    source = {"host": env["SOURCE_PGHOST"], "port": int(env["SOURCE_PGPORT"]),
              "dbname": env["SOURCE_PGDATABASE"], "user": env["SOURCE_PGUSER"]}
    warehouse = {**source, "dbname": env["WAREHOUSE_PGDATABASE"]}
    batch = {"encoding": {"format": "parquet"},
             "storage": {"root": (root / ".staging").as_uri()}}
    step = {"run_date": value, "data_root": str(root)}
    csv_file = tmp_path / "input.csv"
    csv_file.write_bytes(HEADER + b"1,2,3.5,x\n")
    taps = [
        lambda: TapPgCopy(config={**source, **step, "step": "extract-postgres",
                                  "tables": ["region"], "batch_config": batch}),
        lambda: TapCsvTyped(config={**tap_config(csv_file, root), **step}),
        lambda: TapDataTree(config={**step, "step": "load-warehouse"}),
    ]
    for make in taps:
        with pytest.raises(SettingError, match=message), \
                contextlib.redirect_stdout(io.StringIO()):
            make().sync_all()
    targets = [
        lambda: TargetDataTree(config={**target_config(root, value), "source": "postgres",
                                       "step": "extract-postgres"}),
        lambda: TargetDataTree(config=target_config(root, value)),
        lambda: TargetPgCopy(config={**warehouse, **step}),
    ]
    for make in targets:
        with pytest.raises(SettingError, match=message):
            make()
    # Nothing was written anywhere: no folder under the data root, none outside it.
    assert not root.exists() or not any(root.rglob("*"))
    assert sorted(p.name for p in tmp_path.rglob("*") if p != root) == ["input.csv", "order_details.csv"]
    with databases.warehouse() as wh:
        assert wh.execute("SELECT to_regnamespace('snapshots')").fetchone() == (None,)


def test_a_path_segment_never_leaves_its_folder(tmp_path):
    tree = DataTree(tmp_path.resolve())
    root = tmp_path.resolve()
    for name in ["../escape", "..", ".", "a/b", "/abs", "x\x00y", 'Order "Lines"', "my table",
                 "..\\..\\win", "\u2215fake-slash", "MixedCase", "%2E%2E"]:
        partition = tree.partition("postgres", name, dt.date(2024, 1, 2), new_attempt())
        folder = partition.folder.resolve()
        day = folder.parent  # the attempt's folder lies in the day's
        assert day.parent.parent == root / "postgres" and day.name == "2024-01-02", name
        assert partition.data_file.resolve().parent == folder
        assert partition.manifest_file.resolve().parent == folder
        assert path_segment(name) not in (".", "..") and "/" not in path_segment(name)


# --- Table names ---------------------------------------------------------------------------------

HOSTILE_TABLES = ['Order "Lines"', "my table", "MixedCase", "../escape", "..", "a/b.c"]


@pytest.mark.slow
@pytest.mark.usefixtures("meltano_project")
def test_hostile_table_names_extract_to_safe_paths_and_load(databases):
    with databases.source(autocommit=True) as src:
        for name in HOSTILE_TABLES:
            table, column = sql.Identifier(name), sql.Identifier(f'Value of "{name}"')
            src.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, {} text)").format(
                table, column))
            src.execute(sql.SQL("INSERT INTO {} VALUES (1, %s), (2, NULL), (3, '')").format(table),
                        (name,))
    for step in ("extract-postgres", "extract-csv", "load-warehouse"):
        assert_ok(run_step(step, DAY, databases.env))

    root = databases.data_root.resolve()
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root), path
    assert sorted(p.name for p in root.parent.iterdir()) == ["data", "order_details.csv"]
    assert sorted(p.name for p in (root / "postgres").iterdir()) == sorted(
        path_segment(n) for n in [*SOURCE_ROWS, *HOSTILE_TABLES])
    with databases.source() as src, databases.warehouse() as wh:
        for name in HOSTILE_TABLES:
            segment = path_segment(name)
            folder = committed(root, "postgres", segment, DAY, "x").parent
            assert sorted(p.name for p in folder.iterdir()) == [f"{segment}.manifest.json",
                                                                f"{segment}.parquet"]
            assert pq.read_metadata(folder / f"{segment}.parquet").num_rows == 3
            query = sql.SQL("SELECT * FROM {}.{} ORDER BY id")
            expected = src.execute(query.format(sql.Identifier("public"), sql.Identifier(name)))
            snapshot = wh.execute(sql.SQL("SELECT * FROM {}.{} WHERE snapshot_date = %s "
                                          "ORDER BY id").format(sql.Identifier("snapshots"),
                                                                sql.Identifier(name)), (DAY,))
            assert [r[:2] for r in snapshot.fetchall()] == expected.fetchall() == [
                (1, name), (2, None), (3, "")]
            current = wh.execute(query.format(sql.Identifier("public"), sql.Identifier(name)))
            assert current.fetchall() == [(1, name), (2, None), (3, "")]
