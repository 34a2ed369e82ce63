"""The shadow comparison without a network: candidate modules, divergence counts, trace ids, exit codes."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import features
from features.definition import Ratio
from features.registry import get_candidate, load_views
from parity import cli
from parity.config import RedisConfig
from parity.errors import DefinitionError, InputError, ReadError
from serving import online, shadow
from serving.assembly import Status, to_ms
from sinks.base import TileRow
from sinks.redis_layout import view_head
from tests.unit.test_serving_fakes import FakeRedis, down
from tests.unit.views import user_stats

HOUR = 3_600_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WATERMARK = to_ms(T0) + 48 * HOUR
# The candidate changes one feature's definition: a rate of no impressions is 0.5, not 0.
candidate = replace(
    user_stats,
    version=2,
    derived=(Ratio("click_rate_7d", numerator="clicks_7d", denominator="impressions_7d", on_zero=0.5),),
)
TRACE_ID = re.compile(r"trace_id=([0-9a-f]{32})\b")


class VersionedFake(FakeRedis):
    """The fake, with two versions of one view beside each other, and SCAN."""

    def merge(self, call):
        # The base fake picks a view by name; here the key's version decides which one merges.
        key, everything = call[1], self.views
        self.views = {n: v for n, v in everything.items() if key.startswith(view_head(self.prefix, v) + ":")}
        try:
            return super().merge(call)
        finally:
            self.views = everything

    def scan_iter(self, match, count):
        pattern = match.replace("\\", "")  # the ids here hold no glob characters
        yield from (key.encode() for key in sorted(self.hashes) if fnmatch.fnmatchcase(key, pattern))


@pytest.fixture
def fake(monkeypatch):
    client = VersionedFake({"live": user_stats, "candidate": candidate}, prefix="t")
    monkeypatch.setattr(online, "connect", lambda cfg, timeout_s: client)
    return client


def put(fake, view, entity, hour, impressions, clicks):
    start = to_ms(T0) + hour * HOUR
    fake.put(view, TileRow(entity, start, start + HOUR, impressions + clicks, (impressions, clicks)))


def fill(fake, *, candidate_too=True):
    """u0..u5 with impressions; z0..z2 with clicks but no impressions (click_rate_7d's zero case)."""
    views = (user_stats, candidate) if candidate_too else (user_stats,)
    for view in views:
        for u in range(6):
            put(fake, view, f"u{u}", 30 + u, impressions=4 + u, clicks=u % 3)
        for z in range(3):
            put(fake, view, f"z{z}", 40 + z, impressions=0, clicks=1 + z)
        fake.set_completeness(view, WATERMARK)


def run(**kwargs):
    return shadow.run_shadow(user_stats, candidate, cfg=RedisConfig(key_prefix="t"), **kwargs)


def test_only_the_changed_feature_of_the_affected_entities_diverges(fake, caplog):
    fill(fake)
    with caplog.at_level(logging.WARNING, logger="serving.shadow"):
        report = run(sample=100)
    assert report.entities == 9
    assert report.as_of == datetime.fromtimestamp(WATERMARK / 1000, UTC)
    rate = report.features["click_rate_7d"]
    assert (rate.compared, rate.value_differs, rate.status_differs) == (9, 3, 0)
    assert rate.ratio == pytest.approx(3 / 9)
    assert {e["entity"] for e in rate.examples} == {"z0", "z1", "z2"}
    assert all(e["live"] == [0.0, "present"] and e["candidate"] == [0.5, "present"] for e in rate.examples)
    assert report.above(0.0) == ["click_rate_7d"]
    assert report.above(0.5) == []
    for name in user_stats.window_features:
        assert (report.features[name].compared, report.features[name].divergent) == (9, 0), name
    # One log line per divergent entity, each with its own trace id, also in the report.
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    ids = {TRACE_ID.search(line).group(1) for line in lines}
    assert len(ids) == 3
    assert {e["trace_id"] for e in rate.examples} == ids
    assert "click_rate_7d: 0.0 (present) vs 0.5 (present)" in lines[0]


def test_identical_versions_agree(fake, caplog):
    same = replace(user_stats, version=2)
    fake.views = {"live": user_stats, "candidate": same}
    for view in (user_stats, same):
        for u in range(5):
            put(fake, view, f"u{u}", 30 + u, impressions=u, clicks=u % 2)
        fake.set_completeness(view, WATERMARK)
    report = shadow.run_shadow(user_stats, same, cfg=RedisConfig(key_prefix="t"))
    assert report.entities == 5
    assert all(d.divergent == 0 for d in report.features.values())
    assert report.above(0.0) == []
    assert not caplog.records
    assert report.lines(0.0)[-1] == "none above the threshold 0.00%"


def test_an_entity_the_candidate_lacks_differs_in_status_for_every_feature(fake):
    fill(fake)
    put(fake, user_stats, "only-live", 45, impressions=3, clicks=1)
    report = run(entities=["only-live", "u1"])
    for name, d in report.features.items():
        assert (d.status_differs, d.value_differs) == (1, 0), name
        assert d.examples[0]["candidate"][1] == Status.MISSING.value


def test_the_instant_is_the_older_watermark_and_a_later_one_is_noted(fake):
    fill(fake)
    fake.set_completeness(candidate, WATERMARK - 5 * HOUR)
    report = run(entities=["u1"])
    assert report.as_of == datetime.fromtimestamp((WATERMARK - 5 * HOUR) / 1000, UTC)
    assert report.notes == []
    later = run(entities=["u1"], as_of=T0 + timedelta(hours=47))
    assert len(later.notes) == 1
    assert later.notes[0].startswith("user_stats_v2 is complete up to")


def test_a_version_without_a_watermark_is_refused_unless_as_of_is_given(fake):
    fill(fake)
    del fake.strings["t:{user_stats:v2}:completeness"]
    with pytest.raises(ReadError, match=r"no completeness watermark of user_stats_v2.*--as-of"):
        run()
    report = run(as_of=T0 + timedelta(hours=48))
    assert "nothing yet" in report.notes[0]


def test_entities_are_sampled_from_the_live_version_only_and_bounded(fake):
    fill(fake)
    put(fake, candidate, "only-candidate", 45, impressions=1, clicks=0)
    report = run(sample=4)
    assert report.entities == 4
    assert "only-candidate" not in {e["entity"] for d in report.features.values() for e in d.examples}
    assert run(sample=100).entities == 9


def test_nothing_to_sample_is_an_error(fake):
    fake.set_completeness(user_stats, WATERMARK)
    fake.set_completeness(candidate, WATERMARK)
    with pytest.raises(ReadError, match="no entity of user_stats_v1"):
        run()


def test_a_failed_read_stops_the_comparison(fake):
    fill(fake)
    stores = shadow.open_stores(user_stats, candidate, RedisConfig(key_prefix="t"))
    fake.fail = down()
    with pytest.raises(ReadError, match="user_stats_v1 with status error"):
        shadow.compare(user_stats, candidate, stores, ["u1"], T0 + timedelta(hours=48))


def test_features_only_one_version_has_are_listed_not_compared(fake):
    fill(fake)
    defaults = {k: v for k, v in user_stats.defaults.items() if k != "click_rate_7d"}
    without_rate = replace(user_stats, version=2, derived=(), defaults=defaults)
    fake.views = {"live": user_stats, "candidate": without_rate}
    report = shadow.run_shadow(user_stats, without_rate, entities=["z0"], cfg=RedisConfig(key_prefix="t"))
    assert report.only_live == ("click_rate_7d",)
    assert report.only_candidate == ()
    assert "click_rate_7d" not in report.features
    assert report.above(0.0) == []


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (user_stats, "is the live version"),
        (replace(candidate, name="other_stats"), "not 'user_stats'"),
        (
            replace(candidate, entity=replace(user_stats.entity, join_key="account_id")),
            "cannot be read from both",
        ),
    ],
)
def test_pairs_that_cannot_be_compared_are_refused(other, message):
    with pytest.raises(DefinitionError, match=message):
        shadow.check_pair(user_stats, other)


