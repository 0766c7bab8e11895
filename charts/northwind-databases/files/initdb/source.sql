-- The source database's login role: read-only, for extract-postgres.
-- Run once by the bootstrap superuser in the source database, right after initdb and before the
-- seed Job loads the tables (as that same superuser). psql variables: app_user, app_password.
-- tests/test_db_roles.py runs this very file against a real PostgreSQL.
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- Only the roles granted here may connect; nobody gets temporary tables.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app_user') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_user";
-- Read every table, those there now and those the superuser creates later (the seed).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO :"app_user";
-- A second fence: even a grant made by mistake later cannot make its sessions write.
ALTER ROLE :"app_user" SET default_transaction_read_only = on;
