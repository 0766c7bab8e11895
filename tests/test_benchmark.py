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


def measured(name: str, wall: float, store_cpu: float | None = None) -> benchmark.Measurement:
    return benchmark.Measurement(name, 1000, wall, 100.0, 200.0, "python", 0, "log",
                                 store_cpu=store_cpu)


def test_s3_lines_judge_the_measured_ratio_and_show_the_store_share_apart(monkeypatch):
    monkeypatch.setattr(benchmark.os, "cpu_count", lambda: 2)
    step = "publish-report"
    main = benchmark.ScaleResult(1000, {}, 0.0, {step: measured(step, 9.0)}, {},
                                 s3_steps={step: measured(step, 18.0, store_cpu=14.0)})
    start = {step: measured(step, 2.0)}

    lines = benchmark.s3_lines(main, start, start)

    verdict = next(line for line in lines if "S3/file system data part" in line)
    assert "16.00 / 7.00 s = 2.29x" in verdict and "store CPU 14.0 s" in verdict
    assert "MISSES" in verdict  # the verdict is the measured ratio, store included
    derived = lines[lines.index(verdict) + 1]
    assert "store's CPU over the 2 cores 7.00 s; the rest 9.00 s = 1.29x (derived)" in derived