def test_spans_go_to_an_installed_provider_one_per_comparison_read(fake, monkeypatch, caplog):
    fill(fake)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(shadow.trace, "get_tracer_provider", lambda: provider)
    with caplog.at_level(logging.WARNING, logger="serving.shadow"):
        run(entities=["u1", "z0", "u2", "z1"])
    spans = [s for s in exporter.get_finished_spans() if s.name == "shadow.compare"]
    assert len(spans) == 4
    divergent = {
        format(s.context.trace_id, "032x") for s in spans if s.attributes["parity.divergent_features"]
    }
    assert divergent == {TRACE_ID.search(r.getMessage()).group(1) for r in caplog.records}
    assert len(divergent) == 2
    assert all(s.attributes["parity.candidate_version"] == 2 for s in spans)


def test_same_tolerates_rounding_only():
    assert shadow.same(3, 3)
    assert not shadow.same(3, 4)
    assert shadow.same(0.1 + 0.2, 0.3)
    assert shadow.same(0.0, 1e-15)
    assert not shadow.same(0.02, 0.020001)


def test_entities_file(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# sampled on Monday\nu1\n\n  u2  \nu1\n", encoding="utf-8")
    assert shadow.read_entities(path) == ["u1", "u2"]
    path.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="holds no entity id"):
        shadow.read_entities(path)
    path.write_text("u1\n" + "x" * 300 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2: the id is 300 bytes long"):
        shadow.read_entities(path)
    with pytest.raises(InputError, match="absent"):
        shadow.read_entities(tmp_path / "absent")


# The candidate module convention, on a features package extended with a temporary folder.


@pytest.fixture
def candidates(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "__path__", [*features.__path__, str(tmp_path)])
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("features.user_stats_v")]:
        del sys.modules[name]


