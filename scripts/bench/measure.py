"""Measuring a command: wall time, CPU, peak RSS (kernel high-water mark and sampled tree), exit status.

Peak RSS is measured two ways: the kernel's high-water mark of the largest single process of the
command's tree (``ru_maxrss`` of the waited-for descendants, exact), and the largest sum over the
tree seen by polling with psutil every 50 ms (a sample: short peaks can be missed). CPU seconds are
those of the same waited-for descendants (``ru_utime + ru_stime``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import psutil

from .settings import SAMPLE_SECONDS

#: Runs a command, then writes its exit code, wall time, the peak RSS of its largest process and
#: the CPU seconds of its tree (every waited-for descendant: Meltano waits for its plugins).
_WRAPPER = """\
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(json.dumps({"returncode": code, "wall": wall,
                                         "maxrss_kb": usage.ru_maxrss,
                                         "cpu": usage.ru_utime + usage.ru_stime}))
sys.exit(code)
"""



class BenchmarkError(RuntimeError):
    """A measured command failed, or the benchmark cannot set itself up."""



@dataclasses.dataclass
class Measurement:
    """One measured command: wall seconds, peak RSS, rows, exit status."""

    name: str
    rows: int
    wall: float
    rss_process_mb: float
    rss_tree_mb: float
    largest_process: str
    returncode: int
    log: str
    #: CPU seconds the S3 store used during the command (S3 runs only; it shares the cores).
    store_cpu: float | None = None
    #: CPU seconds (user + system) of the command's process tree.
    cpu: float | None = None
    #: CPU seconds the database server (every backend and helper) used during the command.
    server_cpu: float | None = None

    @property
    def rows_per_second(self) -> float:
        """Rows over wall seconds."""
        return self.rows / self.wall if self.wall > 0 else math.nan



class TreeSampler(threading.Thread):
    """Poll a process tree's RSS: the largest sum and the largest process seen."""

    def __init__(self, root: psutil.Process):
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.tree_peak = 0
        self.process_peak = 0
        self.largest = ""

    def run(self) -> None:  # noqa: D102 (threading.Thread protocol)
        while not self.stop.is_set():
            total = 0
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            for child in children:
                try:
                    rss = child.memory_info().rss
                    name = _process_label(child)
                except psutil.Error:
                    continue
                total += rss
                if rss > self.process_peak:
                    self.process_peak, self.largest = rss, name
            self.tree_peak = max(self.tree_peak, total)
            self.stop.wait(SAMPLE_SECONDS)



def _process_label(process: psutil.Process) -> str:
    """A short name for a process: the script a Python process runs, else its name."""
    cmdline = process.cmdline()
    for part in cmdline[1:3]:
        if not part.startswith("-"):
            return Path(part).name
    return process.name()



def measure(name: str, command: Sequence[str], rows: int, log: Path, *,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> Measurement:
    """Run ``command`` and measure it (see the module docstring for what is measured)."""
    result_file = log.with_suffix(".result.json")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(result_file), *command],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd)
        sampler = TreeSampler(psutil.Process(process.pid))
        sampler.start()
        process.wait()
        sampler.stop.set()
        sampler.join()
    result = json.loads(result_file.read_text())
    measured = Measurement(
        name=name, rows=rows, wall=result["wall"], rss_process_mb=result["maxrss_kb"] / 1024,
        rss_tree_mb=sampler.tree_peak / 2**20, largest_process=sampler.largest,
        returncode=result["returncode"], log=str(log), cpu=result.get("cpu"))
    if check and measured.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchmarkError(f"{name} failed (exit {measured.returncode}); log {log}:\n{tail}")
    return measured



def median_of(runs: list[Measurement]) -> Measurement:
    """The run of median wall time (an odd count gives a real run; its RSS goes with it)."""
    ordered = sorted(runs, key=lambda m: m.wall)
    return ordered[(len(ordered) - 1) // 2]



@dataclasses.dataclass
class ScaleResult:
    """Everything measured at one scale factor."""

    scale: int
    counts: dict[str, int]
    build_seconds: float
    steps: dict[str, Measurement]
    raw: dict[str, Measurement]
    #: The same steps with the data tree on S3 (``--backend s3``), else empty.
    s3_steps: dict[str, Measurement] = dataclasses.field(default_factory=dict)
    #: Data parts measured without start-up (:func:`warehouse_in_process`), main scale only.
    in_process: dict | None = None
    #: The extracts and the load with content digests off and on (:func:`digest_cost`).
    digests: dict[str, dict[str, Measurement]] = dataclasses.field(default_factory=dict)
