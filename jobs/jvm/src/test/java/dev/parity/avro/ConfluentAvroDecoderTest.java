package dev.parity.avro;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ConfluentAvroDecoderTest {

    static final Schema READER = new Schema.Parser().parse("""
        {"type": "record", "name": "Probe", "fields": [
          {"name": "name", "type": "string"},
          {"name": "payload", "type": "bytes"},
          {"name": "counts", "type": {"type": "array", "items": "long"}},
          {"name": "tags", "type": {"type": "map", "values": "string"}},
          {"name": "gaps", "type": {"type": "array", "items": "null"}}
        ]}""");
    /** A writer with a leading field the reader does not have: Avro skips it instead of reading it. */
    static final Schema WRITER_WITH_NOTE = new Schema.Parser().parse("""
        {"type": "record", "name": "Probe", "fields": [
          {"name": "note", "type": "string"},
          {"name": "name", "type": "string"},
          {"name": "payload", "type": "bytes"},
          {"name": "counts", "type": {"type": "array", "items": "long"}},
          {"name": "tags", "type": {"type": "map", "values": "string"}},
          {"name": "gaps", "type": {"type": "array", "items": "null"}}
        ]}""");
    static final int ID = 7;
    static final int NOTE_ID = 8;
    static final ConfluentAvroDecoder.Limits LIMITS = new ConfluentAvroDecoder.Limits(4096, 1024, 1000);
    /** About what a hostile record declares: far over any bound, far over the test JVM's heap. */
    static final long HUGE = 2_000_000_000L;

    static ConfluentAvroDecoder decoder() {
        return new ConfluentAvroDecoder(READER, id -> switch (id) {
            case ID -> new SchemaRegistryCache.Lookup(SchemaRegistryCache.Lookup.Status.FOUND, READER.toString(), "");
            case NOTE_ID -> new SchemaRegistryCache.Lookup(
                SchemaRegistryCache.Lookup.Status.FOUND, WRITER_WITH_NOTE.toString(), "");
            default -> new SchemaRegistryCache.Lookup(SchemaRegistryCache.Lookup.Status.UNKNOWN, null, "unknown");
        }, LIMITS);
    }

    /** Writes Avro longs (lengths, counts) and raw bytes after the Confluent header of {@code id}. */
    static final class Body {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();
        private final BinaryEncoder encoder = EncoderFactory.get().directBinaryEncoder(out, null);

        Body(int id) {
            out.writeBytes(new byte[] {0, 0, 0, 0, (byte) id});
        }

        Body varint(long value) {
            try {
                encoder.writeLong(value);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return this;
        }

        Body string(String value) {
            byte[] utf8 = value.getBytes(StandardCharsets.UTF_8);
            varint(utf8.length);
            out.writeBytes(utf8);
            return this;
        }

        byte[] bytes() {
            return out.toByteArray();
        }
    }

    static GenericRecord probe() {
        GenericRecord record = new GenericData.Record(READER);
        record.put("name", "n-1");
        record.put("payload", ByteBuffer.wrap(new byte[] {1, 2, 3}));
        record.put("counts", List.of(1L, 2L, 3L));
        record.put("tags", Map.of("k", "v"));
        record.put("gaps", Arrays.asList(null, null));
        return record;
    }

    static byte[] framed(GenericRecord record) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(new byte[] {0, 0, 0, 0, ID});
        BinaryEncoder encoder = EncoderFactory.get().directBinaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(READER).write(record, encoder);
        return out.toByteArray();
    }

    static ConfluentAvroDecoder.Outcome rejected(byte[] value, Reason reason) {
        ConfluentAvroDecoder.Outcome outcome = decoder().decode(value);
        assertEquals(reason, outcome.reason(), outcome.detail());
        assertNull(outcome.record());
        return outcome;
    }

    /** Refused by the bound on {@code option}, not by the last-resort catch of an OutOfMemoryError. */
    static void outOfBounds(byte[] value, String option) {
        String detail = rejected(value, Reason.LENGTH_OUT_OF_BOUNDS).detail();
        assertTrue(detail.contains("parity-avro." + option), detail);
    }

    @Test
    void aNormalRecordStillDecodes() throws IOException {
        ConfluentAvroDecoder.Outcome outcome = decoder().decode(framed(probe()));
        assertNull(outcome.reason(), outcome.detail());
        GenericRecord record = outcome.record();
        assertEquals("n-1", record.get("name").toString());
        assertEquals(ByteBuffer.wrap(new byte[] {1, 2, 3}), record.get("payload"));
        assertEquals(List.of(1L, 2L, 3L), record.get("counts"));
        assertEquals("v", ((Map<?, ?>) record.get("tags")).values().iterator().next().toString());
        assertEquals(2, ((List<?>) record.get("gaps")).size());
    }

    @Test
    void tenBytesDeclaringAHugeStringAreRefusedBeforeAvroAllocatesIt() {
        byte[] value = new Body(ID).varint(HUGE).bytes();
        assertEquals(10, value.length);
        outOfBounds(value, "max-length");
        // Avro alone allocates the declared length first: the error that failed the job.
        assertThrows(OutOfMemoryError.class, () -> new GenericDatumReader<GenericRecord>(READER)
            .read(null, DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, null)));
    }

    @Test
    void aHugeBytesLengthIsRefused() {
        outOfBounds(new Body(ID).string("n").varint(HUGE).bytes(), "max-length");
    }

    @Test
    void aHugeArrayItemCountIsRefused() {
        outOfBounds(new Body(ID).string("n").varint(0).varint(HUGE).bytes(), "max-items");
    }

    @Test
    void aHugeMapItemCountIsRefused() {
        outOfBounds(new Body(ID).string("n").varint(0).varint(0).varint(HUGE).bytes(), "max-items");
    }

    @Test
    void itemsAreBoundedPerRecordNotPerBlock() {
        // Nulls take no bytes: 50 blocks of 100 items fit in a few hundred bytes.
        Body body = new Body(ID).string("n").varint(0).varint(0).varint(0);
        for (int i = 0; i < 50; i++) {
            body.varint(100);
        }
        outOfBounds(body.varint(0).bytes(), "max-items");
    }

    @Test
    void aHugeLengthInAFieldTheReaderSkipsIsRefused() {
        outOfBounds(new Body(NOTE_ID).varint(HUGE).bytes(), "max-length");
    }

    @Test
    void aLengthWithinTheBoundButPastTheEndIsTruncated() {
        rejected(new Body(ID).varint(1000).bytes(), Reason.TRUNCATED);
    }

    @Test
    void aNegativeLengthIsNotAvro() {
        rejected(new Body(ID).varint(-1).bytes(), Reason.NOT_AVRO);
    }

    @Test
    void anOversizedRecordIsRefusedBeforeItsHeaderIsRead() {
        byte[] value = new byte[LIMITS.maxRecordBytes() + 1];
        ConfluentAvroDecoder.Outcome outcome = rejected(value, Reason.RECORD_TOO_LARGE);
        assertTrue(outcome.detail().contains("parity-avro.max-record-bytes"), outcome.detail());
        // Exactly the bound is allowed: the header is read (and names no known schema).
        assertEquals(Reason.UNKNOWN_SCHEMA_ID, decoder().decode(Arrays.copyOf(value, LIMITS.maxRecordBytes())).reason());
    }
}
