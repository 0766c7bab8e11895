-- The source database's login role: read-only, for extract-postgres; and the tables' owner, as
-- which the seed Job loads them (the superuser logs in on the server's socket only).
-- Run once by the bootstrap superuser in the source database, right after initdb and before the
-- seed Job. psql variables: app_user, app_password, owner_user, owner_password.
-- tests/test_db_roles.py runs this very file against a real PostgreSQL.
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- Only the roles granted here may connect; nobody gets temporary tables.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app_user') \gexec
CREATE ROLE :"owner_user" LOGIN PASSWORD :'owner_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'owner_user') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_user";
GRANT USAGE, CREATE ON SCHEMA public TO :"owner_user";
-- Read every table, those there now and those the owner creates later (the seed). Read-only rests
-- on these grants alone: a session setting would be the reader's own to reset.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_user" IN SCHEMA public GRANT SELECT ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO :"app_user";
