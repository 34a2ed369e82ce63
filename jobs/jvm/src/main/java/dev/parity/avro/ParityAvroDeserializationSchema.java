package dev.parity.avro;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.util.Utf8;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.logical.RowType;

import java.time.Duration;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.Map;

/**
 * Decodes one Kafka value into a row; never throws for bad input.
 *
 * <p>Protocol of {@link #deserialize(byte[])}:
 * <ol>
 *   <li>frame: empty value, size of the value, magic byte, 5-byte header;</li>
 *   <li>writer schema by id: this subtask's resolved readers, then the JVM-wide cache, then the
 *       registry (short timeout, back-off after a failure);</li>
 *   <li>Avro decode resolved to the reader schema, every declared length bounded before it is
 *       allocated; the whole body must be consumed;</li>
 *   <li>content: entity key present and non-empty, event time in [1970, now + max-future];</li>
 *   <li>a good row, or a dead-letter row with the reason, counted per reason in the metric group
 *       {@code parity_decode} ({@code dead_letters} with label {@code reason}, and {@code decoded}).</li>
 * </ol>
 */
final class ParityAvroDeserializationSchema implements DeserializationSchema<RowData> {

    private static final long serialVersionUID = 1L;

    /**
     * How much of a record_too_large value its dead letter keeps: the whole value could be too large
     * for the dead-letter topic as well, and the envelope's topic and offset find the rest.
     */
    static final int KEPT_OF_TOO_LARGE = 1024;

    private final RowType rowType;
    private final TypeInformation<RowData> typeInfo;
    private final RegistryAccess registry;
    private final String readerSchema;
    private final String keyField;
    private final String timeField;
    private final long maxFutureMillis;
    private final ConfluentAvroDecoder.Limits limits;

    private transient ConfluentAvroDecoder decoder;
    private transient RowBuilder rows;
    private transient int keyPos;
    private transient int timePos;
    private transient Counter decoded;
    private transient Map<Reason, Counter> deadLetters;

    ParityAvroDeserializationSchema(
            RowType rowType,
            TypeInformation<RowData> typeInfo,
            RegistryAccess registry,
            String readerSchema,
            String keyField,
            String timeField,
            Duration maxFuture,
            ConfluentAvroDecoder.Limits limits) {
        this.rowType = rowType;
        this.typeInfo = typeInfo;
        this.registry = registry;
        this.readerSchema = readerSchema;
        this.keyField = keyField;
        this.timeField = timeField;
        this.maxFutureMillis = maxFuture.toMillis();
        this.limits = limits;
    }

    @Override
    public void open(InitializationContext context) {
        Schema reader = RowBuilder.parse(readerSchema);
        decoder = new ConfluentAvroDecoder(reader, SchemaRegistryCache.forAccess(registry)::lookup, limits);
        rows = new RowBuilder(reader, rowType);
        keyPos = keyField == null ? -1 : reader.getField(keyField).pos();
        timePos = timeField == null ? -1 : reader.getField(timeField).pos();
        MetricGroup group = context.getMetricGroup().addGroup("parity_decode");
        decoded = group.counter("decoded");
        deadLetters = new EnumMap<>(Reason.class);
        for (Reason reason : Reason.values()) {
            deadLetters.put(reason, group.addGroup("reason", reason.label()).counter("dead_letters"));
        }
    }

    @Override
    public RowData deserialize(byte[] message) {
        ConfluentAvroDecoder.Outcome outcome = decoder.decode(message);
        if (outcome.reason() == Reason.RECORD_TOO_LARGE) {
            byte[] kept = Arrays.copyOf(message, Math.min(message.length, KEPT_OF_TOO_LARGE));
            return reject(outcome.reason(), outcome.detail() + "; the dead letter keeps the first "
                + kept.length + " bytes", outcome.schemaId(), kept);
        }
        if (outcome.reason() != null) {
            return reject(outcome.reason(), outcome.detail(), outcome.schemaId(), message);
        }
        GenericRecord record = outcome.record();
        if (keyPos >= 0) {
            Object key = record.get(keyPos);
            if (key == null || (key instanceof Utf8 u ? u.getByteLength() == 0 : key.toString().isEmpty())) {
                return reject(Reason.MISSING_ENTITY_KEY, "field '" + keyField + "' is null or empty",
                    outcome.schemaId(), message);
            }
        }
        if (timePos >= 0) {
            Object time = record.get(timePos);
            if (time instanceof Long millis) {
                if (millis < 0) {
                    return reject(Reason.EVENT_TIME_BEFORE_1970,
                        "field '" + timeField + "' is " + millis + " ms, before 1970", outcome.schemaId(), message);
                }
                long now = System.currentTimeMillis();
                if (millis > now + maxFutureMillis) {
                    return reject(Reason.EVENT_TIME_IN_FUTURE,
                        "field '" + timeField + "' is " + (millis - now) + " ms ahead of the wall clock (allowed "
                            + maxFutureMillis + ")", outcome.schemaId(), message);
                }
            }
        }
        decoded.inc();
        return rows.good(record, outcome.schemaId());
    }

    private RowData reject(Reason reason, String detail, Integer schemaId, byte[] message) {
        deadLetters.get(reason).inc();
        return rows.bad(reason, detail, schemaId, message);
    }

    @Override
    public boolean isEndOfStream(RowData nextElement) {
        return false;
    }

    @Override
    public TypeInformation<RowData> getProducedType() {
        return typeInfo;
    }
}
