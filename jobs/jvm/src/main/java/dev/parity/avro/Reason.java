package dev.parity.avro;

/** Why a record went to the dead-letter topic. The label values are part of the DLQ contract. */
public enum Reason {
    /** A null (tombstone) or zero-length value. */
    EMPTY_VALUE("empty_value"),
    /** The value is larger than {@code max-record-bytes}; checked before anything else. */
    RECORD_TOO_LARGE("record_too_large"),
    /** The first byte is not the Confluent magic byte 0 (e.g. plain JSON, another framing). */
    WRONG_MAGIC_BYTE("wrong_magic_byte"),
    /** Shorter than the 5-byte header, or the Avro body ends before the record does. */
    TRUNCATED("truncated"),
    /** The registry does not know the schema id (404), or it names a schema that is not Avro. */
    UNKNOWN_SCHEMA_ID("unknown_schema_id"),
    /** The schema id is not cached and the registry did not answer in time. */
    REGISTRY_UNAVAILABLE("registry_unavailable"),
    /** The writer schema cannot be read through the reader schema. */
    INCOMPATIBLE_WRITER_SCHEMA("incompatible_writer_schema"),
    /** The body is not a valid Avro encoding of the writer schema (or has bytes left over). */
    NOT_AVRO("not_avro"),
    /**
     * A string or bytes length over {@code max-length}, or more array and map items than
     * {@code max-items}; also a record whose decoding ran out of heap or stack all the same.
     */
    LENGTH_OUT_OF_BOUNDS("length_out_of_bounds"),
    /** The entity key field is null or empty. */
    MISSING_ENTITY_KEY("missing_entity_key"),
    /** The event time is later than now plus the allowed skew. */
    EVENT_TIME_IN_FUTURE("event_time_in_future"),
    /** The event time is before 1970-01-01T00:00:00Z. */
    EVENT_TIME_BEFORE_1970("event_time_before_1970");

    private final String label;

    Reason(String label) {
        this.label = label;
    }

    /** The value written to the DLQ envelope and used as the metric label. */
    public String label() {
        return label;
    }
}
