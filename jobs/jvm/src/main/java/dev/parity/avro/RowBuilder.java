package dev.parity.avro;

import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.util.Utf8;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;

import java.nio.ByteBuffer;
import java.util.List;

/** Turns decoded records (or rejections) into rows of the table's physical columns. */
final class RowBuilder {

    static final String REASON = "dlq_reason";
    static final String DETAIL = "dlq_detail";
    static final String SCHEMA_ID = "dlq_schema_id";
    static final String VALUE = "dlq_value";

    private interface Converter {
        Object convert(Object avroValue);
    }

    private final int arity;
    private final int reasonPos;
    private final int detailPos;
    private final int schemaIdPos;
    private final int valuePos;
    /** For each column: the reader field position, or -1 for a dead-letter column. */
    private final int[] fieldPos;
    private final Converter[] converters;

    RowBuilder(Schema reader, RowType rowType) {
        List<String> names = rowType.getFieldNames();
        arity = names.size();
        reasonPos = names.indexOf(REASON);
        detailPos = names.indexOf(DETAIL);
        schemaIdPos = names.indexOf(SCHEMA_ID);
        valuePos = names.indexOf(VALUE);
        fieldPos = new int[arity];
        converters = new Converter[arity];
        for (int i = 0; i < arity; i++) {
            String name = names.get(i);
            if (i == reasonPos || i == detailPos || i == schemaIdPos || i == valuePos) {
                fieldPos[i] = -1;
                continue;
            }
            Schema.Field field = reader.getField(name);
            fieldPos[i] = field.pos();
            converters[i] = converter(name, field.schema(), rowType.getTypeAt(i).getTypeRoot());
        }
    }

    GenericRowData good(GenericRecord record, int schemaId) {
        GenericRowData row = new GenericRowData(arity);
        for (int i = 0; i < arity; i++) {
            if (fieldPos[i] >= 0) {
                Object value = record.get(fieldPos[i]);
                row.setField(i, value == null ? null : converters[i].convert(value));
            }
        }
        return row;
    }

    GenericRowData bad(Reason reason, String detail, Integer schemaId, byte[] value) {
        GenericRowData row = new GenericRowData(arity);
        if (reasonPos >= 0) {
            row.setField(reasonPos, StringData.fromString(reason.label()));
        }
        if (detailPos >= 0) {
            row.setField(detailPos, StringData.fromString(detail));
        }
        if (schemaIdPos >= 0) {
            row.setField(schemaIdPos, schemaId);
        }
        if (valuePos >= 0) {
            row.setField(valuePos, value);
        }
        return row;
    }

    /** Checks the reader schema parses and names the key and time fields. */
    static void check(String readerSchema, String keyField, String timeField) {
        Schema reader = parse(readerSchema);
        for (String name : new String[] {keyField, timeField}) {
            if (name != null && reader.getField(name) == null) {
                throw new ValidationException("parity-avro: field '" + name + "' is not in the reader schema");
            }
        }
    }

    /** Checks every physical column is a dead-letter column or a reader field of a supported type. */
    static void check(String readerSchema, RowType rowType) {
        new RowBuilder(parse(readerSchema), rowType);
    }

    static Schema parse(String readerSchema) {
        try {
            Schema schema = new Schema.Parser().parse(readerSchema);
            if (schema.getType() != Schema.Type.RECORD) {
                throw new ValidationException("parity-avro: the reader schema must be a record");
            }
            return schema;
        } catch (RuntimeException e) {
            if (e instanceof ValidationException) {
                throw e;
            }
            throw new ValidationException("parity-avro: the reader schema is not valid Avro: " + e.getMessage(), e);
        }
    }

    private static Schema nonNull(Schema schema) {
        if (schema.getType() != Schema.Type.UNION) {
            return schema;
        }
        Schema found = null;
        for (Schema branch : schema.getTypes()) {
            if (branch.getType() != Schema.Type.NULL) {
                if (found != null) {
                    return schema;
                }
                found = branch;
            }
        }
        return found == null ? schema : found;
    }

    private static Converter converter(String name, Schema fieldSchema, LogicalTypeRoot column) {
        Schema schema = nonNull(fieldSchema);
        LogicalType logical = schema.getLogicalType();
        Schema.Type type = schema.getType();
        switch (column) {
            case CHAR:
            case VARCHAR:
                if (type == Schema.Type.STRING) {
                    return v -> v instanceof Utf8 u
                        ? StringData.fromBytes(u.getBytes(), 0, u.getByteLength())
                        : StringData.fromString(v.toString());
                }
                if (type == Schema.Type.ENUM) {
                    return v -> StringData.fromString(v.toString());
                }
                break;
            case TIMESTAMP_WITHOUT_TIME_ZONE:
            case TIMESTAMP_WITH_LOCAL_TIME_ZONE:
                if (type == Schema.Type.LONG && logical instanceof LogicalTypes.TimestampMillis) {
                    return v -> TimestampData.fromEpochMillis((Long) v);
                }
                break;
            case BIGINT:
                if (type == Schema.Type.LONG || type == Schema.Type.INT) {
                    return v -> ((Number) v).longValue();
                }
                break;
            case INTEGER:
                if (type == Schema.Type.INT) {
                    return v -> v;
                }
                break;
            case DOUBLE:
                if (type == Schema.Type.DOUBLE || type == Schema.Type.FLOAT
                        || type == Schema.Type.LONG || type == Schema.Type.INT) {
                    return v -> ((Number) v).doubleValue();
                }
                break;
            case FLOAT:
                if (type == Schema.Type.FLOAT) {
                    return v -> v;
                }
                break;
            case BOOLEAN:
                if (type == Schema.Type.BOOLEAN) {
                    return v -> v;
                }
                break;
            case BINARY:
            case VARBINARY:
                if (type == Schema.Type.BYTES) {
                    return v -> {
                        ByteBuffer buffer = ((ByteBuffer) v).duplicate();
                        byte[] out = new byte[buffer.remaining()];
                        buffer.get(out);
                        return out;
                    };
                }
                break;
            default:
                break;
        }
        throw new ValidationException("parity-avro: column '" + name + "' of type " + column
            + " cannot hold Avro " + fieldSchema + "; only string/enum, int, long, float, double, boolean, "
            + "bytes and timestamp-millis map to columns");
    }
}
