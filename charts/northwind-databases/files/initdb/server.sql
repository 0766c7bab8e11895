-- Every database server, once after initdb, by the bootstrap superuser: nobody but the roles the
-- init SQL grants may connect to or create temporary tables in the maintenance databases (the
-- server's pg_hba.conf already admits each login role to its own database only).
-- tests/test_pg_server.py runs this very file.
REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;
