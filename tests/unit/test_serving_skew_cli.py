"""`parity skew --every`: one failed run is logged and the check goes on; without --every it fails."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import serving.offline
import serving.online
import serving.skew
from serving import cli
from serving.skew import SkewReport


class _Store:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch):
    """check_skew fails on its first call and reports no skew after."""
    calls: list[int] = []

    def check(view, store, offline, sample, seed, at_now):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("Redis went away")
        return SkewReport(view=view.name, as_of=datetime(2026, 1, 1, tzinfo=UTC), snapshot_id=None)

    monkeypatch.setattr(serving.online, "OnlineStore", _Store)
    monkeypatch.setattr(serving.offline, "load_tiles", lambda *a, **k: None)
    monkeypatch.setattr(serving.skew, "check_skew", check)
    return calls


def test_a_repeating_check_outlives_a_failed_run(flaky, capsys):
    assert cli.main(["skew", "user_stats", "--every", "1ms", "--runs", "1"]) == 0
    assert len(flaky) == 2
    out, err = capsys.readouterr()
    assert "the skew check of user_stats failed" in err and "Redis went away" in err
    assert out.rstrip().endswith("ok")


def test_a_single_check_fails_with_the_error(flaky):
    with pytest.raises(ConnectionError, match="Redis went away"):
        cli.main(["skew", "user_stats"])
    assert len(flaky) == 1
