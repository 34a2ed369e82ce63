package dev.parity.redis;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.data.RowData;
import org.apache.flink.types.RowKind;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import redis.clients.jedis.Pipeline;
import redis.clients.jedis.Response;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.LongSupplier;

/**
 * Tile rows (entity, tile_start_ms, events, aggregates...) into the entity's tile hash, through
 * {@code set_tiles.lua}: one script call per entity per batch, all of a batch in one pipelined
 * round trip ({@code sinks.redis.RedisTileSink.write} is the Python twin).
 *
 * <p>Safe to repeat: a tile is set, never incremented, and the script refuses one with fewer events
 * than the stored one (its version); the window values are recomputed from the tiles. A later row
 * for a tile already in the batch replaces it there, so a tile updated many times between two
 * writes costs one.
 *
 * <p>Live tiles (kind {@code live}) are the open tiles' running totals, upserted as events arrive.
 * An entity is written at most once per {@code live.interval} (the view's freshness), checked on
 * every tick of the batch interval, so its first update goes out within a tick and a busy entity's
 * newest total within the freshness; a checkpoint or a full batch writes every one. The same guard orders them with the closed tile,
 * which carries at least as many events. Their newest event time moves the view's head watermark
 * ({@code key.head}) forward, in the same round trip, through {@code advance_completeness.lua}
 * (it only ever moves a key forward).
 */
final class TileWriter extends BatchingWriter {

    private final boolean[] integers;
    private final LongSupplier clock;
    private final Counter applied;
    private final Counter refused;
    private final Counter batches;
    /** Live tiles left unwritten because the watermark closed them first. */
    private final Counter superseded;
    private volatile long lastWriteMs;
    /** entity -> (tile field -> tile value), in arrival order. */
    private final Map<String, Map<String, String>> batch = new LinkedHashMap<>();
    private final Map<String, Long> newestEnd = new LinkedHashMap<>();
    private int tiles;
    private final boolean armed;
    private final boolean live;
    /** Live tiles: per entity in the batch, its newest event time (epoch ms). */
    private final Map<String, Long> newestEvent = new LinkedHashMap<>();
    private volatile long headMs = -1;
    /** Live tiles: when each recently written entity was last written (epoch ms). */
    private final Map<String, Long> written = new java.util.HashMap<>();

    TileWriter(RedisSinkSettings settings, List<LogicalTypeRoot> aggregateTypes, WriterInitContext context,
               LongSupplier clock) throws IOException {
        super(settings, context, "set_tiles", "advance_completeness");
        this.armed = armed();
        this.live = settings.kind == RedisSinkSettings.Kind.LIVE;
        this.integers = new boolean[aggregateTypes.size()];
        for (int i = 0; i < integers.length; i++) {
            integers[i] = aggregateTypes.get(i) != LogicalTypeRoot.DOUBLE;
        }
        this.clock = clock;
        this.applied = metrics.counter("redis_tiles_applied");
        this.refused = metrics.counter("redis_tiles_refused_stale");
        this.batches = metrics.counter("redis_batches");
        this.superseded = metrics.counter("redis_live_tiles_superseded");
        metrics.gauge("redis_write_ms", () -> lastWriteMs);
        if (live) {
            // How far the newest event online reads reflect lags the wall clock (0 before any).
            metrics.gauge("freshness_lag_ms", () -> headMs < 0 ? 0L : Math.max(0L, clock.getAsLong() - headMs));
            metrics.gauge("head_watermark_ms", () -> headMs);
        }
    }

    @Override
    public void write(RowData row, Context context) throws IOException {
        if (row.getRowKind() == RowKind.UPDATE_BEFORE || row.getRowKind() == RowKind.DELETE) {
            return;  // a tile only grows: its next total replaces it
        }
        String entity = row.getString(0).toString();
        long startMs = row.getLong(1);
        StringBuilder value = new StringBuilder().append(row.getLong(2));
        for (int i = 0; i < integers.length; i++) {
            value.append('|');
            int pos = 3 + i;
            if (!row.isNullAt(pos)) {
                value.append(integers[i] ? Long.toString(row.getLong(pos)) : TileCodec.number(row.getDouble(pos)));
            }
        }
        Map<String, String> entityTiles = batch.computeIfAbsent(entity, e -> new LinkedHashMap<>());
        if (entityTiles.put(TileCodec.field(startMs), value.toString()) == null) {
            tiles++;
        }
        newestEnd.merge(entity, startMs + settings.tileMs, Math::max);
        if (live) {
            newestEvent.merge(entity, row.getTimestamp(3 + integers.length, 3).getMillisecond(), Math::max);
        }
        added();
    }

