"""The operator of every pipeline step: a KubernetesPodOperator that can also run locally.

``NORTHWIND_RUNTIME`` picks where the step's command runs, read when the task executes (never
when the DAG is parsed):

- ``kubernetes`` (the default): a pod from the Meltano image, exactly as the
  KubernetesPodOperator does. A worker that forgets the setting still runs no step itself.
- ``local`` (set by ``make run``, ``make airflow`` and the tests): the same ``cmds + arguments``
  as a child process in the Meltano project of this checkout, with the run's ``RUN_DATE`` and the
  database and data-tree settings of the calling environment.

So the task graph, the commands and the rendered dates are the same in both modes.
"""

import collections
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

from northwind.meltano_local import own_run_folder

log = logging.getLogger(__name__)

#: Selects where steps run: ``kubernetes`` (the default) or ``local``.
RUNTIME_VARIABLE = "NORTHWIND_RUNTIME"
LOCAL, KUBERNETES = "local", "kubernetes"
RUNTIMES = (LOCAL, KUBERNETES)

#: Overrides the Meltano project a local run uses (default: ``images/meltano`` of this checkout).
PROJECT_VARIABLE = "NORTHWIND_MELTANO_PROJECT"
DEFAULT_PROJECT = Path(__file__).resolve().parents[2] / "images" / "meltano"

#: How many output lines of a failed local step the task's error message repeats.
ERROR_TAIL_LINES = 15

#: The one line a plugin or the ``northwind`` CLI prints for an error the user caused
#: (``tap-csvtyped: error: <reason>``, see ``northwind_elt.entry``), wherever Meltano's log puts it.
USER_ERROR_LINE = re.compile(r"(?:^|\s)((?:tap|target)-[\w-]+|northwind(?: \w+)?): error: (.+)$")


def runtime(environ: Mapping[str, str] = os.environ) -> str:
    """Return the selected runtime, ``kubernetes`` when unset (production needs no setting).

    Raises:
        AirflowFailException: If the variable holds anything else than a known runtime.

    Example:
        >>> runtime({}), runtime({"NORTHWIND_RUNTIME": "local"})
        ('kubernetes', 'local')
    """
    value = environ.get(RUNTIME_VARIABLE, "").strip() or KUBERNETES
    if value not in RUNTIMES:
        raise AirflowFailException(f"{RUNTIME_VARIABLE}={value!r} is not one of {', '.join(RUNTIMES)}")
    return value


def lineage_parent_env(context) -> dict[str, str]:
    """The task run as the OpenLineage parent of the step's run, when Airflow's provider is on.

    ``OPENLINEAGE_PARENT_ID`` and ``OPENLINEAGE_ROOT_PARENT_ID`` (``namespace/job/run id``, the
    provider's ``lineage_parent_id`` and ``lineage_root_parent_id`` macros; northwind_elt.lineage
    reads them). Empty while the provider is off (no ``OPENLINEAGE_*`` transport): nothing imported.
    """
    try:
        from airflow.providers.openlineage import conf
    except ImportError:  # an Airflow without the provider: no parent, nothing to say
        return {}
    try:
        if conf.is_disabled():
            return {}
        from airflow.providers.openlineage.plugins import macros

        ti = context["ti"]
        return {"OPENLINEAGE_PARENT_ID": macros.lineage_parent_id(ti),
                "OPENLINEAGE_ROOT_PARENT_ID": macros.lineage_root_parent_id(ti)}
    except Exception as error:  # noqa: BLE001 - lineage never fails the task it describes
        log.warning("no OpenLineage parent for the step: %s", error)
        return {}


#: What a step pod needs of the scheduler's OpenLineage settings to send its own events. Never a
#: key or other transport setting: those would land in the pod spec (give the pods a file instead).
FORWARDED_LINEAGE_SETTINGS = ("OPENLINEAGE_URL", "OPENLINEAGE_ENDPOINT", "OPENLINEAGE_NAMESPACE")


def forwarded_lineage_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The endpoint and namespace the step pod sends its OpenLineage events to, as Airflow's."""
    return {name: environ[name] for name in FORWARDED_LINEAGE_SETTINGS if environ.get(name)}


def meltano_project(environ: Mapping[str, str] = os.environ) -> Path:
    """Return the Meltano project a local step runs in."""
    return Path(environ.get(PROJECT_VARIABLE) or DEFAULT_PROJECT)


