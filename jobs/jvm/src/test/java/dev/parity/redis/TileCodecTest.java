package dev.parity.redis;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class TileCodecTest {

    @Test
    void aFieldNamesItsTileStartBothWays() {
        long start = 1_770_008_400_000L;
        assertEquals("1770008400", TileCodec.field(start));
        assertEquals(start, TileCodec.startMs(TileCodec.field(start)));
        assertEquals(-3_600_000L, TileCodec.startMs(TileCodec.field(-3_600_000L)));
    }
}
