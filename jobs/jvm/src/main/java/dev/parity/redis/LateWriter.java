package dev.parity.redis;

import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.data.RowData;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/**
 * Rows whose tile had closed (event_time_s, kafka_partition, kafka_offset): counted, logged, and
 * added to the view's running total in Redis through {@code count_late.lua}, each once
 * ({@code LateEvents} in sinks.flink_udf is the Python twin).
 *
 * <p>Safe to repeat: rows at or below their partition's counted offset are skipped. It relies on
 * each partition's rows arriving in offset order, which the forward-chained path from the source
 * keeps (the late-count contract in sinks.redis_layout); a batch keeps their order.
 */
final class LateWriter extends BatchingWriter {

    private static final Logger LOG = LoggerFactory.getLogger(LateWriter.class);

    private final Counter late;
    private final List<String> positions = new ArrayList<>();
    private long oldestS = Long.MAX_VALUE;

    LateWriter(RedisSinkSettings settings, WriterInitContext context) {
        super(settings, context, "count_late");
        late = metrics.counter("late_events");
    }

    @Override
    public void write(RowData row, Context context) throws IOException {
        oldestS = Math.min(oldestS, row.getLong(0));
        positions.add(Integer.toString(row.getInt(1)));
        positions.add(Long.toString(row.getLong(2)));
        late.inc();
        added();
    }

    @Override
    protected int pending() {
        return positions.size() / 2;
    }

    @Override
    protected void writePending(boolean all) throws IOException {
        int count = pending();
        List<String> keys = List.of(settings.lateEventsKey, settings.lateCountedKey);
        long total = client.call("the late-event count of " + settings.view,
            (jedis, shas) -> (Long) jedis.evalsha(shas.get("count_late"), keys, positions));
        LOG.warn("{}: {} late events dropped from streaming tiles (oldest {}; {} so far); they are in the raw "
                + "archive: replay their range to correct the offline store",
            settings.view, count, Instant.ofEpochSecond(oldestS), total);
        positions.clear();
        oldestS = Long.MAX_VALUE;
    }
}
