package dev.parity.redis;

import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;

import java.io.Serializable;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;

/** The validated options of one 'parity-redis' table: what a writer needs, shipped to the task managers. */
public final class RedisSinkSettings implements Serializable {

    private static final long serialVersionUID = 1L;

    public enum Kind { TILES, LIVE, COMPLETENESS, LATE }

    final Kind kind;
    final String view;
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
            kind = Kind.valueOf(rawKind.toUpperCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new ValidationException("'parity-redis' option 'kind' is " + rawKind
                + "; use tiles, live, completeness or late");
        }
        view = required(options, RedisSinkOptions.VIEW.key(), options.get(RedisSinkOptions.VIEW));
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
    }

    /** host:port, for messages. */
    String address() {
        return host + ":" + port;
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
