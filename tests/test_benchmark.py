"""scripts/benchmark.py at a tiny scale: the scaled source, one step and its raw COPY still run.

No timing is asserted: this only keeps the script from rotting.
"""

import json
import sys

import pytest
from settings import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import benchmark  # noqa: E402


@pytest.mark.slow
def test_quick_benchmark_prints_step_and_raw_copy(meltano_project, tmp_path, capsys):
    assert benchmark.main(["--scale", "2", "--quick", "--output", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "scale 2 = " in printed
    assert "extract-postgres" in printed and "raw out (public tables)" in printed
    (result,) = tmp_path.glob("bench-*-x2.json")
    main = json.loads(result.read_text())["main"]
    assert main["rows"]["orders"] == 2 * 830 and main["rows"]["order_details"] == 2 * 2155
    assert main["rows"]["customers"] == 2 * 91
    step = main["steps"]["extract-postgres"]
    assert step["returncode"] == 0
    assert step["rows"] == sum(n for t, n in main["rows"].items() if t != "order_details")
    assert step["rss_process_mb"] > 0 and step["wall"] > 0
    assert main["raw"]["raw out (public tables)"]["rows"] == step["rows"]
