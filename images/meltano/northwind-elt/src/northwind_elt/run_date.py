"""Parse the logical date that names every path of a run (never the wall clock)."""

import datetime as dt
import re

from northwind_elt.errors import SettingError

#: The one environment variable that carries a step's logical date.
RUN_DATE_VARIABLE = "RUN_DATE"

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_run_date(value: str | None, setting: str = RUN_DATE_VARIABLE) -> dt.date:
    """Return the date in ``value`` or raise an error that names the setting.

    Only ``YYYY-MM-DD`` is accepted, so a value can never smuggle a path segment.

    Args:
        value: The raw text, e.g. the value of ``RUN_DATE``.
        setting: The name of the setting, used in the error message.

    Returns:
        The date.

    Raises:
        SettingError: If ``value`` is empty, not ``YYYY-MM-DD`` or not a real day.

    Example:
        >>> parse_run_date("2024-01-02")
        datetime.date(2024, 1, 2)
        >>> parse_run_date("2024-02-30")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        northwind_elt.errors.SettingError: RUN_DATE='2024-02-30' is not a real day: ...
    """
    if not value:
        raise SettingError(f"{setting} is not set: pass the logical date as YYYY-MM-DD")
    if not _ISO_DAY.fullmatch(value):
        raise SettingError(f"{setting}={value!r} is not a date of the form YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as error:
        raise SettingError(f"{setting}={value!r} is not a real day: {error}") from None
