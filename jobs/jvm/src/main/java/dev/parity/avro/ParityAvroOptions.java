package dev.parity.avro;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.MemorySize;

import java.time.Duration;

/** Options of the 'parity-avro' format, written {@code 'parity-avro.<key>'} in a table's WITH clause. */
public final class ParityAvroOptions {

    private ParityAvroOptions() { }

    public static final ConfigOption<String> URL = ConfigOptions.key("url")
        .stringType()
        .noDefaultValue()
        .withDescription("Confluent-compatible schema registry URL; writer schemas are fetched by id.");

    public static final ConfigOption<String> BASIC_AUTH_USER_INFO = ConfigOptions.key("basic-auth.user-info")
        .stringType()
        .noDefaultValue()
        .withDescription("user:password of the registry's HTTP basic auth (PARITY_REGISTRY_BASIC_AUTH_USER_INFO); "
            + "Flink hides values of 'basic-auth' keys where it logs configuration.");

    public static final ConfigOption<String> SSL_CA_FILE = ConfigOptions.key("ssl.ca-file")
        .stringType()
        .noDefaultValue()
        .withDescription("PEM file of the CA that signed the registry's certificate; the JVM's CAs when unset.");

    public static final ConfigOption<String> SSL_CERT_FILE = ConfigOptions.key("ssl.cert-file")
        .stringType()
        .noDefaultValue()
        .withDescription("PEM client certificate, for a registry (proxy) that asks for one.");

    public static final ConfigOption<String> SSL_KEY_FILE = ConfigOptions.key("ssl.key-file")
        .stringType()
        .noDefaultValue()
        .withDescription("The client certificate's unencrypted PKCS#8 PEM key; the certificate's file when unset.");

    public static final ConfigOption<String> SCHEMA = ConfigOptions.key("schema")
        .stringType()
        .noDefaultValue()
        .withDescription("The reader schema (Avro JSON); every writer version is resolved to it.");

    public static final ConfigOption<String> KEY_FIELD = ConfigOptions.key("key-field")
        .stringType()
        .noDefaultValue()
        .withDescription("Entity key field; a null or empty value is a dead letter (missing_entity_key).");

    public static final ConfigOption<String> EVENT_TIME_FIELD = ConfigOptions.key("event-time-field")
        .stringType()
        .noDefaultValue()
        .withDescription("timestamp-millis field checked against 1970 and the allowed future skew.");

    public static final ConfigOption<Duration> MAX_FUTURE = ConfigOptions.key("max-future")
        .durationType()
        .defaultValue(Duration.ofDays(1))
        .withDescription("How far past the wall clock an event time may be before it is a dead letter.");

    public static final ConfigOption<Duration> REGISTRY_TIMEOUT = ConfigOptions.key("registry-timeout")
        .durationType()
        .defaultValue(Duration.ofSeconds(2))
        .withDescription("Connect and response timeout of one registry request.");

    public static final ConfigOption<Duration> REGISTRY_BACKOFF = ConfigOptions.key("registry-backoff")
        .durationType()
        .defaultValue(Duration.ofSeconds(5))
        .withDescription("After a failed request, how long unknown ids are dead-lettered without asking again.");

    public static final ConfigOption<MemorySize> MAX_RECORD_BYTES = ConfigOptions.key("max-record-bytes")
        .memoryType()
        .defaultValue(MemorySize.ofMebiBytes(1))
        .withDescription("A larger Kafka value is a dead letter (record_too_large) that keeps only its "
            + "first bytes, so that the dead-letter topic can take it.");

    public static final ConfigOption<MemorySize> MAX_LENGTH = ConfigOptions.key("max-length")
        .memoryType()
        .defaultValue(MemorySize.ofMebiBytes(1))
        .withDescription("A string or bytes value declaring more is a dead letter (length_out_of_bounds), "
            + "refused before anything is allocated for it.");

    public static final ConfigOption<Integer> MAX_ITEMS = ConfigOptions.key("max-items")
        .intType()
        .defaultValue(100_000)
        .withDescription("A record whose arrays and maps declare more items, all together, is a dead letter "
            + "(length_out_of_bounds), refused before anything is allocated for them.");
}
