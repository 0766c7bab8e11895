"""Named points where a step can be made to kill itself, for the fault-injection tests.

``NORTHWIND_KILL_AT=<point>`` makes the step's process send itself SIGKILL when it reaches that
point, as a node losing the pod would (no cleanup runs). Unset (always, outside tests), a point
costs one dictionary lookup. The points are the publish points of the commit protocol:

* ``between-partitions``: an extract published its first partition into its attempt folder;
* ``before-commit``: every file of the attempt is in place, the commit is not written;
* ``before-swap``: a parallel load's workers committed its fresh tables, the load has not swapped
  them in;
* ``after-commit``: the commit (or the load's warehouse transaction) is done, the marker is not;
* ``between-evidence-files``: the report's CSV is in its attempt folder, the JSON is not.
"""

import os
import signal

KILL_AT_VARIABLE = "NORTHWIND_KILL_AT"
POINTS = ("between-partitions", "before-commit", "before-swap", "after-commit", "between-evidence-files")


def point(name: str) -> None:
    """SIGKILL this process if ``NORTHWIND_KILL_AT`` names this point."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
