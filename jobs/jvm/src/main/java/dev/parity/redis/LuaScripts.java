package dev.parity.redis;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

/**
 * The online store's Lua scripts, read from the same {@code .lua} files the Python side loads
 * ({@code sinks/lua/}, packed into this jar under {@code parity/lua/}).
 *
 * <p>The one sharing rule of {@code sinks.lua_scripts}: a line that is exactly
 * {@code -- parity:include <file>} is replaced by that file's text; included files include nothing.
 */
public final class LuaScripts {

    static final String INCLUDE = "-- parity:include ";
    private static final String FOLDER = "parity/lua/";

    private LuaScripts() { }

    /** The text of script {@code name} (the file {@code <name>.lua}), includes expanded. */
    public static String load(String name) {
        StringBuilder out = new StringBuilder();
        for (String line : read(name + ".lua").split("(?<=\n)")) {
            if (line.startsWith(INCLUDE)) {
                String included = line.substring(INCLUDE.length()).strip();
                String text = read(included);
                for (String inner : text.split("\n")) {
                    if (inner.startsWith(INCLUDE)) {
                        throw new IllegalStateException(included + ", included by " + name + ".lua, includes another file");
                    }
                }
                out.append(text);
            } else {
                out.append(line);
            }
        }
        return out.toString();
    }

    private static String read(String file) {
        try (InputStream in = LuaScripts.class.getClassLoader().getResourceAsStream(FOLDER + file)) {
            if (in == null) {
                throw new IllegalStateException("the jar lacks " + FOLDER + file + "; rebuild it with `make jar`");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + FOLDER + file, e);
        }
    }
}
