"""Helpers of the Northwind DAG: shared names (``cluster``) and the pod defaults (``pods``).

Nothing in this package reads the environment or touches a cluster at import time, so the DAG
file parses the same way on a laptop, in CI and in the scheduler.
"""
