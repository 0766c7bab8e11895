"""Helpers of the Northwind DAG (``dags/northwind_daily.py``), shipped with it to the DAG folder.

Modules:
    cluster: the names shared with the Makefile and the charts (``cluster.env``) and where pods
        run (``pod-scheduling.yaml``).
    pods: the KubernetesPodOperator arguments of every step (image, command, env, Secrets, ...).
    pod_settings: what every step pod shares: its security contexts, where it runs.
    operators: ``MeltanoStepOperator``, which runs a step in a pod or, with
        ``NORTHWIND_RUNTIME=local``, as a local process.
    meltano_local: a Meltano run folder of its own for each step run locally, as each pod has.

Nothing in this package reads the environment or touches a cluster at import time, so the DAG
file parses the same way on a laptop, in CI and in the scheduler. What runs the DAG without a
cluster (``make run``) lives in ``scripts/northwind_local``, not here.
"""