class MeltanoStepOperator(KubernetesPodOperator):
    """Run one Meltano step in a pod, or as a local process when ``NORTHWIND_RUNTIME=local``.

    Args:
        step: The step's name (``extract-postgres``...), used in messages.
        cluster_only_env: Names of ``env_vars`` that describe the cluster (hosts, mount paths);
            a local run takes these from its own environment instead.
        **kwargs: KubernetesPodOperator arguments, normally from ``pods.step_pod_kwargs``.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, step: str, cluster_only_env: frozenset[str] = frozenset(), **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.cluster_only_env = frozenset(cluster_only_env)
        self._process: subprocess.Popen | None = None

    def execute(self, context):
        """Run the step where ``NORTHWIND_RUNTIME`` says."""
        if parent := lineage_parent_env(context):
            parent |= forwarded_lineage_settings()  # a pod does not inherit the scheduler's env
            if isinstance(self.env_vars, dict):
                self.env_vars = {**self.env_vars, **parent}
            else:
                self.env_vars = [*(self.env_vars or []),
                                 *(k8s.V1EnvVar(name=n, value=v) for n, v in parent.items())]
        if runtime() == KUBERNETES:
            return super().execute(context)
        return self.execute_locally()

    def local_env(self) -> dict[str, str]:
        """Return the calling environment plus the rendered env of the step minus cluster names.

        A value that renders empty (an optional setting such as an unset Airflow Variable) leaves
        the calling environment's value in place.
        """
        env_vars = self.env_vars or []
        # Rendering turns a mapping into V1EnvVar objects; accept either.
        pairs = env_vars.items() if isinstance(env_vars, dict) else ((v.name, v.value) for v in env_vars)
        rendered = {
            name: value
            for name, value in pairs
            if name not in self.cluster_only_env and value not in (None, "")
        }
        env = {**os.environ, **rendered}
        # Meltano finds our plugins' executables on PATH (meltano.yml: no pip_url); they are in
        # this interpreter's venv, which may not be on PATH (see local_command).
        venv_bin = str(Path(sys.executable).parent)
        if venv_bin not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join(filter(None, [env.get("PATH"), venv_bin]))
        return env

    def local_command(self, env: dict[str, str]) -> list[str]:
        """Return ``cmds + arguments`` with the executable resolved like a shell would.

        The virtualenv of the running interpreter is searched too, so ``meltano`` is found when
        Airflow runs from a venv that is not on ``PATH``.
        """
        command = [*self.cmds, *self.arguments]
        search = os.pathsep.join([env.get("PATH", ""), str(Path(sys.executable).parent)])
        executable = shutil.which(command[0], path=search)
        if executable is None:
            raise AirflowFailException(
                f"step {self.step}: {command[0]!r} is not on PATH; run `uv sync` in the repo"
            )
        return [executable, *command[1:]]

    def execute_locally(self) -> None:
        """Run the step's command as a child process, streaming its output into the task log.

        Raises:
            AirflowFailException: If the command fails: with the one-line reason of an error the
                user caused, else with the last lines of output. A local failure is final (no retries):
                there is no pod scheduling or network between hosts to be transiently wrong.
        """
        project = meltano_project()
        if not (project / "meltano.yml").is_file():
            raise AirflowFailException(
                f"step {self.step}: no meltano.yml in {project} (set {PROJECT_VARIABLE})"
            )
        env = self.local_env()
        command = self.local_command(env)
        self.log.info("step %s: running %s in %s", self.step, " ".join(command), project)
        tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_LINES)
        reason = None
        # The project's Meltano system database is shared: `--no-state-update` keeps runs from
        # writing state or job records to it, so concurrent days never wait on each other.
        # Its own Meltano run folder, as a pod has: see northwind/meltano_local.py.
        with own_run_folder(project, env) as run_folder:
            env = {**env, **run_folder}
            self._process = subprocess.Popen(
                command,
                cwd=project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            try:
                for line in self._process.stdout:
                    line = line.rstrip()
                    tail.append(line)
                    self.log.info("%s", line)
                    # The first user error is the cause; a target's complaint about its tap follows it.
                    found = reason is None and USER_ERROR_LINE.search(line)
                    if found:
                        reason = f"{found.group(1)}: {found.group(2).strip()}"
                code = self._process.wait()
            finally:
                # A timeout or kill of the task must not leave the step running on its own.
                self._stop_process()
        if code != 0 and reason is not None:
            raise AirflowFailException(f"step {self.step} (RUN_DATE={env.get('RUN_DATE')}): {reason}")
        if code != 0:
            last = "\n".join(tail)
            raise AirflowFailException(
                f"step {self.step} failed (exit {code}) for RUN_DATE={env.get('RUN_DATE')}; "
                f"last output:\n{last}"
            )
        self.log.info("step %s succeeded for RUN_DATE=%s", self.step, env.get("RUN_DATE"))

    def _stop_process(self, grace_seconds: float = 30) -> None:
        """Stop the local step process if it still runs (kill it after a grace period); close its pipe."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def on_kill(self) -> None:
        """Stop the local process, or delete the pod."""
        if self._process is not None:
            self._stop_process()
            return
        super().on_kill()
