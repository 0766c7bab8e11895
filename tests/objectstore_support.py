"""What the object store's chart tests share: the chart's name and a container's env as a map."""

from __future__ import annotations

from typing import Any

#: Our chart of the in-cluster S3 store, charts/northwind-objectstore.
OBJECTSTORE = "northwind-objectstore"


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """A rendered container's env by name: the value, or the ``valueFrom`` of a reference.

    Example:
        >>> container_env({"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {}}]})
        {'A': '1', 'B': {}}
    """
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}
