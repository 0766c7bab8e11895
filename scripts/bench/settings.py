"""What the benchmark runs, in one place: paths, run counts, the scaled tables, baselines of steps.

Step names are the pipeline's own (:mod:`northwind_elt.steps`); the goals are in :mod:`.goals`.
"""

from __future__ import annotations

from pathlib import Path

from northwind_elt.steps import EXTRACT_CSV, EXTRACT_POSTGRES, LOAD_WAREHOUSE, PUBLISH_REPORT

REPOSITORY = Path(__file__).resolve().parents[2]
MELTANO_PROJECT = REPOSITORY / "images" / "meltano"
SOURCE_DUMP = REPOSITORY / "sources" / "northwind.sql"
SEED_CSV = REPOSITORY / "sources" / "order_details.csv"
RESULTS = REPOSITORY / "bench-results"

#: The logical date of every benchmarked run (any fixed day: it only names partitions).
RUN_DATE = "2024-01-01"
DEFAULT_SCALE = 1000
GROWTH_SCALES = (1, 10, 100)
DEFAULT_STOCK_SLICE = 83_000
SAMPLE_SECONDS = 0.05
#: Each raw COPY and each start-up is the median of this many runs (they are short and noisy).
RAW_RUNS = 3
STARTUP_RUNS = 3
#: Each step is the median of this many runs (a single one moved by 10-25 %, more for the short
#: extracts); the later runs replace the day's output.
STEP_RUNS = 3
#: The load and its rerun, whose goal (<= 1.1x) is tighter than a single run's noise, take more.
LOAD_RUNS = 5
#: Retention run: this many days loaded one after the other with NORTHWIND_KEEP_DAYS=RETENTION_KEEP.
RETENTION_DAYS = 10
RETENTION_KEEP = 3
#: The measurement of a load-warehouse run that reloads the day it just loaded.
RERUN = f"{LOAD_WAREHOUSE} rerun"

DETAILS = "order_details"
#: Where the benchmark keeps its own tables in the source database (the taps read ``public``).
BENCH_SCHEMA = "bench"
RAW_IN_SCHEMA = "raw_in"

#: The steps content digests cost something in: the extracts compute them, the load checks them.
DIGEST_STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE)

#: The steps measured against a raw baseline (check-warehouse has none yet: not measured here).
MEASURED_STEPS = (EXTRACT_POSTGRES, EXTRACT_CSV, LOAD_WAREHOUSE, PUBLISH_REPORT)
#: The values of NORTHWIND_CONTENT_DIGEST the benchmark compares (the default is ``postgres``).
DIGEST_MODES = ("off", "postgres", "all")

#: Which raw baseline each step's data part is compared with.
BASELINE_OF = {EXTRACT_POSTGRES: "raw out (public tables)", EXTRACT_CSV: "raw out (details)",
               LOAD_WAREHOUSE: "raw in (all tables)", PUBLISH_REPORT: "raw report query out",
               RERUN: "raw in (all tables)"}
#: The start-up each measured step is charged with (the rerun is a load-warehouse run).
STARTUP_OF = {RERUN: LOAD_WAREHOUSE}
