package dev.parity.avro;

import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

import java.io.EOFException;
import java.io.IOException;
import java.io.Serializable;
import java.util.HashMap;
import java.util.Map;
import java.util.function.IntFunction;

/**
 * Decodes one Confluent-framed Avro value (magic byte 0, 4-byte big-endian schema id, Avro binary)
 * into a record of the reader schema, or says why it cannot.
 *
 * <p>Hostile input is bounded before anything is allocated for it: the size of the value first, then
 * every length the body declares ({@link BoundedDecoder}).
 *
 * <p>Not thread-safe: one instance per Flink subtask.
 */
final class ConfluentAvroDecoder {

    /**
     * Bounds on one record: bytes of the Kafka value, bytes of one string or bytes value, array and
     * map items of the whole record (the format options {@code max-record-bytes}, {@code max-length}
     * and {@code max-items}).
     */
    record Limits(int maxRecordBytes, int maxLength, int maxItems) implements Serializable { }

    /** A decoded record, or the reason it was rejected (then {@code record} is null). */
    record Outcome(GenericRecord record, Reason reason, String detail, Integer schemaId) {
        static Outcome ok(GenericRecord record, int schemaId) {
            return new Outcome(record, null, null, schemaId);
        }

        static Outcome bad(Reason reason, String detail, Integer schemaId) {
            return new Outcome(null, reason, detail, schemaId);
        }
    }

    private static final byte MAGIC = 0;
    private static final int HEADER = 5;

    /** A writer schema resolved against the reader schema: a reader, or why it cannot be read. */
    private record Resolved(GenericDatumReader<GenericRecord> reader, String incompatibility) { }

    private final Schema readerSchema;
    private final IntFunction<SchemaRegistryCache.Lookup> registry;
    private final int maxRecordBytes;
    private final Map<Integer, Resolved> resolved = new HashMap<>();
    private final BoundedDecoder bounded;
    private BinaryDecoder decoder;

    /** {@code registry} looks writer schemas up by id, as {@link SchemaRegistryCache#lookup} does. */
    ConfluentAvroDecoder(Schema readerSchema, IntFunction<SchemaRegistryCache.Lookup> registry, Limits limits) {
        this.readerSchema = readerSchema;
        this.registry = registry;
        this.maxRecordBytes = limits.maxRecordBytes();
        this.bounded = new BoundedDecoder(limits.maxLength(), limits.maxItems());
    }

    Outcome decode(byte[] value) {
        if (value == null || value.length == 0) {
            return Outcome.bad(Reason.EMPTY_VALUE, "the record has no value", null);
        }
        if (value.length > maxRecordBytes) {
            return Outcome.bad(Reason.RECORD_TOO_LARGE, "the value is " + value.length
                + " bytes, over the bound of " + maxRecordBytes + " (parity-avro.max-record-bytes)", null);
        }
        if (value[0] != MAGIC) {
            return Outcome.bad(Reason.WRONG_MAGIC_BYTE,
                String.format("first byte is 0x%02x, not the Confluent magic byte 0x00", value[0] & 0xff), null);
        }
        if (value.length < HEADER) {
            return Outcome.bad(Reason.TRUNCATED,
                "only " + value.length + " bytes; the Confluent header alone is 5", null);
        }
        int id = ((value[1] & 0xff) << 24) | ((value[2] & 0xff) << 16) | ((value[3] & 0xff) << 8) | (value[4] & 0xff);
        Resolved schema = resolved.get(id);
        if (schema == null) {
            SchemaRegistryCache.Lookup lookup = registry.apply(id);
            switch (lookup.status()) {
                case UNKNOWN:
                    return Outcome.bad(Reason.UNKNOWN_SCHEMA_ID, lookup.detail(), id);
                case UNAVAILABLE:
                    // Not cached as resolved: the next record with this id asks again.
                    return Outcome.bad(Reason.REGISTRY_UNAVAILABLE, lookup.detail(), id);
                default:
                    schema = resolve(id, lookup.schema());
                    resolved.put(id, schema);
            }
        }
        if (schema.reader() == null) {
            Reason reason = schema.incompatibility().startsWith("unparseable")
                ? Reason.UNKNOWN_SCHEMA_ID : Reason.INCOMPATIBLE_WRITER_SCHEMA;
            return Outcome.bad(reason, schema.incompatibility(), id);
        }
        decoder = DecoderFactory.get().binaryDecoder(value, HEADER, value.length - HEADER, decoder);
        GenericRecord record;
        try {
            // No record reuse: strings are handed to Flink without copying.
            record = schema.reader().read(null, bounded.reset(decoder));
        } catch (EOFException e) {
            return Outcome.bad(Reason.TRUNCATED, "the Avro body ends before the record does", id);
        } catch (BoundedDecoder.OutOfBounds e) {
            return Outcome.bad(Reason.LENGTH_OUT_OF_BOUNDS, e.getMessage(), id);
        } catch (OutOfMemoryError | StackOverflowError e) {
            // A last resort behind the bounds: the heap or the stack this one record asked for. If the
            // error escaped, the task would fail and its restart would read the same record again.
            return Outcome.bad(Reason.LENGTH_OUT_OF_BOUNDS,
                "decoding writer schema " + id + " ran out of memory or stack: " + e, id);
        } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException | ClassCastException
                 | NegativeArraySizeException e) {
            return Outcome.bad(Reason.NOT_AVRO,
                "not an Avro encoding of writer schema " + id + ": " + e.getClass().getSimpleName() + ": "
                    + e.getMessage(), id);
        }
        try {
            if (!decoder.isEnd()) {
                return Outcome.bad(Reason.NOT_AVRO,
                    "bytes left over after the record: not an encoding of writer schema " + id, id);
            }
        } catch (IOException e) {
            return Outcome.bad(Reason.NOT_AVRO, e.getMessage(), id);
        }
        return Outcome.ok(record, id);
    }

    private Resolved resolve(int id, String text) {
        Schema writer;
        try {
            writer = new Schema.Parser().parse(text);
        } catch (RuntimeException e) {
            return new Resolved(null, "unparseable writer schema " + id + ": " + e.getMessage());
        }
        SchemaCompatibility.SchemaPairCompatibility pair =
            SchemaCompatibility.checkReaderWriterCompatibility(readerSchema, writer);
        if (pair.getType() != SchemaCompatibility.SchemaCompatibilityType.COMPATIBLE) {
            return new Resolved(null, "writer schema " + id + " cannot be read with the reader schema: "
                + pair.getResult().getIncompatibilities());
        }
        return new Resolved(new GenericDatumReader<>(writer, readerSchema), null);
    }
}
