"""Render the official Apache Airflow chart with charts/airflow/values.yaml through real Helm.

`make up` installs the released chart from the Airflow Helm repository, which these machines
cannot reach; ``../shared/airflow-chart`` beside the checkout is a copy of that chart for tests
(never copied into this repository). Tests that use it skip, with the reason, when it is absent;
under ``CI=true`` that skip is a failure (tests/skip_guard.py): CI must render the real chart.
The chart's bundled PostgreSQL (a Bitnami subchart, not in the copy) stays disabled, as in
our values.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import helm
import helm_python
import pytest
import yaml
from test_names_in_step import cluster_env

#: The official chart copy (its Chart.yaml says 1.22.0, the version mk/cluster.mk installs).
AIRFLOW_CHART = helm.ROOT.parent / "shared" / "airflow-chart"
#: Our values for it, as `make up` passes them with -f.
AIRFLOW_VALUES = helm.CHARTS / "airflow" / "values.yaml"
#: The one lint finding the chart copy cannot avoid: its PostgreSQL subchart is not included.
MISSING_SUBCHART = "chart directory is missing these dependencies: postgresql"


def release() -> str:
    """The Airflow release name `make up` installs (AIRFLOW_RELEASE in cluster.env)."""
    return cluster_env()["AIRFLOW_RELEASE"]


def namespace() -> str:
    """The namespace `make up` installs into (NAMESPACE in cluster.env)."""
    return cluster_env()["NAMESPACE"]


def require_chart() -> None:
    """Skip the calling test when the official chart copy is not beside the checkout."""
    if not (AIRFLOW_CHART / "Chart.yaml").is_file():
        pytest.skip(f"official Airflow chart copy not found at {AIRFLOW_CHART}: put the chart/ folder "
                    "of the Apache Airflow repository (the chart `make up` installs) there")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``, maps recursively, like Helm merges -f files.

    Example:
        >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": [4]})
        {'a': {'b': 1, 'c': 3}, 'd': [4]}
    """
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def airflow_values(extra_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """charts/airflow/values.yaml with ``extra_values`` deep-merged over it.

    The bundled PostgreSQL stays off whatever ``extra_values`` say: its subchart is not in the copy.
    """
    merged = deep_merge(helm.load_values_file(AIRFLOW_VALUES), extra_values or {})
    return deep_merge(merged, {"postgresql": {"enabled": False}})


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(AIRFLOW_CHART)


def _render(extra_values: dict[str, Any] | None) -> dict[str, str]:
    require_chart()
    values = airflow_values(extra_values)
    # `helm install` checks values.schema.json before rendering; so does this.
    _chart().validate_schema(_chart().merge_values(values))
    return _chart().render(values=values, name=release(), namespace=namespace(), is_install=True)


def render_airflow(extra_values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the official chart like `helm template` with our values (NOTES.txt excluded).

    Args:
        extra_values: Values deep-merged over charts/airflow/values.yaml, as a second -f file.

    Returns:
        Every rendered object, in template path order.
    """
    docs: list[dict[str, Any]] = []
    for path, text in sorted(_render(extra_values).items()):
        if not path.endswith("NOTES.txt"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def airflow_notes(extra_values: dict[str, Any] | None = None) -> str:
    """The NOTES.txt the chart prints after `helm upgrade --install` with our values."""
    return next(text for path, text in _render(extra_values).items() if path.endswith("NOTES.txt"))


def lint_airflow(extra_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `helm lint --strict` (with the chart's values.schema.json) on the chart copy."""
    require_chart()
    return helm_python.lint(
        AIRFLOW_CHART,
        airflow_values(extra_values),
        strict=True,
        namespace=namespace(),
        kube_version=f"v{helm.KUBE_VERSION}",
    )
