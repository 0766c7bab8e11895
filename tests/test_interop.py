"""Our data-tree loader takes a stock Singer tap's RECORD messages (meltanolabs tap-postgres)."""

import json

import pyarrow.parquet as pq
import pytest
from pipeline import assert_ok, committed, run_step

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("meltano_project")]


def test_stock_tap_postgres_into_the_data_tree(databases):
    env = databases.env | {
        # The stock tap insists on a password; the local server's trust authentication ignores it.
        "SOURCE_PGPASSWORD": "ignored-by-trust-auth",
        "TAP_POSTGRES_STOCK__SELECT": json.dumps(["public-orders.*", "public-region.*"]),
    }
    result = run_step("tap-postgres-stock target-datatree-stock", "2024-01-02", env)
    assert_ok(result)
    root = databases.data_root
    orders = pq.read_table(committed(root, "postgres", "public-orders", "2024-01-02",
                                     "public-orders.parquet"))
    assert orders.num_rows == 830
    assert orders.column("ship_region").null_count == 507  # NULL stays NULL through RECORDs
    # The stock tap's schema is lossy (smallint arrives as integer); ours keeps what it is told.
    assert str(orders.schema.field("order_id").type) == "int64"
    manifest = json.loads(committed(root, "postgres", "public-region", "2024-01-02",
                                     "public-region.manifest.json").read_text())
    assert manifest["rows"] == 4 and manifest["producer"] == "stock tap"
    marker = json.loads((root / "_status" / "2024-01-02" / "extract-postgres.json").read_text())
    assert marker["status"] == "success" and marker["rows"] == {"public-orders": 830,
                                                                "public-region": 4}
