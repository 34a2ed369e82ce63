package dev.parity.avro;

import org.apache.avro.AvroRuntimeException;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.Decoder;
import org.apache.avro.util.Utf8;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The Avro body of one record, read through a {@link BinaryDecoder} over its bytes, with every
 * declared length checked before anything is allocated for it.
 *
 * <p>Avro allocates a string or bytes value from its declared length, and an array or map from its
 * declared item count, before reading any of it: ten bytes can ask for 2 GB, and the
 * OutOfMemoryError would fail the job on the same record after every restart. Avro's own limits
 * ({@code org.apache.avro.limits.*}) do not help here: they are JVM-wide system properties read
 * once, default to 2 GB, and the shading of this jar renames them. So the checks are made here:
 * <ol>
 *   <li>a string or bytes length over {@code maxLength} is {@link OutOfBounds}; one over the bytes
 *       left in the record is truncation ({@link EOFException}, what Avro reports after allocating);
 *       a negative one is malformed ({@link AvroRuntimeException}, as Avro reports it);</li>
 *   <li>the items of all arrays and maps of the record together may not exceed {@code maxItems}:
 *       an item can take no bytes at all (null, an empty record), so the record's size does not
 *       bound them.</li>
 * </ol>
 * Everything else goes to the binary decoder unchanged. Not thread-safe.
 */
final class BoundedDecoder extends Decoder {

    /** A declared length or item count beyond the bounds. */
    static final class OutOfBounds extends IOException {
        private static final long serialVersionUID = 1L;

        OutOfBounds(String message) {
            super(message);
        }
    }

    private final int maxLength;
    private final int maxItems;
    private BinaryDecoder in;
    private long items;

    BoundedDecoder(int maxLength, int maxItems) {
        this.maxLength = maxLength;
        this.maxItems = maxItems;
    }

    /** Starts a record: reads from {@code in}, with the whole item budget. */
    BoundedDecoder reset(BinaryDecoder in) {
        this.in = in;
        this.items = 0;
        return this;
    }

    private int length(long declared) throws IOException {
        if (declared < 0) {
            throw new AvroRuntimeException("Malformed data. Length is negative: " + declared);
        }
        if (declared > maxLength) {
            throw new OutOfBounds("a string or bytes value declares " + declared + " bytes, over the bound of "
                + maxLength + " (parity-avro.max-length)");
        }
        // Over a byte array, what the binary decoder has buffered is the rest of the record.
        if (declared > in.inputStream().available()) {
            throw new EOFException("a string or bytes value declares " + declared + " bytes; fewer are left");
        }
        return (int) declared;
    }

    private long items(long declared) throws IOException {
        // The binary decoder turns a negative block count positive; only Long.MIN_VALUE stays negative.
        if (declared < 0 || declared > maxItems - items) {
            throw new OutOfBounds("arrays and maps declare " + (declared < 0 ? declared : items + declared)
                + " items, over the bound of " + maxItems + " per record (parity-avro.max-items)");
        }
        items += declared;
        return declared;
    }

    @Override
    public Utf8 readString(Utf8 old) throws IOException {
        int length = length(in.readLong());
        Utf8 result = old != null ? old : new Utf8();
        result.setByteLength(length);
        in.readFixed(result.getBytes(), 0, length);
        return result;
    }

    @Override
    public String readString() throws IOException {
        return readString(null).toString();
    }

    @Override
    public void skipString() throws IOException {
        in.skipFixed(length(in.readLong()));
    }

    @Override
    public ByteBuffer readBytes(ByteBuffer old) throws IOException {
        int length = length(in.readLong());
        ByteBuffer result = ByteBuffer.allocate(length);
        in.readFixed(result.array(), 0, length);
        return result;
    }

    @Override
    public void skipBytes() throws IOException {
        in.skipFixed(length(in.readLong()));
    }

    @Override
    public long readArrayStart() throws IOException {
        return items(in.readArrayStart());
    }

    @Override
    public long arrayNext() throws IOException {
        return items(in.arrayNext());
    }

    @Override
    public long skipArray() throws IOException {
        return items(in.skipArray());
    }

    @Override
    public long readMapStart() throws IOException {
        return items(in.readMapStart());
    }

    @Override
    public long mapNext() throws IOException {
        return items(in.mapNext());
    }

    @Override
    public long skipMap() throws IOException {
        return items(in.skipMap());
    }

    @Override
    public void readNull() throws IOException {
        in.readNull();
    }

    @Override
    public boolean readBoolean() throws IOException {
        return in.readBoolean();
    }

    @Override
    public int readInt() throws IOException {
        return in.readInt();
    }

    @Override
    public long readLong() throws IOException {
        return in.readLong();
    }

    @Override
    public float readFloat() throws IOException {
        return in.readFloat();
    }

    @Override
    public double readDouble() throws IOException {
        return in.readDouble();
    }

    @Override
    public void readFixed(byte[] bytes, int start, int length) throws IOException {
        in.readFixed(bytes, start, length);
    }

    @Override
    public void skipFixed(int length) throws IOException {
        in.skipFixed(length);
    }

    @Override
    public int readEnum() throws IOException {
        return in.readEnum();
    }

    @Override
    public int readIndex() throws IOException {
        return in.readIndex();
    }
}
