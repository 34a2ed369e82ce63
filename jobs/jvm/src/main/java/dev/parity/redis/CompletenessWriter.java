package dev.parity.redis;

import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.data.RowData;

import java.io.IOException;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * Completeness rows (tile_end_ms) move the view's completeness watermark forward through
 * {@code advance_completeness.lua}, then, once the view has caught up (the tile end within its max
 * staleness of the clock), recompute the due window values through {@code refresh_windows.lua}
 * ({@code RedisTileSink.advance_completeness} and {@code refresh} are the Python twins).
 *
 * <p>Safe to repeat: the watermark only moves forward, and a refresh recomputes values from the
 * tiles. {@code refresh_windows.lua} names keys it was not passed, so it needs one Redis, or in a
 * cluster the view's one slot (every key of the view carries the view's hash tag).
 */
final class CompletenessWriter extends BatchingWriter {

    private static final int REFRESH_BATCH = 500;

    private final LongSupplier clock;
    private final Counter refreshed;
    private final boolean armed;
    private long pendingEnd = -1;
    private volatile long newestMs = -1;

    CompletenessWriter(RedisSinkSettings settings, WriterInitContext context, LongSupplier clock) throws IOException {
        super(settings, context, "advance_completeness", "refresh_windows");
        this.clock = clock;
        this.armed = armed();
        // Start from the stored watermark, so a restart does not report a lag of 0 until the next
        // tile period closes.
        String stored = client.call("reading the completeness watermark of " + settings.view,
            (jedis, shas) -> jedis.get(settings.completenessKey));
        newestMs = stored == null ? -1 : Long.parseLong(stored);
        // How far the view's completeness lags the wall clock: a stalled or lagging job.
        metrics.gauge("completeness_lag_ms", () -> newestMs < 0 ? 0L : Math.max(0L, clock.getAsLong() - newestMs));
        // Entities whose precomputed window values were merged again as their windows moved.
        refreshed = metrics.counter("redis_windows_refreshed");
    }

    @Override
    public void write(RowData row, Context context) throws IOException {
        pendingEnd = Math.max(pendingEnd, row.getLong(0));
        // A period's completeness is worth writing at once: reads wait for it.
        writePending(true);
    }

    @Override
    protected int pending() {
        return pendingEnd < 0 ? 0 : 1;
    }

    @Override
    protected void writePending(boolean all) throws IOException {
        long end = pendingEnd;
        List<String> keys = armed ? List.of(settings.completenessKey, settings.epochKey)
            : List.of(settings.completenessKey);
        client.call("the completeness watermark of " + settings.view,
            (jedis, shas) -> jedis.evalsha(shas.get("advance_completeness"), keys, List.of(Long.toString(end))));
        pendingEnd = -1;
        newestMs = Math.max(newestMs, end);
        long now = clock.getAsLong();
        if (end >= now - settings.stalenessMs) {
            refreshed.inc(refresh(now));
        }
    }

    private long refresh(long now) throws IOException {
        long at = Math.floorDiv(now - Math.floorMod(now, settings.tileMs), 1000L);
        // Values covered only up to the next tile boundary are refreshed now: the job's next
        // advance comes after that boundary plus the allowed lateness.
        long dueBy = at + settings.tileMs / 1000;
        List<String> args = new java.util.ArrayList<>(List.of(Long.toString(at), Long.toString(dueBy),
            Integer.toString(REFRESH_BATCH), settings.tilesHead, settings.windowsHead));
        args.addAll(settings.layout);
        List<String> keys = List.of(settings.dueKey);
        long total = 0;
        while (true) {
            long done = client.call("the window values of " + settings.view,
                (jedis, shas) -> (Long) jedis.evalsha(shas.get("refresh_windows"), keys, args));
            total += done;
            if (done < REFRESH_BATCH) {
                return total;
            }
        }
    }
}
