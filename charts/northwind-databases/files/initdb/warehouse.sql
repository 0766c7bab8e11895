-- The warehouse database's login role, for load-warehouse and publish-report: it owns schema
-- snapshots, snapshot_days (partitions) and northwind (load log), and creates the views of the
-- newest day in public (northwind_elt/warehouse_layout.py).
-- Run once by the bootstrap superuser in the warehouse database, right after initdb.
-- psql variables: app_user, app_password, reader_user, reader_password. tests/test_db_roles.py runs this very file.
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- Only the role granted here may connect; nobody gets temporary tables.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app_user') \gexec
CREATE SCHEMA snapshots AUTHORIZATION :"app_user";
-- The warehouse's own objects, apart from the source's names: partitions and the load log.
CREATE SCHEMA snapshot_days AUTHORIZATION :"app_user";
CREATE SCHEMA northwind AUTHORIZATION :"app_user";
-- The change-only history of every table and its as-of functions (northwind_elt/history.py).
CREATE SCHEMA history AUTHORIZATION :"app_user";
-- public holds the views (public.<table>); the role creates them, so it owns only those.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"app_user";
-- The read-only role (publish-report, people who query the warehouse): it connects and reads
-- snapshots, the partitions, the load log and the views, those there now and those the login
-- role creates later; no writes.
CREATE ROLE :"reader_user" LOGIN PASSWORD :'reader_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'reader_user') \gexec
GRANT USAGE ON SCHEMA snapshots, snapshot_days, northwind, history, public TO :"reader_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_user"
  IN SCHEMA snapshots, snapshot_days, northwind, history, public
  GRANT SELECT ON TABLES TO :"reader_user";
-- The data checks' results (check-warehouse): northwind.check_results and the one function that
-- writes it, owned by the login role. The read-only role may run that function (it replaces one
-- day's results, nothing else) and read the table; it still changes no loaded row. The statements
-- are northwind_elt/checks_store.py's DDL, verbatim (tests/test_checks_roles.py compares them).
SET ROLE :"app_user";
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
RESET ROLE;
GRANT EXECUTE ON FUNCTION northwind.record_check_results(date, text, jsonb) TO :"reader_user";
