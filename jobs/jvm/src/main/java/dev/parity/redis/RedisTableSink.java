package dev.parity.redis;

import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

import java.util.List;

/** The planner's view of a 'parity-redis' table: rows into a {@link RedisSink}. */
final class RedisTableSink implements DynamicTableSink {

    private final RedisSinkSettings settings;
    private final List<LogicalTypeRoot> aggregates;

    RedisTableSink(RedisSinkSettings settings, List<LogicalTypeRoot> aggregates) {
        this.settings = settings;
        this.aggregates = aggregates;
    }

    @Override
    public ChangelogMode getChangelogMode(ChangelogMode requestedMode) {
        // Live tiles are an updating aggregate keyed by (entity, tile start): each update is
        // the tile's new total, so the sink takes upserts and needs no retractions.
        return settings.kind == RedisSinkSettings.Kind.LIVE ? ChangelogMode.upsert() : ChangelogMode.insertOnly();
    }

    @Override
    public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
        return SinkV2Provider.of(new RedisSink(settings, aggregates));
    }

    @Override
    public DynamicTableSink copy() {
        return new RedisTableSink(settings, aggregates);
    }

    @Override
    public String asSummaryString() {
        return "parity-redis(" + settings.kind.name().toLowerCase(java.util.Locale.ROOT) + ")";
    }
}
