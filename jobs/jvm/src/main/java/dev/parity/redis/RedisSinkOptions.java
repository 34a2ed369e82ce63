package dev.parity.redis;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;

import java.time.Duration;

/**
 * Options of the 'parity-redis' sink. The job (jobs/stream.py) writes them from the view and
 * PARITY_REDIS_*: key names come from sinks.redis_layout, the layout from sinks.redis_windows,
 * so that no key name or layout is rebuilt here.
 */
public final class RedisSinkOptions {

    private RedisSinkOptions() { }

    public static final ConfigOption<String> KIND = ConfigOptions.key("kind").stringType().noDefaultValue()
        .withDescription("What the rows are: 'tiles' (entity, tile_start_ms, events, aggregates...), 'live' "
            + "(the same, updated as the open tile grows, then newest_event_time), "
            + "'completeness' (tile_end_ms) or 'late' (event_time_s, kafka_partition, kafka_offset).");
    public static final ConfigOption<String> VIEW = ConfigOptions.key("view").stringType().noDefaultValue()
        .withDescription("The view's qualified name, for metrics and messages.");

    public static final ConfigOption<String> MODE = ConfigOptions.key("redis.mode").stringType().defaultValue("single")
        .withDescription("'single': one Redis at 'redis.host' and 'redis.port'; 'cluster': a Redis Cluster found "
            + "through 'redis.cluster.nodes' (PARITY_REDIS_MODE).");
    public static final ConfigOption<String> CLUSTER_NODES = ConfigOptions.key("redis.cluster.nodes").stringType()
        .noDefaultValue().withDescription("Cluster mode: comma-separated host:port seeds, asked in turn for the "
            + "slot map (PARITY_REDIS_CLUSTER_NODES); ignored in single mode.");
    public static final ConfigOption<String> HOST = ConfigOptions.key("redis.host").stringType().defaultValue("127.0.0.1");
    public static final ConfigOption<Integer> PORT = ConfigOptions.key("redis.port").intType().defaultValue(6379);
    public static final ConfigOption<Integer> DB = ConfigOptions.key("redis.db").intType().defaultValue(0);
    public static final ConfigOption<String> USERNAME = ConfigOptions.key("redis.username").stringType().noDefaultValue();
    public static final ConfigOption<String> PASSWORD = ConfigOptions.key("redis.password").stringType().noDefaultValue()
        .withDescription("Flink hides the values of keys containing 'password' in the configuration it logs.");
    public static final ConfigOption<String> PASSWORD_FILE = ConfigOptions.key("redis.password-file").stringType()
        .noDefaultValue().withDescription("Read on every connect, so a rotated password reaches new connections.");
    public static final ConfigOption<Boolean> TLS = ConfigOptions.key("redis.tls").booleanType().defaultValue(false)
        .withDescription("Connect over TLS, checking that the server's certificate names 'redis.host' (in cluster "
            + "mode: the seed's host, and the host the cluster announces for a node) (PARITY_REDIS_TLS).");
    public static final ConfigOption<String> TLS_CA_FILE = ConfigOptions.key("redis.tls.ca-file").stringType()
        .noDefaultValue().withDescription("PEM CA of the server's certificate; the JVM's CAs when unset.");
    public static final ConfigOption<String> TLS_CERT_FILE = ConfigOptions.key("redis.tls.cert-file").stringType()
        .noDefaultValue().withDescription("PEM client certificate, for a server with tls-auth-clients.");
    public static final ConfigOption<String> TLS_KEY_FILE = ConfigOptions.key("redis.tls.key-file").stringType()
        .noDefaultValue().withDescription("The client certificate's unencrypted PKCS#8 PEM key; the certificate's "
            + "file when unset.");
    public static final ConfigOption<Duration> SOCKET_TIMEOUT = ConfigOptions.key("redis.socket-timeout")
        .durationType().defaultValue(Duration.ofMillis(500));
    public static final ConfigOption<Duration> RETRY_BUDGET = ConfigOptions.key("redis.write-retry")
        .durationType().defaultValue(Duration.ofSeconds(30))
        .withDescription("How long a failed write is retried before the job fails (0: never retried).");
    public static final ConfigOption<Integer> WAIT_REPLICAS = ConfigOptions.key("redis.wait-replicas").intType()
        .defaultValue(0)
        .withDescription("Replicas that must acknowledge each write (WAIT) before the sink counts it done; "
            + "one not acknowledged within half the socket timeout is retried (PARITY_REDIS_WAIT_REPLICAS).");

    public static final ConfigOption<String> KEY_TILES = ConfigOptions.key("key.tiles").stringType().noDefaultValue()
        .withDescription("The head of an entity's tile hash key; the entity follows.");
    public static final ConfigOption<String> KEY_WINDOWS = ConfigOptions.key("key.windows").stringType().noDefaultValue();
    public static final ConfigOption<String> KEY_DUE = ConfigOptions.key("key.due").stringType().noDefaultValue();
    public static final ConfigOption<String> KEY_EPOCH = ConfigOptions.key("key.epoch").stringType().noDefaultValue();
    public static final ConfigOption<String> KEY_COMPLETENESS = ConfigOptions.key("key.completeness").stringType()
        .noDefaultValue();
    public static final ConfigOption<String> KEY_LATE_EVENTS = ConfigOptions.key("key.late-events").stringType()
        .noDefaultValue();
    public static final ConfigOption<String> KEY_LATE_COUNTED = ConfigOptions.key("key.late-counted").stringType()
        .noDefaultValue();

    public static final ConfigOption<String> KEY_HEAD = ConfigOptions.key("key.head").stringType().noDefaultValue()
        .withDescription("Live tiles: the view's head watermark, the newest event time written (epoch ms).");

    public static final ConfigOption<String> LAYOUT = ConfigOptions.key("layout").stringType().noDefaultValue()
        .withDescription("sinks.redis_windows.layout_args(view), comma-separated.");
    public static final ConfigOption<Long> TILE_MS = ConfigOptions.key("tile-ms").longType().noDefaultValue();
    public static final ConfigOption<Long> HORIZON_MS = ConfigOptions.key("horizon-ms").longType().noDefaultValue()
        .withDescription("Longest window plus prune margin: older tiles are pruned.");
    public static final ConfigOption<Long> STALENESS_MS = ConfigOptions.key("staleness-ms").longType().noDefaultValue();

    public static final ConfigOption<Integer> BATCH_SIZE = ConfigOptions.key("batch.size").intType().defaultValue(2000);
    public static final ConfigOption<Duration> LIVE_INTERVAL = ConfigOptions.key("live.interval").durationType()
        .defaultValue(Duration.ofSeconds(1))
        .withDescription("Live tiles: the least time between two writes of one entity (the view's freshness).");
    public static final ConfigOption<Duration> BATCH_INTERVAL = ConfigOptions.key("batch.interval").durationType()
        .defaultValue(Duration.ofMillis(200));
}
