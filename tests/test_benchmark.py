"""The benchmark package (scripts/bench): a tiny run still works, and its output is judged right.

No timing is asserted for the run: it only keeps the benchmark from rotting. The output functions
are pure: constructed figures in, lines out.
"""

import json

import pytest
from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT

from scripts.bench import goals, output, run, scaling, table
from scripts.bench.measure import Measurement, ScaleResult
from scripts.bench.settings import BASELINE_OF, RERUN


@pytest.mark.slow
def test_quick_benchmark_prints_step_and_raw_copy(meltano_project, tmp_path, capsys):
    assert run.main(["--scale", "2", "--quick", "--output", str(tmp_path)]) == 0

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


def measured(name: str, wall: float, store_cpu: float | None = None, rss: float = 100.0,
             rows: int = 1000, returncode: int = 0) -> Measurement:
    return Measurement(name, rows, wall, rss, 200.0, "python", returncode, "log",
                       store_cpu=store_cpu)


def test_s3_lines_judge_the_measured_ratio_and_show_the_store_share_apart(monkeypatch):
    monkeypatch.setattr(goals.os, "cpu_count", lambda: 2)
    step = "publish-report"
    main = ScaleResult(1000, {}, 0.0, {step: measured(step, 9.0)}, {},
                       s3_steps={step: measured(step, 18.0, store_cpu=14.0)})
    start = {step: measured(step, 2.0)}

    lines = goals.s3_lines(main, start, start)

    verdict = next(line for line in lines if "S3/file system data part" in line)
    assert "16.00 / 7.00 s = 2.29x" in verdict and "store CPU 14.0 s" in verdict
    assert "MISSES" in verdict  # the verdict is the measured ratio, store included
    derived = lines[lines.index(verdict) + 1]
    assert "store's CPU over the 2 cores 7.00 s; the rest 9.00 s = 1.29x (derived)" in derived


def test_step_line_shows_the_data_part_its_rate_and_its_ratio_to_the_raw_copy():
    line = table.step_line(LOAD_WAREHOUSE, measured(LOAD_WAREHOUSE, 7.0, rows=30_000),
                           measured("start", 2.0), measured("raw", 2.5))
    cells = line.split()
    # rows, wall, start-up, data part, rows/s of the data part, RSS, tree RSS, data/raw
    assert cells == [LOAD_WAREHOUSE, "30,000", "7.00", "2.00", "5.00", "6,000", "100", "200", "2.0x"]
    failed = table.step_line(LOAD_WAREHOUSE, measured(LOAD_WAREHOUSE, 1.0, returncode=3), None, None)
    assert "FAILED (exit 3, log)" in failed and failed.split()[3:5] == ["-", "-"]


def test_goal_lines_judge_ratio_and_memory_of_each_extract_and_the_load():
    main = ScaleResult(1, {}, 0.0, {
        EXTRACT_POSTGRES: measured(EXTRACT_POSTGRES, 8.0),  # (8 - 2) / 2 = 3.0x: meets
        EXTRACT_CSV: measured(EXTRACT_CSV, 8.1),  # 3.05x: misses
        LOAD_WAREHOUSE: measured(LOAD_WAREHOUSE, 4.0, rss=400.0),  # 1.0x but 400 MB: misses
    }, {BASELINE_OF[s]: measured("raw", 2.0) for s in (EXTRACT_POSTGRES, EXTRACT_CSV,
                                                          LOAD_WAREHOUSE)})
    start = {s: measured(s, 2.0) for s in (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE)}

    lines = goals.goal_lines(main, start)

    assert [line.split()[:3] for line in lines] == [
        ["#2,5", EXTRACT_POSTGRES, "meets"], ["#2,5", EXTRACT_CSV, "MISSES"],
        ["#2,5", LOAD_WAREHOUSE, "MISSES"]]
    assert "(3.0x, 100 MB)" in lines[0] and "(1.0x, 400 MB)" in lines[2]


