package dev.parity.redis;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

import java.util.List;
import java.util.Set;

/** The 'parity-redis' table connector: the job's writes to the online store, in the JVM. */
public final class RedisSinkFactory implements DynamicTableSinkFactory {

    public static final String IDENTIFIER = "parity-redis";

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Set.of(RedisSinkOptions.KIND, RedisSinkOptions.VIEW, RedisSinkOptions.KEY_EPOCH);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Set.of(RedisSinkOptions.MODE, RedisSinkOptions.CLUSTER_NODES, RedisSinkOptions.HOST, RedisSinkOptions.PORT,
            RedisSinkOptions.DB, RedisSinkOptions.USERNAME, RedisSinkOptions.PASSWORD, RedisSinkOptions.PASSWORD_FILE,
            RedisSinkOptions.TLS, RedisSinkOptions.TLS_CA_FILE, RedisSinkOptions.TLS_CERT_FILE,
            RedisSinkOptions.TLS_KEY_FILE, RedisSinkOptions.SOCKET_TIMEOUT, RedisSinkOptions.RETRY_BUDGET,
            RedisSinkOptions.WAIT_REPLICAS,
            RedisSinkOptions.KEY_TILES, RedisSinkOptions.KEY_WINDOWS, RedisSinkOptions.KEY_DUE,
            RedisSinkOptions.KEY_COMPLETENESS, RedisSinkOptions.KEY_LATE_EVENTS, RedisSinkOptions.KEY_LATE_COUNTED,
            RedisSinkOptions.KEY_HEAD, RedisSinkOptions.LAYOUT, RedisSinkOptions.TILE_MS, RedisSinkOptions.HORIZON_MS,
            RedisSinkOptions.STALENESS_MS, RedisSinkOptions.BATCH_SIZE, RedisSinkOptions.BATCH_INTERVAL,
            RedisSinkOptions.LIVE_INTERVAL);
    }

    @Override
    public DynamicTableSink createDynamicTableSink(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        helper.validate();
        RedisSinkSettings settings = new RedisSinkSettings(helper.getOptions());
        List<LogicalType> columns = context.getCatalogTable().getResolvedSchema().toPhysicalRowDataType()
            .getLogicalType().getChildren();
        checkColumns(settings, columns);
        int aggregateCount = columns.size() - 3 - (settings.kind == RedisSinkSettings.Kind.LIVE ? 1 : 0);
        List<LogicalTypeRoot> aggregates = columns.stream().skip(3).limit(Math.max(0, aggregateCount))
            .map(LogicalType::getTypeRoot).toList();
        return new RedisTableSink(settings, aggregates);
    }

    /** The columns each kind reads by position: a mismatch fails at planning, naming both. */
    static void checkColumns(RedisSinkSettings settings, List<LogicalType> columns) {
        List<LogicalTypeRoot> roots = columns.stream().map(LogicalType::getTypeRoot).toList();
        boolean ok = switch (settings.kind) {
            case TILES -> roots.size() >= 3
                && (roots.get(0) == LogicalTypeRoot.VARCHAR || roots.get(0) == LogicalTypeRoot.CHAR)
                && roots.get(1) == LogicalTypeRoot.BIGINT && roots.get(2) == LogicalTypeRoot.BIGINT
                && roots.stream().skip(3).allMatch(r -> r == LogicalTypeRoot.BIGINT || r == LogicalTypeRoot.DOUBLE);
            case LIVE -> roots.size() >= 4
                && (roots.get(0) == LogicalTypeRoot.VARCHAR || roots.get(0) == LogicalTypeRoot.CHAR)
                && roots.get(1) == LogicalTypeRoot.BIGINT && roots.get(2) == LogicalTypeRoot.BIGINT
                && roots.subList(3, roots.size() - 1).stream()
                    .allMatch(r -> r == LogicalTypeRoot.BIGINT || r == LogicalTypeRoot.DOUBLE)
                && roots.get(roots.size() - 1) == LogicalTypeRoot.TIMESTAMP_WITHOUT_TIME_ZONE;
            case COMPLETENESS -> roots.equals(List.of(LogicalTypeRoot.BIGINT));
            case LATE -> roots.equals(List.of(LogicalTypeRoot.BIGINT, LogicalTypeRoot.INTEGER, LogicalTypeRoot.BIGINT));
        };
        if (!ok) {
            String expected = switch (settings.kind) {
                case TILES -> "(entity STRING, tile_start_ms BIGINT, events BIGINT, then BIGINT or DOUBLE aggregates)";
                case LIVE -> "(entity STRING, tile_start_ms BIGINT, events BIGINT, BIGINT or DOUBLE aggregates, "
                    + "newest_event_time TIMESTAMP(3))";
                case COMPLETENESS -> "(tile_end_ms BIGINT)";
                case LATE -> "(event_time_s BIGINT, kafka_partition INT, kafka_offset BIGINT)";
            };
            throw new org.apache.flink.table.api.ValidationException("'parity-redis' " + settings.kind.name()
                .toLowerCase(java.util.Locale.ROOT) + " rows must be " + expected + ", got " + columns);
        }
    }
}
