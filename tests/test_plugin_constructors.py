"""Building a plugin only reads and checks its settings: connections, markers and folders are its run's.

Each of our taps and targets is built with settings that name a server that is not there and a
data tree that does not exist: the constructor succeeds and leaves nothing behind; the run then
fails with the reason, and records it in the step's marker as before.
"""

import contextlib
import io
import json
from pathlib import Path

import pytest
from northwind_elt import steps
from northwind_elt.errors import PipelineError
from tap_csvtyped.tap import TapCsvTyped
from tap_datatree.tap import TapDataTree
from tap_pgcopy.tap import TapPgCopy
from target_datatree.target import TargetDataTree
from target_pgcopy.target import TargetPgCopy

DAY = "2024-01-02"


def settings(tmp_path: Path, step: str) -> dict:
    root = tmp_path / "data"
    return {"step": step, "run_date": DAY, "data_root": str(root),
            "batch_config": {"encoding": {"format": "parquet"},
                             "storage": {"root": (root / ".staging").as_uri()}}}


def nowhere(tmp_path: Path) -> dict:
    """Connection settings of a server that is not there."""
    return {"host": str(tmp_path / "no-server-here"), "dbname": "x", "user": "postgres"}


def test_taps_read_nothing_until_their_run(tmp_path):
    taps = {
        steps.EXTRACT_POSTGRES: lambda folder: TapPgCopy(config={
            **nowhere(folder), **settings(folder, steps.EXTRACT_POSTGRES)}),
        steps.EXTRACT_CSV: lambda folder: TapCsvTyped(config={
            **settings(folder, steps.EXTRACT_CSV),
            "files": [{"stream": "t", "path": str(folder / "missing.csv"),
                       "columns": [{"name": "id", "type": "integer"}]}]}),
        steps.LOAD_WAREHOUSE: lambda folder: TapDataTree(config=settings(folder,
                                                                         steps.LOAD_WAREHOUSE)),
    }
    for step, make in taps.items():
        folder = tmp_path / step
        folder.mkdir()
        tap = make(folder)
        assert list(folder.iterdir()) == [], step
        with pytest.raises(PipelineError), contextlib.redirect_stdout(io.StringIO()):
            tap.sync_all()
        marker = folder / "data" / "_status" / DAY / f"{step}.json"
        if step == steps.LOAD_WAREHOUSE:  # refused: no extract succeeded, nothing is recorded
            assert not marker.exists()
        else:  # the run failed and said why
            assert json.loads(marker.read_text())["status"] == steps.FAILED, step


def test_targets_write_nothing_until_their_run(tmp_path):
    day = {"run_date": DAY, "data_root": str(tmp_path / "data")}
    datatree = TargetDataTree(config={**day, "source": "csv", "step": steps.EXTRACT_CSV})
    pgcopy = TargetPgCopy(config={**day, **nowhere(tmp_path)})
    assert list(tmp_path.iterdir()) == []

    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(PipelineError):
        datatree.listen(io.StringIO(""))  # no completion message: nothing is published
    assert json.loads((tmp_path / "data" / "_status" / DAY / f"{steps.EXTRACT_CSV}.json")
                      .read_text())["status"] == steps.FAILED
    refused = f"{steps.LOAD_WAREHOUSE} refuses to run for {DAY}: {steps.EXTRACT_POSTGRES} has not run"
    with pytest.raises(PipelineError, match=refused):
        pgcopy.listen(io.StringIO(""))
