"""What runs the ``northwind_daily`` DAG on this machine: ``make run``, ``make airflow``, the tests.

It lives beside the scripts, not in ``dags/``: the DAG folder is what a cluster's Airflow
mounts, and nothing here (a scheduler of its own on Airflow's private APIs, the embedded
PostgreSQL) belongs there.

Modules:
    settings: the checkout's paths and the settings of a local run (``NORTHWIND_RUNTIME=local``).
    attempts: one run of a day at a time, and a log folder per attempt.
    day_run: one DagRun driven to its end, ready tasks in parallel processes.
    task_process: the forked process of one task instance.
"""
