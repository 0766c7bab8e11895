"""``tap-pgcopy --config FILE --discover`` without the Singer SDK: the same catalog, sooner.

Meltano runs a discovery before every ``meltano run`` of the extract (its ``select`` rules are
applied to the discovered catalog), in a process of its own; a pod and a local step start from an
empty run folder, so no cached catalog is ever reused. Importing the SDK and the tap's data path
is most of that process's cost. This module answers the discovery with psycopg and the tap's own
catalog code (:func:`tap_pgcopy.catalog.discover_configured`) and prints the catalog the SDK would,
byte for byte (``tests/test_discover_light.py`` compares both on odd sources).

Whatever it does not handle goes to the SDK tap, which then answers as before: other arguments,
settings that are not the tap's own, a logging config Meltano did not write, and any failure (the
SDK path then fails the same way and records the step's failure, as it always did).
``NORTHWIND_DISCOVER=sdk`` sends every discovery to the SDK.
"""

import decimal
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from northwind_elt import pgconn
from northwind_elt.errors import SettingError
from northwind_elt.run_date import parse_run_date

from tap_pgcopy.catalog import Table, discover_configured
from tap_pgcopy.discover_log import UnknownLogConfig, held_log, release_log

#: ``sdk`` sends ``--discover`` to the SDK tap; unset or ``light``: this module answers it.
DISCOVER_VARIABLE = "NORTHWIND_DISCOVER"
DISCOVER_MODES = ("light", "sdk")

#: The settings of tap-pgcopy (meltano.yml); a config with any other key goes to the SDK.
KNOWN_SETTINGS = frozenset({
    "host", "port", "dbname", "user", "password", "schemas", "tables", "relation_kinds",
    "enable_row_security", "connections", "range_pages", "reextract", "step", "run_date",
    "data_root", "batch_config",
})

#: The order the SDK's ``Schema.to_dict`` writes a column property's keys in (its STANDARD_KEYS);
#: a property with any other key goes to the SDK.
PROPERTY_KEYS = ("format", "type", "x-sql-datatype", "x-sql-datatype-properties")

#: The tap's logger name (the SDK's).
TAP_NAME = "tap-pgcopy"

#: What the SDK tap prints for a day whose succeeded extract is kept (step_tap.BatchTap).
KEPT_CATALOG = json.dumps({"streams": []})


class NotHandled(Exception):
    """The light path does not answer this call: the SDK tap does."""


def discover_mode() -> str:
    """``light`` or ``sdk``, from :data:`DISCOVER_VARIABLE`.

    Raises:
        SettingError: Naming the variable, if its value is neither.
    """
    mode = os.environ.get(DISCOVER_VARIABLE) or "light"
    if mode not in DISCOVER_MODES:
        raise SettingError(f"{DISCOVER_VARIABLE}={mode!r}: expected one of "
                           f"{', '.join(DISCOVER_MODES)}")
    return mode


def config_files(arguments: Sequence[str]) -> list[str]:
    """The config files of ``--config F [--config G ...] --discover``, in order.

    Raises:
        NotHandled: For any other arguments (``--config ENV``, ``--catalog``, ``--about``...).
    """
    files, discover, rest = [], 0, list(arguments)
    while rest:
        argument = rest.pop(0)
        if argument == "--discover":
            discover += 1
        elif argument == "--config" and rest:
            files.append(rest.pop(0))
        elif argument.startswith("--config="):
            files.append(argument.removeprefix("--config="))
        else:
            raise NotHandled(argument)
    if discover != 1 or not files or "ENV" in files:
        raise NotHandled("not a plain --config ... --discover")
    return files


