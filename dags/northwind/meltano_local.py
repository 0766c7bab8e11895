"""A Meltano run folder of its own for each step run on this machine, as each pod has.

Meltano keeps every plugin's run files under ``.meltano/run/<plugin>/`` of its project: the
config, and the extractor's catalog (discovered, then rewritten with the ``select`` rules, at
every ``meltano run``). Two runs of one extractor at once (two days, or a rerun beside a run)
would rewrite the catalog while the other's tap reads it, or delete it when their discovery
fails. In a pod ``.meltano/run`` is the pod's own ``/tmp``; here each step gets a system folder
whose plugins and database are the project's (links) and whose ``run`` folder is its own.
"""

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

#: What Meltano writes per run: never shared.
PER_RUN = frozenset({"run", "logs"})
SYS_DIR_VARIABLE = "MELTANO_SYS_DIR_ROOT"


def run_folder_env(project: Path, env: Mapping[str, str], folder: Path) -> dict[str, str]:
    """Make ``folder`` a Meltano system folder sharing all but the run files; its environment.

    Args:
        project: the Meltano project.
        env: the process's environment (its ``MELTANO_SYS_DIR_ROOT``, if any, is the one shared).
        folder: an empty or missing folder that outlives the ``meltano`` process.
    """
    shared = Path(env.get(SYS_DIR_VARIABLE) or project / ".meltano")
    folder.mkdir(parents=True, exist_ok=True)
    if shared.is_dir():
        for entry in shared.iterdir():
            if entry.name not in PER_RUN:
                (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return {SYS_DIR_VARIABLE: str(folder)}


@contextlib.contextmanager
def own_run_folder(project: Path, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The environment of one ``meltano`` process with a run folder of its own (removed after)."""
    with tempfile.TemporaryDirectory(prefix="meltano-step-") as folder:
        yield run_folder_env(project, env, Path(folder))
