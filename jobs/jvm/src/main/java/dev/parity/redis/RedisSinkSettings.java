package dev.parity.redis;

import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import redis.clients.jedis.HostAndPort;

import java.io.Serializable;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** The validated options of one 'parity-redis' table: what a writer needs, shipped to the task managers. */
public final class RedisSinkSettings implements Serializable {

    private static final long serialVersionUID = 1L;

    public enum Kind { TILES, LIVE, COMPLETENESS, LATE }

    /** One Redis, or a Redis Cluster (see {@link RedisClient}). */
    public enum Mode { SINGLE, CLUSTER }

    final Kind kind;
    final String view;
    final Mode mode;
    /** Cluster mode: the seeds asked for the slot map, in order; empty in single mode. */
    final List<HostAndPort> clusterNodes;
    final String host;
    final int port;
    final int db;
    final String username;
    final String password;
    final String passwordFile;
    final boolean tls;
    final String tlsCaFile;
    final String tlsCertFile;
    final String tlsKeyFile;
    final int socketTimeoutMs;
    final long retryBudgetMs;
    final int waitReplicas;
    /** How long a WAIT blocks: well inside the socket timeout, which would end it first. */
    final long waitTimeoutMs;
    final String tilesHead;
    final String windowsHead;
    final String dueKey;
    final String epochKey;
    final String completenessKey;
    final String lateEventsKey;
    final String lateCountedKey;
    final String headKey;
    final List<String> layout;
    final long tileMs;
    final long horizonMs;
    final long stalenessMs;
    final int batchSize;
    final long batchIntervalMs;
    final long liveIntervalMs;

