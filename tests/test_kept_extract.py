"""A rerun keeps a day's succeeded extract: the tap decides, and its target follows it.

Tap and target of one run start together and read the day's marker each on its own; another run
can succeed in between. Whatever the target saw at its start, the tap's decision stands: here the
target began (the day was still running elsewhere), the other run then succeeded, and the tap
kept that success: the target puts the success marker back and publishes nothing.
"""

import contextlib
import io
import json

from northwind_elt import steps
from pipeline import tree_digest
from tap_csvtyped.tap import TapCsvTyped
from target_datatree.target import TargetDataTree
from test_hostile_input import DAY, HEADER, tap_config, target_config


def run_tap(config: dict) -> str:
    messages = io.StringIO()
    with contextlib.redirect_stdout(messages):
        TapCsvTyped(config=config).sync_all()
    return messages.getvalue()


def test_a_target_that_began_before_its_tap_kept_the_day_puts_the_success_back(tmp_path):
    source, root = tmp_path / "input.csv", tmp_path / "data"
    source.write_bytes(HEADER + b"1,2,3.5,first\n")
    with contextlib.redirect_stdout(io.StringIO()):
        TargetDataTree(config=target_config(root)).listen(
            io.StringIO(run_tap(tap_config(source, root))))
    marker_file = root / "_status" / DAY / "extract-csv.json"
    succeeded, published = marker_file.read_text(), tree_digest(root)
    assert json.loads(succeeded)["status"] == steps.SUCCESS

    # This run's tap reads the day's success and keeps it, sending nothing else.
    source.write_bytes(HEADER + b"1,2,3.5,changed at the source since\n")
    kept = run_tap(tap_config(source, root))
    assert [json.loads(line)["type"] for line in kept.splitlines()] == ["STATE"]
    # Its target read the marker a moment before another attempt's success and wrote `running`
    # a moment after it (begin is a read, then a write): as if the marker still said running.
    marker_file.write_text(json.dumps({**json.loads(succeeded), "status": steps.RUNNING,
                                       "attempt": "elsewhere:1:1"}))
    target = TargetDataTree(config=target_config(root))
    assert json.loads(marker_file.read_text())["status"] == steps.RUNNING
    with contextlib.redirect_stdout(io.StringIO()):
        target.listen(io.StringIO(kept))
    assert json.loads(marker_file.read_text()) == json.loads(succeeded)
    assert tree_digest(root) == published
