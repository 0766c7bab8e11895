"""The names of a day's steps: the one place for them.

Each is a Meltano job of ``images/meltano/meltano.yml`` and the name of the step's marker and
commit. :mod:`northwind_elt.steps` re-exports them (import them from there); they live apart so
that :mod:`northwind_elt.commits`, which ``steps`` imports, can use them too. The DAG keeps its
own copy (``dags/northwind/pods.py``: the cluster's Airflow image has no ``northwind_elt``), which
a test compares with this one.
"""

EXTRACT_POSTGRES = "extract-postgres"
EXTRACT_CSV = "extract-csv"
LOAD_WAREHOUSE = "load-warehouse"
PUBLISH_REPORT = "publish-report"

#: Every step, in the order a day runs them.
STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE, PUBLISH_REPORT)
