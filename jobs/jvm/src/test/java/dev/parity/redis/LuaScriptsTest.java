package dev.parity.redis;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LuaScriptsTest {

    @Test
    void includesAreExpandedFromTheSharedFiles() {
        String script = LuaScripts.load("set_tiles");
        assertFalse(script.contains(LuaScripts.INCLUDE), "an include line was left in");
        // windows_lib.lua defines layout(), which set_tiles.lua calls.
        assertTrue(script.contains("local function layout("), "windows_lib.lua was not included");
        assertTrue(script.indexOf("local function layout(") < script.indexOf("local c = layout(4)"));
    }

    @Test
    void aScriptWithoutIncludesIsItsFile() {
        String script = LuaScripts.load("advance_completeness");
        assertTrue(script.startsWith("-- advance_completeness.lua"));
        assertTrue(script.endsWith("return 0\n"));
    }

    @Test
    void anUnknownScriptNamesTheFix() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> LuaScripts.load("nope"));
        assertTrue(e.getMessage().contains("parity/lua/nope.lua"), e.getMessage());
    }

    @Test
    void tileFieldsAreEpochSeconds() {
        assertEquals("3600", TileCodec.field(3_600_000L));
    }

    @Test
    void floatsReadBackExactly() {
        for (double d : new double[] {0.1, 1.0, 1e-5, 1.5e20, -2.25, 123456789.123456789}) {
            assertEquals(d, Double.parseDouble(TileCodec.number(d)));
        }
        assertEquals("inf", TileCodec.number(Double.POSITIVE_INFINITY));
        assertEquals("nan", TileCodec.number(Double.NaN));
    }
}
