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