def read_config(files: Sequence[str]) -> dict[str, Any]:
    """The files' settings merged, later files winning, as the SDK reads them.

    Raises:
        NotHandled: If a file cannot be read as a JSON object, or a setting is not the tap's own.
    """
    config: dict[str, Any] = {}
    for name in files:
        try:
            settings = json.loads(Path(name).read_text(encoding="utf-8"),
                                  parse_float=decimal.Decimal)
        except (OSError, ValueError):  # missing, unreadable, not JSON: the SDK says which
            raise NotHandled(f"config file {name!r}") from None
        if not isinstance(settings, dict):
            raise NotHandled(f"config file {name!r}")
        config |= settings
    unknown = set(config) - KNOWN_SETTINGS
    if unknown:
        raise NotHandled(f"settings {sorted(unknown)}")
    return config


def kept(config: Mapping[str, Any], logger: logging.Logger) -> bool:
    """Whether the day's succeeded extract is kept, as ``BatchTap.kept`` decides at discovery.

    A setting that names no valid day or flag means "not kept" there too (the run then fails
    on it later, with the SDK).
    """
    if not config.get("step"):
        return False
    try:
        day = parse_run_date(config.get("run_date"))
    except SettingError:
        return False
    # Imported only for a day: the data tree's modules load Arrow's file systems.
    from northwind_elt import steps
    from northwind_elt.layout import DataTree

    try:
        tree = DataTree.from_setting(config.get("data_root"))
        reextract = steps.parse_flag(config.get("reextract"), "reextract")
    except SettingError:
        return False
    marker = steps.kept_extract(tree, config["step"], day, reextract=reextract)
    if marker is None:
        return False
    logger.info(steps.kept_message(marker))
    return True


def catalog_entry(table: Table) -> dict[str, Any]:
    """The SDK's catalog entry of a :class:`tap_pgcopy.catalog.Table`'s stream, key for key.

    Raises:
        NotHandled: If a column's property holds a key whose place the SDK's order does not say.
    """
    keys = list(table.primary_key)
    properties = {}
    for column in table.columns:
        schema = column.json_schema()
        if set(schema) - set(PROPERTY_KEYS):
            raise NotHandled(f"column {column.name!r}: property keys {sorted(schema)}")
        properties[column.name] = {key: schema[key] for key in PROPERTY_KEYS if key in schema}
    metadata = [{"breadcrumb": ["properties", column.name],
                 "metadata": {"inclusion": "automatic" if column.name in keys else "available"}}
                for column in table.columns]
    metadata.append({"breadcrumb": [], "metadata": {
        "inclusion": "available", "selected": True, "selected-by-default": True,
        "table-key-properties": keys}})
    return {"tap_stream_id": table.stream_name, "replication_method": "FULL_TABLE",
            "key_properties": keys, "schema": {"properties": properties, "type": "object"},
            "stream": table.stream_name, "metadata": metadata}


def catalog_text(config: Mapping[str, Any], logger: logging.Logger) -> str:
    """The catalog the SDK tap prints for ``config`` (without its final newline)."""
    if kept(config, logger):
        return KEPT_CATALOG
    with pgconn.connect(config, "source") as conn:
        # One read-only transaction, as the tap's catalog connection (client.open_snapshot).
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        tables, _ = discover_configured(conn, config, logger)
    streams = [catalog_entry(table) for table in tables]
    # The SDK's dump_json: indent 2, no space after ':' or ','.
    return json.dumps({"streams": streams}, indent=2, separators=(",", ":"))


def light_catalog(arguments: Sequence[str]) -> str | None:
    """The catalog to print for ``tap-pgcopy <arguments>``, or None when the SDK tap must answer.

    Raises:
        SettingError: If :data:`DISCOVER_VARIABLE` holds an unknown value.
    """
    if discover_mode() == "sdk":
        return None
    try:
        config = read_config(config_files(arguments))
    except NotHandled:
        return None
    try:
        held = held_log()
    except (UnknownLogConfig, ValueError):  # ValueError: an unknown log level (the SDK says so)
        return None
    try:
        text = catalog_text(config, logging.getLogger(TAP_NAME))
    except Exception:  # noqa: BLE001 (the SDK path fails alike, and records the failure)
        release_log(held, write=False)
        return None
    release_log(held, write=True)
    return text
