-- The Airflow metadata database's login role: owner of the database (Airflow's migrations create
-- and alter its tables in public, which belongs to the database owner), never a superuser.
-- Run once by the bootstrap superuser in the metadata database, right after initdb.
-- psql variables: app_user, app_password. tests/test_db_roles.py runs this very file.
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'app_user') \gexec
-- Only the owner may connect.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
