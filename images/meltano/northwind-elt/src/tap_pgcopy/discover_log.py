"""The log lines of the light ``--discover`` (tap_pgcopy/discover_light.py), as the SDK writes them.

Alone, the SDK logs to stderr in its console format at ``TAP_PGCOPY_LOGLEVEL``/``LOGLEVEL``. Under
Meltano, ``SINGER_SDK_LOG_CONFIG`` names the logging config Meltano wrote for the run: a console
handler whose formatter is either the SDK's JSON ``StructuredFormatter`` (which Meltano parses
back into its own log) or a plain format. The light path writes the same lines without importing
the SDK; a logging config of any other shape is not handled (the SDK then discovers).
"""

import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

#: The SDK's console format (singer_sdk.logging.DEFAULT_FORMAT).
CONSOLE_FORMAT = "{asctime:23s} | {levelname:8s} | {name:30s} | {message}"
LOG_CONFIG_VARIABLE = "SINGER_SDK_LOG_CONFIG"
STRUCTURED = {"()": "singer_sdk.logging.StructuredFormatter"}


class UnknownLogConfig(Exception):
    """A logging config the light path does not reproduce."""


class StructuredFormatter(logging.Formatter):
    """One JSON object per line, with the fields of the SDK's ``StructuredFormatter``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as the SDK's structured JSON line (no exception, no extra fields)."""
        return json.dumps({
            "level": record.levelname.lower(), "pid": record.process, "logger_name": record.name,
            "ts": record.created, "thread_name": record.threadName, "app_name": "singer-sdk",
            "stream_name": None, "message": record.getMessage(), "extra": {},
        }, default=str, separators=(",", ":"))


def meltano_log_config(level: str, formatter: dict[str, Any]) -> dict[str, Any]:
    """The logging config Meltano writes for a Singer plugin (meltano.core.plugin.singer.base)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"singer_formatter": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "singer_formatter",
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["console"], "level": level},
    }


def console_format() -> tuple[logging.Formatter, str]:
    """The formatter and level the SDK would log with in this environment.

    Raises:
        UnknownLogConfig: If ``SINGER_SDK_LOG_CONFIG`` names a config not of Meltano's shapes.
    """
    path = os.environ.get(LOG_CONFIG_VARIABLE)
    if not path:
        level = os.environ.get("TAP_PGCOPY_LOGLEVEL") or os.environ.get("LOGLEVEL") or "INFO"
        return logging.Formatter(CONSOLE_FORMAT, style="{"), level.upper()
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))  # JSON is YAML, as the SDK reads
        level = config["root"]["level"]
        formatter = config["formatters"]["singer_formatter"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnknownLogConfig(f"{path}: {error}") from None
    if config != meltano_log_config(level, formatter):
        raise UnknownLogConfig(path)
    if formatter == STRUCTURED:
        return StructuredFormatter(), level
    if list(formatter) == ["format"]:
        return logging.Formatter(formatter["format"]), level
    raise UnknownLogConfig(f"{path}: formatter {formatter}")


def held_log() -> logging.handlers.MemoryHandler:
    """Log as the SDK would, the lines held until :func:`release_log`.

    A discovery that goes to the SDK after all then logs its lines there, once.

    Raises:
        UnknownLogConfig: See :func:`console_format`.
        ValueError: If the level is not a logging level.
    """
    formatter, level = console_format()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    held = logging.handlers.MemoryHandler(sys.maxsize, logging.CRITICAL + 1, console)
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(held)
    return held


def release_log(held: logging.handlers.MemoryHandler, *, write: bool) -> None:
    """Write the held lines to stderr (or drop them) and stop holding."""
    if not write:
        held.buffer.clear()
    held.flush()
    logging.getLogger().removeHandler(held)
