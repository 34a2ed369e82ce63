package dev.parity.redis;

/**
 * A tile's value in its entity's hash: {@code <events>|<agg1>|<agg2>...}, an empty item for a
 * NULL min/max ({@code sinks.redis_layout.encode_tile} is the Python twin). Floats are written so
 * that Python's {@code float()} and Lua's {@code tonumber} read back the same double.
 */
public final class TileCodec {

    private TileCodec() { }

    /** The hash field of a tile: its start in epoch seconds. */
    public static String field(long tileStartMs) {
        return Long.toString(Math.floorDiv(tileStartMs, 1000L));
    }

    /** The start (epoch ms) of the tile a hash field names; tiles start on whole seconds. */
    public static long startMs(String field) {
        return Long.parseLong(field) * 1000L;
    }

    public static String number(double value) {
        if (Double.isNaN(value)) {
            return "nan";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "inf" : "-inf";
        }
        // Double.toString round-trips exactly; "1.0E-5" reads back in Python and Lua alike.
        return Double.toString(value);
    }
}