    RedisSinkSettings(ReadableConfig options) {
        String rawKind = required(options, RedisSinkOptions.KIND.key(), options.get(RedisSinkOptions.KIND));
        try {
            kind = Kind.valueOf(rawKind.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new ValidationException("'parity-redis' option 'kind' is " + rawKind
                + "; use tiles, live, completeness or late");
        }
        view = required(options, RedisSinkOptions.VIEW.key(), options.get(RedisSinkOptions.VIEW));
        String rawMode = options.get(RedisSinkOptions.MODE);
        mode = switch (rawMode.strip().toLowerCase(Locale.ROOT)) {
            case "single" -> Mode.SINGLE;
            case "cluster" -> Mode.CLUSTER;
            default -> throw new ValidationException("'parity-redis' option 'redis.mode' is '" + rawMode
                + "'; use single or cluster (PARITY_REDIS_MODE)");
        };
        clusterNodes = mode == Mode.CLUSTER
            ? clusterNodes(options.getOptional(RedisSinkOptions.CLUSTER_NODES).orElse(""))
            : List.of();
        host = options.get(RedisSinkOptions.HOST);
        port = options.get(RedisSinkOptions.PORT);
        db = options.get(RedisSinkOptions.DB);
        username = options.getOptional(RedisSinkOptions.USERNAME).orElse(null);
        password = options.getOptional(RedisSinkOptions.PASSWORD).orElse(null);
        passwordFile = options.getOptional(RedisSinkOptions.PASSWORD_FILE).orElse(null);
        tls = options.get(RedisSinkOptions.TLS);
        tlsCaFile = options.getOptional(RedisSinkOptions.TLS_CA_FILE).orElse(null);
        tlsCertFile = options.getOptional(RedisSinkOptions.TLS_CERT_FILE).orElse(null);
        tlsKeyFile = options.getOptional(RedisSinkOptions.TLS_KEY_FILE).orElse(null);
        if (!tls && (tlsCaFile != null || tlsCertFile != null || tlsKeyFile != null)) {
            throw new ValidationException("'parity-redis' has TLS files but 'redis.tls' is false; "
                + "set PARITY_REDIS_TLS=true");
        }
        if (tlsKeyFile != null && tlsCertFile == null) {
            throw new ValidationException("'parity-redis' option 'redis.tls.key-file' needs 'redis.tls.cert-file' "
                + "(PARITY_REDIS_TLS_CERT_FILE)");
        }
        socketTimeoutMs = (int) options.get(RedisSinkOptions.SOCKET_TIMEOUT).toMillis();
        retryBudgetMs = options.get(RedisSinkOptions.RETRY_BUDGET).toMillis();
        waitReplicas = options.get(RedisSinkOptions.WAIT_REPLICAS);
        if (waitReplicas < 0) {
            throw new ValidationException("'parity-redis' option 'redis.wait-replicas' is " + waitReplicas
                + "; use 0 (no WAIT) or the replicas each write must reach (PARITY_REDIS_WAIT_REPLICAS)");
        }
        waitTimeoutMs = Math.max(1, socketTimeoutMs / 2);
        tilesHead = options.getOptional(RedisSinkOptions.KEY_TILES).orElse(null);
        windowsHead = options.getOptional(RedisSinkOptions.KEY_WINDOWS).orElse(null);
        dueKey = options.getOptional(RedisSinkOptions.KEY_DUE).orElse(null);
        epochKey = required(options, RedisSinkOptions.KEY_EPOCH.key(), options.get(RedisSinkOptions.KEY_EPOCH));
        completenessKey = options.getOptional(RedisSinkOptions.KEY_COMPLETENESS).orElse(null);
        lateEventsKey = options.getOptional(RedisSinkOptions.KEY_LATE_EVENTS).orElse(null);
        lateCountedKey = options.getOptional(RedisSinkOptions.KEY_LATE_COUNTED).orElse(null);
        headKey = options.getOptional(RedisSinkOptions.KEY_HEAD).orElse(null);
        String rawLayout = options.getOptional(RedisSinkOptions.LAYOUT).orElse("");
        layout = rawLayout.isEmpty() ? List.of() : Arrays.asList(rawLayout.split(","));
        tileMs = options.getOptional(RedisSinkOptions.TILE_MS).orElse(0L);
        horizonMs = options.getOptional(RedisSinkOptions.HORIZON_MS).orElse(0L);
        stalenessMs = options.getOptional(RedisSinkOptions.STALENESS_MS).orElse(0L);
        batchSize = options.get(RedisSinkOptions.BATCH_SIZE);
        Duration interval = options.get(RedisSinkOptions.BATCH_INTERVAL);
        batchIntervalMs = Math.max(1, interval.toMillis());
        liveIntervalMs = options.get(RedisSinkOptions.LIVE_INTERVAL).toMillis();
        switch (kind) {
            case TILES, LIVE -> {
                if (kind == Kind.LIVE) {
                    required(options, "key.head", headKey);
                }
                required(options, "key.tiles", tilesHead);
                required(options, "key.windows", windowsHead);
                required(options, "key.due", dueKey);
                requirePositive("tile-ms", tileMs);
                requirePositive("horizon-ms", horizonMs);
                if (layout.isEmpty()) {
                    throw new ValidationException("'parity-redis' tiles need the option 'layout'");
                }
            }
            case COMPLETENESS -> {
                required(options, "key.completeness", completenessKey);
                required(options, "key.tiles", tilesHead);
                required(options, "key.windows", windowsHead);
                required(options, "key.due", dueKey);
                requirePositive("tile-ms", tileMs);
            }
            case LATE -> {
                required(options, "key.late-events", lateEventsKey);
                required(options, "key.late-counted", lateCountedKey);
            }
            default -> throw new IllegalStateException(kind.toString());
        }
        if (batchSize < 1) {
            throw new ValidationException("'parity-redis' option 'batch.size' must be at least 1, got " + batchSize);
        }
        if (mode == Mode.CLUSTER) {
            if (db != 0) {
                throw new ValidationException("'parity-redis' option 'redis.db' is " + db + ", but a Redis Cluster "
                    + "has only database 0; unset PARITY_REDIS_DB or set it to 0");
            }
            checkOneSlot();
        }
    }

    /** host:port, for messages. */
    String address() {
        return host + ":" + port;
    }

    /**
     * A key every write of this writer touches: in cluster mode its slot's master is the node the
     * writer connects to. Every key of a view carries the view's hash tag ({@link #checkOneSlot}),
     * so any one would do.
     */
    String routingKey() {
        return switch (kind) {
            case TILES, LIVE -> dueKey;
            case COMPLETENESS -> completenessKey;
            case LATE -> lateEventsKey;
        };
    }

    /**
     * The seeds of 'redis.cluster.nodes': comma-separated host:port (an IPv6 host in brackets),
     * blank entries skipped; at least one.
     */
    static List<HostAndPort> clusterNodes(String raw) {
        List<HostAndPort> nodes = new ArrayList<>();
        for (String part : raw.split(",")) {
            String entry = part.strip();
            if (entry.isEmpty()) {
                continue;
            }
            int colon = entry.lastIndexOf(':');
            String host = colon < 0 ? "" : entry.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port;
            try {
                port = colon < 0 ? -1 : Integer.parseInt(entry.substring(colon + 1));
            } catch (NumberFormatException e) {
                port = -1;
            }
            if (host.isEmpty() || port < 1 || port > 65535) {
                throw new ValidationException("'parity-redis' option 'redis.cluster.nodes' has '" + entry
                    + "', not host:port; set PARITY_REDIS_CLUSTER_NODES to seeds like redis-1:7000,redis-2:7000");
            }
            nodes.add(new HostAndPort(host, port));
        }
        if (nodes.isEmpty()) {
            throw new ValidationException("'parity-redis' in cluster mode needs the option 'redis.cluster.nodes'; "
                + "set PARITY_REDIS_CLUSTER_NODES to one or more seeds, like redis-1:7000,redis-2:7000");
        }
        return List.copyOf(nodes);
    }

    /**
     * Cluster mode: every key this view's writers name must carry the same hash tag, so that a
     * writer's keys (and the keys {@code refresh_windows.lua} builds from the heads) share one slot.
     * A key head must hold the whole tag, so that the entity appended to it does not change the slot.
     */
    private void checkOneSlot() {
        Map<String, String> keys = new LinkedHashMap<>();
        keys.put("key.epoch", epochKey);
        keys.put("key.tiles", tilesHead);
        keys.put("key.windows", windowsHead);
        keys.put("key.due", dueKey);
        keys.put("key.completeness", completenessKey);
        keys.put("key.head", headKey);
        keys.put("key.late-events", lateEventsKey);
        keys.put("key.late-counted", lateCountedKey);
        String tag = null;
        String tagged = null;
        for (Map.Entry<String, String> key : keys.entrySet()) {
            if (key.getValue() == null) {
                continue;
            }
            String own = ClusterSlots.hashTag(key.getValue());
            if (own == null) {
                throw new ValidationException("'parity-redis' in cluster mode needs every key of the view to carry "
                    + "its hash tag ({...}), so that a writer's keys share one slot; option '" + key.getKey()
                    + "' is '" + key.getValue() + "'");
            }
            if (tag == null) {
                tag = own;
                tagged = key.getKey();
            } else if (!tag.equals(own)) {
                throw new ValidationException("'parity-redis' in cluster mode needs every key of the view to carry "
                    + "one hash tag, so that a writer's keys share one slot; option '" + tagged + "' has {" + tag
                    + "} but '" + key.getKey() + "' has {" + own + "}");
            }
        }
    }

    private static String required(ReadableConfig options, String key, String value) {
        if (value == null || value.isEmpty()) {
            throw new ValidationException("'parity-redis' needs the option '" + key + "'");
        }
        return value;
    }

    private static void requirePositive(String key, long value) {
        if (value <= 0) {
            throw new ValidationException("'parity-redis' needs a positive option '" + key + "', got " + value);
        }
    }
}
