"""The DAG's `date` param admits only a plain YYYY-MM-DD: its raw value becomes a pod label."""

import dag_support  # noqa: I001 - first: it points Airflow at a private home before the import

import pytest
from airflow.sdk.definitions.param import ParamValidationError

# pathspec, as Airflow calls it for .airflowignore; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


@pytest.fixture(scope="module")
def param():
    return dag_support.load_dag().params.get_param("date")


@pytest.mark.parametrize("value", ["2024-01-02", "1996-07-04", "2024-12-31", "2024-02-29", None])
def test_plain_dates_are_accepted(param, value):
    assert param.resolve(value) == value


@pytest.mark.parametrize("value", [
    "2024-01-02\n",  # a final newline: Python's $ matches before it
    "２０２４-01-02",  # fullwidth digits: \d matches them
    "٢٠٢٤-٠١-٠٢",  # Arabic-Indic digits
    "2024-13-45", "2024-00-10", "2024-01-00", "2024-1-2", "24-01-02", "2024-01-02T00:00",
    "../x", "",
])
def test_anything_else_is_refused(param, value):
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_the_trigger_form_keeps_a_text_field(param):
    """No ``format: date``: Airflow's UI would render a locale date picker the user cannot type into."""
    assert "format" not in param.schema
