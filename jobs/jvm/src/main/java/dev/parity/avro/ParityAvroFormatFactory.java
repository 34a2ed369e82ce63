package dev.parity.avro;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;

import java.time.Duration;
import java.util.Set;

/**
 * The 'parity-avro' format: Confluent-framed Avro in, one row per record out, never an exception.
 *
 * <p>The table's physical columns are the reader schema's fields (by name; any subset) plus the
 * dead-letter columns {@code dlq_reason STRING}, {@code dlq_detail STRING}, {@code dlq_schema_id INT}
 * and {@code dlq_value BYTES}. A good record has its fields set and {@code dlq_reason} NULL; a bad
 * one has every field NULL, {@code dlq_reason} set and {@code dlq_value} holding the original bytes
 * (only the first 1 KiB of a value over {@code max-record-bytes}).
 * Routing (good rows to the features, bad rows to the dead-letter topic) is plain SQL on top.
 */
public final class ParityAvroFormatFactory implements DeserializationFormatFactory {

    public static final String IDENTIFIER = "parity-avro";

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Set.of(ParityAvroOptions.URL, ParityAvroOptions.SCHEMA);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Set.of(
            ParityAvroOptions.KEY_FIELD,
            ParityAvroOptions.EVENT_TIME_FIELD,
            ParityAvroOptions.MAX_FUTURE,
            ParityAvroOptions.REGISTRY_TIMEOUT,
            ParityAvroOptions.REGISTRY_BACKOFF,
            ParityAvroOptions.MAX_RECORD_BYTES,
            ParityAvroOptions.MAX_LENGTH,
            ParityAvroOptions.MAX_ITEMS,
            ParityAvroOptions.BASIC_AUTH_USER_INFO,
            ParityAvroOptions.SSL_CA_FILE,
            ParityAvroOptions.SSL_CERT_FILE,
            ParityAvroOptions.SSL_KEY_FILE);
    }

    @Override
    public DecodingFormat<DeserializationSchema<RowData>> createDecodingFormat(
            DynamicTableFactory.Context context, ReadableConfig options) {
        FactoryUtil.validateFactoryOptions(this, options);
        String url = options.get(ParityAvroOptions.URL);
        String schema = options.get(ParityAvroOptions.SCHEMA);
        String keyField = options.getOptional(ParityAvroOptions.KEY_FIELD).orElse(null);
        String timeField = options.getOptional(ParityAvroOptions.EVENT_TIME_FIELD).orElse(null);
        Duration maxFuture = options.get(ParityAvroOptions.MAX_FUTURE);
        RegistryAccess registry = access(url, options);
        ConfluentAvroDecoder.Limits limits = new ConfluentAvroDecoder.Limits(
            bound(ParityAvroOptions.MAX_RECORD_BYTES, options.get(ParityAvroOptions.MAX_RECORD_BYTES).getBytes()),
            bound(ParityAvroOptions.MAX_LENGTH, options.get(ParityAvroOptions.MAX_LENGTH).getBytes()),
            bound(ParityAvroOptions.MAX_ITEMS, options.get(ParityAvroOptions.MAX_ITEMS)));
        // Fail at planning time, not in the task, when the schema or the columns do not fit, or
        // when the registry refuses the login or its certificate.
        RowBuilder.check(schema, keyField, timeField);
        if (registry.secured()) {
            String refusal;
            try {
                refusal = SchemaRegistryCache.forAccess(registry).refusal();
            } catch (IllegalArgumentException e) {
                throw new ValidationException(IDENTIFIER + ": " + e.getMessage(), e);
            }
            if (refusal != null) {
                throw new ValidationException(IDENTIFIER + ": " + refusal);
            }
        }
        return new DecodingFormat<>() {
            @Override
            public DeserializationSchema<RowData> createRuntimeDecoder(
                    DynamicTableSource.Context ctx, DataType physicalDataType) {
                RowType rowType = (RowType) physicalDataType.getLogicalType();
                RowBuilder.check(schema, rowType);
                TypeInformation<RowData> typeInfo = ctx.createTypeInformation(physicalDataType);
                return new ParityAvroDeserializationSchema(
                    rowType, typeInfo, registry, schema, keyField, timeField, maxFuture, limits);
            }

            @Override
            public ChangelogMode getChangelogMode() {
                return ChangelogMode.insertOnly();
            }
        };
    }

    /** The registry's URL and timeouts, and its login and TLS files when the table names them. */
    private static RegistryAccess access(String url, ReadableConfig options) {
        String userInfo = options.getOptional(ParityAvroOptions.BASIC_AUTH_USER_INFO).orElse(null);
        String caFile = options.getOptional(ParityAvroOptions.SSL_CA_FILE).orElse(null);
        String certFile = options.getOptional(ParityAvroOptions.SSL_CERT_FILE).orElse(null);
        String keyFile = options.getOptional(ParityAvroOptions.SSL_KEY_FILE).orElse(null);
        boolean https = url.regionMatches(true, 0, "https://", 0, 8);
        if (!https && (userInfo != null || caFile != null || certFile != null || keyFile != null)) {
            // A password over plain http would be readable by anyone on the way.
            throw new ValidationException(IDENTIFIER + ": the registry's login and TLS files need an https "
                + "'url', got " + url + "; set PARITY_REGISTRY_URL=https://...");
        }
        try {
            return new RegistryAccess(url, options.get(ParityAvroOptions.REGISTRY_TIMEOUT),
                options.get(ParityAvroOptions.REGISTRY_BACKOFF), userInfo, caFile, certFile, keyFile);
        } catch (IllegalArgumentException e) {
            throw new ValidationException(IDENTIFIER + ": " + e.getMessage());
        }
    }

    /** A bound must be positive and fit a Java array. */
    private static int bound(ConfigOption<?> option, long value) {
        if (value <= 0 || value > Integer.MAX_VALUE - 8) {
            throw new ValidationException("parity-avro: '" + IDENTIFIER + "." + option.key() + "' is " + value
                + "; it must be between 1 and " + (Integer.MAX_VALUE - 8));
        }
        return (int) value;
    }
}
