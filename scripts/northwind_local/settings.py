"""The checkout's paths and the settings every local run of the DAG shares.

``make run`` (``scripts/run_local.py``) and ``make airflow`` (``scripts/airflow_local.py``) start
from :func:`local_environment`; the tests from :data:`LOCAL_RUNTIME`. The DAG's default runtime is
``kubernetes`` (a worker without the setting starts pods), so every local run sets it here.
"""

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPOSITORY / "dags"
DAG_ID = "northwind_daily"
#: Steps run as processes of this machine (``dags/northwind/operators.py`` reads it).
LOCAL_RUNTIME = {"NORTHWIND_RUNTIME": "local"}


def state_dir() -> Path:
    """The folder of this checkout's local state: ``NORTHWIND_LOCAL_DIR``, else ``.local``."""
    return Path(os.environ.get("NORTHWIND_LOCAL_DIR") or REPOSITORY / ".local").resolve()


def airflow_settings(state: Path) -> dict[str, str]:
    """Airflow's settings for a run: private to this checkout, never taken from the shell."""
    return {
        **LOCAL_RUNTIME,
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{state / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def local_environment(state: Path) -> dict[str, str]:
    """Start or reuse the embedded PostgreSQL; return every setting the run needs.

    Settings already in the environment win for the data tree and the CSV, so
    ``NORTHWIND_DATA_ROOT=/tmp/x make run`` works; the runtime and Airflow's home are fixed.
    """
    from northwind_elt.localdb import ensure_local_databases

    databases = ensure_local_databases(state, REPOSITORY / "sources" / "northwind.sql")
    return {
        "NORTHWIND_DATA_ROOT": os.environ.get("NORTHWIND_DATA_ROOT") or str(REPOSITORY / "data"),
        "ORDER_DETAILS_CSV": os.environ.get("ORDER_DETAILS_CSV")
        or str(REPOSITORY / "sources" / "order_details.csv"),
        **databases,
        **airflow_settings(state),
    }
