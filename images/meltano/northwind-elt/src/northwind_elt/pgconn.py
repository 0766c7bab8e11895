"""Open PostgreSQL connections from plugin settings, with errors that name the database, not secrets."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from northwind_elt.errors import InputError, ServerError, SettingError


def __getattr__(name: str) -> Any:
    """``CONNECTION_PROPERTIES``: the connection settings of a plugin, as SDK properties.

    Built on first use: importing the Singer SDK costs a process about 0.2 s, which what only
    connects (``tap-pgcopy --discover``, ``northwind report``) does not pay.
    """
    if name != "CONNECTION_PROPERTIES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from singer_sdk import typing as th

    # Each plugin's meltano.yml maps them to SOURCE_PG* or WAREHOUSE_PG*.
    return (
        th.Property("host", th.StringType, required=True,
                    description="Server host name, or the folder of its Unix socket"),
        th.Property("port", th.IntegerType, default=5432, description="Server port"),
        th.Property("dbname", th.StringType, required=True, description="Database name"),
        th.Property("user", th.StringType, required=True, description="User name"),
        th.Property("password", th.StringType, secret=True, description="Password"),
    )


#: Plugin settings of a connection, in the order errors list them.
CONNECTION_SETTINGS = ("host", "port", "dbname", "user", "password")

#: Environment variables behind the settings, per database (see images/meltano/meltano.yml).
ENV_PREFIXES = {"source": "SOURCE_PG", "warehouse": "WAREHOUSE_PG"}


def password_from_file(role: str) -> str | None:
    """The password in the file ``<prefix>PASSWORD_FILE`` names (a mounted Secret), if set.

    The cluster's step pods get their password as a file, never as an environment variable.

    Raises:
        SettingError: Naming the variable and the file, if it cannot be read.
    """
    variable = f"{ENV_PREFIXES.get(role, '')}PASSWORD_FILE"
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")
    except OSError as error:
        raise SettingError(f"{variable}={path}: {error.strerror}") from None


def connection_kwargs(config: Mapping[str, Any], role: str) -> dict[str, Any]:
    """Return libpq keyword arguments from plugin ``config``; ``role`` names the database in errors.

    ``host`` may be a folder, for a server listening on a Unix socket (the embedded one does).
    """
    missing = [key for key in ("host", "dbname", "user") if not config.get(key)]
    if missing:
        prefix = ENV_PREFIXES.get(role, "")
        names = ", ".join(f"{key} ({prefix}{key.upper().replace('DBNAME', 'DATABASE')})"
                          for key in missing)
        raise SettingError(f"the {role} database settings are incomplete: {names} not set")
    kwargs = {key: config[key] for key in CONNECTION_SETTINGS if config.get(key) not in (None, "")}
    if "password" not in kwargs and (password := password_from_file(role)):
        kwargs["password"] = password
    kwargs["port"] = int(kwargs.get("port", 5432))
    kwargs["application_name"] = f"northwind-{role}"
    # Every byte this project hands over or writes is UTF-8 (Arrow strings, CSV, JSON): the server
    # converts from and to its database's encoding, or says which character it cannot.
    kwargs["client_encoding"] = "UTF8"
    kwargs["connect_timeout"] = int(config.get("connect_timeout") or 10)
    return kwargs


def describe(kwargs: Mapping[str, Any]) -> str:
    """Say where a connection goes, without the password."""
    return f"{kwargs.get('user')}@{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('dbname')}"


#: The databases this process connected to (role -> :func:`describe`), the latest last, to name
#: the one a failure came from: a psycopg error mid-query does not say which connection raised it.
#: Each step talks to one database (the extract to the source, the load and report to the warehouse).
CONNECTED: dict[str, str] = {}

#: Signs in a client library's message that the connection itself is gone, not just a statement.
_LOST = ("server closed the connection", "consuming input failed", "terminating connection",
         "connection is lost", "the connection is closed", "no connection to the server",
         "could not receive data", "could not send data", "connection to server")


def connect(config: Mapping[str, Any], role: str, **extra: Any) -> psycopg.Connection:
    """Connect to the ``role`` database, or raise a SettingError saying where and why not."""
    kwargs = connection_kwargs(config, role)
    try:
        conn = psycopg.connect(**kwargs, **extra)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise SettingError(f"cannot connect to the {role} database {describe(kwargs)}: {reason}") \
            from None
    CONNECTED.pop(role, None)
    CONNECTED[role] = describe(kwargs)
    return conn


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the server or the network dropped the connection (any driver)."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return True
    text = str(error).lower()
    return any(sign in text for sign in _LOST)


def server_failure(error: BaseException, role: str | None = None, doing: str = "") -> str:
    """One line for a database failure: which database (role and address), what, and why.

    Args:
        error: The driver's error (psycopg, or ADBC's for the extract's data path).
        role: ``source`` or ``warehouse``; by default the database this process connected to last.
        doing: What the step was doing (``reading table public.orders``), if known.
    """
    if role is None:
        role = next(reversed(CONNECTED), "?")
    where = CONNECTED.get(role, "")
    what = "connection lost" if connection_lost(error) else "failed"
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    during = f" while {doing}" if doing else ""
    return " ".join(f"the {role} database {where}: {what}{during}: {reason}".split())


def read_failure(error: BaseException, where: str, role: str = "source") -> InputError | ServerError:
    """What to raise for a failed read of ``where`` (a table): the server's fault or the data's."""
    if connection_lost(error):
        return ServerError(server_failure(error, role, f"reading {where}"))
    lines = str(error).strip().splitlines()
    return InputError(f"{where}: {lines[0] if lines else type(error).__name__}")
