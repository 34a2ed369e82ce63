package dev.parity.redis;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.operators.ProcessingTimeService;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.data.RowData;

import java.io.IOException;

/**
 * What the three writers share: a batch, written when it is full, after the batch interval, on
 * every watermark, and before every checkpoint.
 *
 * <p>Flink calls {@link #flush} before a checkpoint barrier leaves this operator, and {@code write}
 * returns only once Redis has acknowledged the batch. So once a checkpoint completes, every row
 * before it is in Redis: at-least-once, made idempotent by the scripts. Rows are written on the
 * task's own thread (timers run on it too), so a batch is never written twice at once.
 *
 * <p>Metrics live in the group {@code parity_view=<view>}, under the names the Python functions
 * ({@code sinks.flink_udf}) use, so dashboards and alert rules work with either.
 */
abstract class BatchingWriter implements SinkWriter<RowData> {

    protected final RedisSinkSettings settings;
    protected final MetricGroup metrics;
    protected final RedisClient client;
    private final ProcessingTimeService time;
    private boolean timerSet;

    BatchingWriter(RedisSinkSettings settings, WriterInitContext context, String... scripts) {
        this.settings = settings;
        this.time = context.getProcessingTimeService();
        this.metrics = context.metricGroup().addGroup("parity_view", settings.view);
        // Retries mean Redis is unreachable or slow right now; errors mean the retries ran out
        // and the job fails.
        Counter retries = metrics.counter("redis_write_retries");
        Counter errors = metrics.counter("redis_write_errors");
        this.client = new RedisClient(settings, retries, errors, scripts);
    }

    /**
     * Whether the view's epoch key is there as the writer opens: an armed writer's scripts mark the
     * view lost when they find it gone (the epoch contract in sinks.redis_layout).
     */
    protected final boolean armed() throws IOException {
        return client.call("the epoch of " + settings.view, (jedis, shas) -> jedis.get(settings.epochKey)) != null;
    }

    /** Rows waiting to be written. */
    protected abstract int pending();

    /**
     * Write pending rows, synchronously, and forget them: every one when {@code all}, else those a
     * writer wants written now (a writer may hold some back for a later tick).
     */
    protected abstract void writePending(boolean all) throws IOException;

    /** Call after adding a row. */
    protected final void added() throws IOException {
        if (pending() >= settings.batchSize) {
            writePending(true);
        }
        tick();
    }

    private void tick() {
        if (!timerSet && pending() > 0) {
            timerSet = true;
            time.registerTimer(time.getCurrentProcessingTime() + settings.batchIntervalMs, now -> {
                timerSet = false;
                if (pending() > 0) {
                    writePending(false);
                }
                tick();
            });
        }
    }

    @Override
    public void flush(boolean endOfInput) throws IOException {
        if (pending() > 0) {
            writePending(true);
        }
    }

    @Override
    public void writeWatermark(Watermark watermark) throws IOException {
        // Closed tiles come just before the watermark that closed them: write them now rather
        // than after the interval, so the completeness row of their period finds them in Redis.
        if (settings.kind != RedisSinkSettings.Kind.LIVE) {
            flush(false);
        }
    }

    @Override
    public void close() throws Exception {
        client.close();
    }
}
