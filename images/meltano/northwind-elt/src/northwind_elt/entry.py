"""The console scripts of our Singer plugins (``tap-pgcopy``...), as ``[project.scripts]`` names them.

Each script imports its plugin only when it runs, and turns an error the user caused (bad input,
a bad setting, an unreachable database) into one line on stderr and exit code 1: the step log then
shows the reason, not a Python traceback. Anything else is a bug and keeps its traceback.
"""

import importlib
import sys

#: Script name -> ``module:class`` of the plugin.
PLUGINS = {
    "tap-pgcopy": "tap_pgcopy.tap:TapPgCopy",
    "tap-csvtyped": "tap_csvtyped.tap:TapCsvTyped",
    "tap-datatree": "tap_datatree.tap:TapDataTree",
    "target-datatree": "target_datatree.target:TargetDataTree",
    "target-pgcopy": "target_pgcopy.target:TargetPgCopy",
}


def is_user_error(error: BaseException) -> bool:
    """Tell errors the user can fix (our own, a refused connection) from bugs."""
    from northwind_elt.errors import PipelineError, is_machine_error

    if isinstance(error, PipelineError) or is_machine_error(error):  # a full disk, a permission
        return True
    psycopg = sys.modules.get("psycopg")  # only loaded when the plugin talks to a database
    return psycopg is not None and isinstance(error, psycopg.OperationalError)


def run(script: str) -> None:
    """Run the plugin of ``script`` with the process's arguments; exit 1 with one line on a user error."""
    module_name, class_name = PLUGINS[script].split(":")
    plugin = getattr(importlib.import_module(module_name), class_name)
    try:
        plugin.cli()
    except Exception as error:
        if not is_user_error(error):
            raise
        from northwind_elt.errors import one_line

        print(f"{script}: error: {one_line(error)}", file=sys.stderr, flush=True)
        sys.exit(1)


def tap_pgcopy() -> None:
    """``tap-pgcopy``; its ``--discover`` is answered without the SDK where it can be.

    Meltano discovers before every run of the extract: see :mod:`tap_pgcopy.discover_light`.
    """
    from tap_pgcopy.discover_light import light_catalog

    from northwind_elt.errors import SettingError

    try:
        catalog = light_catalog(sys.argv[1:])
    except SettingError as error:
        print(f"tap-pgcopy: error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    if catalog is None:
        run("tap-pgcopy")
    else:
        print(catalog, flush=True)


def tap_csvtyped() -> None:
    """``tap-csvtyped``."""
    run("tap-csvtyped")


def tap_datatree() -> None:
    """``tap-datatree``."""
    run("tap-datatree")


def target_datatree() -> None:
    """``target-datatree``."""
    run("target-datatree")


def target_pgcopy() -> None:
    """``target-pgcopy``."""
    run("target-pgcopy")
