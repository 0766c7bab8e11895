"""Render the official Apache Airflow chart (../shared/airflow-chart) with our values, via real Helm.

A minimal stand-in with the same API as the one of the Airflow-chart work: tests skip with the
reason when the chart copy is absent (it cannot be downloaded on the machines that test this).
"""

from __future__ import annotations

import functools
from typing import Any

import helm
import helm_python
import pytest
import yaml

CHART_DIR = helm.ROOT.parent / "shared" / "airflow-chart"
VALUES_FILE = helm.CHARTS / "airflow" / "values.yaml"
RELEASE = "airflow"


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (_merge(merged[key], value) if isinstance(value, dict)
                       and isinstance(merged.get(key), dict) else value)
    return merged


def render_airflow(extra_values: dict | None = None) -> list[dict]:
    """Render the official chart with charts/airflow/values.yaml (plus ``extra_values``)."""
    if not (CHART_DIR / "Chart.yaml").exists():
        pytest.skip(f"the official Airflow chart copy is absent ({CHART_DIR})")
    values = _merge(helm.load_values_file(VALUES_FILE), extra_values or {})
    chart = _chart()
    chart.validate_schema(chart.merge_values(values))
    manifests = chart.render(values=values, name=RELEASE, namespace=helm.NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith("NOTES.txt"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs
