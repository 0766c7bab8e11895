"""One range flag per row finds an out-of-range date or timestamp beside NULLs in other columns."""

import pyarrow as pa
import pyarrow.parquet as pq
from pipeline import committed
from test_type_roundtrip import DAY, as_text, extract_and_load


def test_a_special_value_beside_a_null_is_found(databases, tmp_path):
    """NULL AND false is false: the row is flagged; NULLs alone flag nothing."""
    with databases.source(autocommit=True) as src:
        src.execute("CREATE TABLE spans (id integer PRIMARY KEY, a date, b timestamptz, c date);"
                    "INSERT INTO spans VALUES (1, NULL, 'infinity', '2024-01-01'),"
                    " (2, NULL, NULL, NULL), (3, '2024-01-02', '2024-01-02 00:00+00', NULL)")
    extract_and_load(databases, ["spans"], tmp_path)
    path = committed(databases.data_root, "postgres", "spans", DAY, "spans.parquet")
    types = {f.name: f.type for f in pq.read_schema(path)}
    assert types == {"id": pa.int32(), "a": pa.date32(), "b": pa.string(), "c": pa.date32()}
    with databases.source() as src, databases.warehouse() as wh:
        assert as_text(wh, "snapshots", "spans") == as_text(src, "public", "spans")
