package dev.parity.avro;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.logical.IntType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.VarBinaryType;
import org.apache.flink.table.types.logical.VarCharType;
import org.apache.flink.util.UserCodeClassLoader;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ParityAvroDeserializationSchemaTest {

    @Test
    void anOversizedRecordsDeadLetterKeepsOnlyItsFirstBytes() {
        RowType rowType = RowType.of(
            new LogicalType[] {
                new VarCharType(VarCharType.MAX_LENGTH), new VarCharType(VarCharType.MAX_LENGTH),
                new VarCharType(VarCharType.MAX_LENGTH), new IntType(), new VarBinaryType(VarBinaryType.MAX_LENGTH),
            },
            new String[] {"name", RowBuilder.REASON, RowBuilder.DETAIL, RowBuilder.SCHEMA_ID, RowBuilder.VALUE});
        // The registry is never asked: the size is checked first.
        ParityAvroDeserializationSchema schema = new ParityAvroDeserializationSchema(
            rowType, null, RegistryAccess.plain("http://127.0.0.1:9", Duration.ofSeconds(1), Duration.ofSeconds(1)),
            ConfluentAvroDecoderTest.READER.toString(), null, null, Duration.ofDays(1), ConfluentAvroDecoderTest.LIMITS);
        schema.open(new DeserializationSchema.InitializationContext() {
            @Override
            public MetricGroup getMetricGroup() {
                return new UnregisteredMetricsGroup();
            }

            @Override
            public UserCodeClassLoader getUserCodeClassLoader() {
                return null;
            }
        });
        byte[] value = new byte[ConfluentAvroDecoderTest.LIMITS.maxRecordBytes() * 2];
        Arrays.fill(value, (byte) 7);

        RowData row = schema.deserialize(value);

        assertEquals("record_too_large", row.getString(1).toString());
        assertTrue(row.getString(2).toString().contains("keeps the first 1024 bytes"), row.getString(2).toString());
        assertArrayEquals(Arrays.copyOf(value, ParityAvroDeserializationSchema.KEPT_OF_TOO_LARGE), row.getBinary(4));
    }
}