def test_issue26_lines_judge_data_parts_under_raw_copy_start_ups_and_memory():
    steps = (EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT)
    raws = {BASELINE_OF[s]: measured(BASELINE_OF[s], 4.0) for s in steps}
    meets = ScaleResult(1000, {}, 0.0, {
        EXTRACT_POSTGRES: measured(EXTRACT_POSTGRES, 5.0),  # (5 - 1.4) / 4 = 0.90x < 1.0x
        LOAD_WAREHOUSE: measured(LOAD_WAREHOUSE, 5.3, rss=399.0),  # 0.975x
        PUBLISH_REPORT: measured(PUBLISH_REPORT, 7.4),  # 6.0 / 4 = 1.5x: <= 1.5x meets
    }, raws)
    start = {s: measured(s, 1.4) for s in steps}

    lines = goals.issue26_lines(meets, start)

    assert all(line.startswith("  #26 ") for line in lines) and len(lines) == 5
    assert "0.90x (3.60 s / 4.00 s): meets the goal < 1.0x" in lines[0]
    assert "0.97x (3.90 s / 4.00 s): meets the goal < 1.0x" in lines[1]
    assert "1.50x (6.00 s / 4.00 s): meets the goal <= 1.5x" in lines[2]
    assert lines[3].endswith("publish-report 1.40 s: meets")
    assert "largest 399 MB (python, load-warehouse): meets" in lines[4]

    misses = ScaleResult(1000, {}, 0.0, {
        EXTRACT_POSTGRES: measured(EXTRACT_POSTGRES, 5.5),  # exactly 1.0x: not under raw COPY
        LOAD_WAREHOUSE: measured(LOAD_WAREHOUSE, 9.6),  # 2.0x
        PUBLISH_REPORT: measured(PUBLISH_REPORT, 7.9, rss=400.0),  # 1.6x, 400 MB
    }, raws)
    start = {s: measured(s, 1.5) for s in steps} | {LOAD_WAREHOUSE: measured(LOAD_WAREHOUSE, 1.6)}

    lines = goals.issue26_lines(misses, start)

    assert "1.00x (4.00 s / 4.00 s): MISSES the goal < 1.0x" in lines[0]
    assert "2.00x (8.00 s / 4.00 s): MISSES the goal < 1.0x" in lines[1]
    assert "1.60x (6.40 s / 4.00 s): MISSES the goal <= 1.5x" in lines[2]
    assert lines[3].endswith(": MISSES (load-warehouse)")
    assert "largest 400 MB (python, publish-report): MISSES" in lines[4]


def test_warehouse_goals_compare_the_rerun_with_the_first_load_both_without_start_up():
    main = ScaleResult(1, {}, 0.0, {
        LOAD_WAREHOUSE: measured(LOAD_WAREHOUSE, 12.0), RERUN: measured(RERUN, 13.0),
        PUBLISH_REPORT: measured(PUBLISH_REPORT, 5.0),
    }, {BASELINE_OF[LOAD_WAREHOUSE]: measured("raw in", 8.0),
        BASELINE_OF[PUBLISH_REPORT]: measured("raw report", 1.0)})
    start = {LOAD_WAREHOUSE: measured("s", 2.0), PUBLISH_REPORT: measured("s", 2.0)}

    lines = goals.warehouse_goal_lines(main, start)

    assert "1.25x (10.00 s / 8.00 s): meets the goal <= 1.5x" in lines[0]
    assert "1.10x (11.00 s / 10.00 s): meets the goal <= 1.1x" in lines[1]  # the rerun's start-up too
    assert "3.00x (3.00 s / 1.00 s): MISSES the goal <= 2.0x" in lines[2]


def test_in_process_lines_report_retention_as_days_worth_of_one_day():
    main = ScaleResult(1, {}, 0.0, {}, {BASELINE_OF[LOAD_WAREHOUSE]: measured("raw in", 2.0)},
                       in_process={"first": 2.4, "rerun": 2.4, "report": 1.0,
                                   "sizes": [2**20 * n for n in (10, 20, 30, 30)],
                                   "partitions_per_table": 3})

    lines = goals.in_process_lines(main)

    assert "1.20x (2.40 s / 2.00 s): meets the goal <= 1.5x" in lines[2]
    assert "1.00x (2.40 s / 2.40 s): meets" in lines[3]
    assert not any("publish-report" in line for line in lines)  # no raw report query measured
    assert all(line.startswith("  #11 ") for line in lines[2:4])
    assert "partitions 30.0 MB = 3.00 days' worth (one day 10.0 MB), 3 partitions per table" in lines[4]
    assert lines[5].endswith("10.0, 20.0, 30.0, 30.0")


