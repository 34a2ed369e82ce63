"""The JVM Redis sink's tables: the options carry the key layout of sinks.redis_layout, not a copy."""

import re

from jobs.redis_sink import COMPLETENESS, LATE, LIVE, TILES, sink_ddl
from parity.config import FlinkJobConfig, RedisConfig
from sinks import redis_layout
from sinks.redis_windows import layout_args
from tests.unit.views import user_stats


def options(ddl: str) -> dict[str, str]:
    return dict(re.findall(r"'([^']+)' = '([^']*)'", ddl))


def tables(redis: RedisConfig | None = None, flink: FlinkJobConfig | None = None) -> dict[str, str]:
    statements = sink_ddl(user_stats, redis or RedisConfig(), flink or FlinkJobConfig())
    return {re.search(r"TABLE `([^`]+)`", s).group(1): s for s in statements}  # type: ignore[union-attr]


def test_each_kind_has_its_table_with_the_columns_the_sink_reads():
    made = tables()
    assert set(made) == {TILES, COMPLETENESS, LATE, LIVE}
    assert "`impressions` BIGINT" in made[TILES] and "`clicks` BIGINT" in made[TILES]
    assert [options(s)["kind"] for s in made.values()] == ["tiles", "completeness", "late", "live"]
    assert "kafka_partition INT" in made[LATE]


def test_key_names_come_from_the_layout_module():
    cfg = RedisConfig(key_prefix="pfx")
    made = {name: options(ddl) for name, ddl in tables(cfg).items()}
    entity = "u-1"
    assert made[TILES]["key.tiles"] + entity == redis_layout.entity_key("pfx", user_stats, entity)
    assert made[TILES]["key.windows"] + entity == redis_layout.window_key("pfx", user_stats, entity)
    assert made[TILES]["key.due"] == redis_layout.due_key("pfx", user_stats)
    assert made[TILES]["key.epoch"] == redis_layout.epoch_key("pfx", user_stats)
    assert made[COMPLETENESS]["key.completeness"] == redis_layout.completeness_key("pfx", user_stats)
    assert made[LATE]["key.late-events"] == redis_layout.late_events_key("pfx", user_stats)
    assert made[LATE]["key.late-counted"] == redis_layout.late_counted_key("pfx", user_stats)
    assert made[TILES]["layout"].split(",") == [str(a) for a in layout_args(user_stats)]
    # One day of margin past the longest window (7 days): 8 days.
    assert made[TILES]["horizon-ms"] == str(8 * 86_400_000)


def test_batching_and_retry_settings_reach_the_sink():
    flink = FlinkJobConfig(redis_batch_size=17, redis_batch_interval_ms=40)
    made = options(
        tables(RedisConfig(write_retry_s=2.5, socket_timeout_s=0.25, wait_replicas=1), flink)[TILES]
    )
    assert (made["batch.size"], made["batch.interval"]) == ("17", "40 ms")
    assert (made["redis.write-retry"], made["redis.socket-timeout"]) == ("2500 ms", "250 ms")
    assert made["redis.wait-replicas"] == "1"
    assert options(tables()[TILES])["redis.wait-replicas"] == "0"


def test_a_password_file_is_passed_by_path_and_no_password_otherwise(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    made = options(tables(RedisConfig(username="job", password_file=secret))[TILES])
    assert made["redis.password-file"] == str(secret)
    assert "redis.password" not in made and "s3cret" not in str(made)
    assert "redis.password" not in options(tables()[TILES])


def test_tls_settings_reach_the_sink_as_absolute_paths(tmp_path, monkeypatch):
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-")
    monkeypatch.chdir(tmp_path)
    cfg = RedisConfig(tls=True, tls_ca_file="ca.pem", tls_cert_file="client.pem", tls_key_file="client.key")
    for ddl in tables(cfg).values():
        made = options(ddl)
        assert made["redis.tls"] == "true"
        assert made["redis.tls.ca-file"] == str(tmp_path / "ca.pem")
        assert made["redis.tls.cert-file"] == str(tmp_path / "client.pem")
        assert made["redis.tls.key-file"] == str(tmp_path / "client.key")
    plain = options(tables()[TILES])
    assert not any(key.startswith("redis.tls") for key in plain)


def test_live_tiles_are_upserted_by_entity_and_tile_at_the_views_freshness():
    live = tables()[LIVE]
    assert "PRIMARY KEY (entity, tile_start_ms) NOT ENFORCED" in live
    assert "newest_event_time TIMESTAMP(3)" in live
    made = options(live)
    assert (made["live.interval"], made["batch.interval"]) == ("1000 ms", "100 ms")  # freshness, tick
    assert made["key.head"] == redis_layout.head_key("parity", user_stats)


def test_a_view_without_freshness_has_no_live_table():
    from dataclasses import replace

    statements = sink_ddl(replace(user_stats, freshness=None), RedisConfig(), FlinkJobConfig())
    assert not any(LIVE in s for s in statements)


def test_cluster_mode_passes_the_seed_nodes_and_single_mode_passes_none():
    cfg = RedisConfig(mode="cluster", cluster_nodes="10.0.0.1:7001, 10.0.0.2:7002")
    for made in (options(ddl) for ddl in tables(cfg).values()):
        assert (made["redis.mode"], made["redis.cluster.nodes"]) == ("cluster", "10.0.0.1:7001,10.0.0.2:7002")
    seeded_by_host = options(tables(RedisConfig(mode="cluster", host="r1", port=7000))[TILES])
    assert seeded_by_host["redis.cluster.nodes"] == "r1:7000"
    assert "redis.mode" not in options(tables()[TILES])
