"""The examples in our docstrings run (Google-style ``Example:`` sections are doctests)."""

import doctest
import importlib
import pkgutil

import northwind_elt
import pytest

MODULES = sorted(m.name for m in pkgutil.iter_modules(northwind_elt.__path__, "northwind_elt."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_examples_exist():
    counts = [doctest.testmod(importlib.import_module(n)).attempted for n in MODULES]
    assert sum(counts) >= 6
