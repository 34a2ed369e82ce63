package dev.parity.redis;

import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.table.data.RowData;
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
 */
final class TileWriter extends BatchingWriter {

    private final boolean[] integers;
    private final LongSupplier clock;
    private final Counter applied;
    private final Counter refused;
    private final Counter batches;
    private volatile long lastWriteMs;
    /** entity -> (tile field -> tile value), in arrival order. */
    private final Map<String, Map<String, String>> batch = new LinkedHashMap<>();
    private final Map<String, Long> newestEnd = new LinkedHashMap<>();
    private int tiles;
    private final boolean armed;

    TileWriter(RedisSinkSettings settings, List<LogicalTypeRoot> aggregateTypes, WriterInitContext context,
               LongSupplier clock) throws IOException {
        super(settings, context, "set_tiles");
        this.armed = armed();
        this.integers = new boolean[aggregateTypes.size()];
        for (int i = 0; i < integers.length; i++) {
            integers[i] = aggregateTypes.get(i) != LogicalTypeRoot.DOUBLE;
        }
        this.clock = clock;
        this.applied = metrics.counter("redis_tiles_applied");
        this.refused = metrics.counter("redis_tiles_refused_stale");
        this.batches = metrics.counter("redis_batches");
        metrics.gauge("redis_write_ms", () -> lastWriteMs);
    }

    @Override
    public void write(RowData row, Context context) throws IOException {
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
        added();
    }

    @Override
    protected int pending() {
        return tiles;
    }

    @Override
    protected void writePending() throws IOException {
        long began = System.nanoTime();
        int count = tiles;
        boolean arm = armed;
        long now = clock.getAsLong();
        String at = Long.toString(Math.floorDiv(now - Math.floorMod(now, settings.tileMs), 1000L));
        long done = client.call(count + " tiles of " + settings.view, (jedis, shas) -> {
            Pipeline pipe = jedis.pipelined();
            List<Response<Object>> replies = new ArrayList<>(batch.size());
            for (Map.Entry<String, Map<String, String>> entry : batch.entrySet()) {
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
            pipe.sync();
            long sum = 0;
            for (Response<Object> reply : replies) {
                sum += (Long) reply.get();
            }
            return sum;
        });
        batch.clear();
        newestEnd.clear();
        tiles = 0;
        applied.inc(done);
        refused.inc(count - done);
        batches.inc();
        lastWriteMs = (System.nanoTime() - began) / 1_000_000;
    }

}
