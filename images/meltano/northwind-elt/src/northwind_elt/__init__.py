"""Shared core of the Northwind pipeline: data-tree layout, types, manifests, warehouse, CLI."""

import logging

#: The one logger of the package; plugins log through the Singer SDK's own loggers.
logger = logging.getLogger("northwind")