def module(path, version, name="user_stats"):
    path.write_text(
        "from dataclasses import replace\n"
        "from features.user_stats import view as live\n"
        f"view = replace(live, name={name!r}, version={version})\n",
        encoding="utf-8",
    )


def test_a_candidate_module_is_found_by_version_and_never_loaded_as_a_view(candidates):
    module(candidates / "user_stats_v9.py", 9)
    views = load_views()
    assert views["user_stats"].version != 9  # loading views is unchanged: no clash, no candidate
    found = get_candidate("user_stats", 9)
    assert (found.name, found.version) == ("user_stats", 9)


def test_candidate_modules_say_what_is_wrong(candidates):
    with pytest.raises(DefinitionError, match=r"add features/user_stats_v8\.py .* version=8"):
        get_candidate("user_stats", 8)
    module(candidates / "user_stats_v7.py", 6)
    with pytest.raises(
        DefinitionError, match=r"version=7; it defines 0 \(versions of 'user_stats' found there: \[2, 6\]"
    ):
        get_candidate("user_stats", 7)
    module(candidates / "user_stats_v5.py", 5, name="other_stats")
    with pytest.raises(DefinitionError, match=r"named 'user_stats' with version=5; it defines 0 .*: \[2\]"):
        get_candidate("user_stats", 5)


# The command: thin over run_shadow; its exit code is the verdict.


@pytest.fixture
def command(fake, monkeypatch):
    monkeypatch.setenv("PARITY_REDIS_KEY_PREFIX", "t")
    monkeypatch.setattr(shadow, "get_view", lambda name: user_stats)
    monkeypatch.setattr(shadow, "get_candidate", lambda name, version: candidate)
    fill(fake)


def test_command_exits_1_above_the_threshold_and_0_within(command, capsys):
    assert cli.main(["shadow", "user_stats", "--candidate", "2"]) == 1
    out = capsys.readouterr().out
    assert "click_rate_7d" in out and "<- above the threshold" in out
    assert cli.main(["shadow", "user_stats", "--candidate", "2", "--threshold", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["features"]["click_rate_7d"]["divergent"] == 3


def test_command_reads_an_entities_file(command, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("u1\nu2\n", encoding="utf-8")
    assert cli.main(["shadow", "user_stats", "--candidate", "2", "--entities", str(ids), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entities"] == 2


def test_the_live_version_is_no_candidate(command, capsys):
    assert cli.main(["shadow", "user_stats", "--candidate", "1"]) == 1
    assert "version 1 is the live version of 'user_stats'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--threshold", "2"], "between 0 and 1"), (["--sample", "0"], "at least 1")],
)
def test_command_refuses_bad_options(command, capsys, argv, message):
    assert cli.main(["shadow", "user_stats", "--candidate", "2", *argv]) == 1
    assert message in capsys.readouterr().err
