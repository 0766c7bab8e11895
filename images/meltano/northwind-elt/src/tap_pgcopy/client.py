"""The tap's one connection: a read-only, repeatable-read snapshot shared by every table."""

from collections.abc import Mapping
from typing import Any

import psycopg
from northwind_elt import pgconn

# Make every value's text form unambiguous and exact, whatever the server's defaults are.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}


def open_snapshot(config: Mapping[str, Any]) -> psycopg.Connection:
    """Connect to the source and start one REPEATABLE READ transaction.

    All tables are read inside it, so the extract is a consistent snapshot (foreign keys hold
    between the files of a day) even while the source is being written to.
    """
    conn = pgconn.connect(config, "source")
    for name, value in SESSION_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.commit()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return conn