    @Override
    public void writeWatermark(Watermark watermark) throws IOException {
        if (live) {
            dropClosed(watermark.getTimestamp());
        } else {
            super.writeWatermark(watermark);
        }
    }

    /**
     * Live tiles the watermark has closed are not written: the window emits the same tile, final,
     * to the tiles sink at this watermark. Catching up a backlog, nearly every live row is of a tile
     * that closes within moments; writing each would cost Redis a script call per event.
     */
    private void dropClosed(long watermarkMs) {
        var entities = batch.entrySet().iterator();
        while (entities.hasNext()) {
            Map.Entry<String, Map<String, String>> entry = entities.next();
            var entityTiles = entry.getValue().keySet().iterator();
            while (entityTiles.hasNext()) {
                // A window fires once the watermark reaches its last millisecond, end - 1.
                if (TileCodec.startMs(entityTiles.next()) + settings.tileMs - 1 <= watermarkMs) {
                    entityTiles.remove();
                    tiles--;
                    superseded.inc();
                }
            }
            if (entry.getValue().isEmpty()) {
                entities.remove();
                newestEnd.remove(entry.getKey());
                newestEvent.remove(entry.getKey());
            }
        }
    }

    @Override
    protected int pending() {
        return tiles;
    }

    @Override
    protected void writePending(boolean all) throws IOException {
        long now = clock.getAsLong();
        if (!live || all) {
            write(batch, now);
            batch.clear();
            newestEnd.clear();
            newestEvent.clear();
            tiles = 0;
            return;
        }
        // Live tiles: only the entities not written within the last interval.
        written.values().removeIf(at -> now - at >= settings.liveIntervalMs);
        Map<String, Map<String, String>> due = new LinkedHashMap<>();
        for (Map.Entry<String, Map<String, String>> entry : batch.entrySet()) {
            if (!written.containsKey(entry.getKey())) {
                due.put(entry.getKey(), entry.getValue());
            }
        }
        if (due.isEmpty()) {
            return;
        }
        write(due, now);
        for (Map.Entry<String, Map<String, String>> entry : due.entrySet()) {
            batch.remove(entry.getKey());
            newestEnd.remove(entry.getKey());
            newestEvent.remove(entry.getKey());
            tiles -= entry.getValue().size();
        }
    }

    /** Write the tiles of {@code entities} in one pipelined round trip, with the head watermark. */
    private void write(Map<String, Map<String, String>> entities, long now) throws IOException {
        long began = System.nanoTime();
        int count = 0;
        for (Map<String, String> entityTiles : entities.values()) {
            count += entityTiles.size();
        }
        boolean arm = armed;
        long head = -1;
        for (String entity : entities.keySet()) {
            head = Math.max(head, newestEvent.getOrDefault(entity, -1L));
        }
        long newestHead = head;
        String at = Long.toString(Math.floorDiv(now - Math.floorMod(now, settings.tileMs), 1000L));
        long done = client.call(count + " tiles of " + settings.view, (jedis, shas) -> {
            Pipeline pipe = jedis.pipelined();
            List<Response<Object>> replies = new ArrayList<>(entities.size());
            for (Map.Entry<String, Map<String, String>> entry : entities.entrySet()) {
                String entity = entry.getKey();
                long end = newestEnd.get(entity);
                boolean fresh = end >= now - settings.stalenessMs;
                List<String> argv = new ArrayList<>(3 + settings.layout.size() + 2 * entry.getValue().size());
                argv.add(Long.toString(Math.floorDiv(end - settings.horizonMs, 1000L)));
                argv.add(fresh ? at : "");
                argv.add(entity);
                argv.addAll(settings.layout);
                for (Map.Entry<String, String> tile : entry.getValue().entrySet()) {
                    argv.add(tile.getKey());
                    argv.add(tile.getValue());
                }
                List<String> keys = arm
                    ? List.of(settings.tilesHead + entity, settings.windowsHead + entity, settings.dueKey,
                        settings.epochKey)
                    : List.of(settings.tilesHead + entity, settings.windowsHead + entity, settings.dueKey);
                replies.add(pipe.evalsha(shas.get("set_tiles"), keys, argv));
            }
            if (newestHead >= 0) {
                pipe.evalsha(shas.get("advance_completeness"), List.of(settings.headKey),
                    List.of(Long.toString(newestHead)));
            }
            pipe.sync();
            long sum = 0;
            for (Response<Object> reply : replies) {
                sum += (Long) reply.get();
            }
            return sum;
        });
        if (live) {
            for (String entity : entities.keySet()) {
                written.put(entity, now);
            }
        }
        headMs = Math.max(headMs, head);
        applied.inc(done);
        refused.inc(count - done);
        batches.inc();
        lastWriteMs = (System.nanoTime() - began) / 1_000_000;
    }

}
