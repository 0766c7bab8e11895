"""Where check results live: ``northwind.check_results``, one row per day, table and check.

The check step logs in as the warehouse's read-only role (as the report does): it must not be able
to change a loaded row. It still records its results, through one function,
``northwind.record_check_results(day, attempt, results)``, which its owner (the warehouse's load
role) runs for it (``SECURITY DEFINER``): it replaces the results of that one day and can do
nothing else. The reader gets ``EXECUTE`` on it and ``SELECT`` on the table, nothing more; no
further login role or Secret is needed. In the cluster the databases chart's init SQL creates both
(``charts/northwind-databases/files/initdb/warehouse.sql`` holds :data:`DDL` verbatim: a test
compares them); elsewhere the step creates them when missing, or fails naming what is missing.
"""

import datetime as dt

import psycopg
from psycopg.types.json import Jsonb

from northwind_elt.errors import PrerequisiteError

#: The results table and the one function that writes it. search_path is pinned so the function
#: resolves nothing through a schema its caller controls.
DDL = """\
CREATE TABLE IF NOT EXISTS northwind.check_results (
  snapshot_date date NOT NULL,
  table_name text NOT NULL,
  check_name text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('error', 'warn')),
  passed boolean NOT NULL,
  observed text NOT NULL,
  expected text NOT NULL,
  attempt text NOT NULL,
  checked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (snapshot_date, table_name, check_name)
);
CREATE OR REPLACE FUNCTION northwind.record_check_results(day date, attempt text, results jsonb)
  RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  DELETE FROM northwind.check_results WHERE snapshot_date = day;
  INSERT INTO northwind.check_results
    (snapshot_date, table_name, check_name, severity, passed, observed, expected, attempt)
  SELECT day, r."table", r."check", r.severity, r.passed, r.observed, r.expected, attempt
    FROM jsonb_to_recordset(results) AS r("table" text, "check" text, severity text,
                                          passed boolean, observed text, expected text);
  SELECT count(*)::integer FROM northwind.check_results WHERE snapshot_date = day;
$$;
REVOKE ALL ON FUNCTION northwind.record_check_results(date, text, jsonb) FROM PUBLIC;
"""

_FUNCTION = "northwind.record_check_results(date,text,jsonb)"


def ensure_store(conn: psycopg.Connection) -> None:
    """Create the results table and its function when missing (a role that may; else say what).

    Raises:
        PrerequisiteError: They are missing and this role cannot create them.
    """
    (found,) = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (_FUNCTION,)).fetchone()
    if found:
        return
    try:
        with conn.transaction():
            conn.execute("CREATE SCHEMA IF NOT EXISTS northwind")
            conn.execute(DDL)
    except psycopg.errors.InsufficientPrivilege:
        raise PrerequisiteError(
            f"the warehouse has no {_FUNCTION} and role {conn.info.user} may not create it: "
            "run the check_results statements of the databases chart's init SQL "
            "(files/initdb/warehouse.sql) as the warehouse's owner") from None


def record_results(conn: psycopg.Connection, day: dt.date, attempt: str,
                   results: list[dict[str, object]]) -> int:
    """Replace ``day``'s results by ``results`` (in the caller's transaction); return the rows."""
    (rows,) = conn.execute(
        "SELECT northwind.record_check_results(%s, %s, %s)",
        (day, attempt, Jsonb(results))).fetchone()
    return rows
