package dev.parity.redis;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.logical.LogicalTypeRoot;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/** A Flink sink writing one kind of row of one view to Redis; see {@link BatchingWriter} for the guarantee. */
final class RedisSink implements Sink<RowData> {

    private static final long serialVersionUID = 1L;

    private final RedisSinkSettings settings;
    private final ArrayList<LogicalTypeRoot> aggregates;

    RedisSink(RedisSinkSettings settings, List<LogicalTypeRoot> aggregates) {
        this.settings = settings;
        this.aggregates = new ArrayList<>(aggregates);
    }

    @Override
    public SinkWriter<RowData> createWriter(WriterInitContext context) throws IOException {
        return switch (settings.kind) {
            case TILES, LIVE -> new TileWriter(settings, aggregates, context, System::currentTimeMillis);
            case COMPLETENESS -> new CompletenessWriter(settings, context, System::currentTimeMillis);
            case LATE -> new LateWriter(settings, context);
        };
    }
}