def test_in_process_lines_show_the_load_without_the_history_beside_the_default():
    main = ScaleResult(1, {}, 0.0, {}, {BASELINE_OF[LOAD_WAREHOUSE]: measured("raw in", 2.0)},
                       in_process={"first": 2.4, "rerun": 2.4, "report": 1.0,
                                   "first_no_history": 2.2, "sizes": [2**20],
                                   "partitions_per_table": 1})

    lines = goals.in_process_lines(main)

    assert "load-warehouse data / raw COPY in" in lines[2] and "1.20x (2.40 s / 2.00 s)" in lines[2]
    assert "NORTHWIND_HISTORY=off" in lines[3] and "1.10x (2.20 s / 2.00 s): meets" in lines[3]
    assert "run L" in lines[5]  # after the rerun (no report query here)


def test_the_growth_table_has_a_column_per_step_of_the_pipeline():
    main = ScaleResult(10, {"orders": 8300, "order_details": 21550, "customers": 910}, 1.0,
                       {EXTRACT_POSTGRES: measured(EXTRACT_POSTGRES, 3.0)}, {})
    growth = [ScaleResult(1, {"orders": 830, "order_details": 2155, "customers": 91}, 1.0,
                          {EXTRACT_POSTGRES: measured(EXTRACT_POSTGRES, 2.5)}, {})]

    lines = output.report(main, {}, growth, None, "18.1")

    header = next(line for line in lines if line.lstrip().startswith("scale"))
    assert header.split()[2:] == [EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE, PUBLISH_REPORT]
    rows = lines[lines.index(header) + 2:]
    assert rows[0].split()[:4] == ["1", "3,076", "2.50", "s"] and rows[0].split()[-1] == "-"
    assert rows[1].split()[:2] == ["10", "30,760"]


def test_scaling_lines_show_each_n_with_its_own_start_up_and_both_sides_cpu():
    raw_out = measured(BASELINE_OF[EXTRACT_POSTGRES], 4.0)
    raw_out.cpu, raw_out.server_cpu = 1.0, 3.5
    steps = {EXTRACT_POSTGRES: {}, LOAD_WAREHOUSE: {}}
    start = {EXTRACT_POSTGRES: {}, LOAD_WAREHOUSE: {}}
    for n, wall in ((1, 7.0), (2, 5.0)):
        steps[EXTRACT_POSTGRES][n] = measured(EXTRACT_POSTGRES, wall)
        steps[EXTRACT_POSTGRES][n].cpu, steps[EXTRACT_POSTGRES][n].server_cpu = 6.0, 4.0 + n
        start[EXTRACT_POSTGRES][n] = measured("start", 1.0 + n)
    steps[LOAD_WAREHOUSE][1] = measured(LOAD_WAREHOUSE, 9.0, returncode=1)
    result = scaling.ScalingResult(1000, 3_076_286, 3, {raw_out.name: raw_out}, steps, start)

    lines = scaling.scaling_lines([result], (1.5, 2.5))

    assert "load average 1.5 at the start, 2.5 at the end" in lines[0]
    assert "scale 1000 (3,076,286 rows; median of 3 runs each):" in lines
    raw = next(line for line in lines if line.startswith("raw out"))
    assert raw.split()[-5:] == ["4.00", "1.0", "3.5", "100", "200"]
    n1, n2 = (line.split() for line in lines if line.startswith(EXTRACT_POSTGRES))
    # step, N, wall, start-up (its own N's), data, data/raw, step CPU, server CPU, RSS, tree
    assert n1 == [EXTRACT_POSTGRES, "1", "7.00", "2.00", "5.00", "1.25x", "6.0", "5.0", "100", "200"]
    assert n2[:6] == [EXTRACT_POSTGRES, "2", "5.00", "3.00", "2.00", "0.50x"]
    load = next(line for line in lines if line.startswith(LOAD_WAREHOUSE))
    assert load.split()[3:6] == ["-", "-", "-"]  # no start-up, no raw COPY in: no ratio
    assert "FAILED (exit 1, log)" in load


@pytest.mark.slow
def test_scaling_mode_runs_each_step_per_connection_count(meltano_project, tmp_path, capsys):
    assert run.main(["--scaling", "--scaling-scales", "2", "--scaling-connections", "1,2",
                     "--startup-runs", "1", "--output", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "scale 2 (" in printed
    (result,) = tmp_path.glob("bench-scaling-*.json")
    (found,) = json.loads(result.read_text())["scales"]
    for step in (EXTRACT_POSTGRES, LOAD_WAREHOUSE):
        assert set(found["steps"][step]) == {"1", "2"} == set(found["start"][step])
        for m in found["steps"][step].values():
            assert m["returncode"] == 0 and m["cpu"] > 0 and m["server_cpu"] > 0
    assert found["raw"]["raw in (all tables)"]["rows"] == found["rows"]
