"""Where the tests find the project and its sample data: the one place for these paths."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MELTANO_PROJECT = ROOT / "images" / "meltano"
SOURCE_DUMP = ROOT / "sources" / "northwind.sql"
ORDER_DETAILS_CSV = ROOT / "sources" / "order_details.csv"
#: The database the per-test source databases are cloned from (seeded once per session).
SEEDED_TEMPLATE = "northwind_seeded"
#: Row counts of the sample source (sources/SOURCE.md).
SOURCE_ROWS = {
    "categories": 8, "customer_customer_demo": 0, "customer_demographics": 0, "customers": 91,
    "employee_territories": 49, "employees": 9, "orders": 830, "products": 77, "region": 4,
    "shippers": 6, "suppliers": 29, "territories": 53, "us_states": 51,
}
ORDER_DETAILS_ROWS = 2155
